"""The HTML report: one self-contained file that reads the run directory.

    from autopilot.report import write_report
    write_report("runs/digits-001")   # -> runs/digits-001/report.html

It knows nothing of the other modules: it only reads the files they wrote, so it
can be re-run at any time, on a finished run or on one stopped half way.
"""
from __future__ import annotations

import os
import tempfile
import traceback
from pathlib import Path

from . import sections
from .markup import e, note, page, section
from .load import get, load

__all__ = ["write_report"]

# Order of the page. Each entry: (section id, title used if it fails, builder).
SECTIONS = [
    ("data", "Data", sections.data),
    ("doctor", "Doctor", sections.doctor),
    ("search", "Search", sections.search),
    ("curves", "Learning curves", sections.curves),
    ("confusion", "Confusion matrix", sections.confusion),
    ("metrics", "Test metrics", sections.metrics),
    ("model", "Model", sections.model),
    ("compress", "Compression", sections.compression),
]


def write_report(run_dir) -> Path:
    """Write run_dir/report.html from whatever the run directory holds; return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    run = load(run_dir)
    body = [_safe(sid, title, fn, run) for sid, title, fn in SECTIONS]
    header = _safe("header", "Run", sections.header, run)
    footer = _safe("footer", "Versions", sections.footer, run)
    title = f"autopilot report — {get(run.run, 'name') or run_dir.name}"
    out = run_dir / "report.html"
    _atomic_write(out, page(title, header, body, footer))
    return out


def _safe(sid: str, title: str, fn, run) -> str:
    """A bug or an unforeseen file shape costs one section, never the report."""
    try:
        return fn(run)
    except Exception as exc:  # noqa: BLE001 - the whole point is to keep going
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
        return section(sid, title, note(
            f"This section could not be rendered: <code>{e(type(exc).__name__)}: {e(exc)}</code>"
            f"<details><summary>traceback</summary><pre>{e(tb)}</pre></details>", "bad"))


def _atomic_write(path: Path, text: str) -> None:
    """A reader (a browser, a server) never sees half a report."""
    fd, tmp = tempfile.mkstemp(prefix=".report.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is for reading
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
