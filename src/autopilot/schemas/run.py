"""run.json: what the run was asked to do, on which data, with which
versions, and how far it got (written by the runner; read by every stage)."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from ..config import RunConfig
from .base import Part, RunFile, read, write


class DataDescription(Part):
    """Dataset.describe(): enough to recognise the data and rebuild the model's input."""
    name: str
    kind: Literal["image", "signal", "table"]
    source: str
    examples: int
    input_shape: list[int]
    classes: list[str]
    class_counts: list[int]
    feature_names: list[str] | None = None
    skipped_files: int
    fingerprint: str
    task: Literal["classification", "regression"] = "classification"


class RunInfo(RunFile):
    FILE: ClassVar[str] = "run.json"
    name: str
    created: str  # ISO 8601, UTC
    autopilot_version: str
    seed: int
    config: RunConfig
    versions: dict[str, str]  # python, torch, optuna, onnxruntime, numpy, autopilot
    data: DataDescription
    status: Literal["running", "interrupted", "failed", "done"]
    # Augmentation families the doctor measured to change labels on this data
    # (data.policies.FAMILIES); every trial leaves them out.
    augment_exclude: list[str] = []
    search_elapsed_s: float = 0.0  # summed over invocations, so --resume grants the rest of the budget
    search_started_at: float | None = None  # epoch seconds of the first search
    elapsed_s: float | None = None  # wall time of the last invocation, when done


def read_run(run_dir: str | Path) -> RunInfo:
    return read(RunInfo, run_dir)


def update_run(run_dir: str | Path, **fields) -> RunInfo:
    """Change some fields of run.json, validated, written atomically."""
    info = read_run(run_dir)
    updated = RunInfo.model_validate({**info.model_dump(), **fields})
    write(updated, run_dir)
    return updated
