"""Facts about a split data set that the model builder needs."""
from __future__ import annotations

import numpy as np

from .dataset import Dataset


def data_info(ds: Dataset, splits: dict) -> dict:
    """Kind, shape, classes and normalisation statistics; the statistics come
    from the training split only, so nothing of validation or test leaks in."""
    Xtr = ds.X[splits["train"]]
    if ds.kind == "table":
        mean, std = Xtr.mean(0), Xtr.std(0)
    else:
        axes = (0,) + tuple(range(2, Xtr.ndim))
        mean, std = Xtr.mean(axes), Xtr.std(axes)
    std = np.where(std > 1e-6, std, 1.0)  # a constant feature stays constant, not infinite
    return {"kind": ds.kind, "input_shape": list(ds.input_shape), "n_classes": ds.n_classes,
            "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "task": ds.task}  # regression: one output, R² the score (metrics.py, train.py, models/trees.py)


def arrays(ds: Dataset, splits: dict) -> dict:
    """{"train": (X, y), "val": (X, y), "test": (X, y)} from split indices."""
    return {k: (ds.X[idx], ds.y[idx]) for k, idx in splits.items()}
