"""The HTML report: one self-contained file that reads the run directory.

    from autopilot.report import write_report
    write_report("runs/digits-001")   # -> runs/digits-001/report.html

It knows nothing of the other modules: it only reads the files they wrote
(through their schemas, autopilot.schemas) and the Optuna study, so it can be
re-run at any time, on a finished run or on one stopped half way. Each section
is a builder in sections.py (run -> values) and a Jinja2 template in
templates/ (values -> HTML, autoescaped).
"""
from __future__ import annotations

import os
import tempfile
import traceback
from pathlib import Path

from markupsafe import Markup

from . import finalists, sections
from .table_section import table_columns
from .load import get, load
from .render import render

__all__ = ["write_report"]

# Order of the page: (section id, title shown if it fails, builder, template).
SECTIONS = [
    ("data", "Data", sections.data, "data.html.j2"),
    ("table", "Table columns", table_columns, "table.html.j2"),
    ("doctor", "Doctor", sections.doctor, "doctor.html.j2"),
    ("search", "Search", sections.search, "search.html.j2"),
    ("finalists", "Finalists", finalists.finalists, "finalists.html.j2"),
    ("curves", "Learning curves", sections.curves, "curves.html.j2"),
    ("confusion", "Confusion matrix", sections.confusion, "confusion.html.j2"),
    ("metrics", "Test metrics", sections.metrics, "metrics.html.j2"),
    ("model", "Model", sections.model, "model.html.j2"),
    ("architecture", "Architecture", finalists.architecture, "architecture.html.j2"),
    ("compress", "Compression", sections.compression, "compress.html.j2"),
    ("fusion", "Ensemble and student", sections.fusion, "fusion.html.j2"),
]


def write_report(run_dir) -> Path:
    """Write run_dir/report.html from whatever the run directory holds; return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    run = load(run_dir)
    body = [_safe(sid, title, fn, tpl, run) for sid, title, fn, tpl in SECTIONS]
    header = _safe("header", "Run", sections.header, "header.html.j2", run)
    footer = _safe("footer", "Versions", sections.footer, "footer.html.j2", run)
    title = f"autopilot report — {get(run.run, 'name') or run_dir.name}"
    out = run_dir / "report.html"
    _atomic_write(out, render("page.html.j2", title=title, header=header, sections=[b for b in body if b],
                              footer=footer))
    return out


def _safe(sid: str, title: str, build, template: str, run) -> Markup:
    """A bug or an unforeseen file shape costs one section, never the report."""
    try:
        ctx = build(run)
        return Markup("") if ctx is None else Markup(render(template, c=ctx))
    except Exception as exc:  # noqa: BLE001 - the whole point is to keep going
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
        return Markup(render("error.html.j2", id=sid, title=title, error=f"{type(exc).__name__}: {exc}", traceback=tb))


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
