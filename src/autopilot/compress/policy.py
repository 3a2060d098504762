"""Which candidate to ship: a pure function of the measurements.

Rules, in order:
  1. only candidates whose ONNX file passed its parity check;
  2. only candidates whose validation accuracy is, with 95 % confidence, at
     most `max_drop` points below the baseline's: the one-sided upper bound
     on the paired drop (autopilot.stats.drop_upper_bound_unconditional,
     exact bounds on how often each model alone is right) must not exceed
     the limit. A point estimate would accept a drop that is noise; a bound
     that takes the number of disagreements as given would accept one lost
     example of 380 as a drop of at most 0.26 points. This one also says how
     small a validation split is: with no disagreement at all it is ~3.7/n,
     so fewer than ~740 examples cannot vouch for half a point, and the
     baseline is kept unless the user accepts more (--max-drop).
     Validation, not test: test accuracy is reported, never used to
     choose, or it would stop being an honest estimate;
  3. only candidates that beat the baseline on the target by at least
     `min_gain` (5 %), and on latency by at least 10 us per call: never ship
     something slower or bigger, and do not trade the verified fp32 file for
     a gain inside measurement noise (on a 30 us digits MLP, two runs of the
     same comparison differed by 10 %, i.e. 3 us);
  4. of those, the best on the target; ties go to higher validation
     accuracy, then the smaller file.
When nothing qualifies, the baseline is kept and the reason says why.
"""
from __future__ import annotations

import math

from ..config import check_max_drop
from ..stats import Paired, drop_upper_bound_unconditional, mcnemar_p

TARGETS = ("latency", "size", "throughput")
CONFIDENCE = 0.95  # of the one-sided upper bound on the validation drop
MIN_GAIN = 0.05
MIN_GAIN_MS = 0.01  # latency only: absolute floor, see rule 3
_EPS = 1e-9  # accuracies are ratios of counts; guard the comparison against float noise


def target_cost(c: dict, target: str) -> float:
    """Lower is better for every target."""
    if target == "latency":
        return float(c["latency_ms"]["1"]["p50"])
    if target == "size":
        return float(c["file_bytes"])
    if target == "throughput":
        return -float(c["throughput_per_s"]["64"])
    raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")


def describe_target(c: dict, target: str) -> str:
    if target == "latency":
        return f"batch-1 p50 {c['latency_ms']['1']['p50']:.3f} ms"
    if target == "size":
        return f"{c['file_bytes'] / 1024:.1f} KiB"
    return f"{c['throughput_per_s']['64']:.0f} inputs/s at batch 64"


def _gain(c: dict, base: dict, target: str) -> float:
    """Relative improvement over the baseline (0.25 = 25 % better)."""
    b, v = target_cost(base, target), target_cost(c, target)
    return (b - v) / abs(b) if b else 0.0


def _clearly_better(c: dict, base: dict, target: str, min_gain: float) -> bool:
    if _gain(c, base, target) < min_gain:
        return False
    if target == "latency" and min_gain > 0:
        return target_cost(base, target) - target_cost(c, target) >= MIN_GAIN_MS
    return True


def _measured(c: dict, target: str) -> bool:
    try:
        target_cost(c, target)
        return c.get("val_acc") is not None and paired_of(c) is not None
    except (KeyError, TypeError):
        return False


def paired_of(c: dict) -> Paired | None:
    """The candidate's paired validation counts against the baseline
    (results.json `val_paired`: b = the candidate, a = the baseline)."""
    vp = c.get("val_paired")
    if not vp:
        return None
    return Paired(n=int(vp["n"]), b_only=int(vp["b_only"]), a_only=int(vp["a_only"]))


def drop_upper_points(c: dict, confidence: float = CONFIDENCE) -> float:
    """One-sided upper confidence bound on how many points of validation
    accuracy the candidate loses against the baseline."""
    p = paired_of(c)
    if p is None:
        raise ValueError(f"candidate {c.get('name')!r} has no paired validation counts (val_paired)")
    return 100.0 * drop_upper_bound_unconditional(p, confidence)


def smallest_provable_drop(n: int, confidence: float = CONFIDENCE) -> float:
    """The bound, in points, for a candidate that agrees with the baseline on
    all n validation examples: no candidate can show a smaller drop."""
    return 100.0 * drop_upper_bound_unconditional(Paired(n=n, b_only=0, a_only=0), confidence)


def too_few_to_vouch(n: int, max_drop: float, confidence: float = CONFIDENCE) -> str | None:
    """Why no candidate can pass rule 2 on n validation examples, or None."""
    floor = smallest_provable_drop(n, confidence)
    if floor <= max_drop + _EPS:
        return None
    return (f"{n} validation examples bound even a perfect match at {floor:.2f} points, above the "
            f"{max_drop:.2f}-point limit (--max-drop {math.ceil(floor * 10) / 10:g} would accept one)")


def keeps_accuracy(c: dict, max_drop: float, confidence: float = CONFIDENCE) -> bool:
    """Rule 2: the upper bound on the drop is within `max_drop` points."""
    return drop_upper_points(c, confidence) <= max_drop + _EPS


def describe_drop(c: dict, confidence: float = CONFIDENCE) -> str:
    p = paired_of(c)
    drop = -100 * p.diff + 0.0  # + 0.0: no "-0.00"
    return (f"drop {drop:+.2f} points, {confidence:.0%} upper bound {drop_upper_points(c, confidence):.2f} "
            f"({p.a_only} lost vs {p.b_only} gained of {p.n} validation examples)")


def choose(candidates: list[dict], target: str, max_drop: float, *, min_gain: float = MIN_GAIN,
           confidence: float = CONFIDENCE) -> tuple[dict, str]:
    """(chosen candidate, reason). `candidates` includes the baseline, marked
    with "baseline": True; `max_drop` is in points of accuracy (0.5 = half a
    point). Pure: reads the dicts, changes nothing."""
    max_drop = check_max_drop(max_drop)
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    bases = [c for c in candidates if c.get("baseline")]
    if len(bases) != 1:
        raise ValueError(f"expected exactly one baseline candidate, got {len(bases)}")
    base = bases[0]
    not_better = {"latency": "not faster", "size": "not smaller", "throughput": "no more throughput"}[target]
    rejected: dict[str, list[str]] = {"unmeasured": [], "parity": [], "accuracy": [], not_better: []}
    eligible = []
    for c in candidates:
        if c is base:
            continue
        if not _measured(c, target):
            rejected["unmeasured"].append(c["name"])
        elif not (c.get("parity") or {}).get("passed", False):
            rejected["parity"].append(c["name"])
        elif not keeps_accuracy(c, max_drop, confidence):
            rejected["accuracy"].append(f"{c['name']} (bound {drop_upper_points(c, confidence):.2f})")
        elif not _clearly_better(c, base, target, min_gain):
            rejected[not_better].append(c["name"])
        else:
            eligible.append(c)
    if not eligible:
        why = "; ".join(f"{k}: {', '.join(v)}" for k, v in rejected.items() if v) or "no candidates"
        if rejected["accuracy"] and (small := too_few_to_vouch(int(base["val_paired"]["n"]), max_drop, confidence)):
            why += f"; {small}"
        return base, (f"kept the baseline ({base['name']}, {describe_target(base, target)}, val acc {base['val_acc']:.4f}): "
                      f"no candidate was >= {min_gain:.0%}{' and 10 us' if target == 'latency' else ''} better on {target} with a {confidence:.0%} upper bound on its "
                      f"paired validation drop within {max_drop:.2f} points and parity passed ({why})")
    best = min(eligible, key=lambda c: (target_cost(c, target), -c["val_acc"], c["file_bytes"]))
    factor = target_cost(best, target) / target_cost(base, target) if target == "throughput" else \
        target_cost(base, target) / max(target_cost(best, target), 1e-12)
    word = {"latency": "faster", "size": "smaller", "throughput": "more throughput"}[target]
    return best, (f"{best['name']}: {describe_target(best, target)} vs {describe_target(base, target)} for the baseline "
                  f"({factor:.2f}x {word}); val acc {best['val_acc']:.4f} vs {base['val_acc']:.4f}: "
                  f"{describe_drop(best, confidence)}, within the {max_drop:.2f}-point limit; parity {best['parity']['argmax_agree']:.4f}; "
                  f"best of {len(eligible)} eligible of {len(candidates) - 1} candidates")


def pareto_front(candidates: list[dict], target: str) -> set[str]:
    """Names of candidates not dominated on (validation accuracy up, target
    cost down), among those that passed parity (a file that computes
    something else is no trade-off)."""
    pts = [c for c in candidates if _measured(c, target) and (c.get("parity") or {}).get("passed", False)]
    front = set()
    for c in pts:
        cc, ca = target_cost(c, target), c["val_acc"]
        dominated = any(
            (target_cost(o, target) <= cc and o["val_acc"] >= ca) and (target_cost(o, target) < cc or o["val_acc"] > ca)
            for o in pts if o is not c)
        if not dominated:
            front.add(c["name"])
    return front


# -- what ships among the single model, an ensemble and its student ------------

SHIP_MODES = ("accurate", "balanced", "fast")
BALANCED_LATENCY = 2.0  # --ship balanced: at most this many times the single model's batch-1 latency


def _batch1(c: dict) -> float:
    return float(c["latency_ms"]["1"]["p50"])


def significantly_better(c: dict, confidence: float = CONFIDENCE) -> bool:
    """The candidate beats the single model on its paired validation counts
    (exact one-sided McNemar test); without counts, on accuracy alone."""
    p = paired_of(c)
    if p is None:
        return True
    return p.b_only > p.a_only and mcnemar_p(p, "greater") < 1 - confidence


def choose_ship(candidates: list[dict], ship: str, max_drop: float) -> tuple[dict, str]:
    """(chosen, reason) among the best single model (name "single"), an
    ensemble and a distilled student, on validation accuracy and batch-1
    latency measured together. Pure: reads the dicts, changes nothing.

      accurate  the most accurate on validation (ties: the faster);
      balanced  the most accurate within BALANCED_LATENCY x the single's latency
                (a challenger must be significantly better, below);
      fast      the fastest within `max_drop` points of the most accurate,
                and never slower than the single model.
    The single model is always eligible, so `accurate` never ships something
    less accurate on validation and `fast` nothing slower than it. A file
    whose parity check failed is not eligible unless it was forced.

    `accurate` is the user's word that latency does not matter: the most
    accurate file ships. With `balanced`, the default, an ensemble or student
    costs latency, and it replaces the single model only when it is
    significantly more accurate on the validation examples they share
    (exact one-sided McNemar test, p < 1 - CONFIDENCE, from its `val_paired`
    counts): on a 380-example gate a student was chosen for being right on
    one example more, which is noise. A candidate without paired counts is
    judged on accuracy alone."""
    max_drop = check_max_drop(max_drop)
    if ship not in SHIP_MODES:
        raise ValueError(f"unknown ship mode {ship!r}; expected one of {', '.join(SHIP_MODES)}")
    single = next((c for c in candidates if c["name"] == "single"), None)
    if single is None:
        raise ValueError("no single-model candidate to compare with")
    failed = [c["name"] for c in candidates if c.get("parity") and not (c["parity"]["passed"] or c["parity"].get("forced"))]
    pool = [c for c in candidates if c["name"] not in failed]
    base = _batch1(single)

    def desc(c: dict) -> str:
        return f"{c['name']} (val {c['val_acc']:.4f}, batch-1 {_batch1(c):.3f} ms = {_batch1(c) / base:.2f}x single)"

    excluded = f"; not eligible, parity failed: {', '.join(failed)}" if failed else ""
    most_accurate = max(pool, key=lambda c: (c["val_acc"] + _EPS * (c is single), -_batch1(c)))
    if ship == "accurate":
        return most_accurate, f"--ship accurate: the most accurate on validation, {desc(most_accurate)}{excluded}"
    if ship == "balanced":
        within = [c for c in pool if _batch1(c) <= BALANCED_LATENCY * base]
        unproven = [c["name"] for c in within if c is not single and not significantly_better(c)]
        eligible = [c for c in within if c["name"] not in unproven]
        best = max(eligible, key=lambda c: (c["val_acc"] + _EPS * (c is single), -_batch1(c)))
        notes = excluded + (f"; not significantly more accurate than the single model (McNemar p >= "
                            f"{1 - CONFIDENCE:.2f}): {', '.join(unproven)}" if unproven else "")
        slow = [c["name"] for c in pool if c not in within]
        return best, (f"--ship balanced: the most accurate on validation within {BALANCED_LATENCY:g}x the single "
                      f"model's batch-1 latency, {desc(best)}" + (f"; too slow: {', '.join(slow)}" if slow else "")
                      + notes)
    floor = most_accurate["val_acc"] - max_drop / 100.0 - _EPS
    fast = [c for c in pool if c["val_acc"] >= floor and _batch1(c) <= base]
    if not fast:
        return single, (f"--ship fast: nothing no slower than the single model is within {max_drop:.2f} points of "
                        f"the most accurate, {desc(most_accurate)}; kept the single model, {desc(single)}{excluded}")
    best = min(fast, key=lambda c: (_batch1(c), -c["val_acc"]))
    return best, (f"--ship fast: the fastest within {max_drop:.2f} points of the most accurate "
                  f"({most_accurate['name']}, val {most_accurate['val_acc']:.4f}) and no slower than the single "
                  f"model, {desc(best)}{excluded}")
