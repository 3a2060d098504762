"""The gate slice: a stratified, seeded part of the validation split that no
shipped model trains on, so that the decisions made after the model is
chosen (the compression gate, the fusion choice) are judged on unseen data.

Why it exists: with cross-validated finalists the winner is retrained on
train+validation; judged on the validation split afterwards, every
candidate scores near 1.0 and the compression gate is blind (a run shipped
a 70 % prune at validation 1.0000 that lost 0.75 points on test). So the
finalists stage keeps this slice out of its folds and out of the retraining,
writes its positions (within the validation split) to data/gate.npy, and the
later stages see the run's data through `gated`:

    train  the examples the shipped model trained on (train + the rest of validation)
    val    the gate slice: what compression and fusion judge on
    check  a few training examples for the per-epoch check of their own
           trainings (choosing a student's best epoch on the gate would
           flatter it on the very data that judges it)
    test   unchanged, still read once at the end

A run without data/gate.npy (--cv 0, boosted trees, regression) keeps its
plain split: there the shipped model never trained on validation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

GATE_FILE = "gate.npy"  # in the run's data/ folder: int64 positions within the validation split
CHECK_EXAMPLES = 512  # the per-epoch check of compression's and fusion's own trainings
GATED = "gated"  # a key marking a data dict already seen through the gate


def gate_split(y_val: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(gate, rest): sorted positions within the validation split, stratified
    by class and seeded; every class keeps at least one example in each part
    when it has two (a class of one goes to the rest, to be trained on)."""
    y_val = np.asarray(y_val)
    rng = np.random.default_rng([seed, 7919])  # its own stream: the split's draws stay as they were
    gate = []
    for c in np.unique(y_val):
        idx = rng.permutation(np.flatnonzero(y_val == c))
        k = min(len(idx) - 1, max(1, int(np.floor(frac * len(idx) + 0.5)))) if len(idx) > 1 else 0
        gate.append(idx[:k])
    gate = np.sort(np.concatenate(gate)).astype(np.int64) if gate else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(y_val)), gate).astype(np.int64)
    return gate, rest


def pooled(data: dict, rest: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train + validation (+ only the `rest` positions of validation when
    given): the examples cross-validation folds and the retraining use,
    in this order (out-of-fold predictions are stored in it)."""
    (Xtr, ytr), (Xva, yva) = data["train"], data["val"]
    if rest is not None:
        Xva, yva = Xva[rest], yva[rest]
    return np.concatenate([Xtr, Xva]), np.concatenate([ytr, yva])


def gated(data: dict, gate: np.ndarray) -> dict:
    """The run's data as the stages after the finalists see it (module doc)."""
    if data.get(GATED):
        return data
    gate = np.asarray(gate, dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(data["val"][1])), gate)
    X, y = pooled(data, rest)
    Xva, yva = data["val"]
    return {"train": (X, y), "val": (Xva[gate], yva[gate]), "check": training_sample(X, y),
            "test": data["test"], GATED: True}


def training_sample(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CHECK_EXAMPLES training examples, evenly spaced."""
    step = max(1, len(y) // CHECK_EXAMPLES)
    return X[::step][:CHECK_EXAMPLES], y[::step][:CHECK_EXAMPLES]


def save_gate(data_dir: str | Path, gate: np.ndarray) -> Path:
    path = Path(data_dir) / GATE_FILE
    np.save(path, np.asarray(gate, dtype=np.int64), allow_pickle=False)
    return path


def load_gate(data_dir: str | Path) -> np.ndarray | None:
    path = Path(data_dir) / GATE_FILE
    return np.load(path, allow_pickle=False) if path.exists() else None


def clear_gate(data_dir: str | Path) -> None:
    (Path(data_dir) / GATE_FILE).unlink(missing_ok=True)


def with_gate(data_dir: str | Path, data: dict) -> dict:
    """`data` through the run's gate when it has one, else as it is."""
    gate = load_gate(data_dir)
    return data if gate is None else gated(data, gate)


def check_split(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """What a stage's own training checks each epoch and picks its best
    epoch on: a sample of its training data, never the split that then
    judges it. Without a gate too: a pruned model whose best epoch was
    picked on validation and then judged there was flattered (mnist5k:
    prune50 at validation 0.9973 against the fp32 model's 0.9907 shipped,
    and scored 0.9787 against 0.9880 on test)."""
    return data["check"] if "check" in data else training_sample(*data["train"])
