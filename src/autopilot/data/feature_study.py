"""Which preprocessing a table gets: the encoding and scaling choices
(data.preprocess.CHOICES) each fitted on the training rows and scored by a
fast linear model cross-validated on train+validation; another choice than
the default (one-hot, standard) is kept only when it beats the default by
MIN_PAIRED_SE paired standard errors over the folds; then the columns whose
permutation importance on validation is nil are dropped.

Why before the network search and not inside each trial: one preprocessing
per run keeps the shipped model's input, the drift reference, compression
and retraining on one feature vector. A linear proxy is where encodings and
scalings differ most (a network or trees can undo a monotone rescaling);
the importances come from gradient-boosted trees, which see interactions.
"""
from __future__ import annotations

import numpy as np

from ..stats import fold_gain
from .column_signal import column_codes, one_column_score
from .preprocess import CHOICES, DEFAULT_CHOICES, feature_names, fit_transform

PROXY_ROWS = 5000  # training rows the proxies see: the choice needs a trend, not every row
MIN_VAL_FOR_SELECTION = 50  # fewer validation rows cannot tell nil from small
REPEATS = 5  # permutations per column
PROXY_FOLDS = 5  # the choice is cross-validated on train+validation
# A choice other than the default must beat it by this many standard errors
# of the paired per-fold differences (the same folds for every candidate),
# as a small table's search must beat its default trials (search/select.py).
# Why: on bench/tables.py's 1500-row customers table quantile scaling won
# the proxy's cross-validation by 0.16 points (2 rows of 1275), a rank
# decided by noise that every trial of the run then inherits.
MIN_PAIRED_SE = 2.0


def _score(task: str, model, X, y) -> float:
    pred = model.predict(X)
    if task == "regression":
        ss = float(((y - y.mean()) ** 2).sum()) or 1.0
        return 1.0 - float(((y - pred) ** 2).sum()) / ss
    return float((pred == y).mean())


def _proxy_score(task: str, X: np.ndarray, y: np.ndarray, splits: dict, rng) -> list[float]:
    """The proxy's score on each of PROXY_FOLDS folds of train+validation
    (the same folds for every candidate). One validation split ranked by
    luck: on a 1500-row table, quantile scaling won by one row of 225."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import KFold, StratifiedKFold

    rows = _subsample(np.concatenate([splits["train"], splits["val"]]), rng)
    Xr, yr = X[rows], y[rows]
    if task == "regression":
        folds = KFold(PROXY_FOLDS, shuffle=True, random_state=0).split(Xr)
    else:
        k = max(2, min(PROXY_FOLDS, int(np.bincount(yr).min())))
        folds = StratifiedKFold(k, shuffle=True, random_state=0).split(Xr, yr)
    scores = []
    for fit_rows, held_out in folds:
        model = Ridge(alpha=1.0) if task == "regression" else LogisticRegression(max_iter=300)
        model.fit(Xr[fit_rows], yr[fit_rows])
        scores.append(_score(task, model, Xr[held_out], yr[held_out]))
    return [float(x) for x in scores]


def _subsample(idx: np.ndarray, rng, n: int = PROXY_ROWS) -> np.ndarray:
    return np.sort(rng.choice(idx, n, replace=False)) if len(idx) > n else idx


def candidates(table) -> list[dict]:
    """The choices that matter for this table's column types."""
    types = {c.type for c in table.schema if c.used}
    cats = CHOICES["categories"] if "category" in types else (DEFAULT_CHOICES["categories"],)
    scales = CHOICES["scaling"] if types & {"number", "datetime"} else (DEFAULT_CHOICES["scaling"],)
    return [{**DEFAULT_CHOICES, "categories": c, "scaling": s} for c in cats for s in scales]


def _alone_says_nothing(table, name: str, y: np.ndarray, splits: dict, task: str) -> tuple[bool, float, float]:
    """(nil, score, baseline): the column alone, as the doctor's leak check
    fits it, does no better on validation than a constant answer."""
    j = table.names.index(name)
    cells, train, val = table.columns[j], splits["train"], splits["val"]
    codes = column_codes(table.schema[j], cells, [cells[i] for i in train])
    if codes is None:
        return False, float("nan"), float("nan")
    score = one_column_score(codes, y, train, val, task)
    baseline = 0.0 if task == "regression" else float(np.bincount(y[val]).max() / len(val))
    return score <= baseline, score, baseline


def nil_columns(pre: dict, X: np.ndarray, y: np.ndarray, splits: dict, rng, table) -> dict[str, str]:
    """{column: why} for the used columns whose permutation never lowers
    the validation score of gradient-boosted trees *and* which alone predict
    no better than a constant. Both, because trees lean on one of two
    correlated columns: the other's permutation importance is nil although
    it carries the same information (the model search may use it)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    task = pre["task"]
    va = splits["val"]
    if len(va) < MIN_VAL_FOR_SELECTION or len(pre["columns"]) < 2:
        return {}
    va = _subsample(va, rng, PROXY_ROWS // 2)
    tr = _subsample(splits["train"], rng)
    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    model = cls(max_iter=60, random_state=0).fit(X[tr], y[tr])
    Xv, yv = X[va].copy(), y[va]
    base = _score(task, model, Xv, yv)
    found = {}
    start = 0
    for step in pre["columns"]:
        width = len(feature_names(step))
        cols, start = list(range(start, start + width)), start + width
        drops = []
        for _ in range(REPEATS):
            perm = rng.permutation(len(va))
            Xp = Xv.copy()
            Xp[:, cols] = Xv[perm][:, cols]
            drops.append(base - _score(task, model, Xp, yv))
        if max(drops) > 0.0:
            continue
        nil, alone, baseline = _alone_says_nothing(table, step["name"], y, splits, task)
        if nil:
            found[step["name"]] = (f"nil importance on validation: shuffling it changes the score by at most "
                                   f"{max(drops):+.4f} over {REPEATS} shuffles, and alone it scores {alone:.3f}, "
                                   f"no better than a constant answer ({baseline:.3f})")
    if len(found) == len(pre["columns"]):
        return {}  # nothing informative at all: keep everything, the doctor will say so
    return found


def choose(table, y: np.ndarray, splits: dict, task: str, classes: list[str] | None, seed: int = 0
           ) -> tuple[dict, np.ndarray]:
    """(preprocessing, X) with `pre["study"]`: every candidate's score and
    what the selection dropped. One thread for scikit-learn: its OpenMP
    threads spin-wait, and on a busy 2-core machine that made a 5000-row
    boosted-trees fit take a minute instead of a second."""
    import sklearn.ensemble  # noqa: F401 - loaded first: threadpoolctl limits only libraries already loaded
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _choose(table, y, splits, task, classes, seed)


def _choose(table, y: np.ndarray, splits: dict, task: str, classes: list[str] | None, seed: int
            ) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    tried = []
    best = default = None
    for choices in candidates(table):  # the default first
        pre, X = fit_transform(table, y, splits, task, choices, classes)
        folds = _proxy_score(task, X, y, splits, rng)
        score = float(np.mean(folds))
        tried.append({"choices": choices, "val_score": score})
        if default is None:
            best = default = (score, pre, X, folds)
        elif score > best[0] + 1e-9 and fold_gain(folds, default[3]).clear_by(MIN_PAIRED_SE):
            best = (score, pre, X, folds)
    _, pre, X, _ = best
    nil = nil_columns(pre, X, y, splits, rng, table)
    if nil:
        pre, X = fit_transform(table, y, splits, task, {**pre["choices"], "select": "nil-importance"}, classes,
                               exclude=nil)
    pre["study"] = {"proxy": "ridge" if task == "regression" else "logistic regression",
                    "metric": "r2" if task == "regression" else "accuracy", "candidates": tried,
                    "nil_importance": nil}
    return pre, X
