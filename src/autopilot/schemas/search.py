"""search.json (one line per trial, written by search.study.summarize; read by
the report) and the files of trials/<n>/ written by the search objective.

A trial is COMPLETE only when it finished its planned training or stopped
early on validation; one cut by the deadline is PRUNED with `stopped:
"deadline"` (its best-epoch weights are kept in case nothing completes).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from .base import Part, RunFile

TrialStateName = Literal["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]
# How a trial's training ended: its whole schedule, early stop on validation,
# the run's deadline, or the pruner (rung comparison).
Stopped = Literal["completed", "early-stop", "deadline", "pruned"]


class TrialSummary(Part):
    number: int
    state: TrialStateName
    value: float | None  # COMPLETE: best val acc; otherwise the last reported val acc
    best_val_acc: float | None = None  # best epoch's val acc, also for trials that did not complete
    val_loss: float | None  # at the best epoch
    params: dict[str, Any]
    duration_s: float | None
    started_s: float | None = None  # seconds after the search started
    finished_s: float | None  # seconds after the search started
    epochs: int | None  # epochs trained
    planned_epochs: int | None = None  # epochs of its learning-rate schedule
    params_count: int | None
    error: str | None  # why a trial failed
    stopped: Stopped | None
    doctor: list[str]  # ids of the live doctor's warnings and errors
    # Cost and fidelity (search/limits.py, search/budget.py); None in runs made before them.
    latency_ms: float | None = None  # ONNX Runtime, batch 1, one thread, measured before training
    rung: int | None = None  # successive-halving rung of a budgeted search (0 = first)
    final: bool = False  # a finalist: trained on all the data that fit the time left
    data_fraction: float | None = None  # share of the training examples it trained on
    rejected: str | None = None  # why it was not trained (over a cost limit, too slow for its slot)


class SelectedTrial(Part):
    """The trial the search offers as the final model, and how it ended."""
    trial: int
    how: str  # "complete" or "cut by the deadline after k of n epochs"
    why: str | None = None  # a known-good first trial ships over the top-ranked one (search/select.py)


class SearchFile(RunFile):
    FILE: ClassVar[str] = "search.json"
    sampler: str
    pruner: str
    # What a pruner compares: "schedule" = per mille of each trial's planned
    # epochs (like with like across schedules of different lengths).
    progress: Literal["schedule", "epoch"] = "schedule"
    started_at: float  # epoch seconds
    elapsed_s: float
    best_trial: int | None  # best COMPLETE trial
    best_value: float | None
    selection: SelectedTrial | None = None  # None: nothing can be shipped
    trials: list[TrialSummary]


# Per-trial files are many (one folder per trial), so they are Parts with
# their path pattern here rather than RunFiles with one fixed FILE.
TRIAL_CONFIG = "trials/{number}/config.json"
TRIAL_METRICS = "trials/{number}/metrics.jsonl"  # one EpochLine per line


class TrialConfig(Part):
    """trials/<n>/config.json: the sampled parameters and what they built."""
    params: dict[str, Any]
    spec: dict[str, Any]
    hparams: dict[str, Any]


class EpochLine(Part):
    """One epoch of training (train.train's history): one line of trials/<n>/metrics.jsonl."""
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    time_s: float
