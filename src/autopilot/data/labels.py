"""Turn raw labels (strings or numbers) into class ids 0..K-1 plus class names."""
from __future__ import annotations

import numpy as np

# Cells that mean "no label" in a CSV: empty, or what pandas/numpy write for NaN.
MISSING = {"", "nan"}


def is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING


def _as_int(text: str) -> int | None:
    """'3' -> 3, '3.0' -> 3 (a float column written by pandas); otherwise None."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        f = float(text)
    except ValueError:
        return None
    return int(f) if f.is_integer() else None


def encode(labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Class ids and names. Classes are sorted: numerically when every label is an
    integer (so 2 comes before 10), else as strings."""
    ints = [_as_int(s) for s in labels]
    if all(v is not None for v in ints):
        uniq, y = np.unique(np.asarray(ints, dtype=np.int64), return_inverse=True)
        return y.astype(np.int64), [str(int(v)) for v in uniq]
    uniq, y = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    return y.astype(np.int64), [str(v) for v in uniq]
