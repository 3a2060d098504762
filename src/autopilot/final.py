"""The final model: the best trial's weights, evaluated once on the test
split, exported to ONNX, checked for parity, described in a model card."""
from __future__ import annotations

import math
import shutil
import time

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from .config import RunConfig
from .export import INPUT_NAME, OUTPUT_NAME, check_parity, export_onnx
from .models import count_params, load_model
from .rundir import RunDir, write_json
from .schemas.run import read_run
from .search.study import rank_trial


class NoModelError(RuntimeError):
    """The search finished no trial, so there is no model to ship."""


def finalize(rd: RunDir, study: optuna.Study, ds, data: dict, info: dict, config: RunConfig, *, started: float, console) -> dict:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE and (rd.trial_dir(t.number) / "weights.safetensors").exists()]
    if not complete:
        raise NoModelError("no trial completed within the budget; give a larger --budget or fewer --trials constraints, then --resume")
    # Ties in validation accuracy are common on small sets: the lower
    # validation loss, then the earlier trial, breaks them.
    best = max(complete, key=rank_trial)
    model, spec = load_model(rd.trial_dir(best.number))
    mdir = rd.model_dir
    tmp = rd.path / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in ("spec.json", "weights.safetensors"):
        shutil.copy2(rd.trial_dir(best.number) / f, tmp / f)

    # The test split is used here, once, after selection.
    Xte, yte = data["test"]
    with torch.no_grad():
        logits = torch.cat([model(torch.as_tensor(Xte[i : i + 1024])) for i in range(0, len(Xte), 1024)]).numpy()
    pred = logits.argmax(1)
    n = len(yte)
    acc = float((pred == yte).mean())
    cm = np.zeros((ds.n_classes, ds.n_classes), dtype=np.int64)
    np.add.at(cm, (yte, pred), 1)
    per_class = [float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None for i in range(ds.n_classes)]

    export_onnx(model, ds.input_shape, tmp / "model.onnx")
    parity = check_parity(model, tmp / "model.onnx", Xte)
    if not parity["passed"]:
        console.print(f"[red]warning: ONNX parity failed: max abs diff {parity['max_abs_diff']:.2e}, argmax agreement {parity['argmax_agree']:.4f}[/red]")

    hparams = {}
    hp_file = rd.trial_dir(best.number) / "hparams.json"
    if hp_file.exists():
        import json

        hparams = json.loads(hp_file.read_text())
    run_info = read_run(rd.path)
    card = {
        "name": rd.name,
        "task": "classification",
        "kind": ds.kind,
        "classes": ds.classes,
        "input_shape": list(ds.input_shape),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "output": "logits (apply softmax for probabilities)",
        "family": spec["family"],
        "params": count_params(model),
        "test_accuracy": acc,
        "test_accuracy_se": math.sqrt(acc * (1 - acc) / n) if n else None,
        "test_examples": n,
        "val_accuracy": float(best.value),
        "best_trial": best.number,
        "trials": {s.name.lower(): sum(t.state == s for t in study.get_trials(deepcopy=False)) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)},
        "confusion_matrix": cm.tolist(),
        "per_class_accuracy": per_class,
        "onnx_parity": parity,
        "data_fingerprint": ds.fingerprint(),
        "seed": config.seed,
        "budget_s": config.budget_s,
        "elapsed_s": time.time() - started,
        "hyperparameters": {"params": best.params, "training": hparams},
        "versions": run_info.versions,
    }
    write_json(tmp / "card.json", card)
    shutil.rmtree(mdir, ignore_errors=True)
    tmp.replace(mdir)

    return card
