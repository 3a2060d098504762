"""Checks every loaded data set must pass before anything trains on it.

Each failure is a DataError with one line: what is wrong and where. The file
loaders check what only they can locate (CSV line numbers, file names); the
checks here work on any Dataset, including one built in Python by a user.
"""
from __future__ import annotations

import numpy as np

from .dataset import DataError, Dataset

# Every class needs one example in each of train, val and test.
MIN_PER_CLASS = 3
_NDIM = {"table": 2, "signal": 3, "image": 4}


def one_line(text: object) -> str:
    """Collapse whitespace so a message from a library stays on one line."""
    return " ".join(str(text).split())


def check_finite(x: np.ndarray, kind: str, where: str, feature_names: list[str] | None = None) -> None:
    """Raise on the first NaN or inf, naming the column (tables) or feature index."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    pos = tuple(int(i) for i in np.argwhere(bad)[0])
    value = x[pos]
    total = int(bad.sum())
    if kind == "table" or x.ndim == 2:
        col = feature_names[pos[1]] if feature_names else f"feature {pos[1]}"
        at = f"column {col!r}" if feature_names else col
        at += f" (example {pos[0]})"
    else:
        at = f"example {pos[0]} at feature index {list(pos[1:])}"
    raise DataError(f"{where}: non-finite value {value} in {at}; {total} non-finite value(s) in all")


def check_class_counts(y: np.ndarray, classes: list[str], where: str) -> None:
    present = [c for c, n in zip(classes, np.bincount(y, minlength=len(classes))) if n > 0]
    if len(present) < 2:
        found = ", ".join(repr(c) for c in present) or "none"
        raise DataError(f"{where}: fewer than 2 classes (found {found}); a classifier needs at least 2")
    counts = np.bincount(y, minlength=len(classes))
    small = [f"class {c!r} has {int(n)}" for c, n in zip(classes, counts) if n < MIN_PER_CLASS]
    if small:
        raise DataError(
            f"{where}: too few examples: {', '.join(small)}; every class needs at least "
            f"{MIN_PER_CLASS} (one each for train, val and test)"
        )


MIN_REGRESSION_ROWS = 10  # train, val and test each need a few targets


def _validate_regression(ds: Dataset, where: str) -> Dataset:
    check_finite(ds.X, ds.kind, where, ds.feature_names)
    if not np.isfinite(ds.y).all():
        raise DataError(f"{where}: non-finite regression target at example {int(np.argmax(~np.isfinite(ds.y)))}")
    if len(ds) < MIN_REGRESSION_ROWS:
        raise DataError(f"{where}: {len(ds)} examples; regression needs at least {MIN_REGRESSION_ROWS}")
    if float(ds.y.max()) == float(ds.y.min()):
        raise DataError(f"{where}: every regression target is {float(ds.y[0]):g}; there is nothing to learn")
    return ds


def validate(ds: Dataset) -> Dataset:
    """Raise DataError if `ds` cannot be trained on; return it unchanged otherwise."""
    where = ds.source or ds.name
    if ds.kind not in _NDIM:
        raise DataError(f"{where}: unknown kind {ds.kind!r}; expected one of {', '.join(_NDIM)}")
    if ds.X.ndim != _NDIM[ds.kind]:
        raise DataError(f"{where}: {ds.kind} data needs X with {_NDIM[ds.kind]} dimensions, got shape {ds.X.shape}")
    y_dtype = np.float32 if ds.task == "regression" else np.int64
    pixels = ds.kind == "image" and ds.X.dtype == np.uint8  # 0..255, always in range and finite
    if (ds.X.dtype != np.float32 and not pixels) or ds.y.dtype != y_dtype:
        raise DataError(f"{where}: X must be float32 (or uint8 for images) and y {np.dtype(y_dtype).name}, "
                        f"got {ds.X.dtype} and {ds.y.dtype}")
    if ds.y.ndim != 1 or len(ds.y) != len(ds.X):
        raise DataError(f"{where}: X has {len(ds.X)} rows but y has shape {ds.y.shape}")
    if len(ds) == 0:
        raise DataError(f"{where}: no examples")
    if ds.task == "regression":
        return _validate_regression(ds, where)
    if ds.y.min() < 0 or ds.y.max() >= len(ds.classes):
        raise DataError(f"{where}: labels must be in 0..{len(ds.classes) - 1} (one per class name)")
    if not pixels:
        check_finite(ds.X, ds.kind, where, ds.feature_names)
    if ds.kind == "image" and not pixels and (ds.X.min() < 0 or ds.X.max() > 1):
        raise DataError(f"{where}: image values must be in [0, 1], got [{ds.X.min():g}, {ds.X.max():g}]")
    check_class_counts(ds.y, ds.classes, where)
    if ds.official_test is not None:
        t = np.asarray(ds.official_test)
        if t.ndim != 1 or t.dtype.kind not in "iu" or len(t) == 0 or t.min() < 0 or t.max() >= len(ds) \
                or len(np.unique(t)) != len(t):
            raise DataError(f"{where}: official_test must be distinct example indices in 0..{len(ds) - 1}")
    return ds
