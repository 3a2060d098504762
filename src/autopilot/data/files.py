"""User data on disk: pick the reader from what the path is."""
from __future__ import annotations

from pathlib import Path

from .arrays import load_npz
from .dataset import DataError, Dataset
from .images import load_image_folder
from .tables import load_csv

SUPPORTED = "a folder of class sub-folders of images (.png/.jpg/.jpeg/.bmp), a .csv file with a header, or an .npz file with arrays X and y"


def load_path(path: str | Path, *, label: str | None = None, skip_bad: bool = False) -> Dataset:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"no such file or folder: {path}")
    if p.is_dir():
        return load_image_folder(p, skip_bad=skip_bad)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return load_csv(p, label=label)
    if suffix == ".npz":
        return load_npz(p)
    raise DataError(f"unsupported file type {suffix or '(no extension)'!r} for {path}; use {SUPPORTED}")
