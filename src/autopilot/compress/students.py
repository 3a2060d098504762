"""Which students to distil into: same family as the teacher, smaller.

A student is named by the share of the teacher's parameters it may have
(1/4, 1/16, ...), not by a width factor: the CNN builder caps channels at
256, so halving the width of a capped teacher removes far less than 3/4 of
its parameters, and "at least 4x fewer parameters" is what users ask for.
For each share we take the widest student of the teacher's depth that fits
(with 5 % slack: a 16-wide CNN halved to 8 keeps 1/3.93 of the parameters,
and passing it over for a 4-wide one, 15x smaller, skips the useful size);
when even the narrowest width does not fit, one stage (layer) less.
"""
from __future__ import annotations

from ..models import build_model, count_params

MIN_WIDTH = 4
SLACK = 1.05


def _params(spec: dict) -> int:
    return count_params(build_model(spec))


def student_spec(teacher_spec: dict, share: float) -> dict | None:
    """The largest same-family student with at most `share` of the teacher's
    parameters, or None when none fits."""
    limit = SLACK * share * _params(teacher_spec)
    depth = int(teacher_spec["depth"])
    for d in range(depth, 0, -1):
        # Widths in steps of 4 (SIMD-friendly channel counts), widest first.
        for w in range(int(teacher_spec["width"]) - 4, MIN_WIDTH - 1, -4):
            s = {**teacher_spec, "width": w, "depth": d}
            if _params(s) <= limit:
                return s
    return None


def wider(spec: dict, teacher_spec: dict) -> dict | None:
    """The next student up (4 more channels), if still smaller than the
    teacher: for a narrow teacher the 1/2 and 1/4 shares can name the same
    student, and backing off from a failed one must mean a bigger one."""
    s = {**spec, "width": int(spec["width"]) + 4}
    return s if _params(s) < _params(teacher_spec) else None
