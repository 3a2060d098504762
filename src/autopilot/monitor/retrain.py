"""The closed loop: new labelled data -> warm-started search -> challenger ->
champion/challenger comparison -> promote (a new model version) or not.

    python -m autopilot.monitor.retrain RUN --from-feedback [--data NEW] [--budget 5m] [--trials N]

1. New labelled data comes from `--data` (any form `autopilot run` reads, with
   the same classes and input shape) and/or `--from-feedback` (the raw inputs
   of the request log that received a label). It is split, stratified and
   seeded: 30 % held out for the comparison, the rest 80/20 into train/val.
2. The challenger's data is the run's own train/val split plus the new
   train/val part. Small new sets are repeated (up to 10x) so they make up
   about a third of the training data: 200 new examples among 1,300 old ones
   would otherwise barely move the model.
3. The search is warm-started: the best `top_k` trials of the current
   champion's study (the run's, or the retrain that made the champion) are
   enqueued first, then the sampler explores for the rest of the budget. Each
   retrain has its own study and trials under RUN/retrain/NNN/.
4. Champion and challenger (both in ONNX Runtime) are scored on the same
   regression set: the run's original test split plus the held-out new data.
   Promotion needs both: the challenger is not worse there (within
   `tolerance`), and strictly better on the held-out new data alone.
5. A promoted challenger becomes model/vN (see versions.py) with its own
   drift reference built from its training data; a running server swaps it
   in. RUN/retrain/NNN/decision.json records every number either way.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..rundir import RunDir, read_json, write_json
from ..schemas.run import read_run
from . import versions

HOLDOUT = 0.3
VAL = 0.2           # of what is not held out
MAX_REPEAT = 10
NEW_SHARE = 1 / 3   # target share of new examples in the training data
MIN_NEW = 10


class RetrainError(RuntimeError):
    """Nothing to retrain on, incompatible data, no trial finished, ..."""


def feedback_data(run_dir, input_shape, log_url: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw inputs and labels of every labelled prediction whose input is still kept."""
    import sqlalchemy as sa

    from ..serve.requestlog import default_url, feedback, make_engine, predictions

    url = log_url or default_url(run_dir)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return np.zeros((0, *input_shape), np.float32), np.zeros(0, np.int64)
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(predictions.c.raw, feedback.c.label)
                            .join(feedback, feedback.c.id == predictions.c.id)
                            .where(predictions.c.raw.is_not(None)).order_by(predictions.c.seq)).all()
    engine.dispose()
    size = math.prod(input_shape)
    X = np.stack([np.frombuffer(r[0], dtype=np.float32) for r in rows if len(r[0]) == 4 * size]) if rows else None
    if X is None or not len(X):
        return np.zeros((0, *input_shape), np.float32), np.zeros(0, np.int64)
    y = np.asarray([r[1] for r in rows if len(r[0]) == 4 * size], dtype=np.int64)
    return X.reshape(len(X), *input_shape), y


def file_data(source: str, classes: list[str], input_shape, label: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A labelled data set in any form `autopilot run` reads, mapped onto the champion's classes by name."""
    from ..data import DataError, load

    ds = load(source, label=label)
    if tuple(ds.input_shape) != tuple(input_shape):
        raise DataError(f"{source}: inputs of shape {list(ds.input_shape)}, the model takes {list(input_shape)}")
    unknown = [c for c in ds.classes if c not in classes]
    if unknown:
        raise DataError(f"{source}: class(es) {', '.join(unknown[:10])} are not among the model's classes "
                        f"({', '.join(classes[:20])}); a new class needs a new run")
    mapping = np.asarray([classes.index(c) for c in ds.classes], dtype=np.int64)
    return ds.X.astype(np.float32), mapping[ds.y]


def split_new(y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Per class: HOLDOUT held out, then VAL of the rest to validation; a class
    with one example goes to train (it cannot be scored and trained on)."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "holdout": []}
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = len(idx)
        n_hold = int(round(HOLDOUT * n)) if n >= 2 else 0
        n_val = int(round(VAL * (n - n_hold))) if n - n_hold >= 3 else 0
        parts["holdout"].append(idx[:n_hold])
        parts["val"].append(idx[n_hold:n_hold + n_val])
        parts["train"].append(idx[n_hold + n_val:])
    return {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}


def accuracy(model, X: np.ndarray, y: np.ndarray) -> float | None:
    if not len(y):
        return None
    pred = np.concatenate([model.predict_proba(np.ascontiguousarray(X[i:i + 512], dtype=np.float32)).argmax(1)
                           for i in range(0, len(X), 512)])
    return float((pred == y).mean())


def decide(champion: dict, challenger: dict, tolerance: float = 0.0) -> tuple[bool, str]:
    """Promote only if not worse on the regression set and better on the new data."""
    if challenger["regression"] < champion["regression"] - tolerance:
        return False, (f"worse on the regression set: {challenger['regression']:.4f} < "
                       f"{champion['regression']:.4f}" + (f" - {tolerance}" if tolerance else ""))
    if champion["new"] is None or challenger["new"] is None:
        return False, "no held-out new data to show the challenger is better"
    if challenger["new"] <= champion["new"]:
        return False, f"not better on the new data: {challenger['new']:.4f} <= {champion['new']:.4f}"
    return True, (f"regression {challenger['regression']:.4f} >= {champion['regression']:.4f}"
                  + (f" - {tolerance}" if tolerance else "") + f", new data {challenger['new']:.4f} > {champion['new']:.4f}")


def compare(champion, challenger, data: dict, new_holdout: tuple) -> tuple[dict, dict]:
    Xt, yt = data["test"]
    Xh, yh = new_holdout
    Xr, yr = np.concatenate([Xt, Xh]), np.concatenate([yt, yh])
    scores = []
    for m in (champion, challenger):
        scores.append({"regression": accuracy(m, Xr, yr), "original_test": accuracy(m, Xt, yt),
                       "new": accuracy(m, Xh, yh), "regression_examples": int(len(yr)), "new_examples": int(len(yh))})
    return scores[0], scores[1]


def promote_challenger(run_dir, cdir: Path, meta: dict) -> str:
    version = versions.add_version(run_dir, cdir, meta)
    versions.promote(run_dir, version)
    return version


def _next_dir(rd: RunDir) -> Path:
    root = rd.path / "retrain"
    root.mkdir(exist_ok=True)
    n = 1
    while (root / f"{n:03d}").exists():
        n += 1
    d = root / f"{n:03d}"
    d.mkdir()
    return d


def _previous_best(rd: RunDir, vs: dict, info: dict, top_k: int) -> list[dict]:
    """Parameters of the best completed trials of the study that made the champion."""
    from optuna.trial import TrialState

    from ..search.study import open_study, rank_trial

    entry = next(e for e in vs["versions"] if e["version"] == vs["current"])
    src = RunDir(rd.path / entry["retrain_dir"]) if entry.get("retrain_dir") else rd
    run_cfg = read_run(rd.path).config
    cfg = run_cfg.model_copy(update={"storage": None if entry.get("retrain_dir") else run_cfg.storage})
    study = open_study(src, cfg, info)
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    return [t.params for t in sorted(done, key=rank_trial, reverse=True)[:top_k]]


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


def retrain(run_dir, *, data: str | None = None, from_feedback: bool = False, label: str | None = None,
            budget: str | float | None = "5m", trials: int | None = None, top_k: int = 3, seed: int = 0,
            tolerance: float = 0.0, log_url: str | None = None, promote: bool = True, log=print) -> dict:
    """Train a challenger on the run's data plus the new data; promote it when
    it wins. Returns the decision (also written to RUN/retrain/NNN/decision.json)."""
    import torch

    from ..export import check_parity, export_onnx
    from ..final import NoModelError
    from ..models import count_params, load_model
    from ..config import parse_duration
    from ..rundata import load_run_data
    from ..search.study import Objective, open_study, rank_trial
    from ..search.workers import optimize
    from ..serve.model import ServedModel
    from .reference import reference_from_arrays

    t0 = time.time()
    rd = RunDir(Path(run_dir).resolve())
    if not data and not from_feedback:
        raise RetrainError("nothing to retrain on: give --data NEW and/or --from-feedback")
    vs = versions.ensure_versions(rd.path)
    champ_ref = versions.current(rd.path)
    card = read_json(champ_ref.card)
    classes, shape, kind = list(card["classes"]), tuple(card["input_shape"]), card["kind"]

    parts_X, parts_y, sources = [], [], {}
    if data:
        X, y = file_data(data, classes, shape, label)
        parts_X.append(X), parts_y.append(y)
        sources["data"] = {"source": str(data), "examples": int(len(y))}
    if from_feedback:
        X, y = feedback_data(rd.path, shape, log_url)
        parts_X.append(X), parts_y.append(y)
        sources["feedback"] = {"examples": int(len(y))}
    Xn, yn = np.concatenate(parts_X), np.concatenate(parts_y)
    if len(yn) < MIN_NEW:
        raise RetrainError(f"only {len(yn)} new labelled example(s) ({sources}); need at least {MIN_NEW}")
    log(f"new labelled data: {len(yn)} example(s) {sources}")

    _config, _ds, old, _ = load_run_data(rd)
    parts = split_new(yn, seed)
    new_tr, new_val, new_hold = ((Xn[parts[k]], yn[parts[k]]) for k in ("train", "val", "holdout"))
    repeat = 1
    if len(new_tr[1]):
        repeat = int(min(MAX_REPEAT, max(1, round(NEW_SHARE * len(old["train"][1]) / ((1 - NEW_SHARE) * len(new_tr[1]))))))
    train_X = np.concatenate([old["train"][0]] + [new_tr[0]] * repeat).astype(np.float32)
    train_y = np.concatenate([old["train"][1]] + [new_tr[1]] * repeat)
    val_X = np.concatenate([old["val"][0], new_val[0]]).astype(np.float32)
    val_y = np.concatenate([old["val"][1], new_val[1]])
    arrays = {"train": (train_X, train_y), "val": (val_X, val_y), "test": old["test"]}
    info = _info(train_X, kind, len(classes))
    log(f"challenger data: train {len(train_y)} (new x{repeat}), val {len(val_y)}; held out: {len(new_hold[1])} new")

    # The search: a study of its own, warm-started from the champion's best trials.
    wdir = _next_dir(rd)
    wrun = RunDir(wdir)
    run_cfg = read_run(rd.path).config
    # A grid cannot take enqueued trials outside it: a grid search retrains with TPE.
    cfg = run_cfg.model_copy(update={"seed": seed, "storage": None,
                                     "sampler": "tpe" if run_cfg.sampler == "grid" else run_cfg.sampler})
    best_before = _previous_best(rd, vs, info, top_k)
    study = open_study(wrun, cfg, info)
    for p in best_before:
        study.enqueue_trial(p, skip_if_exists=True)
    budget_s = parse_duration(budget) if budget is not None else None
    deadline_wall = time.time() + budget_s if budget_s else float("inf")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    objective = Objective(wrun, arrays, info, cfg, deadline=time.monotonic() + min(deadline_wall - time.time(), 1e9))
    log(f"search: {len(best_before)} warm-start trial(s), " + (f"budget {budget_s:.0f}s" if budget_s else "no budget")
        + (f", at most {trials} trial(s)" if trials else ""))
    optimize(study, objective, deadline_wall, trials)

    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE and (wrun.trial_dir(t.number) / "weights.safetensors").exists()]
    if not done:
        raise NoModelError("no challenger trial completed within the budget; give a larger --budget")
    best = max(done, key=rank_trial)
    model, spec = load_model(wrun.trial_dir(best.number))
    cdir = wdir / "challenger"
    cdir.mkdir()
    export_onnx(model, shape, cdir / "model.onnx")
    parity = check_parity(model, cdir / "model.onnx", old["test"][0][:512])
    for f in ("spec.json", "weights.safetensors"):
        shutil.copy2(wrun.trial_dir(best.number) / f, cdir / f)

    champion = ServedModel.load(champ_ref.version, champ_ref.onnx, champ_ref.card)
    ccard = {**{k: card[k] for k in ("task", "kind", "classes", "input_shape", "input_name", "output_name", "output")
                if k in card},
             "name": rd.name, "family": spec["family"], "params": count_params(model), "val_accuracy": float(best.value),
             "best_trial": best.number, "onnx_parity": parity, "seed": seed, "retrain_dir": str(wdir.relative_to(rd.path)),
             "hyperparameters": {"params": best.params}, "parent_version": champ_ref.version,
             "versions": card.get("versions", {})}
    write_json(cdir / "card.json", ccard)
    challenger = ServedModel.load("challenger", cdir / "model.onnx", cdir / "card.json")
    s_champ, s_chal = compare(champion, challenger, old, new_hold)
    ok, why = decide(s_champ, s_chal, tolerance)
    # The card's test accuracy is the regression-set accuracy: it is what the
    # AccuracyDrop rule's coefficient multiplies once this model is served.
    ccard["test_accuracy"] = s_chal["regression"]
    ccard["test_examples"] = s_chal["regression_examples"]
    n = s_chal["regression_examples"]
    ccard["test_accuracy_se"] = math.sqrt(ccard["test_accuracy"] * (1 - ccard["test_accuracy"]) / n) if n else None
    write_json(cdir / "card.json", ccard)

    decision = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "retrain_dir": str(wdir),
                "champion": {"version": champ_ref.version, **s_champ}, "challenger": s_chal,
                "promote": ok, "reason": why, "tolerance": tolerance, "sources": sources,
                "new_split": {k: int(len(v)) for k, v in parts.items()}, "repeat_new": repeat,
                "warm_start_trials": len(best_before), "trials": len(study.get_trials(deepcopy=False)),
                "best_trial": best.number, "elapsed_s": None, "version": None}
    if ok and promote:
        challenger = ServedModel.load("challenger", cdir / "model.onnx", cdir / "card.json")
        # The challenger's own reference: drift is judged against what it was
        # trained on (the old data plus the new, without the repetition).
        ref_train = np.concatenate([old["train"][0], new_tr[0]])
        reference = reference_from_arrays(challenger, ref_train, val_X, val_y)
        write_json(cdir / versions.REFERENCE, reference)
        version = promote_challenger(rd.path, cdir, {"source": "retrain", "retrain_dir": str(wdir.relative_to(rd.path)),
                                                     "parent": champ_ref.version, "test_accuracy": s_chal["regression"]})
        reference["model_version"] = version
        write_json(rd.path / "model" / version / versions.REFERENCE, reference)
        write_json(versions.reference_file(rd.path), reference)
        decision["version"] = version
        log(f"promoted {version}: {why}")
    else:
        log(f"not promoted: {why}")
    decision["elapsed_s"] = round(time.time() - t0, 1)
    write_json(wdir / "decision.json", decision)
    return decision


def run(args) -> int:
    """Exit status: 0 promoted, 1 not promoted, 2 an error."""
    from ..data import DataError
    from ..final import NoModelError
    from ..config import RunError

    try:
        d = retrain(args.run, data=args.data, from_feedback=args.from_feedback, label=args.label, budget=args.budget,
                    trials=args.trials, top_k=args.top_k, seed=args.seed, tolerance=args.tolerance,
                    log_url=args.log_url, promote=not args.no_promote, log=lambda m: print(m, file=sys.stderr))
    except (RetrainError, DataError, RunError, NoModelError, versions.VersionError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c, h = d["champion"], d["challenger"]
    print(f"champion {c['version']}: regression {c['regression']:.4f}, new {_f(c['new'])}; "
          f"challenger: regression {h['regression']:.4f}, new {_f(h['new'])}")
    print(f"promoted: now serving {d['version']}" if d["version"] else f"not promoted ({d['reason']})")
    return 0 if d["version"] else 1


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def main(argv=None) -> int:
    from .cli import add_retrain_arguments

    p = argparse.ArgumentParser(prog="python -m autopilot.monitor.retrain", description="retrain a run's model")
    add_retrain_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
