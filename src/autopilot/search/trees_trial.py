"""One trial of a scikit-learn family (gradient-boosted trees, or a linear
model alone or blended with trees: models/estimators.py): fit, score on
validation (cross-validation on small tables: search/table_families.py), write the
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
from ..models import estimators, trees
from ..rundir import write_json
from ..schemas.doctor import CheckEntry, DoctorFile
from ..schemas.search import EpochLine, TrialConfig
from ..schemas.spec import TreesSpec
from . import budget, select, table_families

LIVE_DOCTOR_SKIPPED = DoctorFile(findings=[], worst="ok", elapsed_s=0.0, checks=[CheckEntry(
    id="live", status="skipped", seconds=0.0,
    note="the live doctor watches a network's training (losses, updates, activations); a boosted-trees fit has none")])


def cv_score(module, tp: dict, data: dict, *, task: str, rounds: int, folds_seed: int, threads: int | None
             ) -> tuple[float, float, list[float]]:
    """(mean score, mean loss, score per fold) over table_families.CV_FOLDS folds of train+validation,
    refitted with a fixed number of boosting rounds (the validation fit's,
    scaled by the larger fold): stopping early on the fold that is scored
    would flatter it. The folds depend on the run's seed only, so every
    trial is scored on the same ones."""
    from sklearn.model_selection import KFold, StratifiedKFold

    (Xtr, ytr), (Xva, yva) = data["train"], data["val"]
    X, y = np.concatenate([Xtr, Xva]), np.concatenate([ytr, yva])
    k = table_families.CV_FOLDS
    if task == "regression":
        folds = KFold(k, shuffle=True, random_state=folds_seed).split(X)
    else:
        k = max(2, min(k, int(np.bincount(y).min()) if len(y) else 2))
        folds = StratifiedKFold(k, shuffle=True, random_state=folds_seed).split(X, y)
    scores, losses = [], []
    for fit_rows, held_out in folds:
        fold_rounds = max(1, round(rounds * len(fit_rows) / max(1, len(ytr))))
        est = module.refit(tp, X[fit_rows], y[fit_rows], rounds=fold_rounds, task=task, seed=folds_seed,
                           threads=threads)
        out = module.raw_scores(est, X[held_out])
        scores.append(metrics.score(task, out, y[held_out]))
        losses.append(metrics.loss(task, out, y[held_out]))
    return float(np.mean(scores)), float(np.mean(losses)), [float(x) for x in scores]


def run_trial(trial: optuna.Trial, params: dict, *, run, data: dict, info: dict, seed: int,
              threads: int | None, folds_seed: int = 0) -> tuple[float, np.ndarray]:
    """(score, the fitted model's own validation outputs). The score is on
    validation, or cross-validated on small tables (table_families). The
    caller keeps the outputs beside the trial (search.study.save_val_logits):
    ensemble selection reads them, and the final stage's parity gate
    compares ONNX with them."""
    task = info.get("task", "classification")
    family = params["family"]
    module = estimators.module_for(family)
    tp = table_families.to_params(params)
    tdir = run.trial_dir(trial.number)
    tdir.mkdir(parents=True, exist_ok=True)
    write_json(tdir / "config.json", TrialConfig(params=params, spec={"family": family}, hparams=tp)
               .model_dump(mode="json"))
    planned = int(tp.get("max_iter", 1))
    trial.set_user_attr("planned_epochs", planned)
    started = time.monotonic()
    est = module.fit(tp, data["train"], data["val"], task=task, seed=seed, threads=threads)
    (Xtr, ytr), (Xva, yva) = data["train"], data["val"]
    out_val, out_tr = module.raw_scores(est, Xva), module.raw_scores(est, Xtr)
    val_score, val_loss = metrics.score(task, out_val, yva), metrics.loss(task, out_val, yva)
    if not np.isfinite(val_score):
        raise ValueError(f"validation score is not finite ({val_score})")
    n_features = int(np.asarray(Xtr).shape[1])
    module.to_onnx(est, n_features, tdir / trees.ONNX_FILE, input_name=INPUT_NAME, output_name=OUTPUT_NAME)
    shape = module.describe(est)
    spec = TreesSpec(family=family, task=task, input_shape=[n_features], n_outputs=module.n_outputs(est),
                     params=tp, seed=seed, **shape)
    write_json(tdir / trees.SPEC_FILE, spec.model_dump(mode="json"))
    line = EpochLine(epoch=shape["n_iter"], train_loss=metrics.loss(task, out_tr, ytr),
                     train_acc=metrics.score(task, out_tr, ytr), val_loss=val_loss, val_acc=val_score,
                     lr=float(tp.get("learning_rate", 0.0)), time_s=time.monotonic() - started)
    (tdir / "metrics.jsonl").write_text(line.model_dump_json() + "\n")
    write_json(tdir / "doctor.json", LIVE_DOCTOR_SKIPPED.model_dump(mode="json"))
    trial.set_user_attr("params_count", spec.n_leaves + spec.n_coefficients)
    trial.set_user_attr("epochs", shape["n_iter"])
    trial.set_user_attr("best_epoch", shape["n_iter"])
    trial.set_user_attr("stopped", "early-stop" if shape["n_iter"] < planned else "completed")
    trial.set_user_attr("val_loss", val_loss)
    # Fitted to the end on all the training rows and scored on all of
    # validation: what a network finalist of a time budget is (search/select.rank_trial).
    # Only under a budget plan: without one every network trial is trained in
    # full too, and a "final" mark would rank trees at 0.933 above an MLP at 0.967.
    if budget.load_plan(trial.study) is not None:
        trial.set_user_attr("final", True)
    score = val_score
    if table_families.is_small(info) and len(yva):
        score, cv_loss, fold_scores = cv_score(module, tp, data, task=task, rounds=shape["n_iter"],
                                               folds_seed=folds_seed, threads=threads)
        trial.set_user_attr("val_split_score", val_score)
        trial.set_user_attr("cv_score", score)
        # The selection weighs the top trial against the first (default) trials fold by fold (search/select.py).
        trial.set_user_attr(select.CV_FOLD_SCORES, fold_scores)
        trial.set_user_attr(select.KNOWN_GOOD, any(all(params.get(k) == v for k, v in first.items())
                                                   for first in table_families.first_trials(info)))
        # Equal accuracies are common on a small table (wine: a dozen trials at
        # 99.33 %); the selection breaks ties by this loss (search/select.rank_trial),
        # cross-validated like the score rather than on one validation split.
        trial.set_user_attr("val_split_loss", val_loss)
        trial.set_user_attr("val_loss", cv_loss)
    trial.set_user_attr("best_val_acc", score)
    return score, out_val


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
    module = estimators.module_for(spec["family"])
    onnx_path = tmp / trees.ONNX_FILE
    Xte = data["test"][0]
    if not refit:
        for f in (trees.SPEC_FILE, trees.ONNX_FILE):
            shutil.copy2(src / f, tmp / f)
        session = onnx_session(onnx_path)
        onnx_test = run_onnx(session, Xte)
        return (onnx_test, onnx_test, reference, run_onnx(session, data["val"][0]), spec,
                int(spec["n_leaves"]) + int(spec.get("n_coefficients", 0)), onnx_path)
    (Xtr, ytr), (Xva, yva) = data["train"], data["val"]
    rounds = max(1, round(spec["n_iter"] * (len(ytr) + len(yva)) / max(1, len(ytr))))
    est = module.refit(spec["params"], np.concatenate([Xtr, Xva]), np.concatenate([ytr, yva]), rounds=rounds,
                      task=spec["task"], seed=spec["seed"], threads=threads)
    module.to_onnx(est, int(spec["input_shape"][0]), onnx_path, input_name=INPUT_NAME, output_name=OUTPUT_NAME)
    spec = TreesSpec.model_validate({**spec, **module.describe(est), "trained_on": "train+validation"})
    write_json(tmp / trees.SPEC_FILE, spec.model_dump(mode="json"))
    onnx_test = run_onnx(onnx_session(onnx_path), Xte)
    return (onnx_test, onnx_test, module.raw_scores(est, Xte), onnx_test, spec.model_dump(mode="json"),
            spec.n_leaves + spec.n_coefficients, onnx_path)
