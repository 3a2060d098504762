"""IDX files (the MNIST / Fashion-MNIST format), read directly with numpy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian uint32 per dimension, then the values in C
order. Files may be gzip-compressed (`.gz`). A folder holding
`<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` pairs
is a data set; a pair whose prefix is `t10k` or `test` is the official test split.
"""
from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset
from .validate import one_line

# Type code -> big-endian numpy dtype, from the format's specification.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_RE = re.compile(r"^(?P<prefix>.+)-images[-.]idx3-ubyte(?P<gz>\.gz)?$")
TEST_PREFIXES = ("t10k", "test")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip data (told by its magic
    number, not its name: renamed files are common)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as e:  # a cut-off .gz raises EOFError
        raise DataError(f"cannot read {path}: {one_line(e)}") from None


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in one IDX file, in native byte order."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'none'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != want:
        what = "truncated" if got < want else "has extra bytes"
        raise DataError(f"{path}: {what}: header says shape {shape} ({want} bytes of data), file has {got}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """prefix -> (images file, labels file) for every images file with its labels beside it."""
    pairs = {}
    for p in sorted(folder.iterdir()):
        m = IMAGES_RE.match(p.name)
        if not m or not p.is_file():
            continue
        prefix = m["prefix"]
        labels = [folder / f"{prefix}-labels-idx1-ubyte{gz}" for gz in (".gz", "")]
        found = [q for q in labels if q.is_file()]
        if not found:
            raise DataError(f"{p}: no labels file beside it (expected {labels[1].name} or {labels[0].name})")
        pairs[prefix] = (p, found[0])
    return pairs


def is_idx_folder(folder: Path) -> bool:
    return any(IMAGES_RE.match(p.name) for p in folder.iterdir())


def _read_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataError(f"{images}: expected uint8 images of shape (N, rows, columns), got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{labels}: expected one integer label per image, got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{labels}: {len(y)} labels for {len(x)} images in {images.name}")
    return x, y


def load_idx_folder(folder: Path, *, name: str | None = None, classes: list[str] | None = None,
                    source: str | None = None) -> Dataset:
    """Every pair in `folder` as one grey image Dataset: training pairs first,
    then the test pair, whose indices become `official_test`."""
    pairs = find_pairs(folder)
    if not pairs:
        raise DataError(f"{folder}: no *-images-idx3-ubyte[.gz] files")
    tests = [k for k in pairs if k.lower() in TEST_PREFIXES]
    if len(tests) > 1:
        raise DataError(f"{folder}: more than one test pair ({', '.join(tests)}); keep one")
    order = [k for k in pairs if k not in tests] + tests
    if not [k for k in order if k not in tests]:
        raise DataError(f"{folder}: only a test pair ({tests[0]}-*); add the training pair (e.g. train-images-idx3-ubyte)")
    parts = [_read_pair(*pairs[k]) for k in order]
    sizes = {x.shape[1:] for x, _ in parts}
    if len(sizes) > 1:
        raise DataError(f"{folder}: image sizes differ between files: {', '.join(str(s) for s in sorted(sizes))}")
    x = np.concatenate([x for x, _ in parts])[:, None]  # one grey channel
    y_raw = np.concatenate([y for _, y in parts]).astype(np.int64)
    if classes is None:
        uniq, y = np.unique(y_raw, return_inverse=True)
        classes = [str(int(v)) for v in uniq]
    else:
        if y_raw.min() < 0 or y_raw.max() >= len(classes):
            bad = int(y_raw[(y_raw < 0) | (y_raw >= len(classes))][0])
            raise DataError(f"{folder}: label {bad} outside 0..{len(classes) - 1}")
        y = y_raw
    official = None
    if tests:
        n_test = len(parts[-1][1])
        official = np.arange(len(y) - n_test, len(y), dtype=np.int64)
    return Dataset(name=name or folder.resolve().name, kind="image", X=x, y=y.astype(np.int64),
                   classes=list(classes), source=source or str(folder), official_test=official)
