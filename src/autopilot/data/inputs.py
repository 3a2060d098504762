"""Inputs for prediction, in the exact layout and scale the model was trained on.

Accepted: an .npz (array X, else its only array), a numeric .csv (a header
row is detected and skipped), one image file, or a folder of images (searched
recursively, in sorted order). Ids are file paths for images and 0-based row
numbers for arrays and CSV rows.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .arrays import open_npz
from .dataset import DataError
from .images import IMAGE_EXTS, list_images, read_image
from .tables import parse_number, read_rows

SUPPORTED = "an .npz file, a numeric .csv file, an image file or a folder of images"


def _fit_shape(x: np.ndarray, shape: tuple[int, ...], kind: str, where: str) -> np.ndarray:
    """(N, *shape) float32. Also accepts one example without the batch axis, and
    flattened rows (N, prod(shape)), e.g. a CSV of pixels or of a signal."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: inputs have dtype {x.dtype}; expected numbers")
    if x.shape == shape:
        x = x[None]
    elif x.ndim == 2 and len(shape) > 1 and x.shape[1] == math.prod(shape):
        x = x.reshape(len(x), *shape)
    if kind == "image" and len(shape) == 3 and x.ndim == 4 and x.shape[1:] != shape:
        channels_last = (shape[1], shape[2], shape[0])
        if x.shape[1:] == channels_last:  # (N, H, W, C): the model's shape tells the layout apart
            x = x.transpose(0, 3, 1, 2)
    elif kind == "image" and len(shape) == 3 and x.ndim == 3 and x.shape == (shape[1], shape[2], shape[0]) != shape:
        x = x.transpose(2, 0, 1)[None]  # one channels-last picture
    if x.shape[1:] != shape:
        raise DataError(f"{where}: expected inputs of shape (N, {', '.join(map(str, shape))}), got {x.shape}")
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        pos = [int(i) for i in np.argwhere(bad)[0]]
        raise DataError(f"{where}: non-finite value {x[tuple(pos)]} in row {pos[0]} at feature index {pos[1:]}")
    if kind == "image" and x.size and x.max() > 1:  # same 0..255 rule as training data
        x /= 255.0
    return x


def _read_csv(p: Path, shape: tuple[int, ...], kind: str) -> np.ndarray:
    where = str(p)
    n = math.prod(shape)
    header: list[str] | None = None
    lines, rows = [], []
    for line, row in read_rows(p, where):
        if header is None and not rows and any(_not_number(c) for c in row):
            header = [h.strip() for h in row]  # first row has words in it: a header
            continue
        if len(row) > n:
            raise DataError(
                f"{where} line {line}: {len(row)} columns but the model takes {n} features; remove the extra columns (e.g. the label)"
            )
        if len(row) < n:
            raise DataError(f"{where} line {line}: expected {n} fields, got {len(row)}")
        lines.append(line)
        rows.append(row)
    if not rows:
        raise DataError(f"{where}: no data rows")
    try:
        x = np.array(rows, dtype=np.float64)
    except ValueError:  # name the first bad cell
        names = header if header and len(header) == n else [f"#{j + 1}" for j in range(n)]
        for line, row in zip(lines, rows):
            for cell, name in zip(row, names):
                parse_number(cell, where, line, name)
        raise
    return _fit_shape(x, shape, kind, where)


def _not_number(cell: str) -> bool:
    try:
        float(cell)
        return False
    except ValueError:
        return bool(cell.strip())


def _images(files: list[Path], shape: tuple[int, ...], kind: str, where: str) -> np.ndarray:
    if kind != "image" or len(shape) != 3:
        raise DataError(f"{where}: images need an image model; this model takes {kind} inputs of shape {shape}")
    c, h, w = shape
    return np.stack([read_image(f, c, (h, w)) for f in files])


def read_inputs(path: str | Path, input_shape: tuple, kind: str) -> tuple[np.ndarray, list[str]]:
    p = Path(path).expanduser()
    shape = tuple(int(d) for d in input_shape)
    if not p.exists():
        raise DataError(f"no such file or folder: {path}")
    if p.is_dir():
        files = list_images(p)
        if not files:
            raise DataError(f"{path}: no image files ({'/'.join(IMAGE_EXTS)}) in this folder")
        return _images(files, shape, kind, str(p)), [f.relative_to(p).as_posix() for f in files]
    suffix = p.suffix.lower()
    if suffix in IMAGE_EXTS:
        return _images([p], shape, kind, str(p)), [p.name]
    if suffix == ".npz":
        arrays = open_npz(p)
        if "X" in arrays:
            x = arrays["X"]
        elif len(arrays) == 1:
            x = next(iter(arrays.values()))
        else:
            raise DataError(f"{path}: no array named 'X' and {len(arrays)} arrays ({', '.join(arrays)}); name the inputs X")
        x = _fit_shape(x, shape, kind, str(p))
    elif suffix == ".csv":
        x = _read_csv(p, shape, kind)
    else:
        raise DataError(f"unsupported file type {suffix or '(no extension)'!r} for {path}; use {SUPPORTED}")
    return x, [str(i) for i in range(len(x))]
