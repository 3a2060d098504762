"""Linear models for tables: logistic regression (classification) or ridge
regression, on the run's preprocessed feature matrix (imputed, encoded,
scaled by data.preprocess), optionally averaged with boosted trees at
HistGradientBoosting's defaults.

Why a linear family: on small tables a well-regularised linear model is
often the best model there is (scikit-learn's wine, diabetes), and a search
of networks and trees alone did worse than it. Why the blend: trees and a
linear model err differently; their average beat both on small tables,
where stacking more members has too few rows to be fitted.

Hinges (`knots` > 0): each feature with at least HINGE_MIN_DISTINCT
training values also enters as max(0, x - k) at `knots` of its training
quantiles, so the model is piecewise linear in it (a linear GAM): the
customers table of bench/tables.py has a seasonal effect of the month and
a log-income effect, which a straight line misses; 5-fold CV rose by 0.3
to 1.2 points there over three seeds, and the search keeps hinges only
where CV says so (search/linear_space.py).

The ONNX file is built here (no converter needed): one Gemm for the linear
model (after a Gather, Sub and Relu that make the hinges); with trees, models.trees' TreeEnsembleRegressor beside it, and the
outputs averaged - values for a regressor, probabilities for a classifier
(the output stays logits: the log of the averaged probabilities).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import trees

FAMILY = "linear"
MAX_ITER = 5000  # lbfgs on standardised features converges in far fewer; a ceiling, not a schedule
EPS = 1e-7  # added to averaged probabilities before the log: a probability of 0 would be a logit of -inf
# The blend's trees: HistGradientBoosting's own defaults, early-stopped on validation like the gbt family's first trial.
BLEND_TREES = {"learning_rate": 0.1, "max_leaf_nodes": 31, "max_depth": 0, "min_samples_leaf": 20,
               "l2_regularization": 1e-6, "max_features": 1.0, "max_iter": 1000}


HINGE_MIN_DISTINCT = 10  # fewer values (one-hot columns, indicators, small counts): no bend to learn


@dataclass
class LinearModel:
    """A fitted linear model, and the boosted trees averaged with it (`share`
    of the output). The linear model sees the features, then one hinge
    max(0, x[hinge_columns[i]] - hinge_knots[i]) per knot."""
    linear: object
    trees: object | None
    share: float
    task: str
    hinge_columns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    hinge_knots: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def fit_hinges(X: np.ndarray, knots: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, knots): `knots` interior quantiles of every feature with
    enough distinct values, duplicates removed (a column mostly at one value)."""
    cols, at = [], []
    if knots <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    X = np.asarray(X, dtype=np.float32)
    for j in range(X.shape[1]):
        v = X[:, j]
        if len(np.unique(v)) < HINGE_MIN_DISTINCT:
            continue
        for k in np.unique(np.quantile(v, np.linspace(0, 1, knots + 2)[1:-1]).astype(np.float32)):
            cols.append(j)
            at.append(k)
    return np.asarray(cols, np.int64), np.asarray(at, np.float32)


def expand(X: np.ndarray, columns: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """The linear model's inputs: X, then its hinges (float32, as ONNX computes them)."""
    X = np.asarray(X, dtype=np.float32)
    if not len(columns):
        return X
    return np.hstack([X, np.maximum(X[:, columns] - knots, np.float32(0))])


def _linear_estimator(params: dict, task: str, seed: int):
    from sklearn.linear_model import LogisticRegression, Ridge

    if task == "regression":
        return Ridge(alpha=float(params["alpha"]))
    return LogisticRegression(C=float(params["C"]), max_iter=MAX_ITER, random_state=seed)


def _share(params: dict) -> float:
    return float(params.get("trees_share", 0.0))


def fit(params: dict, train: tuple, val: tuple, *, task: str, seed: int, threads: int | None = None) -> LinearModel:
    """The linear model on `train` (closed form / lbfgs: nothing to stop early);
    the blend's trees early-stopped on `val` as models.trees.fit does."""
    Xtr, ytr = train
    cols, knots = fit_hinges(Xtr, int(params.get("knots", 0)))
    lin = _linear_estimator(params, task, seed).fit(expand(Xtr, cols, knots).astype(np.float64), ytr)
    share = _share(params)
    booster = trees.fit(BLEND_TREES, train, val, task=task, seed=seed, threads=threads) if share > 0 else None
    return LinearModel(lin, booster, share, task, cols, knots)


def refit(params: dict, X: np.ndarray, y: np.ndarray, *, rounds: int, task: str, seed: int,
          threads: int | None = None) -> LinearModel:
    """Fitted again on more data; the blend's trees for `rounds` boosting rounds."""
    cols, knots = fit_hinges(X, int(params.get("knots", 0)))
    lin = _linear_estimator(params, task, seed).fit(expand(X, cols, knots).astype(np.float64), y)
    share = _share(params)
    booster = trees.refit(BLEND_TREES, X, y, rounds=rounds, task=task, seed=seed, threads=threads) if share > 0 else None
    return LinearModel(lin, booster, share, task, cols, knots)


def weights(lin, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(W of shape (features, outputs), b) with X @ W + b = the model's raw
    scores: a regressor's value, a classifier's logits (binary: [0, r])."""
    coef = np.atleast_2d(np.asarray(lin.coef_, dtype=np.float64))
    b = np.atleast_1d(np.asarray(lin.intercept_, dtype=np.float64))
    if task != "regression" and coef.shape[0] == 1:  # binary: one score r -> logits [0, r]
        coef = np.concatenate([np.zeros_like(coef), coef])
        b = np.concatenate([[0.0], b])
    return coef.T, b


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def raw_scores(model: LinearModel, X: np.ndarray) -> np.ndarray:
    """What the ONNX file computes, from the fitted estimators (float32 in,
    like the served input)."""
    X = np.asarray(X, dtype=np.float32)
    W, b = weights(model.linear, model.task)
    out = expand(X, model.hinge_columns, model.hinge_knots).astype(np.float64) @ W + b
    if model.trees is None:
        return out.astype(np.float32)
    t = trees.raw_scores(model.trees, X).astype(np.float64)
    s = model.share
    if model.task == "regression":
        return ((1 - s) * out + s * t).astype(np.float32)
    return np.log((1 - s) * _softmax(out) + s * _softmax(t) + EPS).astype(np.float32)


def n_outputs(model: LinearModel) -> int:
    return weights(model.linear, model.task)[0].shape[1]


def to_onnx(model: LinearModel, n_features: int, path: str | Path, *, input_name: str = "input",
            output_name: str = "logits") -> Path:
    from onnx import TensorProto, helper

    W, b = weights(model.linear, model.task)
    k = W.shape[1]
    init = [helper.make_tensor("lin_W", TensorProto.FLOAT, list(W.shape), W.astype(np.float32).ravel().tolist()),
            helper.make_tensor("lin_b", TensorProto.FLOAT, [k], b.astype(np.float32).tolist())]
    nodes, lin_in = [], input_name
    if len(model.hinge_columns):  # [X, max(0, X[:, columns] - knots)]
        m = len(model.hinge_columns)
        init += [helper.make_tensor("hinge_columns", TensorProto.INT64, [m], model.hinge_columns.tolist()),
                 helper.make_tensor("hinge_knots", TensorProto.FLOAT, [m], model.hinge_knots.tolist())]
        nodes += [helper.make_node("Gather", [input_name, "hinge_columns"], ["hinge_x"], axis=1),
                  helper.make_node("Sub", ["hinge_x", "hinge_knots"], ["hinge_shifted"]),
                  helper.make_node("Relu", ["hinge_shifted"], ["hinges"]),
                  helper.make_node("Concat", [input_name, "hinges"], ["lin_in"], axis=1)]
        lin_in = "lin_in"
    if model.trees is None:
        nodes.append(helper.make_node("Gemm", [lin_in, "lin_W", "lin_b"], [output_name]))
        return trees.write_graph(nodes, init, n_features, k, path, input_name=input_name, output_name=output_name,
                                 name=FAMILY)
    nodes.append(helper.make_node("Gemm", [lin_in, "lin_W", "lin_b"], ["lin_out"]))
    tree_nodes, tree_init = trees.tree_nodes(model.trees, input_name, "gbt_out")
    nodes += tree_nodes
    init += tree_init
    s = model.share
    init += [helper.make_tensor("w_lin", TensorProto.FLOAT, [], [1 - s]),
             helper.make_tensor("w_gbt", TensorProto.FLOAT, [], [s])]
    if model.task == "regression":
        a, t = "lin_out", "gbt_out"
    else:
        nodes += [helper.make_node("Softmax", ["lin_out"], ["lin_p"], axis=1),
                  helper.make_node("Softmax", ["gbt_out"], ["gbt_p"], axis=1)]
        a, t = "lin_p", "gbt_p"
    nodes += [helper.make_node("Mul", [a, "w_lin"], ["lin_w"]), helper.make_node("Mul", [t, "w_gbt"], ["gbt_w"]),
              helper.make_node("Add", ["lin_w", "gbt_w"], ["blend" if model.task != "regression" else output_name])]
    if model.task != "regression":
        init.append(helper.make_tensor("eps", TensorProto.FLOAT, [], [EPS]))
        nodes += [helper.make_node("Add", ["blend", "eps"], ["blend_eps"]),
                  helper.make_node("Log", ["blend_eps"], [output_name])]
    return trees.write_graph(nodes, init, n_features, k, path, input_name=input_name, output_name=output_name,
                             name=FAMILY)


def describe(model: LinearModel) -> dict:
    """spec.json's shape fields: the blend's trees (none for a linear model alone) and the coefficients."""
    W, b = weights(model.linear, model.task)
    shape = trees.describe(model.trees) if model.trees is not None else {"n_iter": 1, "n_trees": 0, "n_leaves": 0}
    return {**shape, "n_coefficients": int(W.size + b.size)}
