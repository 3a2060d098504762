"""A search that fits its time budget at any data size.

Measured before this existed: Fashion-MNIST (49,000 training images) with
`--budget 10m` ran 2 trials, both cut by the deadline after 4 and 1 of
their 20 planned epochs, so nothing was searched. Now every trial is given
a time slot, measures its own training throughput on its first batches,
and chooses its epochs and the share of the training data it trains on so
that it ends within the slot.

The slots follow asynchronous successive halving (ASHA, Li et al. 2020),
over data fraction x epochs rather than epochs alone:

- the search time is split into exploration and a final phase
  (FINAL_SHARE);
- exploration: new configurations start at rung 0 with a short slot (a
  few epochs on a data subset, scored on a fixed validation subset); as
  soon as a configuration is in the top 1/ETA of its rung's finished
  trials it is promoted (enqueued again with the same parameters) to the
  next rung with ETA times the slot;
- final phase: the best configurations (at most one per worker, highest
  rung first, runners-up only when not clearly behind: `contenders`) are
  trained again on all the training data for the time left and scored on
  the whole validation set; a lone finalist trains on all the cores while
  the other workers stop. These are the trials shipped first
  (search.select.rank_trial): the final model gets its training time on
  purpose, not whatever the deadline leaves.

The plan lives in the study's user attributes, so worker processes (and
machines sharing a database) follow the same one. Runs without a time
budget (`--trials` only) keep each trial's own epochs on all the data.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

from .select import DEFAULT_NETWORK
from .space import exploration_patience

ETA = 3  # promotion keeps the top 1/ETA of a rung and gives it ETA times the time
FINAL_SHARE = 0.5  # of the search time, for the finalists on all the data
FIRST_RUNG_TRIALS = 4  # rung-0 trials per worker the exploration phase should hold
MIN_SLOT_S = 10.0  # a trial shorter than this learns too little to rank (mnist1d at 6 s: chance level)
MIN_EPOCHS = 3  # below this a one-cycle schedule is mostly warm-up: take less data instead
MIN_FRACTION = 0.02  # of the training data, and at least MIN_PER_CLASS examples per class: less ranks nothing
MIN_PER_CLASS = 50
TOO_SLOW = 2.0  # a configuration whose smallest plan takes this many slots is skipped, not trained
PRUNE_FROM_EPOCHS = 6  # shorter trials are rungs of their own: Optuna's pruner does not cut them further
FINAL_MAX_EPOCHS = 60  # finalists may train longer than their sampled schedule when time allows
SAFETY = 0.8  # of a slot planned for training: the machine is shared, throughput varies
TRIAL_OVERHEAD_S = 2.0  # building, measuring, saving a trial
VAL_SUBSET = 3000  # validation examples that score exploration trials (SE ~0.5 points at 90 %)
EVAL_COST = 0.35  # an example's evaluation (forward only, large batches) relative to a training step
MEASURE_BATCHES = 3  # timed training steps that measure throughput
MEASURE_SHARE = 0.1  # of a trial's slot, at most, spent measuring (a warm-up step alone when it is slow)
WARMUP_BATCHES = 2  # untimed first steps: a process's first ones are several times slower
RUNNER_UP_MIN_GAP = 0.002  # a runner-up this close to the best (in accuracy) is always a finalist
ALL_CORES_ATTR = "all_cores"  # a lone finalist's trial attribute: it trains on every core of its machine
LONE_WAIT_SHARE = 0.15  # of its slot, at most, a lone finalist waits for the last exploration trials to end
PLAN_ATTR = "budget_plan"  # study user attribute holding the SearchPlan
# Measured step cost x this = real cost per example. Trials on digits took
# about twice what their optimiser steps alone predicted (evaluation,
# callbacks, a busy machine); learnt per study from finished trials.
DEFAULT_CALIBRATION = 1.5
CALIBRATION_RANGE = (1.0, 4.0)
CALIBRATION_TRIALS = 5


@dataclass
class SearchPlan:
    start_wall: float
    deadline_wall: float
    workers: int
    first_slot_s: float
    final_start_wall: float

    @classmethod
    def make(cls, start_wall: float, deadline_wall: float, workers: int) -> "SearchPlan":
        total = max(0.0, deadline_wall - start_wall)
        explore = (1 - FINAL_SHARE) * total
        first = max(MIN_SLOT_S, explore / (2 * FIRST_RUNG_TRIALS))  # half for rung 0, half for promotions
        return cls(start_wall, deadline_wall, max(1, workers), first, start_wall + explore)

    def slot_s(self, rung: int | None, now: float) -> float:
        """Seconds a trial starting now may take: its rung's slot, ending
        before the final phase; a finalist gets all the time left."""
        left = self.deadline_wall - now
        if rung is None:  # finalist
            return max(0.0, left)
        slot = self.first_slot_s * ETA ** rung
        until_final = self.final_start_wall - now
        return max(MIN_SLOT_S, min(slot, until_final)) if left >= MIN_SLOT_S else max(0.0, left)

    def finals_due(self, now: float) -> bool:
        return now >= self.final_start_wall - MIN_SLOT_S


def save_plan(study: optuna.Study, plan: SearchPlan | None) -> None:
    """None: this invocation has no time budget (a resumed study forgets an earlier plan)."""
    study.set_user_attr(PLAN_ATTR, asdict(plan) if plan else None)


def load_plan(study: optuna.Study) -> SearchPlan | None:
    raw = study.user_attrs.get(PLAN_ATTR)
    return SearchPlan(**raw) if raw else None


# ---- one trial's training plan ----

@dataclass
class TrainingPlan:
    epochs: int
    fraction: float  # of the training examples
    n_train: int
    n_val: int
    slot_s: float
    train_s_per_example: float

    def epoch_s(self) -> float:
        return (self.n_train + EVAL_COST * self.n_val) * self.train_s_per_example

    def expected_s(self) -> float:
        return self.epochs * self.epoch_s()


def min_examples(n_train: int, n_classes: int, batch_size: int) -> int:
    return min(n_train, max(2 * batch_size, MIN_PER_CLASS * n_classes, math.ceil(MIN_FRACTION * n_train)))


def plan_training(slot_s: float, s_per_example: float, n_train: int, n_val: int, max_epochs: int,
                  min_examples: int, overhead_s: float = TRIAL_OVERHEAD_S) -> TrainingPlan:
    """Epochs and data fraction that fit `slot_s` seconds at the measured
    cost per training example: all the data when MIN_EPOCHS of it fit (as
    many epochs as fit, up to max_epochs), else MIN_EPOCHS on the share of
    the data that fits (at least min_examples)."""
    usable = max(0.0, (slot_s - overhead_s) * SAFETY)
    per_epoch_full = (n_train + EVAL_COST * n_val) * s_per_example
    epochs_full = usable / per_epoch_full if per_epoch_full > 0 else max_epochs
    if epochs_full >= MIN_EPOCHS or n_train <= min_examples:
        epochs = int(max(1, min(max_epochs, math.floor(epochs_full))))
        return TrainingPlan(epochs, 1.0, n_train, n_val, slot_s, s_per_example)
    epochs = min(MIN_EPOCHS, max_epochs)
    n = (usable / epochs / s_per_example) - EVAL_COST * n_val
    if n < min_examples:  # not even the minimum share for MIN_EPOCHS: fewer epochs of it, never past the slot
        n = min_examples
        epochs = int(max(1, min(epochs, usable // ((n + EVAL_COST * n_val) * s_per_example))))
    n = int(min(n_train, n))
    return TrainingPlan(epochs, n / n_train, n, n_val, slot_s, s_per_example)


def max_epochs(sampled_epochs: int, final: bool) -> int:
    """The most epochs a trial may plan (and a finalist's schedule may grow
    to): its sampled schedule, or for a finalist FINAL_MAX_EPOCHS if longer."""
    return max(int(sampled_epochs), FINAL_MAX_EPOCHS) if final else int(sampled_epochs)


def patience(epochs: int, max_epochs: int, final: bool) -> int:
    """Epochs without a better validation score after which a trial stops.
    An exploration trial stops early, and the core it frees starts the next
    configuration. A finalist runs its whole schedule (up to max_epochs, as
    far as it may grow): its slot is reserved, and the last epochs of a
    one-cycle schedule, where the learning rate anneals, are where it gains
    most. The cross-validation folds, the retraining and the students stop
    no earlier either. Measured on mnist5k at --budget 10m: the default
    network's finalist stopped at epoch 17 of 23, with the learning rate
    still a fifth of its peak, after five epochs without a better score on
    750 validation examples; the retraining then continued from its
    epoch-12 weights."""
    return int(max_epochs) + 1 if final else exploration_patience(epochs)


def too_slow(tp: TrainingPlan, max_epochs: int, final: bool) -> str | None:
    """Why a planned trial should not be trained, or None. A finalist is
    trained whatever fits; an exploration trial must fit its slot (within
    TOO_SLOW) and at least MIN_EPOCHS: a single epoch of a one-cycle
    schedule is mostly warm-up and scores near chance (mnist5k, 10 min
    budget: four such trials scored 0.10-0.13 and took a quarter of the
    exploration), which ranks nothing and only teaches the sampler that
    the region is bad."""
    if tp.expected_s() > TOO_SLOW * tp.slot_s:
        return f"too slow for its {tp.slot_s:.0f} s slot: {tp.expected_s():.0f} s planned at the least"
    if not final and tp.epochs < min(MIN_EPOCHS, max_epochs):
        return (f"too slow for its {tp.slot_s:.0f} s slot: {tp.epochs} epoch(s) of {tp.n_train} examples fit, "
                f"fewer than the {MIN_EPOCHS} that rank a configuration")
    return None


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n indices of y keeping the class proportions (every class at least
    once when n allows), in random order."""
    if n >= len(y):
        return np.arange(len(y))
    if np.asarray(y).dtype.kind == "f":  # regression targets: their quantile bins stand for classes
        from ..data.split import target_bins

        y = target_bins(np.asarray(y))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    take = np.maximum(1, np.floor(counts * n / len(y))).astype(int)
    take = np.minimum(take, counts)
    picked = [rng.choice(np.flatnonzero(y == c), k, replace=False) for c, k in zip(classes, take)]
    idx = np.concatenate(picked)
    rng.shuffle(idx)
    return idx


def validation_subset(n_val: int, seed: int) -> np.ndarray:
    """The fixed validation examples that score exploration trials (the same
    for every trial, so rung comparisons are like with like)."""
    if n_val <= VAL_SUBSET:
        return np.arange(n_val)
    return np.sort(np.random.default_rng(seed).permutation(n_val)[:VAL_SUBSET])


def measure_step_cost(model, X: np.ndarray, y: np.ndarray, hp: dict, kind: str, device,
                      max_s: float = float("inf")) -> float:
    """Seconds per training example of this model at this batch size, from
    a few real training steps on a copy (train.step_seconds): the trial's
    own weights and random state are untouched. After `max_s` seconds the
    steps so far decide (a 155k-parameter net took 67 s to measure on a
    busy machine)."""
    from ..train import step_seconds, train_batch_size

    probe = copy.deepcopy(model).to(device)
    step = step_seconds(probe, X, y, hp, kind, device=device, steps=MEASURE_BATCHES, warmup=WARMUP_BATCHES, max_s=max_s)
    return step / train_batch_size(hp, len(X))


@dataclass
class Calibration:
    """What finished trials of this study teach about the next one's cost:
    `factor`, how much longer an epoch took than the measured step cost
    predicted (evaluation, callbacks, a machine that got busier), and
    `overhead_s`, the seconds a trial spent outside its epochs (building,
    measuring, saving; a new worker's imports). Medians of the most recent
    CALIBRATION_TRIALS, so a busier machine is noticed within a few trials."""
    factor: float = DEFAULT_CALIBRATION
    overhead_s: float = TRIAL_OVERHEAD_S


def calibration(study: optuna.Study) -> Calibration:
    ratios, overheads = [], []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        a = t.user_attrs
        if a.get("train_s") and a.get("epochs") and a.get("predicted_epoch_s"):
            ratios.append(a["train_s"] / (a["epochs"] * a["predicted_epoch_s"]))
            if t.duration is not None:
                overheads.append(max(0.0, t.duration.total_seconds() - a["train_s"]))
    if not ratios:
        return Calibration()
    lo, hi = CALIBRATION_RANGE
    return Calibration(float(min(hi, max(lo, np.median(ratios[-CALIBRATION_TRIALS:])))),
                       float(max(TRIAL_OVERHEAD_S, np.median(overheads[-CALIBRATION_TRIALS:]))))


# ---- promotions and finalists ----

def rung_of(t) -> int | None:
    """A trial's rung; None for a finalist; 0 for trials of runs without a plan."""
    if t.user_attrs.get("final"):
        return None
    return int(t.user_attrs.get("rung", 0))


def config_id(t) -> int:
    """The trial that first sampled this configuration."""
    return int(t.user_attrs.get("config_id", t.number))


def _value(t) -> float:
    v = t.values[0] if t.values else None
    return -math.inf if v is None else v


def contenders(ranked: list) -> list:
    """The ranked configurations worth a finalist's training: the best, and
    each runner-up whose score is within one standard error (of the
    difference of two accuracies on the examples that scored them) of the
    best's. A runner-up clearly behind would take a worker's cores for a
    model that will not ship: on Fashion-MNIST at --budget 10m an MLP 1.6
    points behind took one of the two cores, and the CNN that shipped got
    3 epochs; on both cores it trains 1.5x as fast (batch 64, measured)."""
    if not ranked:
        return []
    best = ranked[0]
    kept = [best]
    for t in ranked[1:]:
        p, q = _value(best), _value(t)
        n = min(int(best.user_attrs.get("val_examples", VAL_SUBSET)), int(t.user_attrs.get("val_examples", VAL_SUBSET)))
        if not (0.0 <= q <= p <= 1.0):  # not two accuracies (e.g. a runner-up ahead at a lower rung): kept
            kept.append(t)
            continue
        se = math.sqrt((p * (1 - p) + q * (1 - q)) / max(1, n))
        if p - q <= max(se, RUNNER_UP_MIN_GAP):
            kept.append(t)
    return kept


def with_default_network(finals: list, ranked: list, workers: int) -> list:
    """The final phase's configurations, the default network's (the first
    trial's, search.select.DEFAULT_NETWORK) in the last place when it is not
    among them and each of two or more workers has a finalist (a lone
    finalist keeps all the cores). Why: short rungs rank against
    regularisation that pays over a long schedule. On mnist5k at --budget
    10m the default network with its affine augmentation scored 0.963-0.967
    at rung 0, below the same network without augmentation (0.973-0.980),
    and never reached the final phase;
    over splits 1-4 and three training seeds (bench/seeds.py, 37 epochs) it
    made 52 test errors where that variant made 90. The selection then ships
    another finalist only when it is significantly more accurate than the
    default's (search.select.prefer_default_network)."""
    if workers < 2 or len(finals) < workers or any(t.user_attrs.get(DEFAULT_NETWORK) for t in finals):
        return finals
    default = next((t for t in ranked if t.user_attrs.get(DEFAULT_NETWORK)), None)
    return finals if default is None else finals[:-1] + [default]


def inherited(t) -> dict:
    """The user attributes a promotion or finalist takes from the trial it
    trains again: the default network's mark (search.select.DEFAULT_NETWORK)."""
    return {DEFAULT_NETWORK: True} if t.user_attrs.get(DEFAULT_NETWORK) else {}


def next_jobs(study: optuna.Study, plan: SearchPlan, now: float) -> list[tuple[dict, dict]]:
    """(params, user attributes) of the trials to enqueue now: the finalists
    when the final phase is due, else one promotion (the best unpromoted
    configuration in the top 1/ETA of the highest rung that has one)."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if plan.finals_due(now):
        # Once per plan: a resumed search (a new plan) trains its own finalists.
        if any(t.user_attrs.get("final") and t.user_attrs.get("plan") == plan.start_wall for t in trials):
            return []
        best: dict[int, object] = {}
        for t in done:
            key = (rung_of(t) or 0, _value(t))
            cid = config_id(t)
            if cid not in best or key > (rung_of(best[cid]) or 0, _value(best[cid])):
                best[cid] = t
        ranked = sorted(best.values(), key=lambda t: (rung_of(t) or 0, _value(t)), reverse=True)
        finals = with_default_network(contenders(ranked[:plan.workers]), ranked, plan.workers)
        lone = len(finals) == 1 and plan.workers > 1
        return [(dict(t.params), {"final": True, "plan": plan.start_wall, "config_id": config_id(t),
                                  "promoted_from": t.number, **({ALL_CORES_ATTR: True} if lone else {}), **inherited(t)})
                for t in finals]
    promoted = {t.user_attrs.get("promoted_from") for t in trials}
    top_rung = max((rung_of(t) or 0 for t in done), default=0)
    for rung in range(top_rung, -1, -1):
        if plan.slot_s(rung + 1, now) < plan.first_slot_s * ETA ** (rung + 1) / 2:
            continue  # the next rung would not fit before the final phase
        at_rung = sorted((t for t in done if rung_of(t) == rung), key=_value, reverse=True)
        for t in at_rung[:len(at_rung) // ETA]:
            if t.number not in promoted:
                return [(dict(t.params), {"rung": rung + 1, "config_id": config_id(t), "promoted_from": t.number,
                                          **inherited(t)})]
    return []


def after_trial(study: optuna.Study, trial) -> int:
    """Called after every trial by the process that ran it (workers.optimize):
    enqueue what next_jobs says (returns how many trials were queued), and
    stop this process once the finalists are all taken: a first-rung trial
    in the time left could not be shipped ahead of them, and would take
    cores from a finalist still training."""
    plan = load_plan(study)
    if plan is None:
        return 0
    queued = enqueue_next(study)
    if finals_taken(study.get_trials(deepcopy=False), plan):
        study.stop()
    return queued


def finals_taken(trials: list, plan: SearchPlan) -> bool:
    """The plan's finalists have all been handed out (none waiting among
    the study's `trials`): no further trial should start."""
    finals_out = any(t.user_attrs.get("final") and t.user_attrs.get("plan") == plan.start_wall for t in trials)
    return finals_out and not any(t.state == TrialState.WAITING for t in trials)


def wait_for_others(study: optuna.Study, number: int, max_s: float, poll_s: float = 0.5) -> float:
    """Wait (at most max_s) until no trial but `number` is running; returns
    the seconds waited. A lone finalist measures its throughput on all the
    cores only once the last exploration trial has let go of its core: on
    Fashion-MNIST one measured while another trial ran for 8 s more planned
    3 epochs on a fifth of the data at 2.7x the real cost, and finished in
    36 s of its 202 s."""
    start = time.monotonic()
    while time.monotonic() - start < max_s:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if all(t.number == number for t in running):
            break
        time.sleep(poll_s)
    return time.monotonic() - start


def enqueue_next(study: optuna.Study, now: float | None = None) -> int:
    """Enqueue what next_jobs says; returns how many trials were queued."""
    plan = load_plan(study)
    if plan is None:
        return 0
    jobs = next_jobs(study, plan, time.time() if now is None else now)
    for params, attrs in jobs:
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    return len(jobs)
