"""Ensemble selection on real models' validation predictions, and the
ensemble as one ONNX graph with parity against its PyTorch members."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autopilot.data import load, split
from autopilot.data.stats import arrays, data_info
from autopilot.export import check_parity, export_onnx
from autopilot.fusion.ensemble import Ensemble
from autopilot.fusion.select import ensemble_log_probs, greedy_ensemble, score
from autopilot.models import build_model
from autopilot.search import space
from autopilot.train import train


@pytest.fixture(scope="module")
def digits_models():
    """Three small, different MLPs trained for real on digits."""
    torch.set_num_threads(1)
    ds = load("digits")
    splits = split(ds.y, seed=0)
    data, info = arrays(ds, splits), data_info(ds, splits)
    models = {}
    for seed, width in [(0, 32), (1, 64), (2, 16)]:
        params = {**space.default_params(info), "family": "mlp", "mlp_width": width, "mlp_depth": 1, "epochs": 6}
        spec, hp = space.to_config(params, info)
        torch.manual_seed(seed)
        model = build_model(spec)
        train(model, data["train"], data["val"], hp, kind="image", seed=seed, device="cpu")
        models[f"m{seed}"] = model.eval()
    return models, data


def _logits(model, X):
    with torch.no_grad():
        return model(torch.as_tensor(X)).numpy()


def test_greedy_selection_is_never_worse_than_the_best_single_on_validation(digits_models):
    models, data = digits_models
    Xv, yv = data["val"]
    val = {n: _logits(m, Xv) for n, m in models.items()}
    sel = greedy_ensemble(val, yv)
    best_single = max(score(torch.softmax(torch.as_tensor(z), 1).numpy(), yv) for z in val.values())
    assert sel.val_accuracy >= best_single[0]
    assert abs(sum(sel.weights) - 1) < 1e-9 and all(w > 0 for w in sel.weights)
    assert set(sel.members) <= set(models)


def test_selection_prefers_the_model_that_is_right():
    y = np.array([0, 1, 0, 1, 0, 1])
    good = np.eye(2)[y] * 5.0
    bad = np.eye(2)[1 - y] * 5.0
    sel = greedy_ensemble({"bad": bad, "good": good, "noise": np.zeros((6, 2))}, y, rounds=10, init=1)
    assert sel.members[0] == "good" and sel.weights[0] > 0.5
    assert sel.val_accuracy == 1.0


def test_the_ensemble_exports_to_one_onnx_graph_with_parity(digits_models, tmp_path):
    models, data = digits_models
    Xv, yv = data["val"]
    names = list(models)
    weights = [0.5, 0.3, 0.2]
    ens = Ensemble([models[n] for n in names], weights).eval()
    path = export_onnx(ens, list(Xv.shape[1:]), tmp_path / "ensemble.onnx")
    parity = check_parity(ens, path, Xv)
    assert parity["passed"], parity
    expected = ensemble_log_probs([_logits(models[n], Xv) for n in names], weights)
    assert np.abs(_logits(ens, Xv) - expected).max() < 1e-4
