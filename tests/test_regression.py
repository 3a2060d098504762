"""Regression end to end: the metrics against scikit-learn's, a network that
learns standardised targets and answers in the target's own units, and a
real CSV run whose card, predict and server give predicted values."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

import autopilot
from autopilot import metrics
from autopilot.models import build_model
from autopilot.train import fold_target_scale, train

# With pytest-xdist (make test: --dist loadgroup) this file's tests stay on one
# worker, so its module-scoped real run is trained once.
pytestmark = pytest.mark.xdist_group("regression")


def test_regression_metrics_match_scikit_learn_and_carry_a_standard_error():
    rng = np.random.default_rng(0)
    y = rng.normal(100, 20, 400)
    pred = y + rng.normal(0, 10, 400)
    m = metrics.regression_metrics(pred.reshape(-1, 1), y)
    assert m["rmse"] == pytest.approx(mean_squared_error(y, pred) ** 0.5)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred))
    assert m["r2"] == pytest.approx(r2_score(y, pred))
    assert 0 < m["r2_se"] < 0.05 and 0 < m["rmse_se"] < 1.5 and m["examples"] == 400
    small = metrics.regression_metrics(pred[:40], y[:40])
    assert small["r2_se"] > m["r2_se"]  # fewer examples, wider uncertainty
    assert metrics.score("regression", pred, y) == pytest.approx(r2_score(y, pred))
    assert metrics.regression_metrics(np.zeros(0), np.zeros(0))["r2"] is None
    with pytest.raises(ValueError, match="unknown task"):
        metrics.score("ranking", pred, y)


def _linear_table(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (1000 + 50 * X[:, 0] - 30 * X[:, 1] + 5 * rng.normal(size=n)).astype(np.float32)
    return X, y


def _spec(X):
    return {"family": "mlp", "input_shape": [X.shape[1]], "n_classes": 1, "mean": [0.0] * X.shape[1],
            "std": [1.0] * X.shape[1], "width": 64, "depth": 1, "residual": False, "batch_norm": True, "dropout": 0.0}


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_a_network_learns_standardised_targets_and_answers_in_their_units(loss):
    X, y = _linear_table()
    torch.manual_seed(0)
    model = build_model(_spec(X))
    r = train(model, (X[:400], y[:400]), (X[400:500], y[400:500]),
              {"task": "regression", "loss": loss, "epochs": 15, "batch_size": 32, "patience": 15}, seed=0, device="cpu")
    assert r.best_val_acc > 0.9  # R² on validation
    with torch.no_grad():
        pred = model.eval()(torch.as_tensor(X[500:]))[:, 0].numpy()
    assert r2_score(y[500:], pred) > 0.9 and abs(pred.mean() - 1000) < 20  # the target's own units


def test_folding_the_target_scale_is_checked():
    torch.manual_seed(0)
    X = torch.randn(8, 3)
    head_last = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    before = head_last(X)[:, 0]
    fold_target_scale(head_last, 10.0, 2.0, X)
    assert torch.allclose(head_last(X)[:, 0], before * 2 + 10, atol=1e-5)
    squashed = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Sigmoid())  # output is not the linear layer's
    with pytest.raises(ValueError, match="cannot rescale"):
        fold_target_scale(squashed, 10.0, 2.0, X)


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reg")
    X, y = _linear_table(3600, seed=1)  # above search.table_families.SMALL_TABLE_ROWS: networks are searched too
    lines = ["a,b,c,d,colour,price"]
    colours = np.random.default_rng(1).choice(["red", "blue"], len(y))
    lines += [",".join([f"{v:.5f}" for v in row] + [str(c), f"{t:.3f}"]) for row, c, t in zip(X, colours, y)]
    (tmp / "prices.csv").write_text("\n".join(lines) + "\n")
    # five trials: the boosted trees' default and the linear models' three, then the network's (a trial count,
    # not a time: the machine may be busy)
    return autopilot.run(str(tmp / "prices.csv"), label="price", trials=5, budget="10m", runs_dir=tmp / "runs",
                         name="p", quiet=True, workers=1)


@pytest.mark.slow
def test_a_regression_run_ships_values_with_their_uncertainty(regression_run):
    from autopilot.schemas.card import read_card

    rd = regression_run
    card = read_card(rd.path)
    assert card.task == "regression" and card.classes == [] and card.confusion_matrix is None
    t = card.regression.test
    assert t.r2 > 0.8 and t.r2_se > 0 and t.rmse > 0 and t.examples == card.test_examples
    assert card.onnx_parity.passed
    assert not (rd.path / "compress").exists()  # regression models are not compressed
    doctor = json.loads((rd.path / "doctor.json").read_text())
    skipped = {c["id"] for c in doctor["checks"] if c["status"] == "skipped"}
    assert {"labels-out-of-range", "class-imbalance", "cannot-overfit"} <= skipped
    search = json.loads((rd.path / "search.json").read_text())
    assert {"gbt", "mlp"} <= {t["params"]["family"] for t in search["trials"] if t["state"] == "COMPLETE"}


@pytest.mark.slow
def test_predict_and_serve_return_values(regression_run, tmp_path):
    import subprocess
    import sys

    from autopilot.serve.client import ServerProcess

    (tmp_path / "new.csv").write_text("a,b,c,d,colour\n1.0,0.0,0.0,0.0,red\n-1.0,0.0,0.0,0.0,green\n")
    res = subprocess.run([sys.executable, "-m", "autopilot", "predict", str(regression_run.path), str(tmp_path / "new.csv")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "id,value"
    high, low = (float(line.split(",")[1]) for line in lines[1:])
    assert 1010 < high < 1090 and 910 < low < 990  # 1000 ± 50 for a = ±1
    with ServerProcess(regression_run.path, "--no-monitor") as s:
        status, doc = s.post("/v1/predict", {"inputs": [{"a": 1.0, "b": 0, "c": 0, "d": 0, "colour": "red"}]})
        assert status == 200, doc
        assert set(doc["predictions"][0]) == {"id", "value"} and abs(doc["predictions"][0]["value"] - high) < 1e-3


@pytest.mark.slow
def test_drift_of_the_predicted_value_is_watched(regression_run):
    """The reference keeps the predicted value's deciles on validation; a
    window of live predictions shifted upward reads as prediction drift."""
    from autopilot.monitor.drift import compute_metrics
    from autopilot.monitor.reference import build_reference
    from autopilot.monitor.window import Window
    from autopilot.schemas.reference import Reference

    ref = build_reference(regression_run.path, write=False)
    Reference.model_validate(ref)
    edges = ref["predictions"]["value_edges"]
    assert len(edges) >= 5 and ref["predictions"]["accuracy"] is None
    rng = np.random.default_rng(0)
    n_features = len(ref["features"]["names"])

    def window(values):
        n = len(values)
        feats = np.array([rng.choice(np.asarray(q)[[0, -1]], n) for q in ref["features"]["quantiles"]]).T if n_features else np.zeros((n, 0))
        return Window(features=feats.reshape(n, n_features), classes=np.zeros(n, np.int64), confidence=np.asarray(values),
                      latency_ms=np.ones(n), statuses=np.full(n, 200), pred_labelled=np.zeros(0), labels=np.zeros(0))

    same = rng.choice(np.asarray(edges), 400)  # spread over the reference's own range
    shifted = np.full(400, max(edges) + 100.0)  # every prediction above the top decile
    psi_same = compute_metrics(window(same), ref, min_samples=100)[0]["prediction_drift_psi"]
    psi_shifted = compute_metrics(window(shifted), ref, min_samples=100)[0]["prediction_drift_psi"]
    assert psi_shifted > 1.0 > psi_same


def test_retraining_a_regression_model_is_refused_in_one_line(regression_run):
    from tests.conftest import run_cli

    csv = regression_run.path.parent.parent / "prices.csv"
    res = run_cli("retrain", regression_run.path, "--data", csv, "--budget", "30s")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "retraining covers classification networks" in lines[0], res.stderr
    assert not (regression_run.path / "retrain").exists()
