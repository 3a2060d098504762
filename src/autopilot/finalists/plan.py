"""The finalists stage's decisions, before and after its training: which
trials are finalists (finalist_trials), what each costs (candidate,
probe_pace), what fits the time left (make_plan, retraining_to_run), whether
the reserve is worth keeping at all (reserve_too_small), and who wins
(pick_winner). Everything but the pace probe is a pure function of measured
seconds and scores, so the plans are tested without training.
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from ..config import RunConfig
from ..rundir import WEIGHTS_FILE, RunDir
from ..schemas.card import Finalist
from ..schemas.search import TrialConfig
from ..search import space
from ..search.driver import single_worker_threads
from ..search.select import rank_trial
from ..train import PACE_MARGIN, epoch_pace

# The reserve goes back to the search when the cheapest option needs more
# than this many times it. Why 1: the stage gets the reserve and little
# more (the search runs to its deadline). At 2, Fashion-MNIST at --budget
# 10m kept 92-108 s in three bench runs of five for a retraining the probe
# put within 2x of it, and the stage then used none of it.
RESERVE_RELEASE = 1.0
TIE = 0.001  # mean CV accuracies closer than a tenth of a point are a tie: fold noise is larger
MIN_FOLD_SHARE = 0.2  # a fold schedule shorter than a fifth of the planned one ranks another training
# The fold models are also the fusion stage's bags: folds trained for half
# their schedule or more are tried first (fewer finalists, longer folds);
# only when none fits does the plan shorten them down to MIN_FOLD_SHARE.
BAG_FOLD_SHARE = 0.5
MIN_FOLD_EPOCHS = 3  # nor one of fewer epochs (unless planned so): on digits, 1-epoch folds ranked a
#                      network that scored 1.000 on validation below one that scored 0.985
PROBE_STEPS = 3  # timed training steps of the pace probe


@dataclass
class Candidate:
    """A finalist before cross-validation: its configuration and measured cost."""
    trial: FrozenTrial | None  # None: a configuration the study did not train (reserve_too_small)
    spec: dict
    hparams: dict
    params: int | None
    epoch_s_per_example: float | None  # seconds per training example per epoch: the search's, or probe_pace's
    trained_on: int  # training examples the search trained it on (a share of them under a time budget)
    # The search's weights when the budget cut the configuration's schedule
    # short: the retraining continues them rather than starting over.
    warm_start: Path | None = None
    weights: Path | None = None  # the search's weights, whatever its schedule (see continued)

    @property
    def planned(self) -> int:
        return int(self.hparams["epochs"])


@dataclass
class Plan:
    n: int  # finalists cross-validated (the best n)
    share: float  # fold schedules as a share of the planned ones
    retrain: bool
    notes: list[str] = field(default_factory=list)
    retrain_epochs: int | None = None  # a retraining shortened to fit (it continues the search's weights); None: planned


def finalist_trials(study: optuna.Study, rd: RunDir, n: int, first: int | None = None) -> list[FrozenTrial]:
    """The best `n` distinct configurations among the completed trials with
    weights, in the search's own order, but trial `first` (the search's
    selection, which search.select may take from below the top) leading
    whenever it is one of the configurations: the plan's retraining alone
    is of the first.
    Successive halving trains one configuration again at each rung (same
    parameters): it counts once, by its best-ranked trial."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values and (rd.trial_dir(t.number) / WEIGHTS_FILE).exists()]
    out, seen = [], set()
    for t in sorted(done, key=rank_trial, reverse=True):
        key = json.dumps(t.params, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(t)
    out.sort(key=lambda t: t.number != first)  # stable: the rest keep their order
    return out[:n]


def candidate(rd: RunDir, t: FrozenTrial, n_train: int) -> Candidate:
    tdir = rd.trial_dir(t.number)
    cfg = TrialConfig.model_validate_json((tdir / "config.json").read_bytes())
    times = []
    metrics = tdir / "metrics.jsonl"
    if metrics.exists():
        times = [json.loads(line)["time_s"] for line in metrics.read_text().splitlines() if line.strip()]
    # Under a time budget the search trains a trial on a share of the data (train_examples).
    trained_on = int(t.user_attrs.get("train_examples") or n_train)
    per_example = statistics.median(times) / max(1, trained_on) if times else None
    params = t.user_attrs.get("params_count")
    hparams = dict(cfg.hparams)
    configured = int(cfg.params.get("epochs") or hparams["epochs"])
    # A trial whose pace was slower than planned ended on time with a shorter schedule.
    hparams["epochs"] = min(int(hparams["epochs"]), int(t.user_attrs.get("planned_epochs") or hparams["epochs"]))
    weights = tdir / WEIGHTS_FILE if (tdir / WEIGHTS_FILE).exists() else None
    cut = hparams["epochs"] < configured and weights is not None
    return Candidate(t, cfg.spec, hparams, int(params) if params is not None else None, per_example, trained_on,
                     warm_start=weights if cut else None, weights=weights)


def probe_pace(c: Candidate, X: np.ndarray, y: np.ndarray, kind: str) -> float | None:
    """Seconds per training example per epoch, timed here on a few steps
    (after an untimed warm-up) as this stage will train: one process, its
    own threads. The search's pace came from parallel workers on a shared
    machine and overstated this stage's by about 2x on mnist1d (a retraining
    planned at 49 s took 22 s), which left no time for any fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(single_worker_threads())
    try:
        return epoch_pace(c.spec, c.hparams, X, y, kind, steps=PROBE_STEPS)
    except Exception:  # a model the probe cannot step keeps the search's pace
        return None
    finally:
        torch.set_num_threads(threads)


def paced(cands: list[Candidate], X: np.ndarray, y: np.ndarray, kind: str, seconds: float | None) -> list[Candidate]:
    """The candidates with this stage's own measured pace (probe_pace) when
    a time limit makes the plan depend on it."""
    if seconds is None:
        return cands
    out = []
    for c in cands:
        pace = probe_pace(c, X, y, kind)
        out.append(c if pace is None else dataclasses.replace(c, epoch_s_per_example=pace))
    return out


def fold_seconds(c: Candidate, epochs: int, n_examples: int, folds: int) -> float:
    """Estimated seconds of all `folds` fold trainings of one finalist."""
    if c.epoch_s_per_example is None:
        return math.inf
    return folds * epochs * n_examples * (folds - 1) / folds * c.epoch_s_per_example * PACE_MARGIN


def retrain_seconds(c: Candidate, n_examples: int) -> float:
    if c.epoch_s_per_example is None:
        return math.inf
    return c.planned * n_examples * c.epoch_s_per_example * PACE_MARGIN


def fold_epochs(c: Candidate, share: float) -> int:
    return max(1, math.floor(share * c.planned + 1e-9))


def with_epochs(c: Candidate, epochs: int) -> Candidate:
    return dataclasses.replace(c, hparams={**c.hparams, "epochs": epochs})


def continued(c: Candidate) -> Candidate:
    """`c` retrained from the search's weights when it has them, for a
    retraining too long for the time left: a shorter warm restart of the
    schedule on train+validation beats shipping the weights the search
    trained on less data (mnist1d at 7m: 124 s needed from scratch, 78 s
    left, and nothing was retrained). A retraining that fits starts over."""
    return c if c.warm_start is not None or c.weights is None else dataclasses.replace(c, warm_start=c.weights)


def fitted_retrain_epochs(c: Candidate, n_examples: int, seconds: float) -> int | None:
    """Epochs of the retraining of `c` within `seconds`: its planned ones;
    or, when it continues the search's weights (c.warm_start), as many as
    fit, down to MIN_FOLD_EPOCHS; None when it does not fit."""
    if retrain_seconds(c, n_examples) <= seconds:
        return c.planned
    if c.warm_start is None:
        return None
    fit = int(seconds // retrain_seconds(with_epochs(c, 1), n_examples))
    return fit if fit >= min(c.planned, MIN_FOLD_EPOCHS) else None


def retraining_to_run(c: Candidate, n_examples: int, left: float | None) -> tuple[Candidate | None, str | None]:
    """The retraining of the winner `c` to start with `left` seconds (None:
    no limit), and a note when it differs from the plan: as planned when it
    fits; when cross-validation or planning took longer than estimated,
    continuing the search's weights for the epochs that still fit (on
    mnist5k the plan fitted 12 epochs into 81 s and 80 s were left: a
    shorter retraining, not none); None when not even that fits."""
    need = retrain_seconds(c, n_examples)
    if left is None or need <= left:
        return c, None
    fit = fitted_retrain_epochs(continued(c), n_examples, left)
    if fit is None:
        return None, (f"retraining on train+validation would need about {need:.0f} s, {left:.0f} s were left: "
                      "the winner ships with the weights the search trained")
    return with_epochs(continued(c), fit), (f"retraining on train+validation for {c.planned} epochs would need about "
                                            f"{need:.0f} s, {left:.0f} s were left: {fit} epochs, continuing the "
                                            "search's weights")


def make_plan(cands: list[Candidate], folds: int, n_examples: int, seconds: float | None) -> Plan:
    """How many finalists, how long their fold schedules, and whether the
    winner is retrained, within `seconds` (None: no limit, everything).

    Options in order of preference, the first that fits wins: all finalists
    and the retraining, one finalist fewer and the retraining, ..., the
    retraining alone (of the search's best), then all finalists without the
    retraining, ..., one finalist without it. The retraining comes first:
    without it the shipped weights are the search's, and under a time budget
    the search trains most trials briefly on a share of the data. Each
    option with the retraining is first tried with fold schedules of at
    least BAG_FOLD_SHARE, then all down to MIN_FOLD_SHARE. The retraining
    alone may be shortened to fit, continuing the search's weights
    (continued, fitted_retrain_epochs).

    The seconds per example come from probe_pace when a limit is set."""
    if seconds is None:
        return Plan(len(cands), 1.0, True)
    seconds = max(0.0, seconds)
    options = [(n, True) for n in range(len(cands), -1, -1)] + [(n, False) for n in range(len(cands), 0, -1)]
    floors = [(BAG_FOLD_SHARE, n, r) for n, r in options if n > 0 and r] + [(MIN_FOLD_SHARE, n, r) for n, r in options]
    for floor, n, retrain in floors:
        chosen = cands[:n]
        if n == 0 and cands:
            # The retraining alone, shortened to fit when it continues the search's weights.
            epochs = fitted_retrain_epochs(continued(cands[0]), n_examples, seconds)
            if epochs is None:
                continue
            if epochs < cands[0].planned:
                return Plan(0, 0.0, True, [f"no time to cross-validate any finalist or retrain the search's best for "
                                           f"its {cands[0].planned} epochs ({seconds:.0f} s left for this stage): it "
                                           f"is retrained on train+validation for {epochs}, continuing the search's "
                                           "weights"], retrain_epochs=epochs)
        # The winner is not known yet: keep the dearest retraining free.
        keep = max((retrain_seconds(c, n_examples) for c in (chosen or cands[:1])), default=0.0) if retrain else 0.0
        left = seconds - keep
        if left < 0:
            continue
        if n == 0:
            return Plan(0, 0.0, True, [f"no time to cross-validate any finalist ({seconds:.0f} s left for this stage): "
                                       "the search's best trial is retrained on train+validation without it"])
        full = sum(fold_seconds(c, c.planned, n_examples, folds) for c in chosen)
        share = min(1.0, left / full) if full > 0 else 1.0
        if share < floor or any(fold_epochs(c, share) < min(c.planned, MIN_FOLD_EPOCHS) for c in chosen):
            continue
        if sum(fold_seconds(c, fold_epochs(c, share), n_examples, folds) for c in chosen) > left:
            continue
        notes = []
        if n < len(cands):
            notes.append(f"only {n} of {len(cands)} finalists fit in the {seconds:.0f} s left for this stage")
        if share < 1.0:
            notes.append(f"fold schedules shortened to {share:.0%} of each finalist's planned epochs to fit the time")
        if not retrain:
            need = max(retrain_seconds(c, n_examples) for c in chosen)
            notes.append(f"retraining on train+validation would need about {need:.0f} s after cross-validation: "
                         "the winner ships with the weights the search trained")
        return Plan(n, share, retrain, notes)
    return Plan(0, 0.0, False, [f"no time to cross-validate the finalists or retrain the winner ({seconds:.0f} s left "
                                "for this stage): the search's best trial ships as the search trained it"])


def cheapest_option_s(c: Candidate, n_examples: int) -> float:
    """Seconds of the cheapest option of make_plan's that changes what
    ships, taking `c`'s pace: retraining it alone for MIN_FOLD_EPOCHS (a
    budgeted search's final phase may give the winner no more, and the
    retraining then continues its weights). Cross-validating two finalists
    (one finalist's folds choose nothing) costs more: at least
    MIN_FOLD_EPOCHS x (folds - 1) epochs each."""
    return retrain_seconds(with_epochs(c, min(c.planned, MIN_FOLD_EPOCHS)), n_examples)


def reserve_too_small(data: dict, info: dict, config: RunConfig, reserve_s: float) -> str | None:
    """Why the search should take the finalists' reserve back, or None.

    Measured on Fashion-MNIST with --budget 10m: the stage was left 107 s,
    while retraining the search's CNN alone needed about 2000 s, so nothing
    was cross-validated or retrained and the time went to compression,
    while the search's final phase had given its best CNN 3 epochs. Before
    the search, the first-trial network's pace (probe_pace, as this stage
    would train it) tells whether the reserve can buy even the cheapest
    option; when the option needs more than RESERVE_RELEASE times the
    reserve, the search's final phase trains on that time instead."""
    if not reserve_s or info.get("task", "classification") != "classification" or info.get("kind") == "table":
        return None
    need = cheapest_option_probed_s(data, info, config)
    if need is None or need <= RESERVE_RELEASE * reserve_s:
        return None
    return (f"retraining even the first network on train+validation for {MIN_FOLD_EPOCHS} epochs would take "
            f"about {need:.0f} s, more than the {reserve_s:.0f} s reserved for it: the search's "
            "final phase trains on that time instead")


def cheapest_option_probed_s(data: dict, info: dict, config: RunConfig) -> float | None:
    """Seconds of the cheapest option (cheapest_option_s) for the first-trial
    network, at the pace probed here as the stage would train it; None when
    the probe cannot step the model."""
    spec, hp = space.to_config(space.default_params(info), info)
    c = Candidate(trial=None, spec=spec, hparams=hp, params=None, epoch_s_per_example=None, trained_on=0)
    X, y = data["train"]
    pace = probe_pace(c, X, y, info["kind"])
    if pace is None:
        return None
    n_examples = len(y) + round(len(data["val"][1]) * (1 - config.gate_frac))
    return cheapest_option_s(dataclasses.replace(c, epoch_s_per_example=pace), n_examples)


def pick_winner(finalists: list[Finalist]) -> tuple[int, str]:
    """(index of the winner, why). The highest mean CV accuracy among the
    finished finalists; means within TIE of it are a tie, and a tie goes to
    the model with fewer parameters, then to the search's better trial."""
    finished = [i for i, f in enumerate(finalists) if f.finished and f.mean is not None]
    if not finished:
        raise ValueError("no finalist finished its folds")
    top = max(finalists[i].mean for i in finished)
    tied = [i for i in finished if top - finalists[i].mean <= TIE]
    win = min(tied, key=lambda i: (finalists[i].params if finalists[i].params is not None else math.inf, i))
    w = finalists[win]
    if len(tied) == 1:
        others = [finalists[i].mean for i in finished if i != win]
        why = f"highest mean CV accuracy ({w.mean:.4f}" + (f"; next {max(others):.4f})" if others else ")")
    else:
        rivals = ", ".join(f"trial {finalists[i].trial} {finalists[i].mean:.4f} with {finalists[i].params} parameters"
                           for i in tied if i != win)
        why = (f"mean CV accuracy {w.mean:.4f}, tied within {TIE:g} with {rivals}: the cheaper model wins "
               f"({w.params} parameters)")
    return win, why


def undertrained_winner(winner: Candidate | None, search_best: Candidate, n_train: int) -> bool:
    """A winner that was not retrained ships with its search weights; under a
    time budget those may come from a short rung on a share of the data,
    far less trained than the search's best. Then the search's best ships."""
    return (winner is not None and winner.trial.number != search_best.trial.number
            and winner.trained_on < min(n_train, search_best.trained_on))
