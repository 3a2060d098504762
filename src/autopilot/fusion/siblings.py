"""Siblings of the shipped model: its configuration trained again, by the
same recipe on the same rows, with other seeds.

Why: an ensemble gains when its members are as good as each other and
wrong on different examples. The search's other trials are neither: the
shipped model was retrained on train+validation for its full schedule,
while most trials trained on the training split alone, many for a few
epochs of a successive-halving rung, and the selection rows cannot tell
them apart from it (mnist5k: two trials at 0.9946 on the 370 selection
rows made 8 and 15 test errors). Models that differ only in their seed
are the plain case: on mnist5k (`bench/seeds.py`, splits 1-4) pairs of
seeds averaged made 5.25 test errors per split against 6.25 for one model,
three seeds 4.75.

A sibling repeats the shipped model's retraining (train.train_configuration,
as finalists.stage.retrain runs it: the
same hyper-parameters, the same warm start from the search's weights when
there was one, the rows outside the gate slice) with seed
run seed + trial + SEED_STEP * k. Siblings that continue the search's
weights share their start with the shipped model; siblings from scratch
would differ more, but on seven kept mnist5k --budget 7m runs they did
not pay: the shipped model alone made 47 test errors, paired with a
continuing sibling 46, with a from-scratch one of the same epochs (the
same cost) 50, of the search's and the retraining's epochs together
(twice the cost) 46; on three mnist1d runs 16, 15, 13 and 15
(bench/siblings.py). It stands in beside the shipped model for
their trial in the selection pool (members.Pool.with_models): selection
weighs the trial by its own held-out predictions, and its weight is shared
by the shipped model and its siblings, as a finalist's weight is shared by
its fold models.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..models import save_model
from ..search.driver import single_worker_threads
from ..train import PACE_MARGIN, epoch_pace, train_configuration

SEED_STEP = 2000  # sibling k of trial n trains with seed + n + 2000 k (the folds use steps of 1000)
MAX_SIBLINGS = 2  # three models of one configuration: the bench's measured gain (4.75 against 6.25 errors)
# Of the fusion stage's training slice at most; the student distilled from
# the ensemble gets the rest. At 0.75, one sibling fitted in each of six
# fusion-bench runs (mnist1d 5m, mnist5k 7m), and the ensemble's median gain
# over the single model was nil; the student, warm-started from the single
# model, needs few epochs.
SHARE = 0.9
# A sibling repeats a retraining timed on this machine minutes before, so its
# plan needs less allowance than one estimated from a few steps (PACE_MARGIN).
# On those six runs siblings took 0.8-1.5x their retraining's time (median 0.95).
RETRAIN_MARGIN = 1.1


def epoch_seconds(spec: dict, hp: dict, X, y, kind: str) -> float:
    """One epoch of the retraining on (X, y), planned as the finalists plan
    theirs: the measured pace with its allowance for a shared machine."""
    return epoch_pace(spec, hp, X, y, kind) * len(X) * PACE_MARGIN


def planned(slice_s: float, one: float) -> int:
    """How many siblings of `one` seconds each fit SHARE of the slice, whole schedules only."""
    if one <= 0:
        return MAX_SIBLINGS
    return max(0, min(MAX_SIBLINGS, int(SHARE * slice_s // one)))


def train_siblings(out: Path, spec: dict, hp: dict, warm_start: Path | None, train_rows: tuple, *, kind: str,
                   seed: int, slice_s: float, retrain_s: float | None = None,
                   device: str = "cpu") -> tuple[list[Path], str]:
    """Train the siblings that fit into out/sibling<k>/ (spec.json +
    weights.safetensors); (their folders, what was done in words). `seed`:
    the seed the shipped model's retraining used (run seed + trial).
    `retrain_s`: the seconds that retraining took (the card's), what each
    sibling is planned at; without it, a few timed steps estimate it. (The
    steps alone once estimated 296 s for a retraining that had taken 72 s,
    and no sibling was trained.)"""
    X, y = train_rows
    epochs = int(hp["epochs"])
    t0 = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(single_worker_threads())  # as the shipped model's retraining ran: nothing else trains now
    made = []
    try:
        one = retrain_s * RETRAIN_MARGIN if retrain_s else epoch_seconds(spec, hp, X, y, kind) * epochs
        n = planned(slice_s - (time.monotonic() - t0), one)
        if n == 0:
            return [], (f"one retraining of the shipped configuration needs about {one:.0f} s, more "
                        f"than {SHARE:.0%} of the {slice_s:.0f} s slice")
        # A schedule far over its estimate is cut, not waited for: at the
        # slice's end it would take the student's time and then the run's.
        deadline = t0 + slice_s
        for k in range(1, n + 1):
            model, _ = train_configuration(spec, hp, warm_start, X, y, kind=kind, seed=seed + SEED_STEP * k,
                                           device=device, deadline=deadline)
            if model is None:
                break
            save_model(out / f"sibling{k}", model, spec)
            made.append(out / f"sibling{k}")
    finally:
        torch.set_num_threads(threads)
    return made, (f"{len(made)} of {n} planned, {epochs} epochs each on the shipped model's {len(y)} training rows, "
                  f"in {time.monotonic() - t0:.0f} s (about {one:.0f} s each was planned)")
