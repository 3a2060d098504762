"""CIFAR-10 and CIFAR-100 in their official binary layout, read with numpy.

CIFAR-10 (`cifar-10-batches-bin`): data_batch_1.bin .. data_batch_5.bin and
test_batch.bin, each a run of 3073-byte records (1 label byte, then 1024 red,
1024 green and 1024 blue bytes of a 32x32 image, rows in order), and
batches.meta.txt with one class name per line.
CIFAR-100 (`cifar-100-binary`): train.bin and test.bin with 3074-byte records
(coarse label byte, fine label byte, then the pixels as above) and
fine_label_names.txt; the 100 fine labels are the classes.

The Python versions of both (data_batch_1, batches.meta / train, test, meta)
are pickles; they are refused, never unpickled.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset

PIXELS = 3 * 32 * 32
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Folder names inside the official archives, so the folder above them works too.
SUBFOLDERS = ("cifar-10-batches-bin", "cifar-100-binary")
_BATCH_RE = re.compile(r"^data_batch_(\d+)\.bin$")
_PICKLE_HINT = {
    10: "download the binary version (cifar-10-binary.tar.gz) and pass its cifar-10-batches-bin folder "
        "(data_batch_1.bin .. data_batch_5.bin, test_batch.bin, batches.meta.txt)",
    100: "download the binary version (cifar-100-binary.tar.gz) and pass its cifar-100-binary folder "
         "(train.bin, test.bin, fine_label_names.txt)",
}


def cifar_folder(folder: Path) -> Path | None:
    """The folder holding CIFAR files: `folder` itself or its official sub-folder;
    None when it is no CIFAR folder. A pickle-format folder raises DataError."""
    for d in [folder, *(folder / s for s in SUBFOLDERS)]:
        if not d.is_dir():
            continue
        names = {p.name for p in d.iterdir()}
        if "data_batch_1" in names or "batches.meta" in names:
            raise DataError(f"{d}: this is the Python (pickle) version of CIFAR-10, which autopilot never "
                            f"unpickles; {_PICKLE_HINT[10]}")
        if {"train", "test", "meta"} <= names:
            raise DataError(f"{d}: this is the Python (pickle) version of CIFAR-100, which autopilot never "
                            f"unpickles; {_PICKLE_HINT[100]}")
        if "train.bin" in names or "test_batch.bin" in names or any(_BATCH_RE.match(n) for n in names):
            return d
    return None


def _records(path: Path, size: int) -> np.ndarray:
    """The file as (records, size) uint8, or a DataError if it is not whole records."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if len(raw) == 0 or len(raw) % size:
        raise DataError(f"{path}: {len(raw)} bytes is not a whole number of {size}-byte CIFAR records "
                        f"(truncated or not a CIFAR binary file)")
    return raw.reshape(-1, size)


def _names(path: Path, expected: int, fallback: list[str]) -> list[str]:
    if not path.is_file():
        return fallback
    names = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if len(names) != expected:
        raise DataError(f"{path}: {len(names)} class names, expected {expected} (one per line)")
    return names


def _assemble(folder: Path, files: list[Path], label_byte: int, record: int, classes: list[str],
              test_file: Path | None) -> Dataset:
    blocks = [_records(f, record) for f in files]
    n = sum(len(b) for b in blocks)
    pixels = np.empty((n, 3, 32, 32), np.uint8)
    y = np.empty(n, np.int64)
    at = 0
    for f, b in zip(files, blocks):
        labels = b[:, label_byte]
        if labels.max() >= len(classes):
            i = int(np.argmax(labels >= len(classes)))
            raise DataError(f"{f}: record {i} has label {int(labels[i])}, but there are {len(classes)} classes")
        pixels[at:at + len(b)] = b[:, record - PIXELS:].reshape(-1, 3, 32, 32)  # already channels first
        y[at:at + len(b)] = labels
        at += len(b)
    n_test = len(blocks[-1]) if test_file is not None else 0
    del blocks
    official = np.arange(n - n_test, n, dtype=np.int64) if test_file is not None else None
    return Dataset(name=folder.resolve().name, kind="image", X=pixels, y=y, classes=classes,
                   source=str(folder), official_test=official)


def load_cifar(folder: Path) -> Dataset:
    """`folder` as returned by cifar_folder()."""
    if (folder / "train.bin").is_file() or (folder / "fine_label_names.txt").is_file():
        train, test = folder / "train.bin", folder / "test.bin"
        if not train.is_file():
            raise DataError(f"{folder}: CIFAR-100 folder without train.bin")
        classes = _names(folder / "fine_label_names.txt", 100, [str(i) for i in range(100)])
        files = [train] + ([test] if test.is_file() else [])
        return _assemble(folder, files, 1, 2 + PIXELS, classes, test if test.is_file() else None)
    batches = sorted((p for p in folder.iterdir() if _BATCH_RE.match(p.name)),
                     key=lambda p: int(_BATCH_RE.match(p.name)[1]))
    if not batches:
        raise DataError(f"{folder}: CIFAR-10 folder without data_batch_*.bin files")
    test = folder / "test_batch.bin"
    classes = _names(folder / "batches.meta.txt", 10, CIFAR10_CLASSES)
    files = batches + ([test] if test.is_file() else [])
    return _assemble(folder, files, 0, 1 + PIXELS, classes, test if test.is_file() else None)
