"""Jinja2 filters: raw values from the run directory -> readable text.

A filter returns either plain text (which Jinja2 escapes, autoescape is on) or
`Markup` that it built itself from escaped parts. Nothing else in the report
produces markup: the templates do.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone

from markupsafe import Markup

from .load import num

DASH = Markup('<span class="muted">—</span>')


def fmt(x):
    """Any value as text: thousands separators, 4 significant digits, JSON for lists."""
    if x is None:
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.3g}"
        return f"{x:.4g}"
    if isinstance(x, (list, dict)):
        s = json.dumps(x, ensure_ascii=False)
        return Markup("<code>{}</code>").format(s if len(s) <= 200 else s[:199] + "…")
    return str(x)


def pct(x, digits: int = 1):
    """0.98513 -> '98.5 %' (thin no-break space)."""
    x = num(x)
    return DASH if x is None else Markup(f"{100 * x:.{digits}f}&#8239;%")


def points(x, digits: int = 2):
    """A difference of two accuracies in percentage points, signed."""
    x = num(x)
    return DASH if x is None else f"{100 * x:+.{digits}f} points"


def interval(acc, se, digits: int = 1):
    """The normal-approximation 95 % interval of an accuracy, kept inside [0, 1]."""
    acc, se = num(acc), num(se)
    if acc is None or se is None:
        return DASH
    lo, hi = max(0.0, acc - 1.96 * se), min(1.0, acc + 1.96 * se)
    return Markup("{} – {}").format(pct(lo, digits), pct(hi, digits))


def fixed(x, digits: int = 4):
    x = num(x)
    return DASH if x is None else f"{x:.{digits}f}"


def duration(s):
    s = num(s)
    if s is None:
        return DASH
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def size(b):
    """Bytes as KiB / MiB."""
    b = num(b)
    if b is None:
        return DASH
    if b < 1024 * 1024:
        return f"{b / 1024:.0f} KiB"
    return f"{b / 1024 / 1024:.1f} MiB"


def ms(x):
    """A latency in milliseconds, with the digits that matter at its size."""
    x = num(x)
    if x is None:
        return DASH
    return f"{x:.3f} ms" if x < 1 else f"{x:.2f} ms" if x < 100 else f"{x:.0f} ms"


def iso(epoch):
    t = num(epoch)
    if t is None:
        return DASH
    try:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return DASH


def share(x) -> str:
    """A share in [0, 1] as a CSS width for the inline bars."""
    x = num(x)
    return f"{0 if x is None else max(0.0, min(1.0, x)) * 100:.1f}%"


FILTERS = {"fmt": fmt, "pct": pct, "interval": interval, "points": points, "fixed": fixed, "duration": duration, "size": size,
           "ms": ms, "iso": iso, "share": share}
