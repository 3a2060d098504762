"""An .npz file with arrays X and y as a Dataset.

The kind follows X's number of dimensions:
  2: table  (N, F)
  3: signal (N, C, L). A plain stack of (H, W) pictures is ambiguous; it is read
     as signals with H channels. Save pictures as (N, 1, H, W) to get images.
  4: image, channels last (N, H, W, C) or channels first (N, C, H, W); the
     axis of at most 4 (grey, RGB, RGBA) is the channels axis. When both
     or neither end axis could be channels, e.g. (N, 3, 32, 3) or (N, 16, 8, 8),
     the loader asks for --layout nhwc|nchw instead of guessing. uint8 pixels
     are kept as they are (they stand for pixel / 255, see Dataset); other
     values above 1 (e.g. floats 0..255) are divided by 255.
Loaded with allow_pickle=False: an array of Python objects is refused.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from . import labels as lab
from .dataset import DataError, Dataset
from .validate import check_finite, one_line

KIND_BY_NDIM = {2: "table", 3: "signal", 4: "image"}
LAYOUTS = ("nhwc", "nchw")
MAX_CHANNELS = 4  # grey, grey+alpha, RGB, RGBA


def image_layout(shape: tuple[int, ...], layout: str | None, where: str) -> str:
    """'nhwc' or 'nchw' for a 4-D image array: `layout` when given, else the
    one reading that puts at most MAX_CHANNELS on the channels axis."""
    if layout is not None:
        if layout not in LAYOUTS:
            raise DataError(f"unknown layout {layout!r}; expected nhwc (channels last) or nchw (channels first)")
        return layout
    first, last = shape[1] <= MAX_CHANNELS, shape[3] <= MAX_CHANNELS
    if first != last:
        return "nchw" if first else "nhwc"
    nhwc = f"{shape[3]} channels of {shape[1]}x{shape[2]} pixels"
    nchw = f"{shape[1]} channels of {shape[2]}x{shape[3]} pixels"
    raise DataError(f"{where}: cannot tell the layout of X with shape {tuple(shape)}: pass --layout nhwc "
                    f"({nhwc}) or --layout nchw ({nchw})")


def open_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz, or a DataError saying why it cannot be read."""
    where = str(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {where}: {one_line(e)}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"cannot read {where}: not an .npz archive (save with numpy.savez)")
    with z:
        out = {}
        for k in z.files:
            try:
                out[k] = z[k]
            except ValueError as e:  # object arrays need pickle, which we refuse
                raise DataError(f"{where}: cannot load array {k!r}: {one_line(e)}; save plain numeric or string arrays") from None
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise DataError(f"cannot read {where}: array {k!r}: {one_line(e)}") from None
    return out


def _labels(y: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    if y.dtype.kind in "biu":
        uniq, ids = np.unique(y.astype(np.int64), return_inverse=True)
        return ids.astype(np.int64), [str(int(v)) for v in uniq]
    if y.dtype.kind == "f":
        nan = np.isnan(y)
        if nan.any():
            raise DataError(f"{where}: missing label (NaN) at y[{int(np.argmax(nan))}]")
        frac = y != np.round(y)
        if frac.any():
            i = int(np.argmax(frac))
            raise DataError(f"{where}: label y[{i}] = {y[i]} is not a class id; labels must be integers or strings")
        return _labels(y.astype(np.int64), where)
    if y.dtype.kind in "US":
        cells = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in y.tolist()]
        for i, c in enumerate(cells):
            if lab.is_missing(c):
                raise DataError(f"{where}: missing label at y[{i}]")
        return lab.encode([c.strip() for c in cells])
    raise DataError(f"{where}: y has dtype {y.dtype}; labels must be integers or strings")


def load_npz(path: Path, *, layout: str | None = None) -> Dataset:
    where = str(path)
    arrays = open_npz(path)
    if "X" not in arrays or "y" not in arrays:
        raise DataError(f"{where}: needs arrays 'X' and 'y'; found: {', '.join(arrays) or 'none'}")
    x, y = arrays["X"], arrays["y"]
    if x.ndim not in KIND_BY_NDIM:
        raise DataError(
            f"{where}: X has shape {x.shape}; expected 2 (table N,F), 3 (signal N,C,L) or 4 (image N,C,H,W) dimensions"
        )
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: X has dtype {x.dtype}; features must be numbers")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: y has shape {y.shape}; expected one class label per example (N,)")
    if len(x) != len(y):
        raise DataError(f"{where}: X has {len(x)} examples but y has {len(y)} labels")
    kind = KIND_BY_NDIM[x.ndim]
    if layout is not None and kind != "image":
        raise DataError(f"{where}: --layout applies to 4-D image arrays; X has shape {x.shape}")
    if kind == "image" and image_layout(x.shape, layout, where) == "nhwc":
        x = x.transpose(0, 3, 1, 2)  # a view: the copy below makes it contiguous
    # uint8 pixels stay uint8 (see Dataset): a quarter of float32. A 0/1 mask
    # stored as uint8 is not 0..255 pixels: it becomes float 0/1 as before.
    if kind == "image" and x.dtype == np.uint8 and x.size and x.max() > 1:
        x = np.ascontiguousarray(x)
    else:
        with np.errstate(over="ignore"):
            x = np.ascontiguousarray(x, dtype=np.float32)
        check_finite(x, kind, where)
        if kind == "image" and x.size and x.max() > 1:
            lo, hi = float(x.min()), float(x.max())
            if lo < 0 or hi > 255:
                raise DataError(f"{where}: image values must be in [0, 1] or [0, 255], got [{lo:g}, {hi:g}]")
            x /= 255.0
    y, classes = _labels(y, where)
    return Dataset(name=path.stem, kind=kind, X=x, y=y, classes=classes, source=where)
