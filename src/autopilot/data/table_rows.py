"""New raw rows of a table run -> the model's feature vectors, through the
run's fitted preprocessing (data.preprocess): JSON objects for the server,
a CSV file for `autopilot predict`. Each problem names the row and field.
numpy only, like data.preprocess: the server runs without torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset import DataError
from .preprocess import CellError, input_columns, transform

ID_COLUMNS = ("id",)  # a predict CSV may carry its own row ids


class RowError(ValueError):
    """`where` is e.g. inputs[3].age; the message says what is wrong."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


_JSON_TYPES = {
    "number": (int, float, str, type(None)),
    "category": (str, int, float, bool, type(None)),
    "boolean": (bool, int, str, type(None)),
    "datetime": (str, type(None)),
}


def _shown(names: list[str]) -> str:
    return ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")


def rows_to_features(pre: dict, rows: list, where: str = "inputs") -> np.ndarray:
    """float32 (N, features) from JSON objects like {"sex": "male", "age": null}.
    A used column left out of a row is missing (imputed, as in training);
    a column the model never saw is refused, so a typo is not silently ignored."""
    known = set(input_columns(pre)) | {pre["label"]}
    types = {s["name"]: s["type"] for s in pre["columns"]}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RowError(f"{where}[{i}]", f"expected an object of column values like {{\"{next(iter(types))}\": ...}}, "
                                            f"got {type(row).__name__}")
        for key, value in row.items():
            if key not in known:
                raise RowError(f"{where}[{i}].{key}", f"unknown column; the columns are: {_shown(list(types))}")
            t = types.get(key)
            if t is not None and not isinstance(value, _JSON_TYPES[t]):
                raise RowError(f"{where}[{i}].{key}", f"a {type(value).__name__} where a {t} is expected")
    columns = {name: [r.get(name) for r in rows] for name in types}
    try:
        return transform(pre, columns)
    except CellError as e:
        raise RowError(f"{where}[{e.row}].{e.column}", e.message) from None


def read_table_csv(path: str | Path, pre: dict) -> tuple[np.ndarray, list[str]]:
    """(features, row ids) of a CSV with the training columns (any order;
    the label and dropped columns may be there and are ignored)."""
    from .tables import read_rows

    where = str(path)
    rows = read_rows(Path(path), where)
    first = next(rows, None)
    if first is None:
        raise DataError(f"empty CSV file: {where}")
    header = [h.strip() for h in first[1]]
    known = set(input_columns(pre)) | {pre["label"]} | set(ID_COLUMNS)
    unknown = [h for h in header if h not in known]
    if unknown:
        raise DataError(f"{where} line {first[0]}: unknown column {unknown[0]!r}; the model's columns are: "
                        f"{_shown([s['name'] for s in pre['columns']])}")
    needed = [s["name"] for s in pre["columns"]]
    absent = [n for n in needed if n not in header]
    if absent:
        raise DataError(f"{where} line {first[0]}: no column {absent[0]!r}; the model needs {_shown(needed)}")
    pos = {h: j for j, h in enumerate(header)}
    lines, cells = [], {n: [] for n in needed}
    ids = []
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(f"{where} line {line}: expected {len(header)} fields, got {len(row)}")
        lines.append(line)
        ids.append(row[pos["id"]].strip() if "id" in pos else str(len(ids)))
        for n in needed:
            cells[n].append(row[pos[n]])
    if not lines:
        raise DataError(f"{where}: no data rows below the header")
    try:
        return transform(pre, cells), ids
    except CellError as e:
        raise DataError(f"{where} line {lines[e.row]} column {e.column!r}: {e.message}") from None
