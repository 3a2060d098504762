"""fusion/results.json: the ensemble chosen from the search's trials (members
and weights), its one-graph ONNX file and parity check, the student
distilled from it, every candidate measured side by side, and what ships
with the reason (written by autopilot.fusion.stage; read by the report).

Accuracies are fractions; `max_drop` is in points (0.5 = half a point), the
unit of --max-drop everywhere. Validation chose everything here; the test
figures were read once, after the choice.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from .base import Part, RunFile, read
from .card import Parity
from .compress import Latency, TrainInfo, ValPaired


class PoolTrial(Part):
    """A completed trial (or a finalist's bag of fold models) that ensemble selection could choose."""
    trial: int
    val_accuracy: float  # on the predictions selection used (a bag's: out-of-fold)
    models: int = 1  # a bag: its K fold models
    name: str | None = None  # "trial 4" or "bag 20"


class Member(Part):
    trial: int
    weight: float  # share of the ensemble's additions (counts / total)
    temperature: float  # its logits are divided by this before the softmax (fitted on validation)
    models: int = 1  # a bag: its K fold models share the weight equally
    name: str | None = None  # "trial 4" or "bag 20"
    file: str | None = None  # a single model's folder: trials/<n>, or model when the shipped model stands in for its trial
    # Every model's folder, relative to the run: a bag's fold models, or the
    # shipped model and its siblings (fusion/sibling<k>, fusion/siblings.py)
    files: list[str] = []


class EnsembleSelection(Part):
    """Greedy selection with replacement (Caruana et al. 2004) on validation logits."""
    method: str
    pool: Literal["trials", "bags", "mixed"] = "trials"  # bags: cross-validated finalists' fold models; mixed: both
    selected_on: str | None = None  # the predictions selection used, in words
    rounds: int
    init: int
    members: list[Member]  # largest weight first; weights sum to 1
    val_accuracy: float
    val_nll: float
    history: list[list[float]]  # (accuracy, nll) after each addition


class CappedSelection(Part):
    """--ship balanced: selection again with the members' summed batch-1
    latency within the cap (autopilot.fusion.capped), when the free one is over it."""
    cap_ms: float  # 0.9 x BALANCED_LATENCY x the single model's batch-1 latency, timed beside the pool's models
    single_ms: float
    costs_ms: dict[str, float]  # each pool model's batch-1 latency (a bag: all its fold models)
    why: str
    selection: dict | None  # members, val_accuracy, val_nll, history as in `selection`; None: none made


class ShipCandidate(Part):
    """One file measured by the stage. "single" is the single model as it
    ships (the compressed file when compression chose one); "fp32" is the
    single model's own export, measured beside it for the card's best_single
    when the two differ, and not itself a choice (compression made that one)."""
    name: Literal["single", "fp32", "ensemble", "ensemble-capped", "student"]
    file: str  # relative to the run directory
    method: str  # the single model's (fp32, int8-static, ...), "ensemble" or "distill"
    params: int
    file_bytes: int
    val_acc: float
    val_paired: ValPaired | None = None  # against "single", on the same validation examples (B = this file)
    test_acc: float | None  # read once, after the choice; never used to choose
    latency_ms: dict[str, Latency]  # by batch size: "1", "64"
    throughput_per_s: dict[str, float]
    parity: Parity | None = None  # ensemble: ONNX Runtime against the PyTorch members (validation inputs)
    members: list[int] | None = None  # ensemble and student's teacher
    student: dict | None = None  # student: its model spec
    train: TrainInfo | None = None  # student: its distillation


class FusionStep(Part):
    step: str
    status: Literal["done", "skipped", "failed"]
    why: str


class FusionResults(RunFile):
    FILE: ClassVar[str] = "fusion/results.json"
    run: str
    ship: Literal["accurate", "balanced", "fast"]
    max_drop: float  # points: --ship fast's accepted loss against the most accurate candidate
    seed: int
    budget_s: float
    elapsed_s: float
    pool: list[PoolTrial]
    selection: EnsembleSelection | None  # None: fewer than two trials to choose from
    candidates: list[ShipCandidate]
    capped: CappedSelection | None = None  # --ship balanced: the ensemble selected under the latency cap
    chosen: Literal["single", "ensemble", "ensemble-capped", "student"]
    judged_on: str | None = None  # the data every candidate's validation accuracy is measured on (the gate slice)
    chosen_path: str  # the file predict and serve load after this choice
    reason: str
    forced: bool = False  # the ensemble failed parity and shipped anyway (--force)
    load_average: list[float] | None
    plan: list[FusionStep]

    def candidate(self, name: str) -> ShipCandidate | None:
        return next((c for c in self.candidates if c.name == name), None)


def read_fusion(run_dir: str | Path) -> FusionResults:
    return read(FusionResults, run_dir)
