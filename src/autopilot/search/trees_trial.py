"""One gradient-boosted trees trial: fit, score on validation, write the
trial folder (spec.json, model.onnx, the booster's own validation outputs
for the final parity check) and return the score the study maximises.

A booster has no epochs: it reports once, at the end. Its boosting rounds
stand in for epochs in what the trial records (planned = the round ceiling,
trained = the rounds early stopping kept), so the summaries, the report and
the selection read it like a network's trial.
"""
from __future__ import annotations

import time

import numpy as np
import optuna

from .. import metrics
from ..export import INPUT_NAME, OUTPUT_NAME
from ..models import trees
from ..rundir import write_json
from ..schemas.doctor import CheckEntry, DoctorFile
from ..schemas.search import EpochLine, TrialConfig
from ..schemas.spec import TreesSpec
from . import trees_space

LIVE_DOCTOR_SKIPPED = DoctorFile(findings=[], worst="ok", elapsed_s=0.0, checks=[CheckEntry(
    id="live", status="skipped", seconds=0.0,
    note="the live doctor watches a network's training (losses, updates, activations); a boosted-trees fit has none")])


def run_trial(trial: optuna.Trial, params: dict, *, run, data: dict, info: dict, seed: int,
              threads: int | None) -> tuple[float, np.ndarray]:
    """(validation score, the booster's own validation outputs). The caller
    keeps the outputs beside the trial (search.study.save_val_logits): ensemble
    selection reads them, and the final stage's parity gate compares ONNX with them."""
    task = info.get("task", "classification")
    tp = trees_space.to_params(params)
    tdir = run.trial_dir(trial.number)
    tdir.mkdir(parents=True, exist_ok=True)
    write_json(tdir / "config.json", TrialConfig(params=params, spec={"family": trees.FAMILY}, hparams=tp)
               .model_dump(mode="json"))
    trial.set_user_attr("planned_epochs", int(tp["max_iter"]))
    started = time.monotonic()
    est = trees.fit(tp, data["train"], data["val"], task=task, seed=seed, threads=threads)
    (Xtr, ytr), (Xva, yva) = data["train"], data["val"]
    out_val, out_tr = trees.raw_scores(est, Xva), trees.raw_scores(est, Xtr)
    val_score, val_loss = metrics.score(task, out_val, yva), metrics.loss(task, out_val, yva)
    if not np.isfinite(val_score):
        raise ValueError(f"validation score is not finite ({val_score})")
    n_features = int(np.asarray(Xtr).shape[1])
    trees.to_onnx(est, n_features, tdir / trees.ONNX_FILE, input_name=INPUT_NAME, output_name=OUTPUT_NAME)
    shape = trees.describe(est)
    spec = TreesSpec(family=trees.FAMILY, task=task, input_shape=[n_features], n_outputs=trees.n_outputs(est),
                     params=tp, seed=seed, **shape)
    write_json(tdir / trees.SPEC_FILE, spec.model_dump(mode="json"))
    line = EpochLine(epoch=shape["n_iter"], train_loss=metrics.loss(task, out_tr, ytr),
                     train_acc=metrics.score(task, out_tr, ytr), val_loss=val_loss, val_acc=val_score,
                     lr=float(tp["learning_rate"]), time_s=time.monotonic() - started)
    (tdir / "metrics.jsonl").write_text(line.model_dump_json() + "\n")
    write_json(tdir / "doctor.json", LIVE_DOCTOR_SKIPPED.model_dump(mode="json"))
    trial.set_user_attr("params_count", shape["n_leaves"])
    trial.set_user_attr("epochs", shape["n_iter"])
    trial.set_user_attr("best_epoch", shape["n_iter"])
    trial.set_user_attr("stopped", "early-stop" if shape["n_iter"] < int(tp["max_iter"]) else "completed")
    trial.set_user_attr("val_loss", val_loss)
    trial.set_user_attr("best_val_acc", val_score)
    return val_score, out_val


def trees_final(src, tmp, data: dict, reference: np.ndarray, *, refit: bool = False, threads: int | None = None):
    """The final stage's share for a booster (final.py). (test outputs, ONNX
    test outputs, the two compared for parity, spec, leaf count, ONNX path).

    Without `refit` the trial's ONNX file ships as it is; its parity gate
    compares ONNX Runtime's outputs on validation with the booster's own
    (`reference`), saved when it was fitted (no pickle, so the fitted
    scikit-learn object itself is not kept). With `refit` (the run's --cv,
    as networks are retrained by the finalists stage), the same parameters
    are fitted again on train+validation for as many boosting rounds as
    early stopping kept, scaled by the larger data set; parity is then
    checked against that booster on the test inputs (a conversion check,
    not a score)."""
    import json
    import shutil

    from ..export import onnx_session, run_onnx

    spec = json.loads((src / trees.SPEC_FILE).read_text())
    onnx_path = tmp / trees.ONNX_FILE
    Xte = data["test"][0]
    if not refit:
        for f in (trees.SPEC_FILE, trees.ONNX_FILE):
            shutil.copy2(src / f, tmp / f)
        session = onnx_session(onnx_path)
        onnx_test = run_onnx(session, Xte)
        return onnx_test, onnx_test, reference, run_onnx(session, data["val"][0]), spec, int(spec["n_leaves"]), onnx_path
    (Xtr, ytr), (Xva, yva) = data["train"], data["val"]
    rounds = max(1, round(spec["n_iter"] * (len(ytr) + len(yva)) / max(1, len(ytr))))
    est = trees.refit(spec["params"], np.concatenate([Xtr, Xva]), np.concatenate([ytr, yva]), rounds=rounds,
                      task=spec["task"], seed=spec["seed"], threads=threads)
    trees.to_onnx(est, int(spec["input_shape"][0]), onnx_path, input_name=INPUT_NAME, output_name=OUTPUT_NAME)
    spec = TreesSpec.model_validate({**spec, **trees.describe(est), "trained_on": "train+validation"})
    write_json(tmp / trees.SPEC_FILE, spec.model_dump(mode="json"))
    onnx_test = run_onnx(onnx_session(onnx_path), Xte)
    return onnx_test, onnx_test, trees.raw_scores(est, Xte), onnx_test, spec.model_dump(mode="json"), spec.n_leaves, onnx_path
