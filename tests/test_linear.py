"""The linear family (logistic / ridge regression, alone or averaged with
boosted trees): its ONNX file against the fitted scikit-learn models (ONNX
Runtime, real fits), the small-table rule of the search, and cross-validated
trial scores."""
from __future__ import annotations

import numpy as np
import optuna
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.preprocessing import StandardScaler

from autopilot.models import estimators, linear, trees
from autopilot.search import linear_space, space, table_families

from .estimator_onnx import onnx_outputs_match, softmax


def standardised_split(load):
    X, y = load(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)  # what data.preprocess hands every family
    val = np.arange(len(y)) % 4 == 0
    return (X[~val], y[~val]), (X[val], y[val])


@pytest.mark.parametrize("share,knots", [(0.0, 0), (0.5, 0), (0.5, 3)])
@pytest.mark.parametrize("load,task,width", [(load_breast_cancer, "classification", 2),
                                             (load_wine, "classification", 3),
                                             (load_diabetes, "regression", 1)])
def test_onnx_computes_what_the_fitted_models_compute(tmp_path, load, task, width, share, knots):
    train, val = standardised_split(load)
    strength = {"alpha": 1.0} if task == "regression" else {"C": 1.0}
    model = linear.fit({**strength, "trees_share": share, "knots": knots}, train, val, task=task, seed=0, threads=1)
    assert (model.trees is None) == (share == 0)
    # every feature of these tables has many values: `knots` hinges each (fewer where quantiles coincide)
    assert len(model.hinge_columns) == len(model.hinge_knots) and \
        (len(model.hinge_columns) > train[0].shape[1] if knots else len(model.hinge_columns) == 0)
    X = np.concatenate([train[0], val[0]])
    got = onnx_outputs_match(linear, model, X, width, tmp_path / "m.onnx", tolerance=1e-4)
    scale = max(1.0, float(np.abs(linear.raw_scores(model, X)).max()))
    Xl = linear.expand(X, model.hinge_columns, model.hinge_knots)  # what the linear model was fitted on
    if task == "regression":
        expected = model.linear.predict(Xl) if share == 0 else \
            (1 - share) * model.linear.predict(Xl) + share * model.trees.predict(X)
        assert np.allclose(got[:, 0], expected, atol=1e-3 * scale)
    else:
        p = softmax(got)
        expected = model.linear.predict_proba(Xl) if share == 0 else \
            (1 - share) * model.linear.predict_proba(Xl) + share * model.trees.predict_proba(X)
        assert np.allclose(p, expected, atol=1e-4)  # softmax of the logits: the averaged probabilities


def test_refit_keeps_the_blend_and_fixes_the_trees_rounds():
    train, val = standardised_split(load_wine)
    X, y = np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])
    model = linear.refit({"C": 0.5, "trees_share": 0.25}, X, y, rounds=7, task="classification", seed=0, threads=1)
    shape = linear.describe(model)
    assert shape["n_iter"] == 7 and shape["n_coefficients"] == 13 * 3 + 3 and model.share == 0.25


def test_small_tables_search_trees_and_linear_models_larger_ones_networks_too():
    small = {"kind": "table", "input_shape": [4], "n_classes": 2, "task": "classification", "csv_rows": 300}
    large = {**small, "csv_rows": 5000}
    array = {k: v for k, v in small.items() if k != "csv_rows"}  # an NPZ's X: networks and trees, as before
    assert not table_families.is_small(array) and table_families.families(array) == ["mlp", "gbt"]
    assert [p["family"] for p in table_families.first_trials(array)] == ["gbt"]
    assert table_families.is_small(small) and not table_families.is_small(large)
    assert not table_families.is_small({"kind": "image", "csv_rows": 10})
    for info, expected in ((small, {"gbt", "linear"}), (large, {"mlp", "gbt", "linear"})):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        seen = set()
        for _ in range(20):
            t = study.ask()
            p = space.suggest(t, {**info, "mean": [0.0] * 4, "std": [1.0] * 4})
            seen.add(p["family"])
            if p["family"] == "linear":
                lp = linear_space.to_params(p)
                assert set(lp) == {"C", "trees_share", "knots"} and 1e-3 <= lp["C"] <= 1e2
                assert lp["knots"] in linear_space.KNOTS
            study.tell(t, 0.5)
        assert seen == expected
    regression = linear_space.default_params("regression")
    assert [(p["lin_trees_share"], p["lin_knots"]) for p in regression] == [(0.0, 0), (0.5, 0), (0.0, 3)]
    assert all("lin_alpha" in p for p in regression)
    assert [p["family"] for p in table_families.first_trials(small)] == ["gbt", "linear", "linear", "linear"]
    # No network in a small table's search: it gets the networks' stages' time and no budget plan
    assert table_families.estimators_only(small)
    assert not table_families.estimators_only(large) and not table_families.estimators_only(array)


def test_an_estimators_search_stops_when_its_best_score_stalls():
    scores = iter([0.5, 0.6] + [0.6] * 100)
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: next(scores), n_trials=100, callbacks=[table_families.stop_when_stalled])
    # the best (0.6) came at trial 1; STALL_TRIALS trials later without a gain the study stopped
    assert len(study.trials) == 2 + table_families.STALL_TRIALS
    rising = iter(np.linspace(0.0, 1.0, 100))
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: next(rising), n_trials=60, callbacks=[table_families.stop_when_stalled])
    assert len(study.trials) == 60  # still improving: never stopped


def test_estimator_folders_are_told_by_their_spec(tmp_path):
    import json

    for family in ("gbt", "linear"):
        (tmp_path / "spec.json").write_text(json.dumps({"family": family}))
        assert estimators.family_of_dir(tmp_path) == family and estimators.module_for(family).FAMILY == family
    (tmp_path / "spec.json").write_text(json.dumps({"family": "mlp"}))
    assert not estimators.is_estimator_dir(tmp_path) and not estimators.is_estimator_dir(tmp_path / "none")


def test_cross_validated_score_is_the_mean_over_the_same_folds():
    from autopilot.search.trees_trial import cv_score

    train, val = standardised_split(load_diabetes)
    data = {"train": train, "val": val}
    params = {"alpha": 1.0, "trees_share": 0.0}
    a, a_loss, a_folds = cv_score(linear, params, data, task="regression", rounds=1, folds_seed=3, threads=1)
    b, b_loss, _ = cv_score(linear, params, data, task="regression", rounds=1, folds_seed=3, threads=1)
    assert (a, a_loss) == (b, b_loss) and 0.3 < a < 0.6  # ridge on diabetes: R² about 0.48 (scikit-learn's example)
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold, cross_val_score

    X, y = np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])
    folds = KFold(5, shuffle=True, random_state=3)
    ref = cross_val_score(Ridge(alpha=1.0), X, y, cv=folds, scoring="r2").mean()
    ref_mse = -cross_val_score(Ridge(alpha=1.0), X, y, cv=folds, scoring="neg_mean_squared_error").mean()
    assert abs(a - ref) < 1e-3 and abs(a_loss - ref_mse) < 1e-3 * ref_mse  # the loss: mean squared error per fold
    # each fold's score, in the folds' order: what the selection's paired standard error is computed from
    assert np.allclose(a_folds, cross_val_score(Ridge(alpha=1.0), X, y, cv=folds, scoring="r2"), atol=1e-3)
    gbt, _, _ = cv_score(trees, {**linear.BLEND_TREES}, data, task="regression", rounds=20, folds_seed=3, threads=1)
    assert np.isfinite(gbt) and gbt != a


def _cv_trial(number: int, folds: list[float], known_good: bool, params_count: int = 100, val_loss: float = 0.3):
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from autopilot.search import select

    t = create_trial(state=TrialState.COMPLETE, value=float(np.mean(folds)), params={"x": 0.5},
                     distributions={"x": FloatDistribution(0, 1)},
                     user_attrs={select.CV_FOLD_SCORES: folds, select.KNOWN_GOOD: known_good, "val_loss": val_loss,
                                 "params_count": params_count})
    t.number = number
    return t


def test_the_search_top_trial_must_beat_the_known_good_one_by_paired_standard_errors():
    from autopilot.search.select import MIN_PAIRED_SE, prefer_known_good

    default = _cv_trial(1, [0.90, 0.92, 0.88, 0.91, 0.89], True)
    weaker_default = _cv_trial(0, [0.80, 0.82, 0.78, 0.81, 0.79], True)
    # ahead on the mean by less than its fold-to-fold noise: the default ships, and the reason says why
    noisy = _cv_trial(7, [0.95, 0.90, 0.86, 0.93, 0.88], False)
    chosen, why = prefer_known_good(noisy, [weaker_default, default, noisy])
    d = np.array(noisy.user_attrs["cv_fold_scores"]) - np.array(default.user_attrs["cv_fold_scores"])
    assert 0 < d.mean() < MIN_PAIRED_SE * d.std(ddof=1) / np.sqrt(len(d))
    assert chosen is default and "trial 7" in why and "known-good first trial 1" in why
    # ahead on every fold: the search's trial ships
    better = _cv_trial(8, [0.93, 0.95, 0.90, 0.94, 0.91], False)
    assert prefer_known_good(better, [default, better]) == (better, None)
    # a known-good top trial, or no fold scores (a network's validation score): nothing to weigh
    assert prefer_known_good(default, [default, noisy]) == (default, None)
    plain = _cv_trial(9, [0.99], False)
    plain.user_attrs.pop("cv_fold_scores")
    assert prefer_known_good(plain, [default, plain]) == (plain, None)


def test_known_good_trials_tied_on_cross_validation_ship_the_one_with_fewer_parameters():
    from autopilot.search.select import best_trial, prefer_known_good

    folds = [0.97, 0.97, 1.0, 0.97, 1.0]
    logistic = _cv_trial(1, folds, True, params_count=42, val_loss=0.075)
    blend = _cv_trial(2, [0.97, 1.0, 0.97, 0.97, 1.0], True, params_count=892, val_loss=0.059)  # lower loss, same score
    hinges = _cv_trial(3, folds, True, params_count=159, val_loss=0.079)
    trees = _cv_trial(0, [0.97, 1.0, 0.93, 0.97, 1.0], True, params_count=850, val_loss=0.062)
    noisy = _cv_trial(15, [1.0, 1.0, 1.0, 0.97, 1.0], False)  # ahead by one row: not two standard errors
    chosen, why = prefer_known_good(noisy, [trees, logistic, blend, hinges, noisy])
    assert chosen is logistic and "trial 15" in why
    # the top-ranked trial is a known-good one (lowest loss among the tied): the cheapest tied one ships instead
    chosen, why = prefer_known_good(blend, [trees, logistic, blend, hinges])
    assert chosen is logistic and "fewer parameters" in why and "42 against 892" in why
    # not tied: the better score ships, however many parameters it has
    assert prefer_known_good(trees, [trees, _cv_trial(1, [0.9] * 5, True, params_count=42)]) == (trees, None)

    import optuna

    study = optuna.create_study(direction="maximize")
    study.add_trials([trees, logistic, blend, hinges])
    assert best_trial(study).trial.number == 1
