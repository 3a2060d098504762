"""The models ensemble selection may choose from, and their held-out logits:
the search's trials (validation logits), or, when the finalists were
cross-validated, each finalist's bag of fold models (out-of-fold logits).

Every trial that trained to the end (or to the deadline) keeps trials/<n>/val_logits.npy (written by
search.study.save_val_logits whatever family made it: a PyTorch model's
logits, or a tree model's through ONNX/scikit-learn). Selection reads only
those files. Building the one-graph ensemble needs each member as a PyTorch
module (spec.json + weights.safetensors), so a trial without them (a
family that is not a torch module) is left out of the pool, and the pool
says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models import load_model
from ..rundir import RunDir
from ..schemas import read
from ..schemas.search import SearchFile
from ..search.study import VAL_LOGITS

TORCH_FILES = ("spec.json", "weights.safetensors")


def read_val_logits(trial_dir: str | Path) -> np.ndarray | None:
    """A trial's validation logits, or None when it kept none (no pickle)."""
    path = Path(trial_dir) / VAL_LOGITS
    if not path.exists():
        return None
    return np.load(path, allow_pickle=False)


def completed_trials(rd: RunDir) -> list[int]:
    """Trials with trained weights (search.json), in number order: those the
    search completed, and those the run's deadline cut, which keep their
    best epoch's weights (selection on validation decides if they help; on a
    small budget they are most of what the search trained). Trials a pruner
    stopped for being weak keep no weights."""
    search = read(SearchFile, rd.path)
    return sorted(t.number for t in search.trials
                  if t.state == "COMPLETE" or (t.state == "PRUNED" and t.stopped == "deadline"))


def pool(rd: RunDir, n_val: int) -> tuple[dict[int, np.ndarray], list[str]]:
    """{trial: validation logits} of the completed trials an ensemble can
    be built from, and a note for each completed trial left out."""
    out, left_out = {}, []
    for n in completed_trials(rd):
        tdir = rd.trial_dir(n)
        logits = read_val_logits(tdir)
        if logits is None and not (tdir / "weights.safetensors").exists():
            continue  # stopped before it trained (e.g. no time left in the budget): no model to fuse
        if logits is None:
            left_out.append(f"trial {n}: no {VAL_LOGITS}")
        elif logits.ndim != 2 or len(logits) != n_val:
            left_out.append(f"trial {n}: {VAL_LOGITS} has shape {list(logits.shape)}, expected {n_val} rows")
        elif not all((tdir / f).exists() for f in TORCH_FILES):
            left_out.append(f"trial {n}: not a PyTorch model (no {' + '.join(TORCH_FILES)}), so not in one ONNX graph")
        else:
            out[n] = logits
    return out, left_out


def load_members(rd: RunDir, trials: list[int]) -> list:
    return [load_model(rd.trial_dir(n))[0].eval() for n in trials]


# -- bags: the cross-validated finalists' fold models -------------------------

BAGS_DIR, OOF_LOGITS = "finalists", "oof_logits.npy"  # written by autopilot.finalists (same names there)


@dataclass
class Pool:
    """What ensemble selection chooses from: each candidate's predictions on
    examples none of its models trained on (`logits`, rows matching `y`), and
    the model folders that make it (one trial, or a bag of K fold models)."""
    logits: dict[int, np.ndarray]  # by trial number
    y: np.ndarray
    models: dict[int, list[Path]]
    kind: str  # "bags" or "trials"
    selected_on: str  # in words, for results.json

    def load(self, trial: int) -> list:
        return [load_model(d)[0].eval() for d in self.models[trial]]


def bag_pool(rd: RunDir, y_pooled: np.ndarray) -> tuple[Pool | None, list[str]]:
    """The finalists' bags: K fold models each, with out-of-fold logits over
    the examples of data.gate.pooled (train + validation outside the gate).
    None when the finalists stage kept no bag (--cv 0, no time for folds)."""
    root = rd.path / BAGS_DIR
    logits, models, left_out = {}, {}, []
    for d in sorted(root.iterdir() if root.is_dir() else [], key=lambda p: p.name):
        if not d.name.isdigit():
            continue
        folds = sorted((f for f in d.glob("fold*") if all((f / n).exists() for n in TORCH_FILES)), key=lambda p: p.name)
        if not (d / OOF_LOGITS).exists() or len(folds) < 2:
            left_out.append(f"bag of trial {d.name}: incomplete (no {OOF_LOGITS} or fewer than two fold models)")
            continue
        z = np.load(d / OOF_LOGITS, allow_pickle=False)
        if z.ndim != 2 or len(z) != len(y_pooled):
            left_out.append(f"bag of trial {d.name}: {OOF_LOGITS} has shape {list(z.shape)}, expected {len(y_pooled)} rows")
            continue
        logits[int(d.name)], models[int(d.name)] = z, folds
    if not logits:
        return None, left_out
    return Pool(logits, np.asarray(y_pooled), models, "bags",
                f"out-of-fold predictions on {len(y_pooled)} train+validation examples (the gate slice excluded)"), left_out


def trial_pool(rd: RunDir, y_val: np.ndarray, rows: np.ndarray | None = None) -> tuple[Pool, list[str]]:
    """The search's trials, on their stored validation logits; `rows`: only
    those positions of the validation split (the gate slice is left out of
    selection, to judge the choice on data selection did not see)."""
    logits, left_out = pool(rd, len(y_val))
    if rows is not None:
        logits = {n: z[rows] for n, z in logits.items()}
        y_val = np.asarray(y_val)[rows]
    where = "the validation split" if rows is None else f"{len(y_val)} validation examples outside the gate slice"
    return Pool(logits, np.asarray(y_val), {n: [rd.trial_dir(n)] for n in logits}, "trials",
                f"the search trials' predictions on {where}"), left_out
