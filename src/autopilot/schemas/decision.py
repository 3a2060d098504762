"""retrain/NNN/decision.json: what one `autopilot retrain` compared, with which
test, and what it decided (written by autopilot.retrain; read by its tests
and by people). `FILE` is relative to the retrain's own folder:
`read(Decision, run / "retrain" / "001")`."""
from __future__ import annotations

from typing import ClassVar

from .base import Part, RunFile


class PairedTest(Part):
    """One paired comparison on one set of examples (retrain.rule.Judgement)."""
    test: str  # the test, in words
    examples: int
    challenger_only: int  # examples only the challenger got right
    champion_only: int  # examples only the champion got right
    champion_accuracy: float
    challenger_accuracy: float
    p_value: float
    passed: bool  # p_value < alpha
    drop_upper_bound: float | None = None  # points, one-sided (1 - alpha) bound; original test split only
    tolerance: float | None = None  # points; original test split only


class Compared(Part):
    """The exact file each side was scored with."""
    version: str  # champion: the served version; challenger: "challenger" (the version it became is `Decision.version`)
    onnx: str  # relative to the run directory
    onnx_sha256: str
    compressed: str | None = None  # compression candidate the file is (int8s, prune50, ...); None: fp32 export


class Compression(Part):
    ran: bool
    chosen: str | None = None  # the candidate the policy shipped ("fp32": none helped)
    reason: str  # the policy's reason, or why compression did not run
    target: str | None = None
    max_drop: float | None = None  # points, as in the run's config
    budget_s: float | None = None


class Source(Part):
    kind: str  # "data" (--data) or "feedback" (--from-feedback)
    source: str | None = None  # the file given with --data
    examples: int


class Decision(RunFile):
    FILE: ClassVar[str] = "decision.json"
    time: str  # ISO 8601, UTC
    retrain_dir: str  # relative to the run: retrain/NNN
    rule: str  # retrain.rule.RULE
    alpha: float
    tolerance: float  # points
    min_holdout: int  # fewest held-out new examples that can reach p < alpha
    champion: Compared
    challenger: Compared
    new_data: PairedTest
    original_test: PairedTest
    promote: bool  # what the rule says
    reason: str
    version: str | None = None  # the version the challenger became; None: not promoted (or --no-promote)
    sources: list[Source]
    new_split: dict[str, int]  # new examples in train / val / holdout
    repeat_new: int  # how often the new training examples were repeated
    warm_start_trials: int
    trials: int
    challenger_trial: int
    challenger_trial_state: str  # "complete", or how a deadline cut it
    onnx_parity: dict[str, float | int | bool]
    compression: Compression
    elapsed_s: float
