"""compress/results.json: every compression candidate measured the same
way, the plan as it ran, and the choice with its reason (written by
autopilot.compress.stage; read by the CLI, retrain and the report).

Accuracies are fractions; `max_drop` and `drop_upper_points` are points of
accuracy (0.5 = half a point), the unit of --max-drop everywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from .base import Part, RunFile, read


class Latency(Part):
    p50: float  # ms per call
    p90: float
    n: int  # calls timed


class CandidateParity(Part):
    """Argmax agreement on the test inputs with the PyTorch fp32 model the file came from."""
    inputs: int
    against: str
    argmax_agree: float
    max_abs_diff: float
    min_agree: float
    passed: bool


class ValPaired(Part):
    """The candidate (B) against the baseline (A) on the same validation
    examples: only the discordant ones carry evidence of a drop."""
    n: int  # validation examples
    b_only: int  # the candidate right, the baseline wrong
    a_only: int  # the baseline right, the candidate wrong
    diff: float  # candidate accuracy minus baseline accuracy (fraction)


class TrainInfo(Part):
    epochs: int  # planned, fitted to the time slice
    epochs_run: int
    best_epoch: int | None
    stopped: str | None
    torch_val_acc: float | None
    train_s: float
    slice_s: float
    lr: float
    schedule: str


class Candidate(Part):
    name: str
    method: Literal["fp32", "int8-static", "int8-dynamic", "prune", "distill"]
    source: str | None  # the fp32 candidate an int8 file was quantised from
    baseline: bool
    path: str  # relative to the run directory
    params: int
    build_s: float
    file_bytes: int
    val_acc: float
    test_acc: float  # reported, never used to choose
    parity: CandidateParity
    val_paired: ValPaired
    drop_upper_points: float  # one-sided upper confidence bound on the validation drop (at results.confidence)
    latency_ms: dict[str, Latency]  # by batch size: "1", "64"
    throughput_per_s: dict[str, float]
    pareto: bool
    # Trained candidates
    parent: str | None = None
    ratio: float | None = None  # prune: share of channels removed
    student: dict[str, Any] | None = None  # distill: the student's model spec
    share: float | None = None  # distill: target share of the teacher's parameters
    temperature: float | None = None
    alpha: float | None = None
    train: TrainInfo | None = None


class PlanStep(Part):
    step: str
    status: Literal["done", "skipped", "failed"]
    why: str
    traceback: str | None = None


class Measurement(Part):
    threads: int
    batches: list[int]
    calls_per_round: dict[str, int]
    interleaved: bool
    inputs: str
    accuracy: str
    parity: str
    load_average: list[float] | None


class CompressResults(RunFile):
    FILE: ClassVar[str] = "compress/results.json"
    run: str
    target: Literal["latency", "size", "throughput"]
    max_drop: float  # points of validation accuracy the shipped candidate may lose, at `confidence`
    confidence: float  # of the one-sided bound on the paired validation drop
    seed: int
    budget_s: float
    elapsed_s: float
    chosen: str
    chosen_path: str  # the file that ships: compress/chosen.onnx, or model/model.onnx when the baseline is kept
    reason: str
    baseline: str
    measurement: Measurement
    candidates: list[Candidate]
    plan: list[PlanStep]
    versions: dict[str, str]

    def candidate(self, name: str) -> Candidate | None:
        return next((c for c in self.candidates if c.name == name), None)

    @property
    def chosen_candidate(self) -> Candidate:
        return next(c for c in self.candidates if c.name == self.chosen)


def read_results(run_dir: str | Path) -> CompressResults:
    return read(CompressResults, run_dir)
