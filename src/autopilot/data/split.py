"""Stratified, seeded train/val/test splits as index arrays, and their .npz form.

Splitting is done per class by hand rather than with sklearn's
train_test_split: that way every class with >= 3 examples is guaranteed at
least one example in each of train, val and test, which sklearn does not
promise for tiny classes.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset

SPLITS = ("train", "val", "test")


def _share(n: int, frac: float) -> int:
    """Examples of a class of size n for a held-out part: round half up, >= 1."""
    return 0 if frac == 0 else max(1, int(np.floor(frac * n + 0.5)))


def _stratified(y: np.ndarray, pool: np.ndarray, rng: np.random.Generator, val: float, test: float,
                parts: dict[str, list[np.ndarray]]) -> None:
    """Deal the indices `pool` of each class into parts, in place."""
    need = 1 + (val > 0) + (test > 0)
    for c in np.unique(y[pool]):  # sorted, so the RNG is consumed in a fixed order
        idx = rng.permutation(pool[y[pool] == c])
        n = len(idx)
        if n < need:
            raise DataError(f"class {c} has {n} example(s); a train/val/test split needs at least {need}")
        n_val, n_test = _share(n, val), _share(n, test)
        while n - n_val - n_test < 1:  # train keeps at least one; shrink the larger part
            if n_val >= n_test and n_val > 1:
                n_val -= 1
            else:
                n_test -= 1
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])


def split(y: np.ndarray, *, seed: int = 0, val: float = 0.15, test: float = 0.15,
          official_test: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Sorted int64 indices for "train", "val" and "test" that partition range(len(y)).

    Same y and seed -> same split, on any machine (numpy's PCG64 via default_rng).
    With `official_test` (e.g. Dataset.official_test), those indices are the
    test split, `test` is ignored, and validation is `val` of the remaining
    examples, stratified and seeded.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val and test must be fractions with val + test < 1, got {val} and {test}")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    if y.dtype.kind == "f":  # regression targets: stratified by quantile bins
        y = target_bins(y)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    if official_test is None:
        _stratified(y, np.arange(len(y)), rng, val, test, parts)
    else:
        fixed = np.unique(np.asarray(official_test, dtype=np.int64))
        if len(fixed) == 0 or fixed[0] < 0 or fixed[-1] >= len(y):
            raise DataError(f"official test indices must be in 0..{len(y) - 1} and not empty")
        rest = np.setdiff1d(np.arange(len(y)), fixed)
        missing = np.setdiff1d(np.unique(y), np.unique(y[fixed]))
        if len(missing):
            raise DataError(f"the official test split has no example of class {missing[0]}")
        parts["test"].append(fixed)
        _stratified(y, rest, rng, val, 0.0, parts)
    return {s: np.sort(np.concatenate(parts[s])).astype(np.int64) if parts[s] else np.zeros(0, np.int64)
            for s in SPLITS}


def target_bins(y: np.ndarray, rows_per_bin: int = 20, max_bins: int = 10) -> np.ndarray:
    """Regression targets as quantile bins, so every split covers the range."""
    bins = max(1, min(max_bins, len(y) // rows_per_bin))
    edges = np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, y, side="right").astype(np.int64)


TEST_SPLITS = ("seeded", "official")


def official_test(ds: Dataset, test_split: str = "seeded") -> np.ndarray | None:
    """What to pass as split(official_test=...) for `--test-split`:
    None for "seeded", the data set's fixed test indices for "official"."""
    if test_split not in TEST_SPLITS:
        raise DataError(f"unknown test split {test_split!r}; expected one of {', '.join(TEST_SPLITS)}")
    if test_split == "seeded":
        return None
    if ds.official_test is None:
        raise DataError(
            f"{ds.source or ds.name} has no official test split (only Fashion-MNIST, IDX pairs with a t10k/test pair "
            f"and CIFAR binaries carry one); drop --test-split official to use the seeded split"
        )
    return ds.official_test


def save_splits(path: str | Path, splits: dict[str, np.ndarray]) -> None:
    """Write atomically (tmp file then rename) so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{s: np.asarray(splits[s], dtype=np.int64) for s in SPLITS})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_splits(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [s for s in SPLITS if s not in z.files]
            if missing:
                raise DataError(f"{path}: not a splits file, missing {', '.join(missing)}")
            return {s: z[s].astype(np.int64) for s in SPLITS}
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read splits {path}: {e}") from None
