"""User data on disk: pick the reader from what the path is."""
from __future__ import annotations

from pathlib import Path

from .arrays import load_npz
from .cifar import cifar_folder, load_cifar
from .dataset import DataError, Dataset
from .folder import load_image_folder
from .idx import is_idx_folder, load_idx_folder
from .tables import load_csv

SUPPORTED = ("a folder of class sub-folders of images (.png/.jpg/.jpeg/.bmp), a CIFAR-10/100 binary folder, "
             "a folder of IDX files (*-images-idx3-ubyte), a .csv file with a header, or an .npz file with arrays X and y")


def load_path(path: str | Path, *, label: str | None = None, skip_bad: bool = False,
              layout: str | None = None, task: str = "auto") -> Dataset:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"no such file or folder: {path}")
    suffix = p.suffix.lower() if p.is_file() else ""
    if layout is not None and suffix != ".npz":
        raise DataError(f"--layout applies to image arrays in .npz files, not to {path}")
    if p.is_dir():
        cifar = cifar_folder(p)
        if cifar is not None:
            return load_cifar(cifar)
        if is_idx_folder(p):
            return load_idx_folder(p)
        return load_image_folder(p, skip_bad=skip_bad)
    if suffix == ".csv":
        return load_csv(p, label=label, task=task)
    if suffix == ".npz":
        return load_npz(p, layout=layout)
    raise DataError(f"unsupported file type {suffix or '(no extension)'!r} for {path}; use {SUPPORTED}")
