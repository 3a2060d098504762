"""model/card.json: what the final model is, how it was chosen, how good it
is, and which file actually ships (written by autopilot.final, its `shipped`
entry updated by autopilot.compress; read by the CLI, compress, predict,
serve, monitor, retrain and the report).

Accuracies are fractions (0.9851); only accuracy *drops* are in points.
The top-level `test_accuracy`/`val_accuracy` are the fp32 PyTorch model's,
measured once on the test split after selection; `fp32` and `shipped` are
the ONNX files as ONNX Runtime runs them, so the figures a user reads are
the figures of the file that `predict` and `serve` load.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from .base import Part, RunFile, read, write


class Parity(Part):
    """ONNX Runtime against PyTorch on the test inputs (export.check_parity)."""
    inputs: int
    max_abs_diff: float
    argmax_agree: float
    passed: bool
    max_abs_diff_limit: float | None = None
    forced: bool = False  # failed, and shipped anyway because the user passed --force


class ModelFigures(Part):
    """One ONNX file of the run, measured the way the compression stage
    measures every candidate (ONNX Runtime, one thread, batch-1 p50)."""
    name: str  # "fp32", or the compression candidate's name (int8s, prune50, ...)
    file: str  # relative to the run directory: model/model.onnx or compress/chosen.onnx
    method: str  # fp32, int8-static, int8-dynamic, prune, distill
    test_accuracy: float  # of this file, in ONNX Runtime, on the test split
    test_accuracy_se: float | None  # binomial standard error
    test_examples: int
    val_accuracy: float  # of this file on the validation split
    latency_ms_batch1: float | None  # p50 of single calls, 1 thread; None when not measured
    file_bytes: int
    chosen_by: Literal["final", "compress", "fusion"] | None = None  # the stage that decided this file ships; None: not shipped
    reason: str | None = None  # why this file ships


class FusedFigures(Part):
    """The best single model, the ensemble or its distilled student, measured
    side by side by the fusion stage (autopilot.fusion.stage): ONNX Runtime,
    one thread. Validation chose; test was read once, after the choice."""
    file: str  # relative to the run directory
    val_accuracy: float
    test_accuracy: float | None
    test_accuracy_se: float | None
    test_examples: int
    params: int
    latency_ms_batch1: float | None
    file_bytes: int
    trial: int | None = None  # best_single: the search trial
    members: list[int] | None = None  # ensemble: trial numbers, largest weight first
    weights: list[float] | None = None  # ensemble: same order, summing to 1
    parity_passed: bool | None = None  # ensemble: its one ONNX graph against the PyTorch members


class Selection(Part):
    """Which search trial became the model, and how that trial ended."""
    trial: int
    how: str  # "complete", or "cut by the deadline after k of n epochs"
    complete: bool
    why: str | None = None  # a known-good first trial ships over the top-ranked one (search/select.py)


class TrialCounts(Part):
    complete: int
    pruned: int
    fail: int


class Hyperparameters(Part):
    params: dict[str, Any]  # the trial's parameters as Optuna stored them
    training: dict[str, Any] = {}  # what train.train received


class Finalist(Part):
    """One of the best search trials, re-scored by k-fold cross-validation on
    train+validation (autopilot.finalists)."""
    trial: int
    search_val_accuracy: float  # its score on the validation split during the search
    params: int | None  # parameters of its model
    planned_epochs: int  # the schedule it had in the search
    fold_epochs: int  # the schedule of each fold (shorter when the time reserved asked for it)
    fold_accuracies: list[float]  # each held-out fold, at the end of the fold's schedule
    mean: float | None  # of fold_accuracies; None when no fold finished
    std: float | None  # sample standard deviation of fold_accuracies; None below two folds
    finished: bool  # every fold trained to the end of its schedule; only finished finalists can win
    won: bool = False


class CrossValidation(Part):
    """How the shipped configuration was chosen among the finalists, and how
    its weights were trained. Absent from the card with --cv 0."""
    folds: int
    examples: int  # train+validation, pooled and split into `folds` stratified folds
    finalists_asked: int
    finalists: list[Finalist]  # best search trial first; empty when none could be cross-validated
    fold_share: float | None  # fold schedules as a share of each finalist's planned epochs; None: no folds
    search_best: int  # the trial the search alone would have shipped
    winner: int  # the trial whose configuration ships
    reason: str  # why it won, in words
    retrained: bool  # the shipped weights were trained on train+validation, not the search's
    retrain_epochs: int | None
    # The retraining continued the search's weights: the budget had cut the
    # configuration's schedule short, or left too little time to start over
    # (finalists.plan.Candidate.warm_start, finalists.plan.continued)
    retrain_warm_start: bool | None = None
    # Seconds the retraining took here: what the fusion stage's siblings,
    # which repeat it with other seeds, plan on (None: not retrained here)
    retrain_s: float | None = None
    validation_held_out: bool  # False once retrained: the validation split is in the shipped model's training data
    # Validation examples kept out of the folds and the retraining (data/gate.py):
    # compression and fusion judge on them; None: no gate (the plain validation split)
    gate_examples: int | None = None
    reserved_s: float | None  # seconds this stage had; None: no time budget
    elapsed_s: float
    notes: list[str] = []  # what was done short of what was asked, and why; what the validation split means now


class RegressionMetrics(Part):
    """A regression model's errors on one split, each with its bootstrap standard error (metrics.py)."""
    rmse: float | None
    mae: float | None
    r2: float | None
    rmse_se: float | None = None
    mae_se: float | None = None
    r2_se: float | None = None
    examples: int


class RegressionFigures(Part):
    """The shipped ONNX file's errors, as ONNX Runtime computes them."""
    test: RegressionMetrics
    val: RegressionMetrics
    # [true, predicted] on the test split (at most MAX_RESIDUAL_POINTS, evenly
    # spaced): what the report's residual plot draws.
    test_points: list[list[float]] = []


class ModelCard(RunFile):
    FILE: ClassVar[str] = "model/card.json"
    name: str
    # regression: `classes` is empty, the accuracy fields hold R² (and its
    # bootstrap standard error), `regression` the RMSE, MAE and R² in full.
    task: Literal["classification", "regression"]
    kind: Literal["image", "signal", "table"]
    classes: list[str]
    input_shape: list[int]
    input_name: str
    output_name: str
    output: str
    family: str
    params: int
    # The fp32 PyTorch model on the test split (touched once, after selection).
    test_accuracy: float
    test_accuracy_se: float | None
    test_examples: int
    val_accuracy: float
    fp32: ModelFigures | None = None  # model/model.onnx; None on a retrain challenger's card
    shipped: ModelFigures | None = None  # what predict and serve load; None only before the final stage wrote it
    best_trial: int
    # Written by the fusion stage; None when it did not run (one completed trial, --no-fusion).
    best_single: FusedFigures | None = None
    ensemble: FusedFigures | None = None
    student: FusedFigures | None = None  # distilled from the ensemble
    selection: Selection | None = None
    trials: TrialCounts | None = None
    # None on a retrain challenger's card, which is scored on other splits.
    confusion_matrix: list[list[int]] | None = None
    per_class_accuracy: list[float | None] | None = None
    regression: RegressionFigures | None = None  # task "regression" only
    onnx_parity: Parity
    data_fingerprint: str | None = None
    seed: int
    budget_s: float | None = None
    elapsed_s: float | None = None
    hyperparameters: Hyperparameters
    versions: dict[str, str]
    cv: CrossValidation | None = None  # cross-validated finalists; None with --cv 0 and on older cards


Card = ModelCard  # the short name, as tests/test_schemas.py's table spells it


def read_card(run_dir: str | Path) -> ModelCard:
    return read(ModelCard, run_dir)


def write_card(card: ModelCard, run_dir: str | Path) -> Path:
    return write(card, run_dir)
