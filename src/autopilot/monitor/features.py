"""Cheap drift features: the inputs reduced to a few dozen numbers.

Drift statistics on 784 raw pixels would cost the server more than the model
does and most pixels carry the same information as their neighbours, so an
image is average-pooled to at most 7x7 per channel, a signal to at most 16
segments per channel, and a table keeps its columns (at most MAX_FEATURES).
The training reference and the server use this one function, so their
numbers are comparable.
"""
from __future__ import annotations

import math

import numpy as np

MAX_SIDE = 7        # pooled image side
MAX_SEGMENTS = 16   # pooled signal length
MAX_FEATURES = 256  # wide tables: the first columns only, to bound the cost


def _pool_matrix(n: int, out_max: int) -> tuple[np.ndarray, int]:
    """(n, k) matrix averaging consecutive blocks of ceil(n / out_max) elements."""
    block = max(1, math.ceil(n / out_max))
    k = math.ceil(n / block)
    m = np.zeros((n, k), dtype=np.float32)
    for i in range(n):
        m[i, i // block] = 1.0
    return m / m.sum(0, keepdims=True), k


class Reducer:
    """x of shape (N, *input_shape) -> (N, F) float32 features with names."""

    def __init__(self, kind: str, input_shape):
        self.kind, self.shape = kind, tuple(int(d) for d in input_shape)
        if kind == "image" and len(self.shape) == 3:
            c, h, w = self.shape
            ph, kh = _pool_matrix(h, MAX_SIDE)
            pw, kw = _pool_matrix(w, MAX_SIDE)
            # Pooling rows and columns separately is the same as averaging
            # blocks; as one (H*W, kh*kw) matrix it is a single matmul per batch.
            self.matrix = np.kron(ph, pw).astype(np.float32)
            self.names = [f"c{ci}:{r},{q}" for ci in range(c) for r in range(kh) for q in range(kw)]
            self._flat = (c, h * w)
        elif kind == "signal" and len(self.shape) == 2:
            c, length = self.shape
            self.matrix, k = _pool_matrix(length, MAX_SEGMENTS)
            self.names = [f"c{ci}:{s}" for ci in range(c) for s in range(k)]
            self._flat = (c, length)
        else:
            n = int(np.prod(self.shape))
            self.matrix = None
            self.names = [f"f{i}" for i in range(min(n, MAX_FEATURES))]
            self._flat = (1, n)
        self.names = self.names[:MAX_FEATURES]

    @property
    def n_features(self) -> int:
        return len(self.names)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(len(x), *self._flat)
        if self.matrix is not None:
            x = x @ self.matrix  # (N, C, k)
        return np.ascontiguousarray(x.reshape(len(x), -1)[:, :MAX_FEATURES])
