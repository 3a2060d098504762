"""The closed loop: new labelled data -> warm-started search -> challenger ->
the same compression as `autopilot run` -> paired comparison -> promote (a
new model version) or not.

    autopilot retrain RUN --data NEW.npz [--from-feedback] [--budget 5m] [--alpha 0.05] [--tolerance 1]

1. New labelled data comes from `--data` (any form `autopilot run` reads, with
   the same classes and input shape) and/or `--from-feedback` (the raw inputs
   of the request log that received a label). It is split per class, seeded:
   30 % held out for the comparison, the rest 80/20 into train/val
   (newdata.py). Too few held-out examples to ever reach p < alpha stop the
   retrain here, before any training (rule.min_holdout).
2. The challenger's data is the run's own train/val split plus the new
   train/val part (small new sets repeated, newdata.mix); its test split is
   the run's original one.
3. The search is warm-started: the best `top_k` trials of the study that made
   the champion are enqueued first, then the sampler explores for the rest of
   the budget. Each retrain has its own study and trials under RUN/retrain/NNN/.
4. The best trial is exported to RUN/retrain/NNN/model/ and compressed there
   by autopilot.compress.compress_run with the run's own target and max_drop
   (a quarter of the budget, as in `autopilot run`), so the challenger is
   judged as it would ship.
5. Champion (the file the run serves now) and challenger (the file it would
   serve), both in ONNX Runtime, are compared with rule.py's paired tests on
   the new held-out data and on the original test split.
6. A promoted challenger becomes model/vN holding exactly the compared file
   (its sha256 is in decision.json and versions.json), with its own drift
   reference; a running server swaps it in. RUN/retrain/NNN/decision.json
   (schemas.decision.Decision) records every number either way.
"""
from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..config import COMPRESS_SHARE, MIN_COMPRESS_S, check_max_drop, parse_duration, search_reserve
from ..data.dataset import as_float
from ..registry import versions
from ..rundir import TORCH_FILES, RunDir, read_json, write_json
from ..schemas.base import write
from ..schemas.decision import Compared, Compression, Decision, PairedTest, Source
from ..schemas.run import read_run
from . import newdata, rule


# Half the cores: a retrain often runs beside the server it will feed, and two
# OpenMP threads on a busy 2-core machine made training steps many times slower.
TRAIN_THREADS = max(1, (os.cpu_count() or 1) // 2)


class RetrainError(RuntimeError):
    """Nothing to retrain on, too few new examples, incompatible data, ..."""


def correct(model, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per example: did the model (a runtime.model.ServedModel) get it right."""
    if not len(y):
        return np.zeros(0, dtype=bool)
    pred = np.concatenate([model.predict_proba(np.ascontiguousarray(X[i:i + 512], dtype=np.float32)).argmax(1)
                           for i in range(0, len(X), 512)])
    return pred == y


def _next_dir(rd: RunDir) -> Path:
    root = rd.path / "retrain"
    root.mkdir(exist_ok=True)
    n = 1
    while True:
        d = root / f"{n:03d}"
        try:
            d.mkdir()  # atomic: two retrains started at once get two folders
            return d
        except FileExistsError:
            n += 1


def _previous_best(rd: RunDir, vs, info: dict, top_k: int) -> list[dict]:
    """Parameters of the best trials of the study that made the champion:
    completed ones first, then ones the deadline cut (a short run's champion
    may be one of those: its configuration is still the best known start)."""
    from optuna.trial import TrialState

    from ..search.select import is_deadline_cut, rank_trial
    from ..search.study import open_study

    entry = versions.entry_of(vs, vs.current) if vs is not None else None
    retrain_dir = entry.retrain_dir if entry is not None else None
    src = RunDir(rd.path / retrain_dir) if retrain_dir else rd
    run_cfg = read_run(rd.path).config
    cfg = run_cfg.model_copy(update={"storage": None if retrain_dir else run_cfg.storage})
    study = open_study(src, cfg, info)
    pool = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE or is_deadline_cut(t)]
    pool.sort(key=lambda t: (t.state == TrialState.COMPLETE, rank_trial(t)), reverse=True)
    return [t.params for t in pool[:top_k]]


def _info(X: np.ndarray, kind: str, n_classes: int) -> dict:
    """Model facts for the challenger: the same rules as data.stats.data_info,
    normalisation from the challenger's own training data."""
    if kind == "table":
        mean, std = X.mean(0), X.std(0)
    else:
        axes = (0,) + tuple(range(2, X.ndim))
        mean, std = X.mean(axes), X.std(axes)
    std = np.where(std > 1e-6, std, 1.0)
    return {"kind": kind, "input_shape": list(X.shape[1:]), "n_classes": n_classes,
            "mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def compression_policy(rd: RunDir) -> tuple[bool, str, float]:
    """Whether and how the champion's run was compressed: (on, target, max_drop
    in points). A run compressed by `autopilot run` or a later `autopilot
    compress` has compress/results.json, whose target the challenger gets;
    max_drop is the run's own setting."""
    cfg = read_run(rd.path).config
    results = rd.path / "compress" / "results.json"
    if results.exists():
        return True, read_json(results).get("target", cfg.compress_target), cfg.max_drop
    return cfg.compress, cfg.compress_target, cfg.max_drop


def _compress_seconds(budget_s: float | None, compress_budget: str | float | None, enabled: bool) -> tuple[float, str]:
    """Seconds for compression and, when none, why. Same share as `autopilot run`."""
    if not enabled:
        return 0.0, "the run was made without compression (--no-compress) and never compressed since"
    if compress_budget is not None:
        return float(parse_duration(compress_budget)), ""
    if not budget_s:
        from ..compress import compress_budget_s

        return compress_budget_s(None), ""
    s = COMPRESS_SHARE * budget_s
    if s < MIN_COMPRESS_S:
        return 0.0, (f"a quarter of --budget ({s:.0f} s) is under {MIN_COMPRESS_S:.0f} s, too little to compress; "
                     "give a larger --budget or --compress-budget")
    return s, ""


def _gather(rd: RunDir, data, from_feedback: bool, label, log_url, classes, shape) -> tuple[np.ndarray, np.ndarray, list]:
    parts_X, parts_y, sources = [], [], []
    if data:
        from ..runtime.model import find_preprocess

        X, y = newdata.file_data(data, classes, shape, label, find_preprocess(rd.model_dir / "card.json"))
        parts_X.append(X), parts_y.append(y)
        sources.append(Source(kind="data", source=str(data), examples=int(len(y))))
    if from_feedback:
        X, y = newdata.feedback_data(rd.path, shape, log_url)
        parts_X.append(X), parts_y.append(y)
        sources.append(Source(kind="feedback", examples=int(len(y))))
    return np.concatenate(parts_X), np.concatenate(parts_y), sources


def _challenger_card(champion: dict, rd: RunDir, wrun: RunDir, study, sel, spec: dict, model, parity: dict,
                     seed: int, budget_s, test: tuple, started: float) -> dict:
    """The challenger's model/card.json (schemas.card.ModelCard): what the
    model is, its PyTorch accuracy on the run's original test split, how it
    was made. `shipped` is filled in by compression, or below when it did not run."""
    import torch
    from optuna.trial import TrialState

    from ..models import count_params
    from ..schemas.card import Hyperparameters, ModelCard, Parity, Selection, TrialCounts
    from ..search.select import score

    best = sel.trial
    Xt, yt = test
    with torch.no_grad():
        logits = torch.cat([model(torch.as_tensor(Xt[i:i + 1024])) for i in range(0, len(Xt), 1024)]).numpy()
    acc, n = float((logits.argmax(1) == yt).mean()), int(len(yt))
    hp_file = wrun.trial_dir(best.number) / "hparams.json"
    trials = study.get_trials(deepcopy=False)
    card = ModelCard(
        **{k: champion[k] for k in ("name", "task", "kind", "classes", "input_shape", "input_name", "output_name",
                                    "output", "data_fingerprint", "versions") if k in champion},
        family=spec["family"], params=count_params(model), test_accuracy=acc,
        test_accuracy_se=float(np.sqrt(acc * (1 - acc) / n)) if n else None, test_examples=n,
        val_accuracy=float(score(best)), best_trial=best.number,
        selection=Selection(trial=best.number, how=sel.how, complete=sel.complete, why=sel.why),
        trials=TrialCounts(**{s.name.lower(): sum(t.state == s for t in trials)
                              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}),
        onnx_parity=Parity(**parity), seed=seed, budget_s=budget_s, elapsed_s=time.time() - started,
        hyperparameters=Hyperparameters(params=best.params, training=read_json(hp_file) if hp_file.exists() else {}))
    return card.model_dump(mode="json")


def _write_card(mdir: Path, card: dict) -> None:
    from ..schemas.card import ModelCard

    write_json(mdir / "card.json", ModelCard.model_validate(card).model_dump(mode="json"))


def _fp32_figures(model, mdir: Path, data: dict, why: str) -> dict:
    """What ships when compression did not run: the fp32 export, measured in
    ONNX Runtime like every file a card describes."""
    Xt, yt = data["test"]
    acc = float(correct(model, Xt, yt).mean())
    return {"name": "fp32", "file": "model/model.onnx", "method": "fp32", "test_accuracy": acc,
            "test_accuracy_se": float(np.sqrt(acc * (1 - acc) / len(yt))), "test_examples": int(len(yt)),
            "val_accuracy": float(correct(model, *data["val"]).mean()), "latency_ms_batch1": None,
            "file_bytes": (mdir / "model.onnx").stat().st_size, "chosen_by": "final", "reason": why}


def _shipped_from_results(results: dict, wdir: Path, n_test: int) -> dict:
    """The compression choice as a card's `shipped` entry (for a compression
    stage that did not write one itself)."""
    c = next(c for c in results["candidates"] if c["name"] == results["chosen"])
    acc = float(c["test_acc"])
    lat = (c.get("latency_ms") or {}).get("1") or {}
    return {"name": c["name"], "file": results["chosen_path"], "method": c["method"], "test_accuracy": acc,
            "test_accuracy_se": float(np.sqrt(acc * (1 - acc) / n_test)) if n_test else None, "test_examples": n_test,
            "val_accuracy": float(c["val_acc"]), "latency_ms_batch1": lat.get("p50"),
            "file_bytes": int(c.get("file_bytes") or (wdir / results["chosen_path"]).stat().st_size),
            "chosen_by": "compress", "reason": results["reason"]}


def retrain(run_dir, *, data: str | None = None, from_feedback: bool = False, label: str | None = None,
            budget: str | float | None = "5m", trials: int | None = None, top_k: int = 3, seed: int = 0,
            alpha: float = rule.DEFAULT_ALPHA, tolerance: float = rule.DEFAULT_TOLERANCE,
            compress_budget: str | float | None = None, log_url: str | None = None, promote: bool = True,
            force: bool = False, log=print) -> Decision:
    """Train a challenger on the run's data plus the new data, compress it as
    the run was compressed, and promote it when rule.decide says so. Returns
    the decision (also RUN/retrain/NNN/decision.json). `tolerance` in points."""
    t0 = time.time()
    rd = RunDir(Path(run_dir).resolve())
    if not data and not from_feedback:
        raise RetrainError("nothing to retrain on: give --data NEW and/or --from-feedback")
    if not 0 < alpha < 0.5:
        raise RetrainError(f"--alpha must be between 0 and 0.5 (a test level such as 0.05), got {alpha!r}")
    from ..config import RunError

    try:
        tolerance = check_max_drop(tolerance, "--tolerance")
    except RunError as e:
        raise RetrainError(str(e)) from None
    budget_s = parse_duration(budget) if budget is not None else None
    champ_ref = versions.current(rd.path)
    if not champ_ref.card.exists() or not champ_ref.onnx.exists():
        raise RetrainError(f"no model in {rd.path} (missing {champ_ref.onnx.name}); finish `autopilot run` first")
    card = read_json(champ_ref.card)
    # The challenger is a network trained like the run's trials and compared by
    # McNemar's test on class predictions: boosted trees and regression have neither.
    from ..models.estimators import FAMILIES as ESTIMATOR_FAMILIES  # here: models imports torch, `serve` must not

    if card.get("task", "classification") != "classification" or card.get("family") in ESTIMATOR_FAMILIES:
        what = "a regression model" if card.get("task") == "regression" else f"a {card.get('family')} model"
        raise RetrainError(f"retraining covers classification networks; the model of {rd.name} is {what}: "
                           f"run `autopilot run` again on the old and new data instead")
    classes, shape, kind = list(card["classes"]), tuple(card["input_shape"]), card["kind"]

    # 1. the new data, and whether it can decide anything at all
    Xn, yn, sources = _gather(rd, data, from_feedback, label, log_url, classes, shape)
    parts = newdata.split_new(yn, seed)
    need = rule.min_holdout(alpha)
    if len(parts["holdout"]) < need:
        raise RetrainError(
            f"too few new labelled examples: {len(yn)} give {len(parts['holdout'])} held out for the comparison "
            f"({newdata.HOLDOUT:.0%} per class), and with fewer than {need} even a challenger right on every one where "
            f"the champion is wrong cannot reach p < {alpha:g}; give at least {int(np.ceil(need / newdata.HOLDOUT))} "
            f"(more for a real difference); nothing trained, nothing promoted")
    log(f"new labelled data: {len(yn)} example(s) ({', '.join(f'{s.kind} {s.examples}' for s in sources)}); "
        f"held out for the comparison: {len(parts['holdout'])}")

    import torch

    from ..export import check_parity, export_onnx, parity_failure
    from ..final import NoModelError
    from ..models import load_model
    from ..rundata import load_run_data
    from ..runtime.model import ServedModel
    from ..search.select import best_trial
    from ..search.study import Objective, open_study
    from ..search.workers import optimize

    _config, _ds, old, _ = load_run_data(rd)
    old = {k: (as_float(X), y) for k, (X, y) in old.items()}  # float like the new data it is mixed with
    new_tr, new_val, new_hold = ((Xn[parts[k]], yn[parts[k]]) for k in ("train", "val", "holdout"))
    arrays, repeat = newdata.mix(old, new_tr, new_val)
    # Augmentations the doctor measured to change labels on this data stay out here too.
    info = {**_info(arrays["train"][0], kind, len(classes)), "augment_exclude": read_run(rd.path).augment_exclude}
    log(f"challenger data: train {len(arrays['train'][1])} (new x{repeat}), val {len(arrays['val'][1])}")

    wdir = _next_dir(rd)
    wrun = RunDir(wdir)
    rel = str(wdir.relative_to(rd.path))
    # What the comparison used, for anyone who wants to check the decision.
    np.savez_compressed(wdir / "new_data.npz", X=Xn, y=yn, **{f"{k}_index": v for k, v in parts.items()})

    # 2-3. the search: a study of its own, warm-started from the champion's best trials
    run_cfg = read_run(rd.path).config
    compress_on, compress_target, max_drop = compression_policy(rd)
    compress_s, no_compress_why = _compress_seconds(budget_s, compress_budget, compress_on)
    # A grid cannot take enqueued trials outside it: a grid search retrains with TPE.
    cfg = run_cfg.model_copy(update={"seed": seed, "storage": None,
                                     "sampler": "tpe" if run_cfg.sampler == "grid" else run_cfg.sampler})
    best_before = _previous_best(rd, versions.read_versions(rd.path), info, top_k)
    study = open_study(wrun, cfg, info)
    for p in best_before:
        study.enqueue_trial(p, skip_if_exists=True)
    search_s = max(1.0, budget_s - compress_s - search_reserve(budget_s)) if budget_s else None
    deadline_wall = time.time() + search_s if search_s else float("inf")
    torch.set_num_threads(TRAIN_THREADS)
    objective = Objective(wrun, arrays, info, cfg, deadline=time.monotonic() + min(deadline_wall - time.time(), 1e9))
    log(f"search: {len(best_before)} warm-start trial(s), " + (f"{search_s:.0f} s" if search_s else "no time limit")
        + (f", at most {trials} trial(s)" if trials else "") + (f"; then compression {compress_s:.0f} s" if compress_s else ""))
    optimize(study, objective, deadline_wall, trials)
    sel = best_trial(study, wrun)
    if sel is None:
        raise NoModelError("no challenger trial finished an epoch within the budget; give a larger --budget")
    best = sel.trial

    # 4. the challenger as it would ship: exported, checked, compressed by the run's policy
    model, spec = load_model(wrun.trial_dir(best.number))
    mdir = wrun.model_dir
    mdir.mkdir()
    for f in TORCH_FILES:
        shutil.copy2(wrun.trial_dir(best.number) / f, mdir / f)
    export_onnx(model, shape, mdir / "model.onnx")
    parity = check_parity(model, mdir / "model.onnx", old["test"][0])
    if not parity["passed"]:
        if not force:
            raise RetrainError(f"the challenger cannot ship: {parity_failure(parity)} (--force compares it anyway); "
                               f"see {rel}")
        parity["forced"] = True
    write_json(mdir / "card.json", _challenger_card(card, rd, wrun, study, sel, spec, model, parity, seed, budget_s,
                                                    old["test"], t0))

    onnx_name, compressed = "model.onnx", None
    if compress_s > 0:
        from rich.console import Console

        from ..compress import compress_run

        results = compress_run(wdir, budget_s=compress_s, target=compress_target, max_drop=max_drop,
                               seed=seed, data=arrays, device=run_cfg.device, console=Console(stderr=True))
        compression = Compression(ran=True, chosen=results["chosen"], reason=results["reason"],
                                  target=compress_target, max_drop=max_drop, budget_s=compress_s)
        if (wdir / "compress" / "chosen.onnx").exists():
            # The version folder holds the model files and the file it serves, side by side.
            shutil.copy2(wdir / "compress" / "chosen.onnx", mdir / "chosen.onnx")
            onnx_name, compressed = "chosen.onnx", results["chosen"]
        ccard = read_json(mdir / "card.json")
        if (ccard.get("shipped") or {}).get("name") != results["chosen"]:
            ccard["shipped"] = _shipped_from_results(results, wdir, len(old["test"][1]))
    else:
        compression = Compression(ran=False, reason=no_compress_why)
        log(f"compression skipped: {no_compress_why}")
        ccard = read_json(mdir / "card.json")
        ccard["shipped"] = _fp32_figures(ServedModel.load("fp32", mdir / "model.onnx", mdir / "card.json"), mdir,
                                         arrays, f"compression did not run: {no_compress_why}")
    _write_card(mdir, ccard)

    # 5. the paired comparison, of exactly the files that are (or would be) served
    champion = ServedModel.load(champ_ref.version, champ_ref.onnx, champ_ref.card)
    challenger = ServedModel.load("challenger", mdir / onnx_name, mdir / "card.json")
    Xt, yt = old["test"]
    on_new = rule.better_on_new(correct(champion, *new_hold), correct(challenger, *new_hold), alpha)
    on_orig_ch, on_orig_cc = correct(champion, Xt, yt), correct(challenger, Xt, yt)
    on_orig = rule.not_worse_on_original(on_orig_ch, on_orig_cc, alpha, tolerance)
    ok, why = rule.decide(on_new, on_orig, alpha)
    shipped_acc = float(on_orig_cc.mean())

    champ_compressed = None
    if vs := versions.read_versions(rd.path):
        champ_compressed = versions.entry_of(vs, champ_ref.version).compressed
    elif champ_ref.onnx.name == "chosen.onnx":
        res = rd.path / "compress" / "results.json"
        champ_compressed = read_json(res).get("chosen") if res.exists() else "chosen"
    challenger_sha = versions.sha256(mdir / onnx_name)
    decision = Decision(
        time=datetime.now(timezone.utc).isoformat(timespec="seconds"), retrain_dir=rel, rule=rule.RULE,
        alpha=alpha, tolerance=tolerance, min_holdout=need,
        champion=Compared(version=champ_ref.version, onnx=str(champ_ref.onnx.relative_to(rd.path)),
                          onnx_sha256=versions.sha256(champ_ref.onnx), compressed=champ_compressed),
        challenger=Compared(version="challenger", onnx=str((mdir / onnx_name).relative_to(rd.path)),
                            onnx_sha256=challenger_sha, compressed=compressed),
        new_data=PairedTest(**on_new.to_dict()), original_test=PairedTest(**on_orig.to_dict()),
        promote=ok, reason=why, sources=sources, new_split={k: int(len(v)) for k, v in parts.items()},
        repeat_new=repeat, warm_start_trials=len(best_before), trials=len(study.get_trials(deepcopy=False)),
        challenger_trial=best.number, challenger_trial_state=sel.how,
        onnx_parity={k: v for k, v in parity.items()}, compression=compression, elapsed_s=0.0)

    # 6. promotion: the compared file becomes the new version's served file
    if ok and promote:
        from ..monitor.reference import reference_from_arrays

        ref_train = np.concatenate([old["train"][0], new_tr[0]])  # what it learnt from, without the repetition
        reference = reference_from_arrays(challenger, ref_train, *arrays["val"])
        # Live traffic now looks like the old data plus the new: the accuracy
        # alert's baseline is the served file's accuracy on both held-out sets.
        both = np.concatenate([on_orig_cc, correct(challenger, *new_hold)])
        reference["baselines"]["accuracy"] = float(both.mean())
        write_json(mdir / versions.REFERENCE, reference)
        # The card as it will read inside model/vN: files named relative to the run.
        n_next = 1 + max((int(e.version[1:]) for e in versions.ensure_versions(rd.path).versions), default=0)
        ccard["shipped"]["file"] = f"model/v{n_next}/{onnx_name}"
        if ccard.get("fp32"):
            ccard["fp32"]["file"] = f"model/v{n_next}/model.onnx"
        _write_card(mdir, ccard)
        version = versions.add_version(rd.path, mdir, {
            "source": "retrain", "retrain_dir": rel, "parent": champ_ref.version, "test_accuracy": shipped_acc,
            "compressed": compressed}, onnx=onnx_name)
        entry = versions.entry_of(versions.read_versions(rd.path), version)
        if entry.onnx_sha256 != challenger_sha:
            raise RetrainError(f"{entry.onnx} is not the file that was compared (sha256 differs); not promoted")
        reference["model_version"] = version
        write_json(rd.path / entry.dir / versions.REFERENCE, reference)
        versions.promote(rd.path, version)
        decision.version = version
        log(f"promoted {version} ({compressed or 'fp32'}): {why}")
    else:
        log(("the rule says promote, but --no-promote: " if ok else "not promoted: ") + why)
    decision.elapsed_s = round(time.time() - t0, 1)
    write(decision, wdir)
    return decision
