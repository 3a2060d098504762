"""The in-memory data set every later stage works on."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Kind = Literal["image", "signal", "table"]


class DataError(ValueError):
    """Bad input. The message is one line that says what is wrong and where."""


@dataclass
class Dataset:
    """Examples as one float32 array plus integer labels.

    X layout by kind (raw values: the model normalises inside itself, so the
    exported ONNX model takes exactly what the loaders produce):
      image:  (N, C, H, W), values in [0, 1]
      signal: (N, C, L)
      table:  (N, F)
    """

    name: str
    kind: Kind
    X: np.ndarray
    y: np.ndarray
    classes: list[str]
    feature_names: list[str] | None = None
    source: str = ""
    skipped: list[str] = field(default_factory=list)  # files skipped by --skip-bad

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
        h.update(str(self.X.shape).encode())
        h.update(np.ascontiguousarray(self.X, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(self.y, dtype=np.int64).tobytes())
        h.update("\0".join(self.classes).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        counts = np.bincount(self.y, minlength=self.n_classes)
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
        }
