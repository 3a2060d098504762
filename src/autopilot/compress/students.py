"""Which students to distil into: same family and shape as the teacher, smaller.

A student is named by the share of the teacher's parameters it may have
(1/4, 1/16, ...), not by a width factor: the CNN builder caps channels at
256, so halving the width of a capped teacher removes far less than 3/4 of
its parameters, and "at least 4x fewer parameters" is what users ask for.
For each share we take the widest student of the teacher's depth that fits
(with 5 % slack: a 16-wide CNN halved to 8 keeps 1/3.93 of the parameters,
and passing it over for a 4-wide one, 15x smaller, skips the useful size);
when even the narrowest width does not fit, one stage (layer) less.

Both spec versions: a template (version 1) student changes `width` and
`depth`; a component (version 2) student keeps every stage's operation and
scales all widths together (models.spec.scale_widths), then drops the last
stage (layer) when even the narrowest does not fit.
"""
from __future__ import annotations

from ..models import build_model, count_params
from ..models.spec import scale_widths, spec_version

MIN_WIDTH = 4
SLACK = 1.05
WIDTH_STEPS = 16  # version 2: widths scaled by 15/16, 14/16, ... 1/16 of the teacher's


def _params(spec: dict) -> int:
    return count_params(build_model(spec))


def _shallower(spec: dict, depth: int) -> dict:
    """The spec with only its first `depth` stages (layers)."""
    if spec_version(spec) == 1:
        return {**spec, "depth": depth}
    key = "layers" if spec["family"] == "mlp" else "stages"
    return {**spec, key: spec[key][:depth]}


def _depth(spec: dict) -> int:
    if spec_version(spec) == 1:
        return int(spec["depth"])
    return len(spec["layers"] if spec["family"] == "mlp" else spec["stages"])


def candidates(teacher_spec: dict):
    """Smaller students, widest first at the teacher's depth, then one
    stage (layer) less, and so on."""
    for d in range(_depth(teacher_spec), 0, -1):
        shallow = _shallower(teacher_spec, d)
        if spec_version(teacher_spec) == 1:
            # Widths in steps of 4 (SIMD-friendly channel counts), widest first.
            for w in range(int(teacher_spec["width"]) - 4, MIN_WIDTH - 1, -4):
                yield {**shallow, "width": w}
        else:
            seen = set()
            for k in range(WIDTH_STEPS - 1, 0, -1):
                s = scale_widths(shallow, k / WIDTH_STEPS, multiple=MIN_WIDTH)
                key = repr(s)
                if key not in seen:
                    seen.add(key)
                    yield s


def student_name(spec: dict) -> str:
    """A candidate's name in the compression table: its depth and widths
    (a template student has one width; a component student one per stage
    or layer, the stem's first)."""
    if spec_version(spec) == 1:
        return f"distill-w{spec['width']}d{spec['depth']}"
    if spec["family"] == "mlp":
        widths = [layer["width"] for layer in spec["layers"]]
    else:
        widths = [spec["stem"]["width"]] + [stage["width"] for stage in spec["stages"]]
    return f"distill-d{_depth(spec)}w{'-'.join(str(w) for w in widths)}"


def student_spec(teacher_spec: dict, share: float) -> dict | None:
    """The largest same-family student with at most `share` of the teacher's
    parameters, or None when none fits."""
    limit = SLACK * share * _params(teacher_spec)
    for s in candidates(teacher_spec):
        if _params(s) <= limit:
            return s
    return None


def wider(spec: dict, teacher_spec: dict) -> dict | None:
    """The next student up, if still smaller than the teacher: for a narrow
    teacher the 1/2 and 1/4 shares can name the same student, and backing
    off from a failed one must mean a bigger one."""
    if spec_version(spec) == 1:
        s = {**spec, "width": int(spec["width"]) + 4}
        return s if _params(s) < _params(teacher_spec) else None
    current, teacher = _params(spec), _params(teacher_spec)
    bigger = [(p, s) for s in candidates(teacher_spec) if current < (p := _params(s)) < teacher]
    return min(bigger, key=lambda ps: ps[0])[1] if bigger else None
