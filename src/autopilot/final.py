"""The final model: the trial the search selects, evaluated once on the test
split, exported to ONNX, checked for parity, described in a model card.

Parity is a gate, not a remark: an ONNX file that does not compute what the
PyTorch model computes is not shipped (ParityError, one line) unless the
user forces it, and then the card says so.
"""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from .compress import measure
from .config import RunConfig
from .data.dataset import as_float
from .export import INPUT_NAME, OUTPUT_NAME, ParityError, compare_logits, export_onnx, onnx_session, parity_failure, run_onnx
from . import metrics
from .finalists import run_finalists
from .metrics import binomial_se
from .models import count_params, load_model, save_model
from .models.estimators import is_estimator_dir
from .rundir import TORCH_FILES, VAL_LOGITS, RunDir, write_json
from .schemas.card import (Hyperparameters, ModelCard, ModelFigures, Parity, RegressionFigures, RegressionMetrics,
                           Selection, TrialCounts)
from .schemas.run import read_run
from .search.select import Selection as SearchSelection, best_trial, describe, score

MAX_RESIDUAL_POINTS = 1000  # test predictions kept in a regression card for the report's residual plot
LATENCY_BUDGET_S = 1.0  # a first batch-1 reading of the fp32 file; compression re-times it beside its candidates


MIN_GAIN_OVER_MAJORITY = 0.05  # a cut trial must beat always-the-commonest-class by this much to ship


def majority_share(y: np.ndarray) -> float:
    """Accuracy of always answering the commonest class."""
    return float(np.bincount(y).max() / len(y)) if len(y) else 0.0


def learnt_something(val_accuracy: float, y_val: np.ndarray) -> bool:
    return val_accuracy > majority_share(y_val) + MIN_GAIN_OVER_MAJORITY


class NoModelError(RuntimeError):
    """The search finished no trial, so there is no model to ship."""


def finalize(rd: RunDir, study: optuna.Study, ds, data: dict, info: dict, config: RunConfig, *, started: float,
             console, force: bool = False, deadline_wall: float | None = None,
             reserve_note: str | None = None) -> ModelCard:
    """Write model/ (spec, weights, model.onnx, card.json) for the selected
    trial. Raises ParityError, leaving model/ as it was, when the ONNX file
    disagrees with PyTorch and `force` is off.

    With config.cv, the best config.finalists trials are first re-scored by
    cross-validation and the winner retrained on train+validation
    (autopilot.finalists), by `deadline_wall` (time.time(); None: no limit).
    `reserve_note`: why the search kept the finalists' reserve, for the card."""
    selection = best_trial(study, rd, data["val"][1])
    if selection is None:
        raise NoModelError("no trial completed within the budget; give a larger --budget or fewer --trials constraints, then --resume")
    best = selection.trial
    task = info.get("task", "classification")
    if not selection.complete:
        # A trial cut early may have learnt nothing: shipping it would be a
        # model no better than always answering the commonest class.
        majority = majority_share(data["val"][1]) if task == "classification" else 0.0  # R² of the mean
        if not (learnt_something(score(best) or 0.0, data["val"][1]) if task == "classification"
                else (score(best) or 0.0) > MIN_GAIN_OVER_MAJORITY):
            raise NoModelError(
                f"no trial completed, and the best one cut by the deadline (trial {best.number}, val accuracy "
                f"{score(best):.3f}) is no better than always answering the commonest class ({majority:.3f}); "
                "give a larger --budget, then --resume")
        console.print(f"[yellow]no trial completed: the final model is trial {best.number}, {selection.how}[/yellow]")
    if selection.why:
        console.print(f"selection: {selection.why}", highlight=False)
    finalists = run_finalists(rd, study, data, info, config, best, deadline_wall=deadline_wall, console=console,
                              reserve_note=reserve_note, search_why=selection.why)
    if finalists.winner is not None and finalists.winner.number != best.number:
        best = finalists.winner
        selection = SearchSelection(best, describe(best))
    src = rd.trial_dir(best.number)
    is_trees = is_estimator_dir(src)  # boosted trees or a linear model (models/estimators.py)
    if not is_trees:
        model, spec = load_model(src)
        if finalists.model is not None:  # retrained on train+validation: these weights ship
            model = finalists.model
        model.eval()
    tmp = rd.path / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        Xte, yte = data["test"]
        if is_trees:  # boosted trees, linear models: the trial's ONNX file is the model (models/estimators.py)
            from .search.trees_trial import trees_final

            reference = np.load(src / VAL_LOGITS, allow_pickle=False)
            logits, onnx_test, ref, got, spec, n_params, onnx_path = trees_final(
                src, tmp, data, reference, refit=bool(config.cv), threads=torch.get_num_threads())
        else:
            logits, onnx_test, ref, got, spec, n_params, onnx_path = _torch_final(
                model, spec, src, tmp, ds, data, retrained=finalists.model is not None)
        parity = output_parity(ref, got, task)
        if not parity["passed"]:
            if not force:
                raise ParityError(f"{parity_failure(parity)}; the model was not shipped (--force ships it anyway)")
            parity["forced"] = True
            console.print(f"[red]warning: {parity_failure(parity)}; shipping it anyway (--force)[/red]")
        session = onnx_session(onnx_path)
        n = len(yte)
        Xva, yva = data["val"]
        onnx_val_out = run_onnx(session, Xva)
        regression = None
        if task == "regression":  # R² stands in the accuracy fields (metrics.py); RMSE, MAE, R² in `regression`
            cm = per_class = None
            reg_test = metrics.regression_metrics(onnx_test, yte)
            keep = np.unique(np.linspace(0, n - 1, min(n, MAX_RESIDUAL_POINTS)).astype(int)) if n else []
            regression = RegressionFigures(test=RegressionMetrics(**reg_test),
                                           val=RegressionMetrics(**metrics.regression_metrics(onnx_val_out, yva)),
                                           test_points=[[float(yte[i]), float(onnx_test[i, 0])] for i in keep])
            acc, acc_se = metrics.score(task, logits, yte), reg_test["r2_se"]
            onnx_acc, onnx_se = reg_test["r2"], reg_test["r2_se"]
            onnx_val = metrics.score(task, onnx_val_out, yva) if len(yva) else float("nan")
        else:
            pred = logits.argmax(1)
            acc = float((pred == yte).mean())
            acc_se = binomial_se(acc, n)
            cm = np.zeros((ds.n_classes, ds.n_classes), dtype=np.int64)
            np.add.at(cm, (yte, pred), 1)
            per_class = [float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None for i in range(ds.n_classes)]
            cm = cm.tolist()
            # The file that ships, measured as it runs: ONNX Runtime's own accuracy.
            onnx_acc = float((onnx_test.argmax(1) == yte).mean())
            onnx_se = binomial_se(onnx_acc, n)
            onnx_val = float((onnx_val_out.argmax(1) == yva).mean()) if len(yva) else float("nan")
        lat = measure.measure_latency({"fp32": onnx_path}, Xte, budget_s=LATENCY_BUDGET_S, batches=(1,))
        fp32 = ModelFigures(
            name="fp32", file="model/model.onnx", method="fp32", test_accuracy=onnx_acc,
            test_accuracy_se=onnx_se, test_examples=n, val_accuracy=onnx_val,
            latency_ms_batch1=lat["fp32"]["latency_ms"]["1"]["p50"], file_bytes=onnx_path.stat().st_size)
        why = "the final model's ONNX export" + (
            ", shipped with a FAILED parity check because --force was given" if parity.get("forced") else
            ", parity with " + ("scikit-learn" if is_trees else "PyTorch") + " checked")
        shipped = fp32.model_copy(update={"chosen_by": "final", "reason": why})

        hp_file = rd.trial_dir(best.number) / "hparams.json"
        training = json.loads(hp_file.read_text()) if hp_file.exists() else {}
        if is_trees:
            training = dict(spec["params"])
        if finalists.training is not None:
            training = finalists.training
        all_trials = study.get_trials(deepcopy=False)
        card = ModelCard(
            name=rd.name,
            task=task,
            kind=ds.kind,
            classes=ds.classes,
            input_shape=list(ds.input_shape),
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            output="the predicted value" if task == "regression" else "logits (apply softmax for probabilities)",
            family=spec["family"],
            params=n_params,
            test_accuracy=acc,
            test_accuracy_se=acc_se,
            test_examples=n,
            val_accuracy=float(score(best)),
            fp32=fp32,
            shipped=shipped,
            best_trial=best.number,
            selection=Selection(trial=best.number, how=selection.how, complete=selection.complete, why=selection.why),
            trials=TrialCounts(**{s.name.lower(): sum(t.state == s for t in all_trials)
                                  for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}),
            confusion_matrix=cm,
            per_class_accuracy=per_class,
            regression=regression,
            onnx_parity=Parity(**parity),
            data_fingerprint=ds.fingerprint(),
            seed=config.seed,
            budget_s=config.budget_s,
            elapsed_s=time.time() - started,
            hyperparameters=Hyperparameters(params=best.params, training=training),
            versions=read_run(rd.path).versions,
            cv=finalists.record,
        )
        write_json(tmp / "card.json", card.model_dump(mode="json"))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # A new final model makes an earlier compression result stale: it
    # described another model, and its chosen.onnx must not ship with this one.
    shutil.rmtree(rd.path / "compress", ignore_errors=True)
    shutil.rmtree(rd.path / "fusion", ignore_errors=True)  # likewise the ensemble chosen around the old model
    shutil.rmtree(rd.model_dir, ignore_errors=True)
    tmp.replace(rd.model_dir)
    return card


def _torch_final(model, spec: dict, src, tmp, ds, data: dict, *, retrained: bool = False):
    """A network: its test logits from PyTorch and its ONNX export. (test
    outputs, ONNX test outputs, the two compared for parity, spec, parameter
    count, ONNX path). `retrained`: the model is not the trial's weights (the
    finalists' winner trained on train+validation), so it is saved rather than copied."""
    if retrained:
        save_model(tmp, model, spec)
    else:
        for f in TORCH_FILES:
            shutil.copy2(src / f, tmp / f)
    # The test split is used here, once, after selection.
    Xte = data["test"][0]
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(as_float(Xte[i : i + 1024]))) for i in range(0, len(Xte), 1024)]).numpy()
    onnx_path = export_onnx(model, ds.input_shape, tmp / "model.onnx")
    onnx_test = run_onnx(onnx_session(onnx_path), Xte)
    return logits, onnx_test, logits, onnx_test, spec, count_params(model), onnx_path


def output_parity(reference: np.ndarray, got: np.ndarray, task: str) -> dict:
    """export.compare_logits; a regression model's values are compared
    relative to their scale (a price in the thousands is not held to 1e-4
    absolute in float32)."""
    if task == "regression" and len(reference):
        scale = max(1.0, float(np.abs(reference).max()))
        return compare_logits(reference / scale, got / scale)
    return compare_logits(reference, got)
