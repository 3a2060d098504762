"""The in-memory data set every later stage works on."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Kind = Literal["image", "signal", "table"]


class DataError(ValueError):
    """Bad input. The message is one line that says what is wrong and where."""


# Rows converted per step when uint8 pixels become float32: the temporary
# stays a few MB however large the data set is.
_CHUNK_ROWS = 4096


def pixels_to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels (0..255) -> float32 in [0, 1], the same values as
    `pixels.astype(np.float32) / 255.0` without a full-size float64 or second
    float32 temporary."""
    out = np.empty(pixels.shape, np.float32)
    for i in range(0, len(pixels), _CHUNK_ROWS):
        np.divide(pixels[i:i + _CHUNK_ROWS], np.float32(255.0), out=out[i:i + _CHUNK_ROWS], dtype=np.float32)
    return out


def as_float(x: np.ndarray) -> np.ndarray:
    """What a model takes: C-contiguous float32. uint8 pixels (0..255, how
    image data sets are held, a quarter of float32's memory) become [0, 1];
    other numbers are cast, without a copy when already float32. Call it on a
    batch or a split where float inputs are needed, not on a whole data set."""
    if x.dtype == np.uint8:
        return pixels_to_float(x)
    return np.ascontiguousarray(x, dtype=np.float32)


@dataclass
class Dataset:
    """Examples as one array plus integer labels.

    X layout by kind (raw values: the model normalises inside itself, so the
    exported ONNX model takes exactly what the loaders produce):
      image:  (N, C, H, W), float32 in [0, 1], or uint8 pixels 0..255 that
              stand for pixel / 255 (as_float converts a batch or a split);
              loaders of 8-bit images keep uint8, so a 50,000-image set
              holds 150 MB, not 600 MB
      signal: (N, C, L) float32
      table:  (N, F) float32
    """

    name: str
    kind: Kind
    X: np.ndarray
    y: np.ndarray
    classes: list[str]
    feature_names: list[str] | None = None
    source: str = ""
    skipped: list[str] = field(default_factory=list)  # files skipped by --skip-bad
    # Indices of the test split the data set's publishers fixed (Fashion-MNIST's
    # t10k files, CIFAR's test batch), or None; used by split(official_test=...).
    official_test: np.ndarray | None = None
    # Tables: "regression" makes y float32 targets and classes empty.
    task: str = "classification"
    # A CSV's raw cells and inferred column types (data.tables.RawTable), and
    # the preprocessing fitted on the training split that made X from them.
    table: object | None = None
    preprocess: dict | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.X.shape[1:])

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def fingerprint(self) -> str:
        """Content hash of inputs and labels: the same data gives the same id."""
        h = hashlib.sha256()
        if self.table is not None:  # a CSV: its cells, whatever preprocessing made X from them
            h.update(self.table.digest().encode())
            h.update(np.ascontiguousarray(self.y).tobytes())
            h.update("\0".join(self.classes).encode())
            return h.hexdigest()[:16]
        h.update(str(self.X.shape).encode())
        # Chunked, so hashing never makes a second full copy of X. The float
        # values are hashed: uint8 pixels give the id their float form had.
        for i in range(0, len(self.X), _CHUNK_ROWS):
            h.update(as_float(self.X[i:i + _CHUNK_ROWS]).tobytes())
        h.update(np.ascontiguousarray(self.y, dtype=np.int64).tobytes())
        h.update("\0".join(self.classes).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        counts = np.bincount(self.y, minlength=self.n_classes) if self.task == "classification" else []
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "examples": len(self),
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "class_counts": [int(c) for c in counts],
            "feature_names": self.feature_names,
            "skipped_files": len(self.skipped),
            "fingerprint": self.fingerprint(),
            "task": self.task,
        }
