"""Facts about a split data set that the model builder needs."""
from __future__ import annotations

import numpy as np

from .dataset import Dataset, as_float

CHUNK_ROWS = 4096  # rows read at a time for uint8 statistics: a few MB whatever the data set's size


def pixel_counts(X: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """(channels, 256) histogram of uint8 pixels X[idx] (all rows by default),
    built chunk by chunk: statistics from it are exact, and need no float (or
    even uint8) copy of the split."""
    idx = np.arange(len(X)) if idx is None else np.asarray(idx)
    counts = np.zeros((X.shape[1], 256), np.int64)
    for i in range(0, len(idx), CHUNK_ROWS):
        chunk = X[idx[i:i + CHUNK_ROWS]]
        for c in range(X.shape[1]):
            counts[c] += np.bincount(chunk[:, c].ravel(), minlength=256)
    return counts


# The float value of each pixel level, exactly as a model sees it (as_float).
PIXEL_LEVELS = as_float(np.arange(256, dtype=np.uint8)).astype(np.float64)


def counts_mean_std(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per row of a pixel_counts histogram, on the float scale."""
    n = counts.sum(-1)
    mean = counts @ PIXEL_LEVELS / n
    var = (counts * (PIXEL_LEVELS - mean[..., None]) ** 2).sum(-1) / n
    return mean, np.sqrt(var)


def channel_mean_std(X: np.ndarray, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of images or signals X[idx] (N, C, ...) on
    the float scale a model sees; a constant channel gets std 1, so it stays
    constant rather than infinite after standardising."""
    if X.dtype == np.uint8:
        mean, std = counts_mean_std(pixel_counts(X, idx))
    else:
        Xs = X if idx is None else X[idx]
        axes = (0,) + tuple(range(2, Xs.ndim))
        mean, std = Xs.mean(axes), Xs.std(axes)
    return mean, np.where(std > 1e-6, std, 1.0)


def data_info(ds: Dataset, splits: dict) -> dict:
    """Kind, shape, classes and normalisation statistics; the statistics come
    from the training split only, so nothing of validation or test leaks in."""
    if ds.kind == "table":
        Xtr = ds.X[splits["train"]]
        mean, std = Xtr.mean(0), Xtr.std(0)
        std = np.where(std > 1e-6, std, 1.0)  # a constant feature stays constant, not infinite
    else:
        mean, std = channel_mean_std(ds.X, splits["train"])
    return {"kind": ds.kind, "input_shape": list(ds.input_shape), "n_classes": ds.n_classes,
            "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "task": ds.task,  # regression: one output, R² the score (metrics.py, train.py, models/trees.py)
            # a CSV's typed columns (search/table_families.py: small ones search trees and linear models only)
            **({"csv_rows": int(len(splits["train"]) + len(splits["val"]))} if ds.table is not None else {})}


def arrays(ds: Dataset, splits: dict) -> dict:
    """{"train": (X, y), "val": (X, y), "test": (X, y)} from split indices.
    X keeps the data set's dtype: uint8 pixels stay uint8, and whoever feeds
    a model converts a batch (data.dataset.as_float, train.py)."""
    return {k: (ds.X[idx], ds.y[idx]) for k, idx in splits.items()}
