"""Gradient-boosted trees as a family of the search: the ONNX converter
against scikit-learn's own outputs (ONNX Runtime, real fits), the search
space, and a real table run whose winner is a booster, served from its ONNX
file."""
from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

import autopilot
from autopilot.export import onnx_session, run_onnx
from autopilot.models import estimators, trees
from autopilot.search import space, trees_space

from .estimator_onnx import onnx_outputs_match, softmax

PARAMS = {"learning_rate": 0.2, "max_iter": 60, "max_leaf_nodes": 15, "max_depth": None, "min_samples_leaf": 5,
          "l2_regularization": 0.0}


def split_with_missing(load):
    X, y = load(return_X_y=True)
    X = X.astype(np.float32)
    X[::5, 1] = np.nan  # missing cells: the trees route them, ONNX must route them the same way
    val = np.arange(len(y)) % 4 == 0
    return (X[~val], y[~val]), (X[val], y[val])


@pytest.mark.parametrize("load,task,width", [(load_breast_cancer, "classification", 2),
                                             (load_wine, "classification", 3),
                                             (load_diabetes, "regression", 1)])
def test_onnx_computes_what_scikit_learn_computes(tmp_path, load, task, width):
    train, val = split_with_missing(load)
    est = trees.fit(PARAMS, train, val, task=task, seed=0, threads=1)
    X = np.concatenate([train[0], val[0]])
    got = onnx_outputs_match(trees, est, X, width, tmp_path / "m.onnx", tolerance=1e-5)
    if task == "classification":
        assert (got.argmax(1) == est.predict(X)).all()
        # the logits' softmax is the booster's own predict_proba
        assert np.allclose(softmax(got), est.predict_proba(X), atol=1e-5)


def test_a_threshold_is_never_rounded_above_an_input_it_splits_off():
    t = np.array([0.1, 1 / 3, 2.5, -7.3, 1e-9])
    t32 = trees._threshold32(t)
    assert (t32.astype(np.float64) <= t).all()
    # the largest float32 at or below: one step up is above the threshold
    assert (np.nextafter(t32, np.float32(np.inf)).astype(np.float64) > t).all()


def test_inputs_exactly_at_the_split_points_go_the_same_way(tmp_path):
    """Thresholds are midpoints between float32 training values: the values
    on either side of each split must land on the same leaf in ONNX."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3)).astype(np.float32)
    y = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(int)
    est = trees.fit(PARAMS, (X[:300], y[:300]), (X[300:], y[300:]), task="classification", seed=0, threads=1)
    path = trees.to_onnx(est, 3, tmp_path / "m.onnx")
    ref, got = trees.raw_scores(est, X), run_onnx(onnx_session(path), X)  # every training value, both sides of every split
    assert np.abs(ref - got).max() < 1e-5


def test_the_table_space_offers_boosted_trees_and_their_parameters_build_a_booster():
    info = {"kind": "table", "input_shape": [4], "n_classes": 2, "mean": [0.0] * 4, "std": [1.0] * 4}
    assert "gbt" in space.families_for("table") and "gbt" not in space.families_for("image")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    families = set()
    for _ in range(12):
        t = study.ask()
        p = space.suggest(t, info)
        families.add(p["family"])
        if trees_space.is_trees(p):
            assert all(k == "family" or k.startswith("gbt_") for k in p)
            est = trees.make_estimator(trees_space.to_params(p), task="classification", seed=0)
            assert 0.01 <= est.learning_rate <= 0.3 and est.early_stopping is True
        study.tell(t, 0.5)
    assert families == {"mlp", "gbt"}  # arrays (no CSV): networks and trees


def test_is_trees_dir_tells_a_booster_from_a_network(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps({"family": "gbt"}))
    assert trees.is_trees_dir(tmp_path)
    (tmp_path / "spec.json").write_text(json.dumps({"family": "mlp"}))
    assert not trees.is_trees_dir(tmp_path)
    assert not trees.is_trees_dir(tmp_path / "nothing-here")


@pytest.mark.slow
def test_a_table_run_ships_a_booster_checked_skipped_by_compression_and_served(tmp_path):
    from autopilot.runtime.model import ServedModel
    from autopilot.schemas.card import read_card
    from autopilot.schemas.spec import TreesSpec

    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[:300, :8], y[:300]
    lines = [",".join([f"f{i}" for i in range(8)] + ["label"])]
    lines += [",".join([f"{v:.6g}" for v in row] + [str(t)]) for row, t in zip(X, y)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    # a budget whose search share is spent before the search starts: the booster's defaults run anyway
    # (search.driver.trees_floor), in seconds, and ship
    rd = autopilot.run(str(tmp_path / "t.csv"), budget="5s", runs_dir=tmp_path / "runs", name="t",
                       quiet=True, workers=1, compress_target="latency")
    search = json.loads((rd.path / "search.json").read_text())
    # the booster's and the linear models' defaults, cross-validated (a small table)
    first = [t for t in search["trials"] if t["state"] == "COMPLETE"][:4]
    assert [t["params"]["family"] for t in first] == ["gbt", "linear", "linear", "linear"]
    card = read_card(rd.path)
    assert card.family in ("gbt", "linear") and card.onnx_parity.passed and card.onnx_parity.inputs > 0
    assert card.onnx_parity.max_abs_diff <= 1e-4
    spec = TreesSpec.model_validate_json((rd.model_dir / "spec.json").read_bytes())
    # a booster, or a linear model: 2 logits x (8 features + its hinges) + 2 biases
    assert spec.input_shape == [8] and (spec.n_trees == spec.n_iter >= 1 or spec.n_coefficients >= 8 * 2 + 2)
    assert not (rd.path / "compress").exists()  # skipped, nothing half-written
    assert card.test_accuracy > 0.75  # the commonest class is 0.6 of these rows
    # refitted on train+validation (--cv is on by default) for the rounds early stopping kept, scaled up
    assert spec.trained_on == "train+validation"
    assert card.cv.retrained and not card.cv.validation_held_out and not card.cv.finalists  # the card says so
    # what the server loads gives the probabilities of the same model fitted again (fits are deterministic)
    served = ServedModel.load("v1", rd.model_dir / "model.onnx", rd.model_dir / "card.json")
    data = _arrays(rd)
    module = estimators.module_for(spec.family)
    est = module.refit(spec.params, np.concatenate([data["train"][0], data["val"][0]]),
                       np.concatenate([data["train"][1], data["val"][1]]), rounds=spec.n_iter, task="classification",
                       seed=spec.seed, threads=1)
    Xte = data["test"][0]
    logits = module.raw_scores(est, Xte)
    p = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(served.predict_proba(Xte), p / p.sum(1, keepdims=True), atol=1e-5)


def _arrays(rd):
    from autopilot.rundata import load_run_data

    return load_run_data(rd)[2]
