"""data/profile.json: the data set and its splits, summarised (written by data.profile)."""
from __future__ import annotations

from typing import ClassVar

from .base import Part, RunFile


class Stats(Part):
    min: float
    max: float
    mean: float
    std: float


class FeatureStats(Stats):
    name: str


class SplitProfile(Part):
    examples: int
    class_counts: dict[str, int]
    target: Stats | None = None  # regression: the target's min, max, mean, std in this split


class Profile(RunFile):
    FILE: ClassVar[str] = "data/profile.json"
    name: str
    kind: str
    examples: int
    input_shape: list[int]
    classes: list[str]
    fingerprint: str
    splits: dict[str, SplitProfile]
    imbalance_ratio: float | None
    train_duplicates: int
    leaks: dict[str, int]
    conflicting_duplicates: int
    features: list[FeatureStats] | None = None  # tables
    features_truncated: bool | None = None
    channels: list[Stats] | None = None  # images and signals
