"""Settings of a run that every stage shares: durations, the budget split
between stages, and the error for a problem with the run itself.

Lives below everything else so that retraining, workers and the CLI read the
same rules without importing the orchestrator.
"""
from __future__ import annotations

import math
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_BUDGET_S = 300.0  # a run with neither --budget nor --trials
DOCTOR_BUDGET_S = 20.0  # the pre-flight checks; the doctor's own target
COMPRESS_SHARE = 0.25  # of a run's budget, for the compression stage
MIN_COMPRESS_S = 10.0  # below this, compression is skipped: nothing useful fits
# Of the compression share, for the fusion stage (ensemble + its distilled
# student): building and measuring an ensemble takes seconds, the student
# is one short distillation, and the single model's compression keeps most.
FUSION_SHARE = 0.4
# Cross-validating the finalists and retraining the winner on train+validation
# costs about (finalists x folds x (k-1)/k + 1) trainings: the stage gets this
# share of the budget plus whatever the search leaves unused, shortens fold
# schedules or falls back when that does not fit, and leaves what it does not
# use to compression. A larger share starves the search on short budgets.
FINALISTS_SHARE = 0.15
MIN_FINALISTS_S = 10.0  # below this, no cross-validation: the best trial ships as trained in the search
# `autopilot compress RUN` alone: a quarter of the run's budget, but at least
# a minute (one fine-tune and one distillation); 2 minutes for a --trials run.
MIN_STANDALONE_COMPRESS_S, NO_BUDGET_COMPRESS_S = 60.0, 120.0


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


def finalists_reserve(budget_s: float | None, cv: int) -> float:
    """Seconds kept back from the search for cross-validating the finalists
    and retraining the winner; 0 with --cv 0, without a time budget (the
    stage then takes the time it needs), or when too little would fit."""
    if not cv or not budget_s:
        return 0.0
    share = FINALISTS_SHARE * budget_s
    return share if share >= MIN_FINALISTS_S else 0.0


SAMPLERS = ("tpe", "random", "grid", "gp")
PRUNERS = ("hyperband", "median", "none")
COMPRESS_TARGETS = ("latency", "size", "throughput")
SHIP_MODES = ("accurate", "balanced", "fast")
MAX_DROP_LIMIT = 20.0  # points; a larger accepted loss is a typo (0.5 meant as 50?), not a wish


def compress_budget_s(run_budget_s: float | None) -> float:
    """Default budget of `autopilot compress` on a finished run."""
    if not run_budget_s:
        return NO_BUDGET_COMPRESS_S
    return max(MIN_STANDALONE_COMPRESS_S, COMPRESS_SHARE * float(run_budget_s))


def default_workers() -> int:
    # Small models gain little from intra-op threads and lose a lot when a
    # core is busy; one single-threaded trial per core uses the machine best.
    return max(1, min(os.cpu_count() or 1, 4))


def _drop_problem(points) -> str | None:
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not math.isfinite(points) \
            or not 0 <= points <= MAX_DROP_LIMIT:
        return f"must be in points of accuracy between 0 and {MAX_DROP_LIMIT:g} (0.5 = half a point), got {points!r}"
    return None


def check_max_drop(points: float, what: str = "max_drop") -> float:
    """Accuracy drops are in points everywhere (0.5 = half a point of accuracy)."""
    if problem := _drop_problem(points):
        raise RunError(f"{what} {problem}")
    return float(points)


class RunConfig(BaseModel):
    """Everything that decides what `autopilot run` does, with its default
    and the reason for it. The CLI and the Python API both build this; it
    is stored as run.json's `config`, so a resumed run or a worker on
    another machine reads the same settings."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: str  # built-in name, image folder, .csv or .npz
    label: str | None = None  # CSV label column; None: label/target/class/y
    skip_bad: bool = False  # unreadable files stop the run unless asked to skip
    layout: Literal["nhwc", "nchw"] | None = None  # 4-D NPZ images; None: told from the shape, or asked for
    task: Literal["auto", "classification", "regression"] = "auto"  # CSV tables; auto: a numeric label with many values is regression
    test_split: Literal["seeded", "official"] = "seeded"  # official: the data set's own test set (Fashion-MNIST, CIFAR)
    budget_s: float | None = Field(None, gt=0)  # whole run; DEFAULT_BUDGET_S when trials is also None
    trials: int | None = Field(None, ge=1)  # stop after this many finished trials
    sampler: Literal["tpe", "random", "grid", "gp"] = "tpe"  # TPE: about half the trials of random on small spaces
    pruner: Literal["hyperband", "median", "none"] = "hyperband"  # cheap early rungs on a CPU budget
    workers: int = Field(default_factory=default_workers, ge=1)  # one single-threaded trial per core
    storage: str | None = None  # Optuna URL; None: journal file in the run (~9 ms per trial)
    seed: int = 0
    device: str = "auto"  # cuda when available
    val_frac: float = Field(0.15, gt=0, lt=0.5)  # enough examples to rank trials
    test_frac: float = Field(0.15, gt=0, lt=0.5)  # touched once, after selection
    compress: bool = True  # measured candidates; ships only what helps
    compress_target: Literal["latency", "size", "throughput"] = "latency"  # batch-1 p50 is what a server feels
    max_drop: float = 0.5  # points of validation accuracy compression may lose, judged with its uncertainty
    fusion: bool = True  # an ensemble of the search's trials and its distilled student, measured beside the single model
    # What ships among the single model, the ensemble and the student. balanced:
    # the accuracy an ensemble adds, at no more than twice the single model's
    # batch-1 latency (accurate ignores serving cost, fast gives up the gain).
    ship: Literal["accurate", "balanced", "fast"] = "balanced"
    space: Literal["components", "templates"] = "components"  # per-stage components (NAS); templates: the former fixed nets
    objective: Literal["accuracy", "pareto"] = "accuracy"  # pareto: accuracy and ONNX Runtime latency, both searched
    max_params: int | None = Field(None, ge=1)  # hard limit; larger configurations are rejected before training
    max_latency_ms: float | None = Field(None, gt=0)  # hard limit: ONNX Runtime, batch 1, one thread, this machine
    executor: Literal["local", "ray"] = "local"  # local: processes on this machine; ray: each trial a task on a Ray cluster
    ray_address: str | None = None  # e.g. 10.0.0.1:6379; None: RAY_ADDRESS, else a new Ray instance on this machine
    cpus_per_trial: float = Field(1, gt=0)  # one single-threaded trial per core, as local workers do
    gpus_per_trial: float = Field(0, ge=0)  # small models train well on CPUs; 0.5 lets two trials share a GPU
    finalists: int = Field(3, ge=1)  # best trials re-scored by cross-validation: one validation split ranks noisily
    cv: int = Field(3, ge=0)  # folds over train+validation; 0: the best trial ships as the search trained it
    # Share of the validation split kept out of the folds and the retraining on
    # train+validation (data/gate.py): compression and fusion judge on it, so
    # their gates see data the shipped model never trained on. Half: the
    # gate's paired drop bound needs a few hundred examples, and the retraining
    # loses only that share of validation (7.5 % of the data by default).
    gate_frac: float = Field(0.5, gt=0, lt=1)

    @field_validator("cv")
    @classmethod
    def _folds(cls, v: int) -> int:
        if v == 1:
            raise ValueError("one fold is not cross-validation: give 0 (off) or at least 2")
        return v

    @field_validator("max_drop")
    @classmethod
    def _points(cls, v: float) -> float:
        if problem := _drop_problem(v):
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _splits_leave_training_data(self):
        if self.val_frac + self.test_frac >= 0.8:
            raise ValueError(f"val_frac + test_frac = {self.val_frac + self.test_frac:.2f} leaves too little to train on")
        return self

    @classmethod
    def default(cls, option: str):
        """The default of one option, for CLI help texts and callers that
        take an option alone (compress_run's target and max_drop)."""
        return cls.model_fields[option].get_default(call_default_factory=True)

    @classmethod
    def build(cls, **options) -> "RunConfig":
        """From keyword options; None means "the default"; a bad value is a
        RunError naming the option, not a pydantic traceback."""
        given = {k: v for k, v in options.items() if v is not None}
        if given.get("budget_s") is None and given.get("trials") is None:
            given["budget_s"] = DEFAULT_BUDGET_S
        try:
            return cls(**given)
        except ValidationError as e:
            raise RunError(describe_error(e)) from None


def describe_error(e: ValidationError) -> str:
    """One line: which option, what is wrong."""
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg
