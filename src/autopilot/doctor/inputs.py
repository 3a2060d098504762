"""Whatever the user passed as data -> (X, y) tensors the checks can work on.

Accepted: a pair `(X, y)` of numpy arrays or tensors; a torch-style Dataset
(anything with __len__ and __getitem__ returning `(x, y)`); an autopilot
`Dataset` (`.X`, `.y`). Large torch Datasets are sampled (seeded) rather than
read whole: the checks need a few thousand examples, not all of them, and
__getitem__ may decode an image per call.
"""
from __future__ import annotations

import numpy as np
import torch

from ..train import float_batch


def _tensor(a) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    # float64 arrays are common (numpy's default) but models are float32.
    return t.float() if t.dtype == torch.float64 else t


def is_pair(data) -> bool:
    """(X, y) rather than a Dataset of two (x, y) items: y is a sequence of scalars."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        return False
    X, y = data
    if not (hasattr(X, "__len__") and hasattr(y, "__len__")) or len(X) != len(y):
        return False
    if hasattr(y, "shape"):
        return len(y.shape) == 1 or (len(y.shape) == 2 and y.shape[1] == 1)
    return len(y) > 0 and isinstance(y[0], (int, float, np.number))


def to_tensors(data, *, max_n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(X, y, n_total). With `max_n`, at most that many examples, drawn at random
    (always the same for the same seed) when there are more."""
    pixels = False
    if hasattr(data, "X") and hasattr(data, "y") and not isinstance(data, torch.utils.data.Dataset):
        # An autopilot Dataset may hold uint8 pixels that stand for pixel / 255.
        pixels = getattr(data, "kind", None) == "image" and data.X.dtype == np.uint8
        data = (data.X, data.y)
    if is_pair(data):
        X, y = _tensor(data[0]), _tensor(data[1])
        n = len(X)
        if max_n is not None and n > max_n:
            idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False)))
            X, y = X[idx], y[idx]
        return (float_batch(X) if pixels else X), y.reshape(-1), n
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(f"data must be a pair (X, y) or a Dataset of (x, y) pairs, got {type(data).__name__}")
    n = len(data)
    if n == 0:
        raise ValueError("the data set is empty")
    idx = np.arange(n)
    if max_n is not None and n > max_n:
        idx = np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))
    xs, ys = [], []
    for i in idx:
        item = data[int(i)]
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise TypeError(f"the Dataset's items must be (x, y) pairs; item {int(i)} is a {type(item).__name__}")
        xs.append(_tensor(item[0]))
        ys.append(_tensor(item[1]).reshape(()))
    return torch.stack(xs), torch.stack(ys), n


def kind_of(X: torch.Tensor) -> str:
    """image (N,C,H,W), signal (N,C,L), table (N,F); "other" for token ids etc."""
    if not X.is_floating_point():
        return "other"
    return {2: "table", 3: "signal", 4: "image"}.get(X.ndim, "other")
