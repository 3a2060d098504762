"""A rich table of a DoctorReport for the terminal."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .findings import IDS, DoctorReport

_STYLE = {"error": "bold red", "warn": "yellow", "info": "cyan", "ok": "green"}


def _evidence(ev: dict, limit: int = 4) -> str:
    """A few short key=value pairs: enough to see why, not the whole record."""
    parts = []
    for k, v in ev.items():
        if isinstance(v, (list, dict)) and len(str(v)) > 40:
            continue
        if isinstance(v, float):
            v = f"{v:.3g}"
        parts.append(f"{k}={v}")
        if len(parts) >= limit:
            break
    return ", ".join(parts)


def render(report: DoctorReport, console: Console | None = None, *, show_checks: bool = False) -> None:
    console = console or Console()
    if report.findings:
        t = Table(title="doctor", title_justify="left", show_lines=True, expand=False)
        t.add_column("severity", no_wrap=True)
        t.add_column("id", no_wrap=True)
        t.add_column("what was seen")
        t.add_column("what to do")
        for f in report.sorted_findings():
            t.add_row(f"[{_STYLE[f.severity]}]{f.severity}[/]", f.id,
                      f"{f.why}\n[dim]{_evidence(f.evidence)}[/dim]", f.suggestion)
        console.print(t)
    if show_checks:
        c = Table(title="checks", title_justify="left")
        c.add_column("check")
        c.add_column("status")
        c.add_column("seconds", justify="right")
        c.add_column("note")
        for r in report.checks:
            style = {"ok": "green", "found": "yellow", "skipped": "dim"}[r.status]
            c.add_row(r.id, f"[{style}]{r.status}[/]", f"{r.seconds:.2f}", r.note)
        console.print(c)
    n = {s: sum(r.status == s for r in report.checks) for s in ("ok", "found", "skipped")}
    worst = report.worst
    console.print(f"doctor: [{_STYLE[worst]}]{worst}[/] — {len(report.findings)} finding(s); checks "
                  f"{n['ok']} ok, {n['found']} found, {n['skipped']} skipped; {report.elapsed_s:.1f} s",
                  highlight=False)


__all__ = ["render", "IDS"]
