"""The trials ensemble selection may choose from, and their validation logits.

Every trial that trained to the end (or to the deadline) keeps trials/<n>/val_logits.npy (written by
search.study.save_val_logits whatever family made it: a PyTorch model's
logits, or a tree model's through ONNX/scikit-learn). Selection reads only
those files. Building the one-graph ensemble needs each member as a PyTorch
module (spec.json + weights.safetensors), so a trial without them (a
family that is not a torch module) is left out of the pool, and the pool
says so.
"""
from __future__ import annotations

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
