"""Settings of a run that every stage shares: durations, the budget split
between stages, and the error for a problem with the run itself.

Lives below everything else so that retraining, workers and the CLI read the
same rules without importing the orchestrator.
"""
from __future__ import annotations

import math

DEFAULT_BUDGET_S = 300.0  # a run with neither --budget nor --trials
DOCTOR_BUDGET_S = 20.0  # the pre-flight checks; the doctor's own target
COMPRESS_SHARE = 0.25  # of a run's budget, for the compression stage
MIN_COMPRESS_S = 10.0  # below this, compression is skipped: nothing useful fits


class RunError(RuntimeError):
    """A problem with the run itself (name taken, nothing to resume, bad option, ...)."""


def parse_duration(text: str | float | int | None) -> float | None:
    """'90s', '2m', '1.5h', '300' -> seconds."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    t = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if t and t[-1] in units:
            value = float(t[:-1]) * units[t[-1]]
        else:
            value = float(t)
    except ValueError:
        raise RunError(f"cannot read duration {text!r}; use e.g. 90s, 2m or 1h") from None
    if not math.isfinite(value) or value <= 0:
        raise RunError(f"duration must be positive, got {text!r}")
    return value


def search_reserve(budget_s: float) -> float:
    """Seconds kept back from the search for the final stage (test
    evaluation, ONNX export, parity check, report)."""
    return min(60.0, max(8.0, 0.06 * budget_s))
