"""Cross-validated finalists: the search ranks trials on one validation
split, which is noisy on small data; the best few trials are re-scored by
k-fold cross-validation on train+validation, the winner is the best mean
(ties to the model with fewer parameters), and its configuration is trained
again on train+validation. The test split is not touched here.

The time comes from inside the run's budget (config.finalists_reserve plus
whatever the search left unused). The stage plans before it trains: from
each finalist's measured seconds per epoch it decides how many finalists,
how long each fold's schedule and whether the retraining fit; what it had to
leave out is said on the console and in the card (`cv.notes`).

Fold scores are the held-out fold's accuracy at the end of the fold's
schedule, with early stopping off: choosing each fold's best epoch on the
fold it is scored on would flatter every finalist.

A gate slice of the validation split (data/gate.py, config.gate_frac) is
kept out of the folds and the retraining, so the compression and fusion
stages judge on data the shipped model never trained on. Each fold's model
(the weights at the end of its schedule) and the out-of-fold logits of every
finalist are kept in finalists/<trial>/ (safetensors, .npy): a bag of K
models whose out-of-fold predictions are honest validation predictions for
ensemble selection (fusion/).
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from .compress.measure import torch_logits
from .config import RunConfig
from .data.gate import clear_gate, gate_split, pooled, save_gate
from .models import build_model, save_model
from .rundir import WEIGHTS_FILE, RunDir
from .schemas.card import CrossValidation, Finalist
from .schemas.search import TrialConfig
from .search import space
from .search.driver import single_worker_threads
from .search.select import rank_trial, score
from .train import PACE_MARGIN, epoch_pace, seed_everything, train, train_configuration

RESERVE_RELEASE = 2.0  # the reserve goes back to the search when the cheapest option needs more than this many times it
TIE = 0.001  # mean CV accuracies closer than a tenth of a point are a tie: fold noise is larger
MIN_FOLD_SHARE = 0.2  # a fold schedule shorter than a fifth of the planned one ranks another training
# The fold models are also the fusion stage's bags: folds trained for half
# their schedule or more are tried first (fewer finalists, longer folds);
# only when none fits does the plan shorten them down to MIN_FOLD_SHARE.
BAG_FOLD_SHARE = 0.5
MIN_FOLD_EPOCHS = 3  # nor one of fewer epochs (unless planned so): on digits, 1-epoch folds ranked a
#                      network that scored 1.000 on validation below one that scored 0.985
PROBE_STEPS = 3  # timed training steps of the pace probe
FOLD_SEED_STEP = 1000  # fold f of trial n trains with seed + n + 1000 (f + 1)
BAGS_DIR = "finalists"  # finalists/<trial>/fold<f>/ (spec.json + weights.safetensors) and oof_logits.npy
REFIT_DIR = "full"  # finalists/<trial>/full/: the runner-up retrained on train+validation (_refit_runner_up)
OOF_LOGITS = "oof_logits.npy"  # rows in data.gate.pooled order; a row's logits from the fold model that did not train on it


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


@dataclass
class Outcome:
    """What final.py ships: `winner` None keeps the search's own choice and
    its weights (--cv 0); `model` None ships the winner's search weights."""
    winner: FrozenTrial | None = None
    model: torch.nn.Module | None = None
    training: dict | None = None  # hyper-parameters of the retraining
    record: CrossValidation | None = None


def finalist_trials(study: optuna.Study, rd: RunDir, n: int) -> list[FrozenTrial]:
    """The best `n` distinct configurations among the completed trials with
    weights, in the search's own order. Successive halving trains one
    configuration again at each rung (same parameters): it counts once, by
    its best-ranked trial."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values and (rd.trial_dir(t.number) / WEIGHTS_FILE).exists()]
    out, seen = [], set()
    for t in sorted(done, key=rank_trial, reverse=True):
        key = json.dumps(t.params, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(t)
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
    try:
        return epoch_pace(c.spec, c.hparams, X, y, kind, steps=PROBE_STEPS)
    except Exception:  # a model the probe cannot step keeps the search's pace
        return None


def paced(cands: list[Candidate], X: np.ndarray, y: np.ndarray, kind: str, seconds: float | None) -> list[Candidate]:
    """The candidates with this stage's own measured pace (probe_pace) when
    a time limit makes the plan depend on it."""
    if seconds is None:
        return cands
    threads = torch.get_num_threads()
    torch.set_num_threads(single_worker_threads())
    try:
        out = []
        for c in cands:
            pace = probe_pace(c, X, y, kind)
            out.append(c if pace is None else dataclasses.replace(c, epoch_s_per_example=pace))
        return out
    finally:
        torch.set_num_threads(threads)


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
    """Why the search should keep the finalists' reserve, or None.

    Measured on Fashion-MNIST with --budget 10m: the stage was left 107 s,
    while retraining the search's CNN alone needed about 2000 s, so nothing
    was cross-validated or retrained and the time went to compression,
    while the search's final phase had given its best CNN 3 epochs. Before
    the search, the first-trial network's pace (probe_pace, as this stage
    would train it) tells whether the reserve can buy even the cheapest
    option; when it falls short by more than RESERVE_RELEASE times, the
    search's final phase trains on that time instead."""
    if not reserve_s or info.get("task", "classification") != "classification" or info.get("kind") == "table":
        return None
    spec, hp = space.to_config(space.default_params(info), info)
    c = Candidate(trial=None, spec=spec, hparams=hp, params=None, epoch_s_per_example=None, trained_on=0)
    X, y = data["train"]
    threads = torch.get_num_threads()
    torch.set_num_threads(single_worker_threads())
    try:
        pace = probe_pace(c, X, y, info["kind"])
    finally:
        torch.set_num_threads(threads)
    if pace is None:
        return None
    n_examples = len(y) + round(len(data["val"][1]) * (1 - config.gate_frac))
    need = cheapest_option_s(dataclasses.replace(c, epoch_s_per_example=pace), n_examples)
    if need <= RESERVE_RELEASE * reserve_s:
        return None
    return (f"retraining even the first network on train+validation for {MIN_FOLD_EPOCHS} epochs would take "
            f"about {need:.0f} s, more than {RESERVE_RELEASE:g}x the {reserve_s:.0f} s reserved for it: the search's "
            "final phase trains on that time instead")


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


def folds_of(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _monotonic(deadline_wall: float | None) -> float | None:
    return None if deadline_wall is None else time.monotonic() + (deadline_wall - time.time())


def cross_validate(c: Candidate, X: np.ndarray, y: np.ndarray, splits, epochs: int, *, kind: str, seed: int,
                   device: str, deadline: float | None, keep=None) -> Finalist:
    """`keep` (a folder): each fold's model at the end of its schedule and
    the finalist's out-of-fold logits are written there when every fold finished."""
    hp = {**c.hparams, "epochs": epochs, "patience": epochs + 1}  # no early stopping on the scored fold
    scores, finished, models, oof = [], True, [], None
    for f, (tr, ho) in enumerate(splits):
        fold_seed = seed + c.trial.number + FOLD_SEED_STEP * (f + 1)
        seed_everything(fold_seed)
        model = build_model(c.spec)
        result = train(model, (X[tr], y[tr]), (X[ho], y[ho]), hp, kind=kind, seed=fold_seed, device=device,
                       deadline=deadline, keep="last")
        if not result.history or result.stopped == "deadline":
            finished = False
            break
        scores.append(float(result.history[-1].val_acc))  # the end of the schedule, not the fold's best epoch
        if keep is not None:
            model = model.cpu().eval()  # train(keep="last"): the end of the schedule's weights
            logits = torch_logits(model, X[ho])
            oof = np.zeros((len(y), logits.shape[1]), np.float32) if oof is None else oof
            oof[ho] = logits
            models.append(model)
    if keep is not None and finished and models:
        for f, m in enumerate(models):
            save_model(keep / f"fold{f}", m, c.spec)
        np.save(keep / OOF_LOGITS, oof, allow_pickle=False)
    return Finalist(trial=c.trial.number, search_val_accuracy=float(score(c.trial)), params=c.params,
                    planned_epochs=c.planned, fold_epochs=epochs, fold_accuracies=scores,
                    mean=float(np.mean(scores)) if scores else None,
                    std=float(np.std(scores, ddof=1)) if len(scores) > 1 else None, finished=finished)


def retrain(c: Candidate, X: np.ndarray, y: np.ndarray, data: dict, *, kind: str, seed: int, device: str,
            deadline: float | None) -> tuple[torch.nn.Module | None, dict]:
    """The configuration trained on train+validation for its planned epochs;
    the weights of the last epoch (no validation is held out to pick
    another). None when the deadline cut it: a schedule that did not
    anneal is worse than the search's weights.

    When the budget cut the search's schedule short (c.warm_start), the
    retraining starts from the search's weights, a warm restart of the
    schedule: on Fashion-MNIST with --budget 30m the shipped CNN otherwise
    had 5 epochs from scratch, the same 5 the search had already given it."""
    hp = {**c.hparams, "patience": c.planned + 1}
    return train_configuration(c.spec, hp, c.warm_start, X, y, kind=kind, seed=seed + c.trial.number, device=device,
                               deadline=deadline), hp


def _refit_runner_up(finalists: list[Finalist], by_number: dict, winner: Candidate, X, y, data: dict, info: dict,
                     config: RunConfig, deadline: float | None, console, bags, note) -> None:
    """Retrain the best other cross-validated finalist on train+validation
    too, when its retraining fits the time left, into finalists/<trial>/full/:
    the fusion stage lets it stand in for its search trial, as the shipped
    model does for its own (AutoGluon's refit_full). Without it an ensemble
    pairs the retrained winner with members trained on less data: on mnist5k
    it scored one test example below the winner alone."""
    others = [f for f in finalists if f.finished and f.mean is not None and f.trial != winner.trial.number]
    if not others:
        return
    runner_up = by_number[max(others, key=lambda f: f.mean).trial]
    need = retrain_seconds(runner_up, len(y))
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and need > left:
        note(f"retraining the runner-up (trial {runner_up.trial.number}) for the ensemble would need about "
             f"{need:.0f} s, {left:.0f} s were left")
        return
    console.print(f"retraining runner-up trial {runner_up.trial.number} on train+validation for the ensemble "
                  f"({runner_up.planned} epochs)", highlight=False)
    second, _ = retrain(runner_up, X, y, data, kind=info["kind"], seed=config.seed, device=config.device,
                        deadline=deadline)
    if second is not None:
        save_model(bags / str(runner_up.trial.number) / REFIT_DIR, second, runner_up.spec)


def run_finalists(rd: RunDir, study: optuna.Study, data: dict, info: dict, config: RunConfig, search_best: FrozenTrial,
                  *, deadline_wall: float | None, console, reserve_note: str | None = None,
                  search_why: str | None = None) -> Outcome:
    """Cross-validate the finalists, pick the winner, retrain it on
    train+validation. Returns an empty Outcome with --cv 0. `reserve_note`:
    why the search kept this stage's reserve (reserve_too_small), said
    before the search and kept for the card here. `search_why`: why the
    search offered `search_best` rather than its top-ranked trial, if it did."""
    if not config.cv:
        clear_gate(rd.data_dir)
        return Outcome()
    started = time.time()
    notes: list[str] = [reserve_note] if reserve_note else []

    def note(text: str) -> None:  # a fallback is said where it happens and kept for the card
        notes.append(text)
        console.print(f"[yellow]finalists: {text}[/yellow]", highlight=False)

    X, y = pooled(data)
    gate = None
    bags = rd.path / BAGS_DIR
    shutil.rmtree(bags, ignore_errors=True)  # fold models of an earlier final stage describe other folds
    clear_gate(rd.data_dir)
    if info.get("task", "classification") == "classification" and not np.issubdtype(y.dtype, np.floating) \
            and (rd.trial_dir(search_best.number) / WEIGHTS_FILE).exists():
        # Networks are cross-validated and retrained here: keep the gate out of both.
        gate, rest = gate_split(data["val"][1], config.gate_frac, config.seed)
        X, y = pooled(data, rest)
        save_gate(rd.data_dir, gate)
    reserved = None if deadline_wall is None else max(0.0, deadline_wall - started)
    refit_by_final = False  # boosted trees: final.py refits them on train+validation with --cv
    cands = [candidate(rd, t, len(data["train"][1])) for t in finalist_trials(study, rd, config.finalists)]
    if info.get("task", "classification") != "classification" or np.issubdtype(y.dtype, np.floating):
        cands = []
        plan = Plan(0, 0.0, False, ["a regression label: cross-validation by accuracy covers classification only; "
                                    "the search's best trial ships as trained"])
    elif not (rd.trial_dir(search_best.number) / WEIGHTS_FILE).exists():
        # Boosted trees are retrained by their own code: the networks below
        # them must not take their place on a re-scoring they did not enter.
        cands, refit_by_final = [], True
        plan = Plan(0, 0.0, False, ["the search's best trial is not a network (gradient-boosted trees): it is refitted "
                                    "on train+validation by its own code; cross-validation covers networks only"])
    elif cands and len(study.directions) > 1:
        # --objective pareto chose on the accuracy-latency front; ranking by
        # accuracy alone would undo that: only the chosen trial is re-scored.
        cands = [c for c in cands if c.trial.number == search_best.number] or \
            [candidate(rd, search_best, len(data["train"][1]))]
        note(f"--objective pareto: only trial {search_best.number}, chosen on the accuracy-latency front, "
             "is cross-validated")
        cands = paced(cands, X, y, info["kind"], reserved)
        plan = make_plan(cands, config.cv, len(y), reserved)
    elif cands:
        if len(cands) < config.finalists:
            note(f"{len(cands)} completed trial(s) for the {config.finalists} finalists asked")
        cands = paced(cands, X, y, info["kind"], reserved)
        plan = make_plan(cands, config.cv, len(y), reserved)
    else:
        plan = Plan(0, 0.0, False, ["no trial completed: nothing to cross-validate; the search's choice ships as trained"])
    for text in plan.notes:
        note(text)

    threads = torch.get_num_threads()
    torch.set_num_threads(single_worker_threads())
    try:
        deadline = _monotonic(deadline_wall)
        finalists = _cross_validate_all(cands[:plan.n], plan, X, y, info, config, deadline, console, bags=bags)
        by_number = {c.trial.number: c for c in cands}
        if any(f.finished for f in finalists):
            i, reason = pick_winner(finalists)
            finalists[i] = finalists[i].model_copy(update={"won": True})
            winner = by_number[finalists[i].trial]
            if winner.trial.number != search_best.number:
                reason += f"; the search alone ranked trial {search_best.number} first on the validation split"
        else:
            if finalists:
                note("the deadline cut every finalist's folds: the search's best trial is the winner")
            winner = by_number.get(search_best.number)
            reason = "the search's best trial on the validation split (no finalist was cross-validated)"
            if "cv_score" in search_best.user_attrs:  # a small table's trials (search/table_families.py)
                reason = search_why or "the search's best trial by cross-validation on train+validation (every trial's score)"
        console.print(f"finalists: trial {search_best.number if winner is None else winner.trial.number} wins: {reason}",
                      highlight=False)

        model, training, retrain_s = None, None, None
        if winner is not None and plan.retrain:
            left = None if deadline is None else deadline - time.monotonic()
            if plan.retrain_epochs:  # the plan shortened the retraining to fit
                winner = with_epochs(continued(winner), plan.retrain_epochs)
            to_run, why = retraining_to_run(winner, len(y), left)
            if why:
                note(why)
            if to_run is not None:
                winner = to_run
                console.print(f"retraining trial {winner.trial.number} on train+validation for {winner.planned} epochs"
                              + (", continuing the search's weights" if winner.warm_start else ""), highlight=False)
                began = time.monotonic()
                model, training = retrain(winner, X, y, data, kind=info["kind"], seed=config.seed,
                                          device=config.device, deadline=deadline)
                retrain_s = time.monotonic() - began
                if model is None:
                    training = None
                    note("the deadline cut the retraining on train+validation: the winner ships with the weights "
                         "the search trained")
        if model is not None and config.fusion and not (config.max_params or config.max_latency_ms):
            _refit_runner_up(finalists, by_number, winner, X, y, data, info, config, deadline, console, bags, note)
        n_train = len(data["train"][1])
        if model is None and search_best.number in by_number and \
                undertrained_winner(winner, by_number[search_best.number], n_train):
            note(f"trial {winner.trial.number} won the folds, but the search trained it on {winner.trained_on} of "
                 f"{n_train} training examples and it was not retrained: the search's best trial "
                 f"{search_best.number} ships, its weights trained on more")
            winner = by_number[search_best.number]
            reason = (f"the search's best trial; {reason.split(';')[0]} went to trial "
                      f"{next(f.trial for f in finalists if f.won)}, which only the search had trained")
    finally:
        torch.set_num_threads(threads)

    if model is not None or refit_by_final:
        notes.append("the validation split is part of the shipped model's training data: its validation accuracy is "
                     "not a held-out figure"
                     + (f"; a gate slice of {len(gate)} validation examples was kept out of the folds and the "
                        "retraining, and compression and fusion judge on it" if gate is not None else "")
                     + "; the test split alone is held out")
    winner_trial = search_best if winner is None else winner.trial
    record = CrossValidation(
        folds=config.cv, examples=len(y), finalists_asked=config.finalists, finalists=finalists,
        fold_share=plan.share if finalists else None, search_best=search_best.number, winner=winner_trial.number,
        reason=reason, retrained=model is not None or refit_by_final,
        retrain_epochs=winner.planned if model is not None else None,
        retrain_warm_start=(winner.warm_start is not None) if model is not None else None,
        retrain_s=round(retrain_s, 1) if model is not None else None,
        validation_held_out=model is None and not refit_by_final,
        gate_examples=None if gate is None else len(gate), reserved_s=reserved, elapsed_s=time.time() - started, notes=notes)
    return Outcome(winner=winner_trial, model=model, training=training, record=record)


def _cross_validate_all(chosen: list[Candidate], plan: Plan, X: np.ndarray, y: np.ndarray, info: dict,
                        config: RunConfig, deadline: float | None, console, bags=None) -> list[Finalist]:
    """Every chosen finalist, best first, on the same folds. Once the deadline
    cuts one, the rest are recorded as not finished without training."""
    if not chosen:
        return []
    splits = folds_of(y, config.cv, config.seed)
    console.print(f"cross-validating {len(chosen)} finalist(s) (trials {', '.join(str(c.trial.number) for c in chosen)}) "
                  f"with {config.cv} folds of {len(y)} train+validation examples"
                  + (f", fold schedules at {plan.share:.0%} of the planned epochs" if plan.share < 1 else ""),
                  highlight=False)
    fold_deadline = deadline
    if deadline is not None and plan.retrain:  # the winner's retraining keeps its time
        fold_deadline = deadline - max(retrain_seconds(c, len(y)) for c in chosen)
    out: list[Finalist] = []
    for c in chosen:
        epochs = fold_epochs(c, plan.share)
        if out and not out[-1].finished:
            out.append(Finalist(trial=c.trial.number, search_val_accuracy=float(score(c.trial)), params=c.params,
                                planned_epochs=c.planned, fold_epochs=epochs, fold_accuracies=[], mean=None, std=None,
                                finished=False))
            continue
        keep = None if bags is None else bags / str(c.trial.number)
        f = cross_validate(c, X, y, splits, epochs, kind=info["kind"], seed=config.seed, device=config.device,
                           deadline=fold_deadline, keep=keep)
        out.append(f)
        summary = f"mean {f.mean:.4f}" + (f" ± {f.std:.4f}" if f.std is not None else "") if f.mean is not None else ""
        console.print(f"  trial {c.trial.number}: folds {' '.join(f'{a:.4f}' for a in f.fold_accuracies) or '-'}"
                      + (f", {summary}" if summary else "")
                      + ("" if f.finished else " (cut by the deadline: cannot win)"), highlight=False)
    return out
