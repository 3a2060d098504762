"""How much one raw column alone says about the label: fitted on the
training rows (the majority label, or the mean target, per value or per
quantile bin of the column), scored on other rows. Used by the doctor's
target-leak check (too much) and the feature selection (nothing at all)."""
from __future__ import annotations

import numpy as np

from .preprocess import CellError, _booleans, _date_parts, _keys, _numbers

BINS = 32  # quantile bins of a numeric column


def column_codes(col, cells: list, train_cells: list) -> np.ndarray | None:
    """Integer codes of a column's cells: a category's value, a number's
    quantile bin (edges from training), -1 for missing."""
    try:
        if col.type == "category":
            keys = _keys(cells)
            vocab = {k: i for i, k in enumerate(sorted(set(_keys(train_cells))))}
            return np.asarray([vocab.get(k, -2) for k in keys])
        if col.type == "number":
            v, tr = _numbers(col.name, cells), _numbers(col.name, train_cells)
        elif col.type == "boolean":
            v, tr = _booleans(col.name, cells), _booleans(col.name, train_cells)
        elif col.type == "datetime":
            to_days = np.asarray([366.0, 31.0, 1.0, 0.0, 1 / 24])  # an ordinal: later dates are larger
            v = _date_parts(col.name, cells, ("year", "month", "day", "dow", "hour")) @ to_days
            tr = _date_parts(col.name, train_cells, ("year", "month", "day", "dow", "hour")) @ to_days
        else:
            return None
    except CellError:
        return None
    present = tr[~np.isnan(tr)]
    if len(present) == 0:
        return None
    edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1]))
    codes = np.searchsorted(edges, v, side="right")
    return np.where(np.isnan(v), -1, codes)


def one_column_score(codes: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, task: str) -> float:
    ctr, cva = codes[train], codes[val]
    if task == "regression":
        default = float(y[train].mean())
        means = {c: float(y[train][ctr == c].mean()) for c in np.unique(ctr)}
        pred = np.asarray([means.get(c, default) for c in cva])
        ss = float(((y[val] - y[val].mean()) ** 2).sum()) or 1.0
        return 1.0 - float(((y[val] - pred) ** 2).sum()) / ss
    default = int(np.bincount(y[train]).argmax())
    best = {c: int(np.bincount(y[train][ctr == c]).argmax()) for c in np.unique(ctr)}
    pred = np.asarray([best.get(c, default) for c in cva])
    return float((pred == y[val]).mean())
