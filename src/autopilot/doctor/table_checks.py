"""Checks only a CSV table allows, on its raw columns (data.tables.RawTable):
ID-like columns, mostly-missing columns, a label leaked into a feature, and
train/test distribution shift per column.

The leak check asks of every used column alone: fitted on the training rows
(the majority label, or the mean target, per value or per quantile bin),
how well does it predict validation? A column that alone predicts the label
almost perfectly is a copy of it, or computed from it, or recorded after
the fact; a model would learn that shortcut and fail in production.
"""
from __future__ import annotations

import time

import numpy as np

from ..data.preprocess import CellError, _booleans, _date_parts, _keys, _numbers
from .findings import CheckResult, Finding

LEAK_ACCURACY = 0.99  # classification: this share of validation rows right from one column...
LEAK_MARGIN = 0.05  # ...and this much above always answering the commonest class
LEAK_R2 = 0.98  # regression: the validation R² of one column's binned means
BINS = 32  # quantile bins of a numeric column for the one-column predictor
MOSTLY_MISSING = 0.5  # warn: more than half of a column's cells are missing
SHIFT_DISTANCE = 0.2  # total variation (categories) or KS statistic (numbers) between train and test...
SHIFT_P = 1e-3  # ...and this unlikely under one distribution
MIN_ROWS = 10  # validation / test rows needed to judge


def _codes(col, cells: list, train_cells: list) -> np.ndarray | None:
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


def _one_column_score(codes: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, task: str) -> float:
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


def check_target_leak(ds, splits: dict) -> list[Finding]:
    t, task = ds.table, ds.task
    train, val = splits["train"], splits["val"]
    if len(val) < MIN_ROWS:
        return []
    if task == "regression":
        bar = LEAK_R2
    else:
        majority = float(np.bincount(ds.y[val]).max() / len(val))
        bar = max(LEAK_ACCURACY, majority + LEAK_MARGIN)
    leaks = {}
    for col, cells in zip(t.schema, t.columns):
        if not col.used:
            continue
        codes = _codes(col, cells, [cells[i] for i in train])
        if codes is None:
            continue
        score = _one_column_score(codes, ds.y, train, val, task)
        if score >= bar:
            leaks[col.name] = round(score, 4)
    if not leaks:
        return []
    metric = "R²" if task == "regression" else "accuracy"
    names = ", ".join(repr(n) for n in leaks)
    return [Finding("target-leak", "error", {"columns": leaks, "metric": metric, "threshold": bar},
                    f"{names} alone predict(s) the label {t.label!r} almost perfectly on validation "
                    f"({metric} {max(leaks.values()):.3f}): a copy of the label, computed from it, or known only after it",
                    f"drop {names} from the CSV unless it is really known when predicting (then pass --force)")]


def check_dropped_columns(ds) -> list[Finding]:
    dropped = {c.name: c.reason for c in ds.table.schema if c.type in ("id", "text")}
    if not dropped:
        return []
    names = ", ".join(repr(n) for n in dropped)
    return [Finding("id-columns", "info", {"columns": dropped},
                    f"{names}: near-unique values that identify rows (IDs, names) or free text; dropped from the features",
                    "nothing to do if they are identifiers; for free text, derive categories from it before the run")]


def check_mostly_missing(ds) -> list[Finding]:
    n = len(ds.y)
    heavy = {c.name: round(c.missing / n, 3) for c in ds.table.schema if c.used and c.missing > MOSTLY_MISSING * n}
    if not heavy:
        return []
    names = ", ".join(repr(k) for k in heavy)
    return [Finding("mostly-missing", "warn", {"missing_share": heavy},
                    f"{names}: more than {MOSTLY_MISSING:.0%} of cells missing; the model mostly sees the imputed "
                    "value and the missing indicator",
                    "check how the column was exported; drop it if missing means nothing")]


def _tv_distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Total variation distance of two code samples and a chi-square p-value."""
    from scipy.stats import chi2_contingency

    values = np.union1d(a, b)
    ca = np.asarray([(a == v).sum() for v in values])
    cb = np.asarray([(b == v).sum() for v in values])
    tv = 0.5 * float(np.abs(ca / ca.sum() - cb / cb.sum()).sum())
    if len(values) < 2:
        return tv, 1.0
    return tv, float(chi2_contingency(np.stack([ca, cb]) + 0.5)[1])


def check_shift(ds, splits: dict) -> list[Finding]:
    from scipy.stats import ks_2samp

    train, test = splits["train"], splits["test"]
    if len(test) < MIN_ROWS:
        return []
    shifted = {}
    for col, cells in zip(ds.table.schema, ds.table.columns):
        if not col.used:
            continue
        codes = _codes(col, cells, [cells[i] for i in train])
        if codes is None:
            continue
        a, b = codes[train], codes[test]
        if col.type == "number":
            stat, p = ks_2samp(a, b)
        else:
            stat, p = _tv_distance(a, b)
        if stat > SHIFT_DISTANCE and p < SHIFT_P:
            shifted[col.name] = {"distance": round(float(stat), 3), "p": float(p)}
    if not shifted:
        return []
    names = ", ".join(repr(n) for n in shifted)
    return [Finding("column-shift", "warn", {"columns": shifted},
                    f"{names}: distributed differently in the test split than in training (KS statistic or total "
                    f"variation > {SHIFT_DISTANCE}, p < {SHIFT_P:g}); test accuracy may not carry over",
                    "check how the test rows were chosen (by date? by source?); a seeded random split avoids this")]


TABLE_CHECKS = ("id-columns", "mostly-missing", "target-leak", "column-shift")


def run_table_checks(ds, splits: dict) -> tuple[list[Finding], list[CheckResult]]:
    """Findings and one CheckResult per check; nothing when ds is not a CSV table."""
    if getattr(ds, "table", None) is None:
        return [], []
    findings, results = [], []
    checks = [("id-columns", lambda: check_dropped_columns(ds)), ("mostly-missing", lambda: check_mostly_missing(ds)),
              ("target-leak", lambda: check_target_leak(ds, splits)), ("column-shift", lambda: check_shift(ds, splits))]
    for name, check in checks:
        t0 = time.perf_counter()
        found = check()
        findings += found
        results.append(CheckResult(name, "found" if found else "ok", time.perf_counter() - t0))
    return findings, results
