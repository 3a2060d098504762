"""Gradient-boosted trees for tables: scikit-learn's HistGradientBoosting,
fitted with early stopping on the run's own validation split, and written
as ONNX by our own converter.

The ONNX file is the model (no pickle): what `predict`, `serve`, `monitor`
and the report load is the same file as for a network. It computes the
booster's raw scores, so its output is a set of logits like a network's:
softmax of a multi-class booster's scores is its predict_proba; a binary
booster's one score r becomes the logits [0, r] (softmax gives sigmoid(r));
a regressor's score is the predicted value.

Why our own converter: skl2onnx 1.20.0 (the newest) fails on scikit-learn
1.9's trees (a boolean `missing_go_to_left` where ONNX wants an int), and
the graph it needs is one TreeEnsembleRegressor node, built here from the
fitted predictors' node arrays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FAMILY = "gbt"
SPEC_FILE, ONNX_FILE = "spec.json", "model.onnx"
ONNX_ML_OPSET, ONNX_OPSET = 3, 17

# HistGradientBoosting's own defaults where we do not search: 255 bins, and
# early stopping after 10 rounds that do not improve the validation loss.
N_ITER_NO_CHANGE = 10


def make_estimator(params: dict, *, task: str, seed: int):
    """An unfitted booster for one trial's parameters (see search.trees_space)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    depth = params.get("max_depth")
    common = dict(
        learning_rate=float(params["learning_rate"]),
        max_iter=int(params["max_iter"]),
        max_leaf_nodes=int(params["max_leaf_nodes"]),
        max_depth=None if depth in (None, 0) else int(depth),
        min_samples_leaf=int(params["min_samples_leaf"]),
        l2_regularization=float(params["l2_regularization"]),
        max_features=float(params.get("max_features", 1.0)),
        early_stopping=True, n_iter_no_change=N_ITER_NO_CHANGE, scoring="loss",
        categorical_features=None,  # inputs are the numeric matrix every family sees
        random_state=seed,
    )
    if task == "regression":
        return HistGradientBoostingRegressor(loss=params.get("loss", "squared_error"), **common)
    return HistGradientBoostingClassifier(**common)


def fit(params: dict, train: tuple, val: tuple, *, task: str, seed: int, threads: int | None = None):
    """Fit on `train`, stopping early on the loss of `val` (the run's own
    validation split, not a slice of train). `threads` caps OpenMP so that
    parallel trial processes do not fight over the cores."""
    from threadpoolctl import threadpool_limits

    est = make_estimator(params, task=task, seed=seed)
    Xtr, ytr = train
    Xva, yva = val
    with threadpool_limits(limits=threads, user_api="openmp") if threads else _nothing():
        est.fit(np.asarray(Xtr, dtype=np.float32), ytr,
                X_val=np.asarray(Xva, dtype=np.float32) if len(yva) else None, y_val=yva if len(yva) else None)
    return est


def refit(params: dict, X: np.ndarray, y: np.ndarray, *, rounds: int, task: str, seed: int, threads: int | None = None):
    """The same parameters fitted on more data (train+validation) for a fixed
    number of boosting rounds: nothing is left to stop early on."""
    from threadpoolctl import threadpool_limits

    est = make_estimator({**params, "max_iter": int(rounds)}, task=task, seed=seed)
    est.set_params(early_stopping=False)
    with threadpool_limits(limits=threads, user_api="openmp") if threads else _nothing():
        est.fit(np.asarray(X, dtype=np.float32), y)
    return est


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def raw_scores(est, X: np.ndarray) -> np.ndarray:
    """What the ONNX file computes, from scikit-learn: (N, C) logits for a
    classifier (binary: [0, r]), (N, 1) predictions for a regressor."""
    X = np.asarray(X, dtype=np.float32)
    if not hasattr(est, "classes_"):
        return est.predict(X).reshape(-1, 1)
    s = est.decision_function(X)
    if s.ndim == 1:
        return np.stack([np.zeros_like(s), s], axis=1)
    return s


def n_outputs(est) -> int:
    """Width of the ONNX output: one logit per class (two for binary), one value for a regressor."""
    return len(est.classes_) if hasattr(est, "classes_") else 1


def _threshold32(t: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each float64 threshold. For float32
    inputs x, `x <= t` then holds exactly when `x <= t32` does (rounding to
    the nearest float32 could move a threshold above an input it splits off)."""
    t32 = t.astype(np.float32)
    above = t32.astype(np.float64) > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def tree_nodes(est, input_name: str, output_name: str) -> tuple[list, list]:
    """ONNX nodes and initialisers that compute the booster's raw scores
    (`raw_scores`) from `input_name` into `output_name`: one
    TreeEnsembleRegressor node (+ a MatMul to two logits for a binary classifier)."""
    from onnx import TensorProto, helper

    if any(p.nodes["is_categorical"].any() for it in est._predictors for p in it):
        raise ValueError("categorical splits are not exported; the trees are fitted on numeric inputs")
    k = len(est._predictors[0])  # trees per boosting round: 1, or one per class
    attrs: dict[str, list] = {a: [] for a in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
        "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
        "target_treeids", "target_nodeids", "target_ids", "target_weights")}
    tree = 0
    for rnd in est._predictors:
        for target, predictor in enumerate(rnd):
            nodes = predictor.nodes
            n = len(nodes)
            leaf = nodes["is_leaf"].astype(bool)
            ids = np.arange(n)
            attrs["nodes_treeids"] += [tree] * n
            attrs["nodes_nodeids"] += ids.tolist()
            attrs["nodes_featureids"] += np.where(leaf, 0, nodes["feature_idx"]).astype(int).tolist()
            attrs["nodes_values"] += np.where(leaf, 0.0, _threshold32(nodes["num_threshold"])).astype(np.float32).tolist()
            attrs["nodes_modes"] += ["LEAF" if lf else "BRANCH_LEQ" for lf in leaf]
            attrs["nodes_truenodeids"] += np.where(leaf, 0, nodes["left"]).astype(int).tolist()
            attrs["nodes_falsenodeids"] += np.where(leaf, 0, nodes["right"]).astype(int).tolist()
            # scikit-learn sends a missing value left (the `<=` branch) when missing_go_to_left.
            attrs["nodes_missing_value_tracks_true"] += np.where(leaf, 0, nodes["missing_go_to_left"]).astype(int).tolist()
            attrs["target_treeids"] += [tree] * int(leaf.sum())
            attrs["target_nodeids"] += ids[leaf].tolist()
            attrs["target_ids"] += [target] * int(leaf.sum())
            attrs["target_weights"] += nodes["value"][leaf].astype(np.float32).tolist()
            tree += 1
    base = np.asarray(est._baseline_prediction, dtype=np.float64).ravel()
    scores = output_name if k > 1 or not hasattr(est, "classes_") else output_name + "_score"
    nodes = [helper.make_node("TreeEnsembleRegressor", [input_name], [scores], domain="ai.onnx.ml", n_targets=k,
                              aggregate_function="SUM", post_transform="NONE",
                              base_values=base.astype(np.float32).tolist(), **attrs)]
    initializers = []
    if scores != output_name:  # binary: logits [0, r] = r @ [[0, 1]]
        initializers.append(helper.make_tensor(output_name + "_to_two", TensorProto.FLOAT, [1, 2], [0.0, 1.0]))
        nodes.append(helper.make_node("MatMul", [scores, output_name + "_to_two"], [output_name]))
    return nodes, initializers


def write_graph(nodes: list, initializers: list, n_features: int, n_out: int, path: str | Path, *,
                input_name: str, output_name: str, name: str) -> Path:
    """One checked ONNX file with a dynamic batch axis, written atomically."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", n_out])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET),
                                                    helper.make_opsetid("ai.onnx.ml", ONNX_ML_OPSET)],
                              producer_name="autopilot")
    onnx.checker.check_model(model)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)
    return path


def to_onnx(est, n_features: int, path: str | Path, *, input_name: str = "input", output_name: str = "logits") -> Path:
    """Write the fitted booster as one ONNX graph with a dynamic batch axis."""
    nodes, initializers = tree_nodes(est, input_name, output_name)
    return write_graph(nodes, initializers, n_features, n_outputs(est), path, input_name=input_name,
                       output_name=output_name, name="gbt")


def describe(est) -> dict:
    """What the fitted booster became, for spec.json and the card."""
    return {"n_iter": int(est.n_iter_), "n_trees": int(sum(len(r) for r in est._predictors)),
            "n_leaves": int(sum(int(p.nodes["is_leaf"].sum()) for r in est._predictors for p in r))}


def is_trees_dir(folder: str | Path) -> bool:
    """A trial or model folder holding a booster (its ONNX file and spec), not a network."""
    import json

    spec = Path(folder) / SPEC_FILE
    if not spec.exists():
        return False
    try:
        return json.loads(spec.read_text()).get("family") == FAMILY
    except ValueError:
        return False
