"""Model builder: every family builds, reloads exactly, and exports to ONNX
that agrees with PyTorch."""
import numpy as np
import pytest
import torch

from autopilot.export import check_parity, export_onnx
from autopilot.models import build_model, count_params, load_model, save_model

SPECS = {
    "mlp": {"family": "mlp", "input_shape": [12], "n_classes": 3, "mean": [0.5] * 12, "std": [2.0] * 12,
            "width": 32, "depth": 3, "residual": True, "batch_norm": True, "dropout": 0.2},
    "cnn1d": {"family": "cnn1d", "input_shape": [1, 40], "n_classes": 10, "mean": [0.1], "std": [1.3],
              "width": 16, "depth": 3, "residual": True, "batch_norm": True, "dropout": 0.1,
              "kernel_size": 5, "pool": "max", "head": "flatten"},
    "cnn2d": {"family": "cnn2d", "input_shape": [3, 16, 16], "n_classes": 4, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.2, 0.3],
              "width": 8, "depth": 3, "residual": False, "batch_norm": True, "dropout": 0.0,
              "kernel_size": 3, "pool": "avg", "head": "gap"},
}


def _trained_a_little(spec):
    """Non-trivial BN statistics and weights, so parity is tested on a real model."""
    torch.manual_seed(0)
    model = build_model(spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(32, *spec["input_shape"])
    y = torch.randint(0, spec["n_classes"], (32,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("family", list(SPECS))
def test_reload_from_spec_and_safetensors_is_exact(tmp_path, family):
    spec = SPECS[family]
    model = _trained_a_little(spec)
    save_model(tmp_path, model, spec)
    again, spec2 = load_model(tmp_path)
    assert spec2 == spec
    x = torch.randn(9, *spec["input_shape"])
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert count_params(again) == count_params(model) > 0


@pytest.mark.parametrize("family", list(SPECS))
def test_onnx_parity(tmp_path, family):
    spec = SPECS[family]
    model = _trained_a_little(spec)
    path = export_onnx(model, spec["input_shape"], tmp_path / "m.onnx")
    X = np.random.default_rng(0).normal(size=(50, *spec["input_shape"])).astype(np.float32)
    report = check_parity(model, path, X)
    assert report["passed"], report
    assert report["max_abs_diff"] <= 1e-4
    assert report["argmax_agree"] == 1.0


def test_spec_fields_change_the_architecture():
    base = SPECS["cnn2d"]
    small = count_params(build_model(base))
    assert count_params(build_model({**base, "width": 16})) > small
    assert count_params(build_model({**base, "depth": 2})) < small
    assert count_params(build_model({**base, "kernel_size": 5})) > small
    assert count_params(build_model({**base, "residual": True})) > small
    flat = build_model({**base, "head": "flatten"})
    assert count_params(flat) > small


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model family"):
        build_model({**SPECS["mlp"], "family": "transformer"})
