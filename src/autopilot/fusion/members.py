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

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models import load_model
from ..rundir import BAGS_DIR, OOF_LOGITS, REFIT_DIR, TORCH_FILES, VAL_LOGITS, WEIGHTS_FILE, RunDir, read_val_logits
from ..schemas import read
from ..schemas.search import SearchFile


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
        if logits is None and not (tdir / WEIGHTS_FILE).exists():
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


# -- bags: the cross-validated finalists' fold models (rundir.BAGS_DIR) ------


@dataclass
class Pool:
    """What ensemble selection chooses from: each candidate's predictions on
    examples none of its models trained on (`logits`, rows matching `y`), and
    the model folders that make it (one trial's model, or a bag of K fold
    models). Keys are names ("trial 4", "bag 20"); `trial` gives their trial."""
    logits: dict[str, np.ndarray]
    y: np.ndarray
    models: dict[str, list[Path]]
    trial: dict[str, int]
    kind: str  # "trials", "bags" or "mixed"
    selected_on: str  # in words, for results.json
    notes: list[str]

    def load(self, name: str) -> list:
        return [load_model(d)[0].eval() for d in self.models[name]]

    def with_models(self, name: str, extra: list[Path], note: str) -> "Pool":
        """The pool with `extra` model folders beside `name`'s own (they
        share its selection logits and its weight): the shipped model's
        siblings (fusion/siblings.py)."""
        models = {**self.models, name: [*self.models[name], *extra]}
        return dataclasses.replace(self, models=models, notes=[*self.notes, note])


def bags(rd: RunDir, n_pooled: int) -> tuple[dict[int, tuple[np.ndarray, list[Path]]], list[str]]:
    """{trial: (out-of-fold logits, fold model folders)} of the finalists'
    bags (rows in data.gate.pooled order), and a note for each left out."""
    root = rd.path / BAGS_DIR
    out, left_out = {}, []
    for d in sorted(root.iterdir() if root.is_dir() else [], key=lambda p: p.name):
        if not d.name.isdigit():
            continue
        folds = sorted((f for f in d.glob("fold*") if all((f / n).exists() for n in TORCH_FILES)), key=lambda p: p.name)
        if not (d / OOF_LOGITS).exists() or len(folds) < 2:
            left_out.append(f"bag of trial {d.name}: incomplete (no {OOF_LOGITS} or fewer than two fold models)")
            continue
        z = np.load(d / OOF_LOGITS, allow_pickle=False)
        if z.ndim != 2 or len(z) != n_pooled:
            left_out.append(f"bag of trial {d.name}: {OOF_LOGITS} has shape {list(z.shape)}, expected {n_pooled} rows")
            continue
        out[int(d.name)] = (z, folds)
    return out, left_out


def selection_pool(rd: RunDir, y_val: np.ndarray, gate: np.ndarray | None, n_train: int, *,
                   shipped_trial: int | None = None, shipped_dir: Path | None = None) -> Pool:
    """The search's trials and the finalists' bags, on the validation
    examples outside the gate slice: none of their models trained on those
    (trials trained on the training split, each bag's row comes from the
    fold model that held it out). Selection needs one set of rows for all.

    `shipped_dir`: the shipped model, retrained on train+validation, stands
    in for its own search trial `shipped_trial` (the same configuration
    trained on more data), as AutoGluon's refit_full keeps the weights
    chosen on held-out predictions and refits the members: without it the
    ensemble could never contain the model it is compared with. A runner-up
    the finalists stage retrained (finalists/<trial>/full/) stands in for its
    trial the same way; only with a gate slice, which neither trained on."""
    rows = np.arange(len(y_val)) if gate is None else np.setdiff1d(np.arange(len(y_val)), gate)
    trial_logits, notes = pool(rd, len(y_val))
    refits = {} if shipped_dir is None else {shipped_trial: shipped_dir}
    for n in trial_logits if gate is not None else ():  # a runner-up the finalists stage retrained, outside the gate
        full = rd.path / BAGS_DIR / str(n) / REFIT_DIR
        if n not in refits and all((full / f).exists() for f in TORCH_FILES):
            refits[n] = full
    logits, models, trial = {}, {}, {}
    for n, z in trial_logits.items():
        key = f"trial {n}"
        logits[key], trial[key] = z[rows], n
        models[key] = [refits.get(n, rd.trial_dir(n))]
    for n in refits:
        if n in trial_logits:
            what = "the shipped model" if n == shipped_trial else f"{BAGS_DIR}/{n}/{REFIT_DIR}"
            notes.append(f"trial {n}: {what} (its configuration retrained on train+validation) stands in for it "
                         "in the ensemble; selection used the trial's own predictions")
    if gate is not None:
        found, more = bags(rd, n_train + len(rows))
        notes += more
        for n, (z, folds) in found.items():  # validation rows come last in the pooled order
            key = f"bag {n}"
            logits[key], models[key], trial[key] = z[n_train:], folds, n
    kinds = {k.split()[0] for k in logits}
    kind = "mixed" if len(kinds) > 1 else ("bags" if kinds == {"bag"} else "trials")
    where = "the validation split" if gate is None else f"{len(rows)} validation examples outside the gate slice"
    what = {"mixed": "the search trials' predictions and the finalists' bags' out-of-fold predictions",
            "bags": "the finalists' bags' out-of-fold predictions", "trials": "the search trials' predictions"}[kind]
    return Pool(logits, np.asarray(y_val)[rows], models, trial, kind, f"{what} on {where}", notes)
