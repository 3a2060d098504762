"""The run directory: one place that knows its layout, and atomic writes.

    runs/<name>/
      run.json            config, seed, versions, data description, status
      data/               splits.npz (indices), profile.json
      study/journal.log   Optuna journal storage
      trials/<n>/         metrics.jsonl, TensorBoard events, spec + weights of completed trials
      search.json         summary of every trial
      model/              spec.json, weights.safetensors, model.onnx, card.json
      report.html
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

# A network's files in a trial or model folder (models.spec.save_model writes them):
SPEC_FILE = "spec.json"  # its architecture, JSON
WEIGHTS_FILE = "weights.safetensors"  # its weights, no pickle
TORCH_FILES = (SPEC_FILE, WEIGHTS_FILE)
# Beside a trial's weights, whatever family made it (search.study.save_val_logits): its
# validation logits, rows in the validation split's order. Ensemble selection (fusion/)
# chooses from them; search.select compares finalists on them, example by example.
VAL_LOGITS = "val_logits.npy"

# The finalists' bags (written by finalists.stage, read by fusion.members):
BAGS_DIR = "finalists"  # finalists/<trial>/fold<f>/ (spec.json + weights.safetensors) and oof_logits.npy
REFIT_DIR = "full"  # finalists/<trial>/full/: the runner-up retrained on train+validation (finalists.stage)
OOF_LOGITS = "oof_logits.npy"  # rows in data.gate.pooled order; a row's logits from the fold model that did not train on it

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    run_json = property(lambda self: self.path / "run.json")
    data_dir = property(lambda self: self.path / "data")
    splits = property(lambda self: self.path / "data" / "splits.npz")
    profile = property(lambda self: self.path / "data" / "profile.json")
    study_dir = property(lambda self: self.path / "study")
    journal = property(lambda self: self.path / "study" / "journal.log")
    trials_dir = property(lambda self: self.path / "trials")
    search_json = property(lambda self: self.path / "search.json")
    model_dir = property(lambda self: self.path / "model")
    report = property(lambda self: self.path / "report.html")

    def trial_dir(self, number: int) -> Path:
        return self.trials_dir / str(number)


def next_run_name(runs_root: Path, stem: str) -> str:
    """digits-001, digits-002, ...: the first name not taken."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "run"
    n = 1
    while (runs_root / f"{stem}-{n:03d}").exists():
        n += 1
    return f"{stem}-{n:03d}"


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def read_val_logits(trial_dir: str | Path):
    """A trial's validation logits (VAL_LOGITS), or None when it kept none
    (no pickle). numpy is imported here, not at start-up."""
    import numpy as np

    path = Path(trial_dir) / VAL_LOGITS
    if not path.exists():
        return None
    return np.load(path, allow_pickle=False)


def write_json(path: str | Path, obj) -> None:
    """Atomic JSON write: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
