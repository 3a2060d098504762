"""Where every benchmark writes its figures: <name>-<UTC time>.json, kept,
and <name>-latest.json, replaced by the next run.

The scripts run as `python bench/<name>.py`, which puts bench/ on sys.path,
so they import this as `from record import utc_stamp, write_record`.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path


def utc_stamp(when: datetime | None = None) -> str:
    """`when` (default: now) in UTC as 20261202T003859Z: sorts as time does
    and needs no quoting in a file name."""
    return (when or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write_record(out: str | Path, name: str, record: dict, stamp: str | None = None) -> Path:
    """Write `record` to out/<name>-<stamp>.json and out/<name>-latest.json
    (the same text) and return the first path. Pass `stamp` when the record
    holds its own time (a start time, a "created" key), so that the file name
    agrees with it; otherwise it is now."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2) + "\n"
    path = out / f"{name}-{stamp or utc_stamp()}.json"
    path.write_text(text)
    (out / f"{name}-latest.json").write_text(text)
    return path
