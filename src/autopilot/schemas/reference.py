"""monitor/reference.json (and model/vN/reference.json): what live traffic is
compared with — training feature statistics, the model's validation
predictions, its latency floor and the baselines alert rules multiply
(written by monitor.reference; read by serve, monitor status and the report)."""
from __future__ import annotations

from typing import ClassVar

from .base import Part, RunFile


class FeatureStats(Part):
    names: list[str]
    quantiles: list[list[float]]  # per feature, for the KS test
    edges: list[list[float]]  # per feature, decile edges for PSI
    proportions: list[list[float]]  # per feature, training share per bin
    mean: list[float]
    std: list[float]
    n: int


class PredictionStats(Part):
    class_proportions: list[float]
    mean_confidence: float | None
    # Regression: quantile edges of the predicted value on validation and the
    # share of predictions between them, for the PSI of live predicted values.
    value_edges: list[float] | None = None
    value_proportions: list[float] | None = None
    accuracy: float | None
    n: int


class LatencyFloor(Part):
    p50: float | None
    p99: float | None
    n: int | None = None


class Baselines(Part):
    mean_confidence: float | None
    accuracy: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    input_drift_share: float
    prediction_drift_psi: float
    error_rate: float


class Reference(RunFile):
    FILE: ClassVar[str] = "monitor/reference.json"
    format: int
    created: str
    model_version: str
    kind: str
    input_shape: list[int]
    classes: list[str]
    features: FeatureStats
    predictions: PredictionStats
    latency_ms: LatencyFloor
    baselines: Baselines
