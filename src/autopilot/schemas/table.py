"""data/table.json: a CSV's inferred columns and task; data/preprocess.json:
the preprocessing fitted on its training rows, which turns raw rows into
the model's input for training, `predict`, `serve` and `monitor` alike
(written by the runner from data.tables / data.preprocess)."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from .base import Part, RunFile

ColumnType = Literal["number", "category", "boolean", "datetime", "id", "text", "constant", "empty"]
Task = Literal["classification", "regression"]


class TableColumn(Part):
    name: str
    type: ColumnType
    missing: int
    distinct: int
    examples: list[str]
    reason: str = ""  # why it is dropped; empty when the column is used
    has_time: bool = False


class TableFile(RunFile):
    FILE: ClassVar[str] = "data/table.json"
    label: str
    task: Task
    task_reason: str  # "--task", or what the label looked like
    rows: int
    columns: list[TableColumn]


class Scale(Part):
    kind: Literal["standard", "quantile"]
    mean: float | None = None
    std: float | None = None
    points: list[float] | None = None


class Step(Part):
    """One used column's fitted steps (see data.preprocess)."""
    name: str
    type: Literal["number", "category", "boolean", "datetime"]
    indicator: bool = False
    fill: list[float] | None = None
    scale: list[Scale] | None = None
    parts: list[Literal["year", "month", "dow", "hour"]] | None = None
    encoding: Literal["onehot", "target"] | None = None
    values: list[str] | None = None
    other: bool | None = None  # one-hot: an "(unknown)" column for rare and unseen values
    table: dict[str, list[float]] | None = None
    unknown: list[float] | None = None
    prior: list[float] | None = None

    @model_validator(mode="after")
    def _complete(self):
        if self.type == "category" and (self.encoding is None or self.values is None):
            raise ValueError(f"category column {self.name!r} needs encoding and values")
        if self.encoding == "target" and (self.table is None or self.unknown is None):
            raise ValueError(f"target-encoded column {self.name!r} needs table and unknown")
        if self.type != "category" and self.fill is None:
            raise ValueError(f"{self.type} column {self.name!r} needs fill")
        return self


class Dropped(Part):
    name: str
    type: ColumnType
    reason: str


class Candidate(Part):
    choices: dict[str, str]
    val_score: float


class FeatureStudy(Part):
    proxy: str
    metric: Literal["accuracy", "r2"]
    candidates: list[Candidate]
    nil_importance: dict[str, str]  # column -> why it was dropped


class Target(Part):
    mean: float
    std: float


class PreprocessFile(RunFile):
    FILE: ClassVar[str] = "data/preprocess.json"
    version: Literal[1]
    task: Task
    label: str
    choices: dict[str, str]
    columns: list[Step]
    dropped: list[Dropped]
    features: list[str]  # names of the model's inputs, in order
    target: Target | None = None  # regression: training mean and std of the label
    study: FeatureStudy | None = None
