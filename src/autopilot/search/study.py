"""The Optuna study: storage, samplers, pruners, the objective, resume.

Trials report validation accuracy at steps that measure progress through
their own learning-rate schedule (per mille of the planned epochs), so a
pruner compares trials at the same point of their schedules: a 10-epoch
schedule that has already annealed is not compared with a 45-epoch one
still at its peak learning rate. A trial cut by the deadline did not finish
its planned training, so it is stored as pruned, never as complete.
"""
from __future__ import annotations

import math
import os
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from ..config import PRUNERS, SAMPLERS, RunConfig
from ..doctor.live import LiveDoctor
from ..models import build_model, count_params, save_model
from ..rundir import VAL_LOGITS, RunDir, write_json
from ..schemas.hparams import TrainingHparams
from ..schemas.search import SearchFile, SelectedTrial, TrialConfig, TrialSummary
from ..train import TrainingDiverged, predict_logits, resolve_device, seed_everything, train
from ..models.estimators import FAMILIES as ESTIMATOR_FAMILIES
from . import budget, limits, space
from .select import accuracy, best_trial, rank_trial, score
from .storage import database_storage, study_name

STUDY_NAME = "autopilot"

# Trials report at step = PROGRESS_STEPS * epoch / planned epochs ("schedule"):
# per mille, so that schedules up to 1000 epochs get distinct steps.
PROGRESS_STEPS = 1000
PROGRESS = ("schedule", "epoch")  # "epoch": the former step (epochs trained), kept for bench/pruning.py

optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own view reports trials
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def make_storage(run: RunDir, url: str | None = None):
    """The journal file in the run directory by default: ~9 ms per trial and
    safe for several processes on one machine. Any Optuna storage URL
    (e.g. postgresql://...) for many machines."""
    if url:
        return database_storage(url)  # heartbeats + one retry of a dead worker's trial
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    run.study_dir.mkdir(parents=True, exist_ok=True)
    path = str(run.journal)
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def make_sampler(name: str, seed: int, info: dict) -> optuna.samplers.BaseSampler:
    """TPE (and GP) learn from how far rejected trials were over
    --max-params / --max-latency-ms: the trials' constraints (limits.py)."""
    if name == "tpe":
        # multivariate+group model the conditional space (family-specific
        # parameters) jointly instead of one parameter at a time.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid_space(info), seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5)
    raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, progress: str = "schedule") -> optuna.pruners.BasePruner:
    """Resources are in the unit trials report at (see PROGRESS_STEPS)."""
    if progress not in PROGRESS:
        raise ValueError(f"unknown progress unit {progress!r}; expected one of {', '.join(PROGRESS)}")
    schedule = progress == "schedule"
    if name == "hyperband":
        # First rung at the end of the warm-up (a tenth of the schedule), then x3:
        # rungs at 10 %, 30 %, 90 % of each trial's schedule.
        if schedule:
            return optuna.pruners.HyperbandPruner(min_resource=PROGRESS_STEPS // 10, max_resource=PROGRESS_STEPS,
                                                  reduction_factor=3)
        return optuna.pruners.HyperbandPruner(min_resource=3, max_resource=max(space.EPOCHS), reduction_factor=3)
    if name == "median":
        # The median of the completed trials at the same step: schedules of
        # 10, 20, 30 and 45 epochs all report at 20 %, 40 %, ... of their length.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=PROGRESS_STEPS // 5 if schedule else 3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; expected one of {', '.join(PRUNERS)}")


def progress_step(epoch: int, planned_epochs: int, progress: str = "schedule") -> int:
    """The step a trial reports at after `epoch` of `planned_epochs`."""
    if progress == "epoch":
        return epoch
    return round(PROGRESS_STEPS * epoch / max(1, planned_epochs))


def open_study(run: RunDir, config: RunConfig, info: dict, *, sampler_seed: int | None = None,
               progress: str = "schedule") -> optuna.Study:
    seed = config.seed if sampler_seed is None else sampler_seed
    # --objective pareto: validation accuracy up, ONNX Runtime batch-1 latency down
    # (TPE, random and GP handle both; pruning does not exist for two objectives).
    directions = ["maximize", "minimize"] if config.objective == "pareto" else ["maximize"]
    return optuna.create_study(
        study_name=study_name(run.name, config.storage) or STUDY_NAME,
        storage=make_storage(run, config.storage),
        directions=directions,
        sampler=make_sampler(config.sampler, seed, info),
        pruner=make_pruner(config.pruner, progress),
        load_if_exists=True,
    )


def has_limits(config: RunConfig) -> bool:
    return bool(config.max_params or config.max_latency_ms)


INTERRUPTED = "interrupted (Ctrl-C or the process was stopped)"


INTERRUPTED_ATTR = "interrupted_trials"  # study user attribute: numbers of trials a killed process left running


def interrupted(study: optuna.Study, t) -> bool:
    return t.state == TrialState.FAIL and (t.user_attrs.get("error") == INTERRUPTED
                                           or t.number in study.user_attrs.get(INTERRUPTED_ATTR, []))


def requeue_interrupted(study: optuna.Study) -> int:
    """Give trials that an interruption cut short another go (once each):
    they were never judged, so dropping them would bias the search, and
    the first one is often the strong default."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    n = 0
    for t in trials:
        if interrupted(study, t) and t.number not in retried and "retry_of" not in t.user_attrs:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            n += 1
    return n


def recover_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed process can never finish: mark them
    failed so they are not counted, and the study goes on. Completed trials
    are untouched, so none is lost or repeated. Optuna's public API only:
    `tell` fails the trial; the study's user attributes remember why."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return 0
    for t in running:
        study.tell(t.number, state=TrialState.FAIL)
    known = list(study.user_attrs.get(INTERRUPTED_ATTR, []))
    study.set_user_attr(INTERRUPTED_ATTR, sorted(set(known) | {t.number for t in running}))
    return len(running)


class Objective:
    """Train one configuration; report validation accuracy each epoch.

    `deadline` is a value of `clock` (time.monotonic by default; the pruning
    benchmark passes time.process_time for a budget in CPU seconds).
    `progress` is the unit of the reported steps (see PROGRESS_STEPS).
    `worker` names a process that joined from another machine (search/join.py):
    each of its trials records it, so search.json and the report can say where it ran."""

    def __init__(self, run: RunDir, data: dict, info: dict, config: RunConfig, deadline: float, *,
                 progress: str = "schedule", clock=time.monotonic, worker: str | None = None):
        if progress not in PROGRESS:
            raise ValueError(f"unknown progress unit {progress!r}; expected one of {', '.join(PROGRESS)}")
        self.run, self.data, self.info, self.config, self.deadline = run, data, info, config, deadline
        self.progress, self.clock, self.worker = progress, clock, worker

    def __call__(self, trial: optuna.Trial) -> float:
        if self.worker:
            trial.set_user_attr("worker", self.worker)
        threads = torch.get_num_threads()
        if trial.user_attrs.get(budget.ALL_CORES_ATTR):  # a lone finalist: the other workers have stopped
            torch.set_num_threads(max(threads, os.cpu_count() or 1))
        try:
            return self._run(trial)
        finally:
            torch.set_num_threads(threads)

    def _run(self, trial: optuna.Trial) -> float:
        try:
            params = space.sampler_of(self.config.space, self.config.sampler == "grid")(trial, self.info)
            if params.get("family") in ESTIMATOR_FAMILIES:  # boosted trees, linear models: fitted by scikit-learn
                return self._trees_trial(trial, params)
            spec, hp = space.to_config(params, self.info)
            hparams = TrainingHparams.model_validate(hp)  # hparams.json's schema, checked before training
        except Exception as e:  # e.g. an enqueued value outside the space
            trial.set_user_attr("error", f"bad configuration: {type(e).__name__}: {e}")
            raise
        tdir = self.run.trial_dir(trial.number)
        tdir.mkdir(parents=True, exist_ok=True)
        seed = self.config.seed + trial.number
        seed_everything(seed)  # the initial weights are part of the trial's seed
        model = build_model(spec)
        self._check_limits(trial, model)
        train_data, val_data = self.data["train"], self.data["val"]
        plan = budget.load_plan(trial.study)  # None without a time budget
        finish_by = extend_to = None
        if plan is not None:  # a time budget: epochs and data share that fit this trial's slot
            if trial.user_attrs.get("final"):  # a finalist's schedule may grow into all of its slot
                extend_to = budget.max_epochs(hp["epochs"], final=True)
            train_data, val_data, hp = self._fit_to_slot(trial, plan, model, hp, seed)
            hparams = TrainingHparams.model_validate(hp)
            finish_by = self.clock() + trial.user_attrs["slot_s"] - budget.calibration(trial.study).overhead_s
        write_json(tdir / "config.json", TrialConfig(params=params, spec=spec, hparams=hp).model_dump(mode="json"))
        planned = int(hp["epochs"])
        trial.set_user_attr("planned_epochs", planned)
        pareto = self.config.objective == "pareto"
        live = LiveDoctor()
        metrics_file = open(tdir / "metrics.jsonl", "w")
        writer = _tensorboard_writer(tdir)

        def on_epoch(m, _model):
            metrics_file.write(m.model_dump_json() + "\n")
            metrics_file.flush()
            if writer is not None:
                for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                    writer.add_scalar(k, getattr(m, k), m.epoch)
            if pareto:  # Optuna has no intermediate values, so no pruning, for two objectives
                return
            trial.report(m.val_acc, progress_step(m.epoch, planned, self.progress))
            if self._prunable(trial, planned) and trial.should_prune():
                trial.set_user_attr("epochs", m.epoch)
                trial.set_user_attr("stopped", "pruned")
                raise optuna.TrialPruned(f"pruned at epoch {m.epoch} of {planned} (val acc {m.val_acc:.4f})")

        try:
            result = train(
                model, train_data, val_data, hp, kind=self.info["kind"], seed=seed,
                device=self.config.device, deadline=self.deadline, clock=self.clock, on_epoch=on_epoch,
                callbacks=[live], finish_by=finish_by, extend_to=extend_to,
                # A finalist ships the end of its annealed schedule: on mnist5k
                # (bench/seeds.py --last, 8 runs) those weights made 31 test
                # errors where the best validation epoch's made 46. Exploration
                # trials keep their best epoch: it is their rank.
                keep="last" if trial.user_attrs.get("final") else "best",
            )
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", INTERRUPTED)
            raise
        except TrainingDiverged as e:
            trial.set_user_attr("error", f"diverged: {e}")
            raise
        except Exception as e:  # recorded, and the study goes on
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            (tdir / "error.txt").write_text(traceback.format_exc())
            raise
        finally:
            metrics_file.close()
            if writer is not None:
                writer.close()
            _record_live_findings(trial, tdir, live)
        trial.set_user_attr("stopped", result.stopped)
        trial.set_user_attr("epochs", result.epochs_run)
        trial.set_user_attr("train_s", round(sum(m.time_s for m in result.history), 3))
        if result.planned_epochs != planned:  # the pace differed from the measured: the schedule was fitted to the slot
            trial.set_user_attr("planned_epochs", result.planned_epochs)
        if result.state_dict is None:
            message = "cut by the deadline before its first epoch finished"
            trial.set_user_attr("error", message)
            raise DeadlineBeforeFirstEpoch(message)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("val_loss", result.best_val_loss)
        trial.set_user_attr("best_val_acc", result.best_val_acc)
        # Weights are kept for a trial cut by the deadline too: when nothing
        # completes, search.select.best_trial may offer it, saying so.
        save_model(tdir, model, spec)
        save_val_logits(tdir, predict_logits(model.cpu(), torch.as_tensor(self.data["val"][0])).numpy())
        write_json(tdir / "hparams.json", hparams.model_dump(mode="json", exclude_unset=True))
        if result.stopped == "deadline":
            # Not a result: its schedule did not finish. Pruned, with the
            # values it reported, so TPE and the importances do not take it
            # for the accuracy of its configuration.
            raise optuna.TrialPruned(f"cut by the deadline after {result.epochs_run} of {planned} epochs")
        if pareto:
            return result.best_val_acc, trial.user_attrs["latency_ms"]
        return result.best_val_acc

    def _trees_trial(self, trial: optuna.Trial, params: dict) -> float:
        from . import trees_trial
        import torch

        if self.clock() >= self.deadline:
            trial.set_user_attr("error", "cut by the deadline before it started")
            raise DeadlineBeforeFirstEpoch("cut by the deadline before it started")
        try:  # the torch threads this process was given are its share of the cores
            value, val_outputs = trees_trial.run_trial(trial, params, run=self.run, data=self.data, info=self.info,
                                                       seed=self.config.seed + trial.number,
                                                       threads=torch.get_num_threads(), folds_seed=self.config.seed)
        except KeyboardInterrupt:
            trial.set_user_attr("error", INTERRUPTED)
            raise
        except Exception as e:  # recorded, and the study goes on
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            (self.run.trial_dir(trial.number) / "error.txt").write_text(traceback.format_exc())
            raise
        save_val_logits(self.run.trial_dir(trial.number), val_outputs)
        return value

    def _check_limits(self, trial: optuna.Trial, model) -> None:
        """Parameters and ONNX Runtime batch-1 latency, recorded for every
        trial (the accuracy-latency front); a configuration over
        --max-params or --max-latency-ms is rejected before it trains."""
        n = count_params(model)
        trial.set_user_attr("params_count", n)
        cfg = self.config
        latency = None
        if not (cfg.max_params and n > cfg.max_params):  # over the parameter limit: not worth an export
            latency = limits.onnx_latency_ms(model, self.info["input_shape"])
            trial.set_user_attr("latency_ms", round(latency, 4))
        if has_limits(cfg):  # Optuna's constraints (<= 0 feasible): TPE and NSGA-II prefer feasible configurations
            for key, value in zip(limits.CONSTRAINT_KEYS, limits.excess(n, latency, cfg.max_params, cfg.max_latency_ms)):
                trial.set_constraint(key, value)
        if reason := limits.violation(n, latency, cfg.max_params, cfg.max_latency_ms):
            trial.set_user_attr("rejected", reason)
            trial.set_user_attr("error", f"rejected before training: {reason}")
            raise optuna.TrialPruned(reason)

    @staticmethod
    def _prunable(trial: optuna.Trial, planned_epochs: int) -> bool:
        """Under a budget plan, promoted trials and finalists were chosen on
        purpose, and short first-rung trials are already the cheap rung of
        successive halving: Optuna's pruner judges only long first-rung ones."""
        if "rung" not in trial.user_attrs and not trial.user_attrs.get("final"):
            return True  # no budget plan
        return trial.user_attrs.get("rung") == 0 and planned_epochs >= budget.PRUNE_FROM_EPOCHS

    def _fit_to_slot(self, trial: optuna.Trial, plan: budget.SearchPlan, model, hp: dict, seed: int):
        """This trial's share of the budget (its rung's slot, or the time
        left for a finalist) turned into epochs and training examples at
        the throughput measured on its first batches."""
        final = bool(trial.user_attrs.get("final"))
        rung = None if final else budget.rung_of(trial)
        if not final and "rung" not in trial.user_attrs:
            trial.set_user_attr("rung", 0)
        Xtr, ytr = self.data["train"]
        Xva, yva = self.data["val"]
        if trial.user_attrs.get(budget.ALL_CORES_ATTR):
            waited = budget.wait_for_others(trial.study, trial.number,
                                            budget.LONE_WAIT_SHARE * plan.slot_s(None, time.time()))
            trial.set_user_attr("waited_s", round(waited, 1))
        slot = plan.slot_s(rung, time.time())
        something_to_ship = any(t.state == TrialState.COMPLETE for t in trial.study.get_trials(deepcopy=False))
        if slot < budget.MIN_SLOT_S and something_to_ship:  # this process starts no more trials
            trial.set_user_attr("rejected", f"only {slot:.0f} s of the budget left: too little for a trial")
            try:
                trial.study.stop()
            except RuntimeError:  # not in study.optimize (a Ray task): the driver stops at the deadline
                pass
            raise optuna.TrialPruned(trial.user_attrs["rejected"])
        step_s = budget.measure_step_cost(model, Xtr, ytr, hp, self.info["kind"], resolve_device(self.config.device),
                                          max_s=budget.MEASURE_SHARE * slot)
        calibration = budget.calibration(trial.study)
        cost = step_s * calibration.factor
        val_idx = np.arange(len(yva)) if final else budget.validation_subset(len(yva), self.config.seed)
        min_examples = budget.min_examples(len(ytr), int(self.info["n_classes"]), int(hp["batch_size"]))
        max_epochs = budget.max_epochs(hp["epochs"], final)
        tp = budget.plan_training(slot, cost, len(ytr), len(val_idx), max_epochs, min_examples, calibration.overhead_s)
        train_idx = budget.stratified_subset(ytr, tp.n_train, seed)
        for key, value in (("slot_s", round(slot, 1)), ("planned_s", round(tp.expected_s(), 1)),
                           ("data_fraction", round(tp.fraction, 4)), ("train_examples", tp.n_train),
                           ("val_examples", tp.n_val), ("s_per_example", cost),
                           ("predicted_epoch_s", tp.epoch_s() * step_s / cost)):
            trial.set_user_attr(key, value)
        if something_to_ship and (reason := budget.too_slow(tp, max_epochs, final)):
            trial.set_user_attr("rejected", reason)
            trial.set_user_attr("error", f"rejected before training: {reason}")
            raise optuna.TrialPruned(reason)
        hp = {**hp, "epochs": tp.epochs, "patience": budget.patience(tp.epochs, max_epochs, final)}
        return (Xtr[train_idx], ytr[train_idx]), (Xva[val_idx], yva[val_idx]), hp


def save_val_logits(tdir: Path, logits) -> None:
    """The trial's validation logits (best-epoch weights), no pickle. Any
    family writes them here, so fusion reads one format whatever made them."""
    tmp = tdir / f".{VAL_LOGITS}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(logits, dtype=np.float32), allow_pickle=False)
    tmp.replace(tdir / VAL_LOGITS)


class DeadlineBeforeFirstEpoch(RuntimeError):
    """The run's deadline came before a trial finished one epoch."""


def _record_live_findings(trial: optuna.Trial, tdir: Path, live) -> None:
    """What the live doctor saw during this trial: the full report in the
    trial folder, the ids of warnings and errors on the trial itself."""
    try:
        report = live.report()
        write_json(tdir / "doctor.json", report.to_dict())
        serious = sorted({f.id for f in report.findings if f.severity in ("warn", "error")})
        if serious:
            trial.set_user_attr("doctor", serious)
    except Exception as e:  # diagnostics must never fail a trial
        trial.set_user_attr("doctor_error", f"{type(e).__name__}: {e}")


def _tensorboard_writer(tdir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # TensorBoard is optional at run time
        return None
    return SummaryWriter(log_dir=str(tdir))


def summarize(study: optuna.Study, started_at: float, config: RunConfig, *, run: RunDir | None = None,
              progress: str = "schedule", y_val=None) -> dict:
    """search.json's content, validated against schemas.search.SearchFile;
    `y_val` (the validation labels) lets its selection compare finalists
    as final.py's does (select.best_trial)."""
    trials = []
    complete = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE and t.values:
            complete.append(t)
        error = t.user_attrs.get("error")
        if error is None and t.number in study.user_attrs.get(INTERRUPTED_ATTR, []):
            error = INTERRUPTED
        trials.append(TrialSummary(
            number=t.number,
            state=t.state.name,
            value=accuracy(t) if t.state == TrialState.COMPLETE else _last_value(t),
            best_val_acc=score(t),
            val_loss=t.user_attrs.get("val_loss"),
            params=t.params,
            duration_s=t.duration.total_seconds() if t.duration else None,
            started_s=(t.datetime_start.timestamp() - started_at) if t.datetime_start else None,
            finished_s=(t.datetime_complete.timestamp() - started_at) if t.datetime_complete else None,
            epochs=t.user_attrs.get("epochs", len(t.intermediate_values)),
            planned_epochs=t.user_attrs.get("planned_epochs", t.params.get("epochs")),
            params_count=t.user_attrs.get("params_count"),
            error=error,
            stopped=t.user_attrs.get("stopped"),
            doctor=t.user_attrs.get("doctor", []),
            latency_ms=t.user_attrs.get("latency_ms"),
            rung=t.user_attrs.get("rung"),
            final=bool(t.user_attrs.get("final", False)),
            data_fraction=t.user_attrs.get("data_fraction"),
            rejected=t.user_attrs.get("rejected"),
        ))
    best = max(complete, key=rank_trial, default=None)
    chosen = best_trial(study, run, y_val)
    return SearchFile(
        sampler=config.sampler,
        pruner=config.pruner,
        progress=progress,
        started_at=started_at,
        elapsed_s=time.time() - started_at,
        best_trial=best.number if best else None,
        best_value=accuracy(best) if best else None,
        selection=SelectedTrial(trial=chosen.trial.number, how=chosen.how, why=chosen.why) if chosen else None,
        trials=trials,
    ).model_dump(mode="json")


def _last_value(t) -> float | None:
    if not t.intermediate_values:
        return None
    v = t.intermediate_values[max(t.intermediate_values)]
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v
