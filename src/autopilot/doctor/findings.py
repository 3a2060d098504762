"""What the doctor says: `Finding`, `CheckResult`, `DoctorReport`, and the stable ids.

Every finding has an id from the table below. Ids are stable: scripts, the
report and the README may rely on them. Severity: `error` = a bug that makes
training wrong or useless, `warn` = probably a problem, `info` = worth knowing.

| id | severity | when | from |
|---|---|---|---|
| `labels-out-of-range` | error | a label is < 0, >= the number of classes, or not an integer | data |
| `non-finite-inputs` | error | NaN or inf in the inputs | data |
| `constant-inputs` | error / warn / info | every input of a split is the same value (e.g. all zero) → error; constant table columns, constant image/signal channels, > 1 % blank examples → warn; a few blank examples → info | data |
| `duplicates` | warn / info | exact copies inside the training split (warn above 1 %) | data |
| `conflicting-labels` | warn | the same input appears with two different labels | data |
| `data-leak` | error / warn | the same example is in train and in val/test (error above 1 % of val/test) | data |
| `near-duplicates` | warn / info | val/test images or signals almost equal to a training one (cosine > 0.995 of downsampled, centred vectors; warn above 1 %) | data |
| `class-imbalance` | warn / info | largest/smallest class in train > 10 (warn), > 3 (info), or a class missing from train | data |
| `outliers` | warn / info | table rows with a value more than 6 robust standard deviations (MAD) from the training median, continuous columns only (warn above 1 % of rows) | data |
| `loss-at-init` | warn / info / error | loss at initialisation > 1.5 × ln(C) → warn (suggests `init_final_bias`); < 0.5 × ln(C) → info (already trained, or the label leaks into x); not finite → error | set-up |
| `probabilities-into-loss` | error / warn / info | the model outputs probabilities (softmax → error, sigmoid-like → warn) into a loss that applies log-softmax itself; log-softmax outputs into CrossEntropyLoss → info (harmless, redundant) | set-up |
| `logits-into-nll` | error | raw logits fed to NLLLoss, which expects log-probabilities | set-up |
| `no-signal` | error | trained briefly (Adam, fresh batches scored before each step), the model does no better on the real inputs than on zeroed inputs (labels shuffled? inputs unused?); a clear gain (≥ 10 points, or 10 % of the chance loss) too small a sample cannot confirm, or any result on a sample too small to show such a gain, is skipped as inconclusive | set-up |
| `cannot-overfit` | error / warn | cannot reach 100 % accuracy on one small batch (frozen parameters, wrong loss, broken forward) | set-up |
| `frozen-parameters` | warn | parameters with requires_grad=False or that never change while training | set-up |
| `batch-mixing` | error | output i depends on input j ≠ i in eval mode (`view` where `permute` was meant) | set-up |
| `not-reproducible` | warn | two short runs from the same seed give different losses | set-up |
| `eval-nondeterministic` | error | two eval-mode forward passes of the same batch differ (dropout left on) | set-up |
| `lr-range` | info | learning-rate range test: the suggested learning rate (`evidence["suggested_lr"]`) | set-up |
| `lr-too-high` | warn | pre-flight (given `lr`): past the range test's loss minimum, where the loss has climbed back; live: at peak lr the median log10(update/weight) over layers is > -1, or > -2.5 while the loss stays above its starting value | set-up, live |
| `lr-too-low` | warn | pre-flight (given `lr`): 100× below the range test's suggestion; live: at peak lr the median log10(update/weight) is < -5 | set-up, live |
| `diverged` | error | the training loss became NaN or inf | live |
| `loss-spike` | warn | a training loss more than 6 standard deviations above the last 50 and over 1.5 × their median | live |
| `dead-units` | warn | more than 50 % of a ReLU layer's units output zero for a whole training batch, two samples in a row | live |
| `overfitting` | warn | validation loss up > 10 % from its best for 3+ epochs while training loss keeps falling and the gap grows | live |
| `schedule-decays-early` | warn | the schedule drives the lr below 1 % of its peak before half of training | live |
| `augmentation-changes-labels` | info | images only: a quickly trained default model loses more than max(5 points, ¼ of its margin over chance) of validation accuracy on mirror images (hflip, vflip) or upside-down images (rotate); that family is left out of the augmentation search | data + set-up |
| `probe-failed` | warn / error | a check raised an exception (the message is in the evidence); error when the model cannot run a forward pass on the data at all | any |
| `id-columns` | info | CSV columns dropped as ID-like (near-unique values, or distinct consecutive integers) or free text | data (tables) |
| `mostly-missing` | warn | a used CSV column with more than half of its cells missing | data (tables) |
| `target-leak` | error | one CSV column alone, fitted on train, predicts the validation labels almost perfectly (accuracy >= max(0.99, majority + 0.05); R² >= 0.98 for regression) | data (tables) |
| `column-shift` | warn | a CSV column distributed differently in test than in train (KS statistic or total variation > 0.2, p < 0.001) | data (tables) |
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("info", "warn", "error")
_RANK = {"ok": 0, "info": 1, "warn": 2, "error": 3}

# One line per id: the same table in machine-readable form (render and the
# report use it for a title; tests check every emitted id is listed here).
IDS: dict[str, str] = {
    "labels-out-of-range": "labels outside 0..C-1",
    "non-finite-inputs": "NaN or inf in the inputs",
    "constant-inputs": "constant inputs",
    "duplicates": "duplicate examples in train",
    "conflicting-labels": "same input, different labels",
    "data-leak": "examples shared by train and val/test",
    "near-duplicates": "near-duplicates across splits",
    "class-imbalance": "class imbalance",
    "outliers": "extreme outliers",
    "loss-at-init": "loss at initialisation",
    "probabilities-into-loss": "probabilities fed to a loss that expects logits",
    "logits-into-nll": "logits fed to NLLLoss",
    "no-signal": "model does not use its inputs",
    "cannot-overfit": "cannot overfit one batch",
    "frozen-parameters": "parameters that never train",
    "batch-mixing": "examples mixed across the batch",
    "not-reproducible": "same seed, different run",
    "eval-nondeterministic": "eval mode is random",
    "lr-range": "learning-rate range test",
    "lr-too-high": "learning rate too high",
    "lr-too-low": "learning rate too low",
    "diverged": "training diverged",
    "loss-spike": "loss spikes",
    "dead-units": "dead ReLU units",
    "overfitting": "overfitting",
    "schedule-decays-early": "schedule decays too early",
    "augmentation-changes-labels": "an augmentation that changes labels",
    "probe-failed": "a check failed to run",
    "id-columns": "ID-like or free-text columns dropped",
    "mostly-missing": "columns mostly missing",
    "target-leak": "the label leaked into a feature",
    "column-shift": "a column distributed differently in test",
}


def jsonable(value: Any) -> Any:
    """numpy/torch scalars and arrays, tuples, non-finite floats -> plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy / torch
        return jsonable(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        # JSON has no NaN/inf; keep the meaning as a string.
        return value if math.isfinite(value) else str(value)
    return str(value)


@dataclass
class Finding:
    id: str
    severity: str  # info | warn | error
    evidence: dict
    why: str  # one line: what was seen and why it matters
    suggestion: str  # a concrete next step

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        self.evidence = jsonable(self.evidence)

    def to_dict(self) -> dict:
        return {"id": self.id, "severity": self.severity, "evidence": self.evidence, "why": self.why,
                "suggestion": self.suggestion}


@dataclass
class CheckResult:
    id: str  # check name (for most checks the id of the finding it can emit)
    status: str  # ok | found | skipped
    seconds: float
    note: str = ""  # why it was skipped, or what it measured in one phrase

    def to_dict(self) -> dict:
        d = {"id": self.id, "status": self.status, "seconds": round(float(self.seconds), 3)}
        if self.note:
            d["note"] = self.note
        return d


def worst_of(findings: list[Finding]) -> str:
    worst = "ok"
    for f in findings:
        if _RANK[f.severity] > _RANK[worst]:
            worst = f.severity
    return worst


@dataclass
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def worst(self) -> str:
        """"ok", "info", "warn" or "error"."""
        return worst_of(self.findings)

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    @property
    def ids(self) -> list[str]:
        return [f.id for f in self.findings]

    def get(self, id: str) -> Finding | None:
        """The first finding with this id, or None."""
        return next((f for f in self.findings if f.id == id), None)

    def sorted_findings(self) -> list[Finding]:
        """Most severe first; stable within a severity."""
        return sorted(self.findings, key=lambda f: -_RANK[f.severity])

    def to_dict(self) -> dict:
        return {"findings": [f.to_dict() for f in self.sorted_findings()],
                "checks": [c.to_dict() for c in self.checks],
                "worst": self.worst,
                "elapsed_s": round(float(self.elapsed_s), 3)}
