"""The finalists stage as `autopilot run` runs it (the package doc): the
plan (plan.py) carried out: each finalist's folds, the winner's retraining
on train+validation, the runner-up's refit for the ensemble, and the
card's `cv` record.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial

from ..compress.measure import torch_logits
from ..config import RunConfig
from ..data.gate import clear_gate, gate_split, pooled, save_gate
from ..models import build_model, save_model
from ..rundir import BAGS_DIR, OOF_LOGITS, REFIT_DIR, WEIGHTS_FILE, RunDir
from ..schemas.card import CrossValidation, Finalist
from ..search.driver import single_worker_threads
from ..search.select import score
from ..train import PACE_MARGIN, seed_everything, train, train_configuration
from .plan import (Candidate, Plan, candidate, continued, finalist_trials, fold_epochs, make_plan, paced, pick_winner,
                   retrain_seconds, retraining_to_run, undertrained_winner, with_epochs)

FOLD_SEED_STEP = 1000  # fold f of trial n trains with seed + n + 1000 (f + 1)


@dataclass
class Outcome:
    """What final.py ships: `winner` None keeps the search's own choice and
    its weights (--cv 0); `model` None ships the winner's search weights."""
    winner: FrozenTrial | None = None
    model: torch.nn.Module | None = None
    training: dict | None = None  # hyper-parameters of the retraining
    record: CrossValidation | None = None


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
            deadline: float | None, extend_to: int | None = None) -> tuple[torch.nn.Module | None, dict]:
    """The configuration trained on train+validation for its planned epochs;
    the weights of the last epoch (no validation is held out to pick
    another), and the hyper-parameters it trained with (their epochs the
    ones it ran). None when the deadline cut it: a schedule that did not
    anneal is worse than the search's weights. With a deadline, a schedule
    running slower than planned is shortened to end before it, as the
    search's trials are.

    When the budget cut the search's schedule short (c.warm_start), the
    retraining starts from the search's weights, a warm restart of the
    schedule: on Fashion-MNIST with --budget 30m the shipped CNN otherwise
    had 5 epochs from scratch, the same 5 the search had already given it.
    `extend_to` lets a shortened one grow back toward that many epochs when
    the pace shows they fit: the planned epochs come from a few timed steps
    and PACE_MARGIN, and on mnist5k at --budget 10m a 5-epoch retraining
    planned into 93 s took 29 s."""
    hp = {**c.hparams, "patience": max(c.planned, extend_to or 0) + 1}
    finish_by = None
    if deadline is not None:
        now = time.monotonic()
        finish_by = now + max(0.0, deadline - now) / PACE_MARGIN
    model, result = train_configuration(c.spec, hp, c.warm_start, X, y, kind=kind, seed=seed + c.trial.number,
                                        device=device, deadline=deadline, finish_by=finish_by, extend_to=extend_to)
    return model, ({**hp, "epochs": result.planned_epochs} if model is not None else hp)


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
    cands = [candidate(rd, t, len(data["train"][1]))
             for t in finalist_trials(study, rd, config.finalists, first=search_best.number)]
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
            elif search_why:  # the default network's finalist over the top-ranked one (search.select)
                reason = f"{search_why} (no finalist was cross-validated)"
        console.print(f"finalists: trial {search_best.number if winner is None else winner.trial.number} wins: {reason}",
                      highlight=False)

        model, training, retrain_s = None, None, None
        if winner is not None and plan.retrain:
            scheduled = winner.planned  # the epochs a shortened warm restart may grow back to
            left = None if deadline is None else deadline - time.monotonic()
            if plan.retrain_epochs:  # the plan shortened the retraining to fit
                winner = with_epochs(continued(winner), plan.retrain_epochs)
            to_run, why = retraining_to_run(winner, len(y), left)
            if why:
                note(why)
            if to_run is not None:
                winner = to_run
                grow = scheduled if winner.warm_start and winner.planned < scheduled else None
                console.print(f"retraining trial {winner.trial.number} on train+validation for {winner.planned} epochs"
                              + (f" (up to {grow} if the pace allows)" if grow else "")
                              + (", continuing the search's weights" if winner.warm_start else ""), highlight=False)
                began = time.monotonic()
                model, training = retrain(winner, X, y, data, kind=info["kind"], seed=config.seed,
                                          device=config.device, deadline=deadline, extend_to=grow)
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
        retrain_epochs=int(training["epochs"]) if model is not None else None,
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
