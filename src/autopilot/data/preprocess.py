"""Raw table rows -> the numeric feature vector the model takes, from a
preprocessing fitted on the training rows and stored as JSON.

numpy only (no torch, no scikit-learn): `autopilot serve`, `predict` and
`monitor` apply exactly the fitted steps training applied, from the JSON.

Per used column (data.table_types):
  number    missing -> the training median, plus a 0/1 "missing" column when
            training had missing cells; standard (mean/std) or quantile
            scaling (training quantiles -> uniform, centred, unit variance)
  boolean   0/1, missing -> the training mean (+ missing column)
  datetime  year, month, day of week (and hour when times are given), each
            scaled like a number (+ missing column)
  category  one-hot over the values seen at least MIN_COUNT times in
            training plus "(unknown)" (unseen and rare values; missing is
            its own value when seen), or target encoding: the smoothed
            class shares (mean target for regression) of each value,
            cross-fitted on the training rows so no row sees its own label
"""
from __future__ import annotations

import math

import numpy as np

from .table_types import (FLOAT32_MAX, HIGH_CARDINALITY, category_key, is_missing, parse_bool, parse_datetime,
                          parse_float)

VERSION = 1
DEFAULT_CHOICES = {"categories": "onehot", "scaling": "standard", "select": "none"}
CHOICES = {"categories": ("onehot", "target"), "scaling": ("standard", "quantile"), "select": ("none", "nil-importance")}
MIN_COUNT = 2  # a category seen once in training cannot be learnt; it joins "(unknown)"
UNKNOWN, MISSING_KEY = "(unknown)", "(missing)"
SMOOTHING = 10.0  # target encoding: a value seen n times trusts its own mean n/(n+10)
FOLDS = 5  # cross-fitting of target encoding on the training rows
QUANTILES = 101
DATE_PARTS = ("year", "month", "dow", "hour")


class CellError(ValueError):
    """A cell a fitted column cannot read; `column` and `row` say where."""

    def __init__(self, column: str, row: int, message: str):
        super().__init__(f"column {column!r}: {message}")
        self.column, self.row, self.message = column, row, message


# ---------------------------------------------------------------- parsing

def _numbers(name: str, cells: list) -> np.ndarray:
    """float64 with NaN where missing. numpy parses a whole column at once;
    the cell-by-cell loop below runs only to name a bad cell."""
    if bool not in set(map(type, cells)):
        try:  # None, "nan" and NaN are missing; any other missing token ("NA", "?") fails here
            out = np.fromiter(map(float, ["nan" if c is None else c for c in cells]), np.float64, len(cells))
        except (ValueError, TypeError):
            out = None
        if out is not None:
            present = out[~np.isnan(out)]
            if np.isfinite(present).all() and (np.abs(present) <= FLOAT32_MAX).all():
                return out
    out = np.full(len(cells), np.nan)
    for i, c in enumerate(cells):
        if is_missing(c):
            continue
        v = parse_float(c)
        if v is None or isinstance(c, bool):
            raise CellError(name, i, f"expected a number, got {c!r}")
        out[i] = v
    return out


def _booleans(name: str, cells: list) -> np.ndarray:
    out = np.full(len(cells), np.nan)
    for i, c in enumerate(cells):
        if is_missing(c):
            continue
        v = parse_bool(c)
        if v is None:
            raise CellError(name, i, f"expected true/false (or yes/no), got {c!r}")
        out[i] = v
    return out


def _date_parts(name: str, cells: list, parts: tuple) -> np.ndarray:
    index = [("year", "month", "day", "dow", "hour").index(p) for p in parts]
    empty = (math.nan,) * len(parts)
    memo: dict = {None: empty}  # dates repeat: parse each once
    rows = []
    for i, c in enumerate(cells):
        row = memo.get(c) if isinstance(c, str) or c is None else None
        if row is None:
            if is_missing(c):
                row = empty
            else:
                d = parse_datetime(c)
                if d is None:
                    raise CellError(name, i, f"expected a date like 2024-05-31 or 2024-05-31 14:00, got {c!r}")
                row = tuple(float(d[j]) for j in index)
            if isinstance(c, str):
                memo[c] = row
        rows.append(row)
    return np.asarray(rows, dtype=np.float64).reshape(len(cells), len(parts))


def _keys(cells: list) -> list[str]:
    memo: dict = {}  # a category column repeats few values: parse each once
    out = []
    for c in cells:
        try:
            k = memo[c]
        except KeyError:
            k = memo[c] = MISSING_KEY if is_missing(c) else category_key(c)
        except TypeError:  # an unhashable JSON value; the type check refuses it before, this is belt and braces
            k = category_key(c)
        out.append(k)
    return out


# ---------------------------------------------------------------- scaling

def _fit_scale(v: np.ndarray, kind: str) -> dict:
    if kind == "quantile" and len(np.unique(v)) > 2:
        return {"kind": "quantile", "points": [float(p) for p in np.quantile(v, np.linspace(0, 1, QUANTILES))]}
    std = float(v.std())
    return {"kind": "standard", "mean": float(v.mean()), "std": std if std > 1e-12 else 1.0}


def _scale(v: np.ndarray, s: dict) -> np.ndarray:
    if s["kind"] == "quantile":
        pts = np.asarray(s["points"])
        u = np.interp(v, pts, np.linspace(0, 1, len(pts)))
        return (u - 0.5) * math.sqrt(12.0)  # uniform on [0, 1] -> mean 0, variance 1
    return (v - s["mean"]) / s["std"]


def _fill(values: np.ndarray, fill) -> tuple[np.ndarray, np.ndarray]:
    miss = np.isnan(values)
    return np.where(miss, fill, values), miss


# ---------------------------------------------------------------- fitting

def _fit_numeric(step: dict, values: np.ndarray, scaling: str) -> dict:
    """values: (n_train,) or (n_train, parts) with NaN where missing."""
    v = values.reshape(len(values), -1)
    miss = np.isnan(v)
    step["indicator"] = bool(miss.any())
    fills, scales = [], []
    for j in range(v.shape[1]):
        col = v[~miss[:, j], j]
        fill = float(np.median(col)) if len(col) else 0.0
        fills.append(fill)
        scales.append(_fit_scale(np.where(miss[:, j], fill, v[:, j]), scaling))
    step["fill"], step["scale"] = fills, scales
    return step


def _target_matrix(y: np.ndarray, task: str, n_classes: int) -> np.ndarray:
    """What target encoding averages: one-hot classes (the first dropped when
    there are two: its share is 1 minus the other's), or the target itself."""
    if task == "regression":
        return y.reshape(-1, 1).astype(np.float64)
    onehot = np.eye(n_classes)[y]
    return onehot[:, 1:] if n_classes == 2 else onehot


def _encode_table(keys: list[str], T: np.ndarray, prior: np.ndarray) -> dict[str, list[float]]:
    index: dict[str, int] = {}
    codes = np.asarray([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)
    sums = np.zeros((len(index), T.shape[1]))
    np.add.at(sums, codes, T)
    counts = np.bincount(codes, minlength=len(index))[:, None]
    enc = (sums + SMOOTHING * prior) / (counts + SMOOTHING)
    return {k: [float(v) for v in enc[i]] for k, i in index.items()}


def _fit_category(step: dict, keys: list[str], encoding: str, T: np.ndarray) -> dict:
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    kept = sorted(k for k, n in counts.items() if n >= MIN_COUNT)
    if encoding == "onehot" and len(kept) > HIGH_CARDINALITY:
        encoding = "target"  # hundreds of one-hot columns of a few rows each learn nothing
    step["encoding"], step["values"] = encoding, kept
    if encoding == "onehot":
        # An "(unknown)" column only when training has rare values to learn it
        # from; otherwise an unseen value is all zeros: none of the known ones.
        step["other"] = any(counts[k] < MIN_COUNT for k in counts)
    if encoding == "target":
        prior = T.mean(0)
        known = set(kept)
        table = _encode_table([k if k in known else UNKNOWN for k in keys], T, prior)
        step["table"] = {k: table[k] for k in kept}
        step["unknown"] = table.get(UNKNOWN, [float(v) for v in prior])
        step["prior"] = [float(v) for v in prior]
    return step


def feature_names(step: dict) -> list[str]:
    """Names of the features a fitted column produces, in order."""
    name, t = step["name"], step["type"]
    if t == "number":
        out = [name]
    elif t == "boolean":
        out = [name]
    elif t == "datetime":
        out = [f"{name}:{p}" for p in step["parts"]]
    elif step["encoding"] == "onehot":
        out = [f"{name}={v}" for v in step["values"]] + ([f"{name}={UNKNOWN}"] if step.get("other") else [])
    else:
        out = [f"{name}:target" if len(step["unknown"]) == 1 else f"{name}:target[{i}]" for i in range(len(step["unknown"]))]
    if step.get("indicator"):
        out.append(f"{name}:missing")
    return out


def fit(table, y: np.ndarray, train: np.ndarray, task: str, choices: dict | None = None,
        classes: list[str] | None = None, exclude: dict[str, str] | None = None) -> dict:
    """The preprocessing JSON, fitted on rows `train` of a data.tables.RawTable.
    `exclude` names used columns to leave out, with the reason."""
    exclude = exclude or {}
    choices = {**DEFAULT_CHOICES, **(choices or {})}
    n_classes = len(classes) if classes else (int(y.max()) + 1 if task == "classification" else 0)
    T = _target_matrix(_standardise(y[train], task), task, n_classes)
    steps, dropped = [], []
    for col, cells in zip(table.schema, table.columns):
        if not col.used or col.name in exclude:
            dropped.append({"name": col.name, "type": col.type, "reason": exclude.get(col.name, col.reason)})
            continue
        tr = [cells[i] for i in train]
        step = {"name": col.name, "type": col.type}
        if col.type == "number":
            _fit_numeric(step, _numbers(col.name, tr), choices["scaling"])
        elif col.type == "boolean":
            b = _booleans(col.name, tr)
            step["indicator"] = bool(np.isnan(b).any())
            step["fill"] = [float(np.nanmean(b))] if (~np.isnan(b)).any() else [0.0]
        elif col.type == "datetime":
            parts = _date_parts(col.name, tr, DATE_PARTS)
            # Only the parts that vary in training: a single year says nothing.
            varying = [p for j, p in enumerate(DATE_PARTS) if len(np.unique(parts[:, j][~np.isnan(parts[:, j])])) > 1]
            step["parts"] = varying or ["dow"]
            _fit_numeric(step, _date_parts(col.name, tr, tuple(step["parts"])), choices["scaling"])
        else:
            _fit_category(step, _keys(tr), choices["categories"], T)
            step["indicator"] = False
        steps.append(step)
    pre = {"version": VERSION, "task": task, "label": table.label, "choices": choices, "columns": steps,
           "dropped": dropped}
    pre["features"] = [f for s in steps for f in feature_names(s)]
    if task == "regression":
        pre["target"] = {"mean": float(y[train].mean()), "std": float(y[train].std()) or 1.0}
    return pre


def _standardise(y: np.ndarray, task: str) -> np.ndarray:
    if task != "regression":
        return y
    return (y - y.mean()) / (y.std() or 1.0)


# ---------------------------------------------------------------- applying

def _apply(step: dict, cells: list) -> np.ndarray:
    """(N, width) float64 features of one column."""
    name, t = step["name"], step["type"]
    if t in ("number", "boolean", "datetime"):
        if t == "number":
            v = _numbers(name, cells).reshape(-1, 1)
        elif t == "boolean":
            v = _booleans(name, cells).reshape(-1, 1)
        else:
            v = _date_parts(name, cells, tuple(step["parts"]))
        miss = np.isnan(v).any(1, keepdims=True)
        filled = np.where(np.isnan(v), np.asarray(step["fill"]), v)
        if step.get("scale"):
            filled = np.stack([_scale(filled[:, j], s) for j, s in enumerate(step["scale"])], 1)
        return np.hstack([filled, miss.astype(np.float64)]) if step.get("indicator") else filled
    keys = _keys(cells)
    if step["encoding"] == "onehot":
        index = {v: i for i, v in enumerate(step["values"])}
        out = np.zeros((len(keys), len(index) + 1))
        out[np.arange(len(keys)), [index.get(k, len(index)) for k in keys]] = 1.0
        return out if step.get("other") else out[:, :-1]
    table, unknown = step["table"], step["unknown"]
    return np.asarray([table.get(k, unknown) for k in keys], dtype=np.float64).reshape(len(keys), -1)


def transform(pre: dict, columns: dict[str, list]) -> np.ndarray:
    """float32 (N, features) from {column name: cells}; every fitted column
    must be present (callers check names first: data.preprocess.check_names)."""
    parts = [_apply(step, columns[step["name"]]) for step in pre["columns"]]
    n = len(next(iter(columns.values()))) if columns else 0
    X = np.hstack(parts) if parts else np.zeros((n, 0))
    return X.astype(np.float32)


def input_columns(pre: dict) -> list[str]:
    """The raw columns a row must (used) or may (dropped) carry."""
    return [s["name"] for s in pre["columns"]] + [d["name"] for d in pre["dropped"]]


def rows_to_columns(pre: dict, rows: list[dict]) -> dict[str, list]:
    """JSON rows -> {column: cells}; a used column a row leaves out is missing."""
    return {s["name"]: [r.get(s["name"]) for r in rows] for s in pre["columns"]}


# ---------------------------------------------------------------- training

def fit_transform(table, y: np.ndarray, splits: dict, task: str, choices: dict | None = None,
                  classes: list[str] | None = None, exclude: dict[str, str] | None = None) -> tuple[dict, np.ndarray]:
    """(preprocessing, X of every row). Training rows of target-encoded
    columns get out-of-fold encodings: fitted on the other folds only."""
    return apply_fitted(fit(table, y, np.asarray(splits["train"]), task, choices, classes, exclude), table, y, splits,
                        classes)


def apply_fitted(pre: dict, table, y: np.ndarray, splits: dict, classes: list[str] | None = None
                 ) -> tuple[dict, np.ndarray]:
    """X of every row of the table a preprocessing was fitted on, the
    training rows cross-fitted as at fitting time (a worker or a resumed
    run rebuilds the very same arrays from the stored JSON)."""
    train, task = np.asarray(splits["train"]), pre["task"]
    columns = {n: c for n, c in zip(table.names, table.columns)}
    X = transform(pre, columns).astype(np.float64)
    _cross_fit(pre, X, columns, y, train, task, classes)
    return pre, X.astype(np.float32)


def _cross_fit(pre: dict, X: np.ndarray, columns: dict, y: np.ndarray, train: np.ndarray, task: str,
               classes: list[str] | None) -> None:
    offset = 0
    targets = [(i, s) for i, s in enumerate(pre["columns"]) if s.get("encoding") == "target"]
    if not targets:
        return
    starts, pos = {}, 0
    for i, s in enumerate(pre["columns"]):
        starts[i] = pos
        pos += len(feature_names(s))
    n_classes = len(classes) if classes else (int(y.max()) + 1 if task == "classification" else 0)
    T = _target_matrix(_standardise(y[train], task), task, n_classes)
    fold = np.random.default_rng(0).permutation(len(train)) % FOLDS
    for i, step in targets:
        known = {v: j for j, v in enumerate(step["values"])}  # code len(known): "(unknown)", rare or unseen
        column = columns[step["name"]]
        codes = np.asarray([known.get(k, len(known)) for k in _keys([column[r] for r in train])])
        width, offset = len(step["unknown"]), starts[i]
        for f in range(FOLDS):
            inside, outside = fold == f, fold != f
            prior = T[outside].mean(0)
            sums = np.zeros((len(known) + 1, T.shape[1]))
            np.add.at(sums, codes[outside], T[outside])
            counts = np.bincount(codes[outside], minlength=len(known) + 1)[:, None]
            enc = (sums + SMOOTHING * prior) / (counts + SMOOTHING)  # a value absent from the other folds: the prior
            X[train[inside], offset:offset + width] = enc[codes[inside]]
