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

from ..data.column_signal import column_codes, one_column_score
from .findings import CheckResult, Finding

LEAK_ACCURACY = 0.99  # classification: this share of validation rows right from one column...
LEAK_MARGIN = 0.05  # ...and this much above always answering the commonest class
LEAK_R2 = 0.98  # regression: the validation R² of one column's binned means
MOSTLY_MISSING = 0.5  # warn: more than half of a column's cells are missing
SHIFT_DISTANCE = 0.2  # total variation (categories) or KS statistic (numbers) between train and test...
SHIFT_P = 1e-3  # ...and this unlikely under one distribution
MIN_ROWS = 10  # validation / test rows needed to judge


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
        codes = column_codes(col, cells, [cells[i] for i in train])
        if codes is None:
            continue
        score = one_column_score(codes, ds.y, train, val, task)
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
        codes = column_codes(col, cells, [cells[i] for i in train])
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


def raw_row_hashes(ds, splits: dict) -> dict[str, list[bytes]]:
    """Per split, a hash of each row's raw cells, every column included
    (IDs and other dropped ones): the duplicate and leak checks then find
    the same record twice, not two records that the features cannot tell
    apart (common, and harmless, in a table of a few letter codes)."""
    import hashlib

    cols = ds.table.columns
    out = {}
    for name, idx in splits.items():
        out[name] = [hashlib.blake2b("\x1f".join("\x1e" if c[i] is None else c[i] for c in cols).encode(),
                                     digest_size=16).digest() for i in idx]
    return out


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
