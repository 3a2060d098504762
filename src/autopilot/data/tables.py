"""A CSV file with a header row as a table Dataset.

Parsed with the `csv` module rather than pandas so every error can name the
exact line (reader.line_num counts physical lines, quoted newlines included).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from . import labels as lab
from .dataset import DataError, Dataset
from .validate import one_line

# Column names taken as the label when --label is not given, in this order.
LABEL_NAMES = ("label", "target", "class", "y")


def find_label(header: list[str], label: str | None, where: str) -> int:
    lower = [h.lower() for h in header]
    if label is not None:
        if label in header:
            return header.index(label)
        if lower.count(label.lower()) == 1:
            return lower.index(label.lower())
        cols = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
        raise DataError(f"{where}: no column named {label!r}; columns are: {cols}")
    for name in LABEL_NAMES:
        if name in lower:
            return lower.index(name)
    raise DataError(
        f"{where}: no label column (looked for {', '.join(LABEL_NAMES)}); pass --label NAME to say which column holds the class"
    )


def parse_number(cell: str, where: str, line: int, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        shown = cell if len(cell) <= 40 else cell[:37] + "..."
        what = "empty cell" if not cell.strip() else f"not a number: {shown!r}"
        raise DataError(f"{where} line {line} column {column!r}: {what}") from None


def read_rows(path: Path, where: str):
    """Yield (line number, row) for non-blank rows; decoding errors become DataError."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")  # -sig: drop Excel's BOM
    except OSError as e:
        raise DataError(f"cannot read {where}: {one_line(e.strerror or e)}") from None
    with f:
        reader = csv.reader(f)
        try:
            for row in reader:
                if any(cell.strip() for cell in row):
                    yield reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"{where} line {reader.line_num + 1}: cannot parse CSV: {one_line(e)}") from None


def load_csv(path: Path, *, label: str | None = None) -> Dataset:
    where = str(path)
    rows = read_rows(path, where)
    first = next(rows, None)
    if first is None:
        raise DataError(f"empty CSV file: {where}")
    header = [h.strip() for h in first[1]]
    li = find_label(header, label, where)
    names = header[:li] + header[li + 1:]
    if not names:
        raise DataError(f"{where}: no feature columns besides the label {header[li]!r}")

    n = len(header)
    lines, feats, raw_labels = [], [], []
    for line, row in rows:
        if len(row) != n:
            raise DataError(f"{where} line {line}: expected {n} fields, got {len(row)}")
        if lab.is_missing(row[li]):
            raise DataError(f"{where} line {line}: missing label in column {header[li]!r}")
        lines.append(line)
        raw_labels.append(row[li].strip())
        feats.append(row[:li] + row[li + 1:])
    if not feats:
        raise DataError(f"{where}: no data rows below the header")

    try:  # fast path: numpy parses the whole block at once
        x = np.array(feats, dtype=np.float64)
    except ValueError:  # slow path finds and names the first bad cell
        for line, row in zip(lines, feats):
            for cell, name in zip(row, names):
                parse_number(cell, where, line, name)
        raise  # unreachable unless numpy and float() disagree
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():  # after the float32 cast, so 1e39 is caught too
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where} line {lines[r]} column {names[c]!r}: non-finite value {feats[r][c].strip()!r}")

    y, classes = lab.encode(raw_labels)
    return Dataset(name=path.stem, kind="table", X=x, y=y, classes=classes, feature_names=names, source=where)
