"""What each column of a CSV holds, told from its cells: number, category,
boolean, date/time, or something a model cannot use as it is (an ID, free
text, a constant, an empty column), which is dropped with the reason.

Pure Python + numpy, no pandas: the same parsers read a served JSON row
(data.preprocess uses them), so training and serving agree cell by cell.
"""
from __future__ import annotations

import math
import re
from itertools import islice
from dataclasses import asdict, dataclass

# Cells that mean "no value": what spreadsheets, R, pandas and people write.
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "-", "#n/a", "missing", "<na>", "nat"})
BOOLEANS = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0, "t": 1.0, "f": 0.0, "y": 1.0, "n": 0.0}
BOOLEAN_PAIRS = [{"true", "false"}, {"yes", "no"}, {"t", "f"}, {"y", "n"}]
# ISO dates with an optional time (the form every database and pandas writes), or with slashes.
DATE_RE = re.compile(r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$")

# Thresholds, with why:
FEW_INTEGERS = 10  # an integer column with at most this many values is a code (class 1/2/3), not a quantity...
CODE_REPEATS = 5  # ...when each value repeats this often on average (in 6 rows, 6 integers are quantities)
FLOAT32_MAX = 3.4e38
NEAR_UNIQUE = 0.9  # text with >= 90 % distinct values identifies rows (names, tickets) rather than groups them
MIN_ROWS_FOR_ID = 20  # below this, "all distinct" says nothing
HIGH_CARDINALITY = 20  # more categories than this are target-encoded rather than one-hot by default
FREE_TEXT_WORDS = 4  # a median of this many words per cell reads as prose, not a category

# Names that say "identifier": a last word (snake_case, camelCase, spaces) like these.
ID_WORDS = frozenset({"id", "ids", "key", "uuid", "guid", "index", "idx", "no", "nr", "num", "number"})

TYPES = ("number", "category", "boolean", "datetime", "id", "text", "constant", "empty")
USED = ("number", "category", "boolean", "datetime")


def is_missing(cell) -> bool:
    if cell is None:
        return True
    if isinstance(cell, float) and math.isnan(cell):
        return True
    return isinstance(cell, str) and cell.strip().lower() in MISSING


def parse_float(cell) -> float | None:
    """A finite number (in float32's range) from a CSV cell or a JSON value;
    None when it is not one."""
    if isinstance(cell, bool):
        return float(cell)
    if isinstance(cell, (int, float)):
        v = float(cell)
        return v if math.isfinite(v) and abs(v) <= FLOAT32_MAX else None
    try:
        v = float(str(cell).strip())
    except ValueError:
        return None
    return v if math.isfinite(v) and abs(v) <= FLOAT32_MAX else None


def looks_numeric(cell: str) -> bool:
    """float() reads it, finite or not ("inf", "1e39"): a number column's bad cell, not a category."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def parse_bool(cell) -> float | None:
    if isinstance(cell, bool):
        return float(cell)
    if isinstance(cell, (int, float)) and cell in (0, 1):
        return float(cell)
    return BOOLEANS.get(str(cell).strip().lower())


def parse_datetime(cell) -> tuple[int, int, int, int, int] | None:
    """(year, month, day, day of week 0=Monday, hour) or None."""
    if not isinstance(cell, str):
        return None
    m = DATE_RE.match(cell.strip())
    if not m:
        return None
    y, mo, d = int(m[1]), int(m[2]), int(m[3])
    hour = int(m[4]) if m[4] else 0
    if not (1 <= mo <= 12 and 1 <= d <= 31 and hour < 24):
        return None
    import datetime

    try:
        dow = datetime.date(y, mo, d).weekday()
    except ValueError:
        return None
    return y, mo, d, dow, hour


def category_key(cell) -> str:
    """The category a cell names: stripped text; integral numbers without '.0'
    so that 3, 3.0 and "3" are one category in a CSV and in a JSON row."""
    if isinstance(cell, bool):
        return "true" if cell else "false"
    v = parse_float(cell)
    if v is not None and v.is_integer():
        return str(int(v))
    return str(cell).strip()


def id_like_name(name: str) -> bool:
    """customer_id, PassengerId, "order no", ID: the last word names an identifier."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)
    return bool(words) and words[-1].lower() in ID_WORDS


def is_monotone(values: list[float]) -> bool:
    """Strictly increasing or decreasing in row order: an auto-increment key
    or a row number with gaps. A measured quantity is not sorted by row."""
    d = [b - a for a, b in zip(values, values[1:])]
    return all(x > 0 for x in d) or all(x < 0 for x in d)


@dataclass
class Column:
    """One column as inferred; `reason` says why it is dropped (empty when used)."""
    name: str
    type: str
    missing: int
    distinct: int
    examples: list[str]
    reason: str = ""
    has_time: bool = False  # datetime columns: any cell with a time of day

    @property
    def used(self) -> bool:
        return self.type in USED

    def to_dict(self) -> dict:
        return asdict(self)


def infer_column(name: str, cells: list[str | None]) -> Column:
    """`cells` are raw strings, None where missing."""
    present = [c.strip() for c in cells if c is not None]
    n = len(present)
    first_seen = dict.fromkeys(present)  # distinct values in order of appearance
    distinct = first_seen.keys()
    examples = list(islice(first_seen, 5))
    col = Column(name, "", len(cells) - n, len(distinct), examples)
    if n == 0:
        col.type, col.reason = "empty", "every cell is missing"
        return col
    if len(distinct) == 1:
        col.type, col.reason = "constant", f"one value only ({examples[0]!r})"
        return col
    lower = {c.lower() for c in distinct}
    if lower in BOOLEAN_PAIRS:
        col.type = "boolean"
        return col
    numbers = [parse_float(c) for c in present]
    if all(v is not None for v in numbers):
        integral = all(v.is_integer() for v in numbers)
        if integral and len(distinct) <= min(FEW_INTEGERS, n / CODE_REPEATS):
            col.type = "category"
        elif integral and n >= MIN_ROWS_FOR_ID and len(distinct) == n and (max(numbers) - min(numbers) + 1) <= 1.5 * n:
            col.type, col.reason = "id", f"distinct consecutive integers in every row ({examples[0]}, {examples[1]}, ...): a row number or ID"
        elif integral and n >= MIN_ROWS_FOR_ID and len(distinct) == n and (id_like_name(name) or is_monotone(numbers)):
            why = "named like an identifier" if id_like_name(name) else "increasing with the row order"
            col.type, col.reason = "id", f"a distinct integer in every row ({examples[0]}, {examples[1]}, ...), {why}: an ID"
        else:
            col.type = "number"
        return col
    if all(looks_numeric(c) for c in present):
        col.type = "number"  # with infinite or out-of-range cells: the loader names the first
        return col
    if all(DATE_RE.match(c) for c in present) and all(parse_datetime(c) for c in present):
        col.type = "datetime"
        col.has_time = any(parse_datetime(c)[4] for c in present)
        return col
    words = sorted(len(c.split()) for c in present)[n // 2]
    if n >= MIN_ROWS_FOR_ID and len(distinct) >= NEAR_UNIQUE * n:
        if words >= FREE_TEXT_WORDS:
            col.type, col.reason = "text", f"free text ({len(distinct)} distinct of {n}, about {words} words each); text features are not built"
        else:
            col.type, col.reason = "id", f"{len(distinct)} distinct values in {n} rows: identifies rows, predicts nothing new"
        return col
    col.type = "category"
    return col


def infer_columns(names: list[str], columns: list[list[str | None]]) -> list[Column]:
    return [infer_column(n, c) for n, c in zip(names, columns)]
