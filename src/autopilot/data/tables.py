"""A CSV file with a header row as a table Dataset.

Parsed with the `csv` module rather than pandas so every error can name the
exact line (reader.line_num counts physical lines, quoted newlines included).

Cells stay raw text here (`RawTable`); each column's type is inferred
(data.table_types) and the numeric model input is built after the split by
a preprocessing fitted on the training rows only (`prepare`, data.preprocess).
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import labels as lab
from .dataset import DataError, Dataset
from .table_types import Column, infer_columns, is_missing, parse_float
from .validate import one_line

# Column names taken as the label when --label is not given, in this order.
LABEL_NAMES = ("label", "target", "class", "y")
TASKS = ("auto", "classification", "regression")
# A numeric label is a quantity to regress when it has this many distinct
# values or more (20 when all are integers: a 0..9 class code stays a class).
REGRESSION_DISTINCT_FLOAT, REGRESSION_DISTINCT_INT = 10, 20


@dataclass
class RawTable:
    """The feature cells as read (str, None where missing) and their types."""
    names: list[str]
    columns: list[list[str | None]]
    schema: list[Column]
    label: str
    task_reason: str = ""

    def digest(self) -> str:
        h = hashlib.sha256()
        for name, col in zip(self.names, self.columns):
            h.update(name.encode() + b"\1")
            h.update("\0".join("\2" if c is None else c for c in col).encode())
        return h.hexdigest()

    def schema_dicts(self) -> list[dict]:
        return [c.to_dict() for c in self.schema]


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


def infer_task(raw_labels: list[str], task: str) -> tuple[str, str]:
    """(task, why): a numeric label with many distinct values is a quantity."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if task != "auto":
        return task, "--task"
    numbers = [parse_float(v) for v in raw_labels]
    distinct = len(set(raw_labels))
    if all(v is not None for v in numbers):
        integral = all(v.is_integer() for v in numbers)
        if distinct >= (REGRESSION_DISTINCT_INT if integral else REGRESSION_DISTINCT_FLOAT):
            return "regression", f"numeric label with {distinct} distinct values"
        return "classification", f"numeric label with {distinct} distinct values (few: classes)"
    return "classification", f"text label with {distinct} distinct values"


def regression_targets(raw_labels: list[str], lines: list[int], where: str, column: str) -> np.ndarray:
    y = np.empty(len(raw_labels), np.float32)
    for i, (cell, line) in enumerate(zip(raw_labels, lines)):
        v = parse_float(cell)
        if v is None:
            shown = cell if len(cell) <= 40 else cell[:37] + "..."
            raise DataError(f"{where} line {line} column {column!r}: a regression label must be a number, got {shown!r}")
        y[i] = v
    return y


def check_numbers(schema: list[Column], columns: list[list[str | None]], lines: list[int], where: str) -> None:
    """Infinite or out-of-range cells of a number column are errors, not missing values."""
    for col, cells in zip(schema, columns):
        if col.type != "number":
            continue
        for cell, line in zip(cells, lines):
            if cell is not None and parse_float(cell) is None:
                raise DataError(f"{where} line {line} column {col.name!r}: non-finite value {cell!r} "
                                f"(infinite, or too large for float32)")


def load_csv(path: Path, *, label: str | None = None, task: str = "auto") -> Dataset:
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
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes:
        raise DataError(f"{where} line {first[0]}: column name {dupes[0]!r} appears twice in the header")

    n = len(header)
    lines, raw_labels, missing_label_lines = [], [], []
    columns: list[list[str | None]] = [[] for _ in names]
    for line, row in rows:
        if len(row) != n:
            raise DataError(f"{where} line {line}: expected {n} fields, got {len(row)}")
        cell = row[li]
        if lab.is_missing(cell) or is_missing(cell):
            missing_label_lines.append(line)
            continue
        lines.append(line)
        raw_labels.append(cell.strip())
        for j, c in enumerate(row[:li] + row[li + 1:]):
            columns[j].append(None if is_missing(c) else c.strip())
    if not lines and not missing_label_lines:
        raise DataError(f"{where}: no data rows below the header")
    if not lines:
        raise DataError(f"{where}: the label column {header[li]!r} is missing in every row")
    if missing_label_lines:
        more = f" (and {len(missing_label_lines) - 1} more row(s))" if len(missing_label_lines) > 1 else ""
        raise DataError(f"{where} line {missing_label_lines[0]}: missing label in column {header[li]!r}{more}")

    the_task, why = infer_task(raw_labels, task)
    if the_task == "regression":
        y, classes = regression_targets(raw_labels, lines, where, header[li]), []
    else:
        y, classes = lab.encode(raw_labels)
    schema = infer_columns(names, columns)
    if not any(c.used for c in schema):
        dropped = "; ".join(f"{c.name}: {c.reason}" for c in schema[:5])
        raise DataError(f"{where}: no usable feature column ({dropped})")
    check_numbers(schema, columns, lines, where)
    table = RawTable(names, columns, schema, header[li], why)
    return Dataset(name=path.stem, kind="table", X=np.zeros((len(y), 0), np.float32), y=y, classes=classes,
                   feature_names=[], source=where, task=the_task, table=table)


def prepare(ds: Dataset, splits: dict, pre: dict | None = None, seed: int = 0) -> Dataset:
    """The model-input Dataset of a CSV table: the preprocessing the feature
    study chooses (data.feature_study), fitted on the training rows, or the
    stored `pre` of an existing run, applied to every row. Any other Dataset
    is returned unchanged."""
    if ds.table is None:
        return ds
    from .feature_study import choose
    from .preprocess import apply_fitted

    classes = ds.classes or None
    if pre is None:
        pre, X = choose(ds.table, ds.y, splits, ds.task, classes, seed)
    else:
        pre, X = apply_fitted(pre, ds.table, ds.y, splits, classes)
    return replace(ds, X=X, feature_names=list(pre["features"]), preprocess=pre)
