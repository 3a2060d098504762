"""Accuracy benchmark: autopilot's default search vs plain Optuna TPE vs an SVC.

For each data set and seed, on the same train/val/test split:
  autopilot  autopilot.runner.run(...) exactly as a user gets it (TPE multivariate,
             enqueued default trial, Hyperband, default workers).
  plain-tpe  the same search space and Objective, but TPESampler(seed) with Optuna
             defaults, no enqueued trial, no pruning; same workers, same search time.
  svc        scikit-learn StandardScaler + SVC(gamma="scale"), C in {1, 10} picked on val.
The methods run one after another so that none steals CPU from another.

    python bench/accuracy.py                               # full: ~1 h 45 min on 2 cores
    python bench/accuracy.py --budget 15s --seeds 0 --datasets digits   # smoke test
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from record import utc_stamp, write_record

DATASETS = ("digits", "mnist1d", "mnist5k")
DEFAULT_BUDGETS = {"digits": 120.0, "mnist1d": 300.0, "mnist5k": 600.0}
# From the design notes (DESIGN.md), "Reference numbers to beat" (test accuracy).
REFERENCES = {
    "digits": "SVC 97 %, kNN 96-97 %, MLP 93-94 %",
    "mnist1d": "logistic 32 %, MLP 68 %, CNN 94 %, GRU 91 %, human 96 %",
    "mnist5k": "none in DESIGN.md",
}
STUDY = "plain-tpe"


def search_seconds(budget: float) -> float:
    """The search time autopilot gives itself: runner.run keeps this reserve
    for the final stage (test, ONNX export, report) out of the budget."""
    from autopilot.config import search_reserve

    return budget - search_reserve(budget)


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))  # the same rule as runner.run


def build_data(dataset: str, seed: int):
    """The arrays and model facts exactly as runner.create_run builds them."""
    from autopilot.data import load, split
    from autopilot.data.stats import arrays, data_info

    ds = load(dataset)
    splits = split(ds.y, seed=seed, val=0.15, test=0.15)
    return arrays(ds, splits), data_info(ds, splits)


def journal(run_path: str):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = str(Path(run_path) / "journal.log")
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


# ---------------------------------------------------------------- methods

def run_autopilot(dataset: str, seed: int, budget: float, tmp: Path) -> dict:
    from rich.console import Console

    from autopilot.rundir import read_json
    from autopilot.runner import run

    rd = run(dataset, budget=budget, seed=seed, runs_dir=tmp / "autopilot", name=f"{dataset}-s{seed}",
             quiet=True, console=Console(stderr=True, quiet=True))
    card, search = read_json(rd.model_dir / "card.json"), read_json(rd.search_json)
    states = [t["state"] for t in search["trials"]]
    return {"val_acc": card["val_accuracy"], "test_acc": card["test_accuracy"], "best_trial": card["best_trial"],
            "search_best_value": search["best_value"], "elapsed_s": card["elapsed_s"],
            "trials": {s.lower(): states.count(s) for s in ("COMPLETE", "PRUNED", "FAIL")},
            "family": card["family"]}


def plain_worker(run_path: str, dataset: str, seed: int, deadline_wall: float, threads: int, sampler_seed: int):
    """One of N processes sharing the study, as autopilot.search.workers does:
    a clean interpreter (spawn), its own copy of the data, `threads` torch threads."""
    import optuna
    import torch

    from autopilot.rundir import RunDir
    from autopilot.search.study import Objective

    torch.set_num_threads(threads)
    data, info = build_data(dataset, seed)
    study = optuna.load_study(study_name=STUDY, storage=journal(run_path),
                              sampler=optuna.samplers.TPESampler(seed=sampler_seed), pruner=optuna.pruners.NopPruner())
    from autopilot.config import RunConfig

    config = RunConfig(data=dataset, seed=seed, sampler="tpe", pruner="none", device="cpu", storage=None)
    remaining = deadline_wall - time.time()  # start-up time of this process counts, as in autopilot
    objective = Objective(RunDir(run_path), data, info, config, deadline=time.monotonic() + remaining)
    if remaining > 0:
        study.optimize(objective, timeout=remaining, catch=(Exception,), gc_after_trial=False)


def run_plain_tpe(dataset: str, seed: int, budget: float, workers: int, tmp: Path, data: dict) -> dict:
    import optuna
    import torch
    from optuna.trial import TrialState

    from autopilot.models import load_model
    from autopilot.rundir import RunDir
    from autopilot.search.study import rank_trial
    from autopilot.train import predict_logits

    t0 = time.time()
    run = RunDir(tmp / "plain-tpe" / f"{dataset}-s{seed}")
    run.path.mkdir(parents=True)
    optuna.create_study(study_name=STUDY, storage=journal(str(run.path)), direction="maximize")
    deadline = t0 + search_seconds(budget)
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    # Each worker gets its own sampler seed (as autopilot's workers do): with one
    # shared seed both would draw the same random start-up trials.
    procs = [ctx.Process(target=plain_worker, args=(str(run.path), dataset, seed, deadline, threads, seed + 1000 * (i + 1)))
             for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()

    study = optuna.load_study(study_name=STUDY, storage=journal(str(run.path)))
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    done = [t for t in trials if t.state == TrialState.COMPLETE and (run.trial_dir(t.number) / "weights.safetensors").exists()]
    if not done:
        raise RuntimeError(f"no trial completed (trials: {counts})")
    best = max(done, key=rank_trial)  # the same tie-break autopilot's final stage uses
    model, spec = load_model(run.trial_dir(best.number))
    Xte, yte = data["test"]
    test_acc = float((predict_logits(model, torch.as_tensor(Xte)).argmax(1).numpy() == yte).mean())  # test used once
    return {"val_acc": float(best.value), "test_acc": test_acc, "best_trial": best.number,
            "search_best_value": float(study.best_value), "elapsed_s": time.time() - t0, "trials": counts,
            "family": spec["family"]}


def run_svc(data: dict) -> dict:
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    t0 = time.time()
    flat = {k: (X.reshape(len(X), -1), y) for k, (X, y) in data.items()}
    scaler = StandardScaler().fit(flat["train"][0])  # statistics from train only
    Xtr, Xva, Xte = (scaler.transform(flat[k][0]) for k in ("train", "val", "test"))
    fits = {C: SVC(C=C, gamma="scale").fit(Xtr, flat["train"][1]) for C in (1.0, 10.0)}
    vals = {C: float(m.score(Xva, flat["val"][1])) for C, m in fits.items()}
    C = max(vals, key=lambda c: (vals[c], c))  # ties: the larger C, the usual winner on these sets
    return {"val_acc": vals[C], "test_acc": float(fits[C].score(Xte, flat["test"][1])), "C": C,
            "elapsed_s": time.time() - t0, "trials": None}


# ---------------------------------------------------------------- report

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(records: list[dict], datasets, methods) -> dict:
    summary = {}
    for d in datasets:
        summary[d] = {"reference": REFERENCES[d]}
        for m in methods:
            rs = [r for r in records if r["dataset"] == d and r["method"] == m]
            summary[d][m] = {"median_val_acc": median(r.get("val_acc") for r in rs),
                             "median_test_acc": median(r.get("test_acc") for r in rs),
                             "failed_seeds": [r["seed"] for r in rs if "error" in r]}
        a, p = summary[d]["autopilot"]["median_val_acc"], summary[d]["plain-tpe"]["median_val_acc"]
        if a is not None and p is not None:
            summary[d]["autopilot_vs_plain_tpe_val"] = {"difference": a - p, "ratio": a / p if p else None,
                                                        "default_ge_plain": a >= p}
    return summary


def print_report(records, summary, datasets, methods) -> None:
    from rich.console import Console
    from rich.table import Table

    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    table = Table(title="accuracy (%): median over seeds, then each seed")
    for col in ("data set", "method", "val", "test", "val per seed", "test per seed", "trials c/p/f per seed"):
        table.add_column(col, justify="left" if col in ("data set", "method") else "right")
    for d in datasets:
        for m in methods:
            rs = [r for r in records if r["dataset"] == d and r["method"] == m]
            trials = " ".join("err" if "error" in r else "-" if not r["trials"] else
                              "{complete}/{pruned}/{fail}".format(**r["trials"]) for r in rs)
            table.add_row(d, m, pct(summary[d][m]["median_val_acc"]), pct(summary[d][m]["median_test_acc"]),
                          " ".join(pct(r.get("val_acc")) for r in rs), " ".join(pct(r.get("test_acc")) for r in rs), trials)
        table.add_section()
    con = Console(width=max(120, Console().width))  # a pipe or log file gets 80 columns otherwise
    con.print(table)
    for d in datasets:
        con.print(f"reference {d} (test, DESIGN.md): {REFERENCES[d]}", highlight=False)
    for d in datasets:
        c = summary[d].get("autopilot_vs_plain_tpe_val")
        if c:
            con.print(f"{d}: autopilot default vs plain TPE, median best val acc: {100 * c['difference']:+.2f} points, "
                      f"ratio {c['ratio']:.4f}, default >= plain: {'yes' if c['default_ge_plain'] else 'NO'}", highlight=False)


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    from autopilot.config import parse_duration

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS),
                   help="data sets to run (default: all three)")
    p.add_argument("--budget", type=parse_duration, default=None,
                   help="budget per run, e.g. 90s, 2m, 300, for every data set (default: digits 120s, "
                        "mnist1d 300s, mnist5k 600s); plain TPE gets the same search time as autopilot, "
                        "i.e. the budget minus autopilot's final-stage reserve min(60, max(8, 6%%))")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="seeds; each seed is a different split, sampler seed and weight init (default: 0 1 2)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="trial processes for both searches (default: autopilot's own default, %(default)s here)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="folder for accuracy-<UTC time>.json and accuracy-latest.json (default: bench/results)")
    p.add_argument("--keep", action="store_true", help="keep the temporary run folders (their path is printed)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import optuna
    import sklearn
    import torch

    import autopilot

    args = parse_args(argv)
    methods = ("autopilot", "plain-tpe", "svc")
    tmp = Path(tempfile.mkdtemp(prefix="autopilot-bench-"))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731  progress; the table goes to stdout
    started = datetime.now(timezone.utc)
    records = []
    load_start = os.getloadavg()  # a busy machine means fewer trials: keep the evidence
    try:
        for d in args.datasets:
            budget = args.budget or DEFAULT_BUDGETS[d]
            for seed in args.seeds:
                data, _info = build_data(d, seed)
                for m in methods:
                    rec = {"dataset": d, "seed": seed, "method": m, "budget_s": budget,
                           "search_s": search_seconds(budget) if m != "svc" else None}
                    t0 = time.time()
                    try:
                        if m == "autopilot":
                            rec.update(run_autopilot(d, seed, budget, tmp))
                        elif m == "plain-tpe":
                            rec.update(run_plain_tpe(d, seed, budget, args.workers, tmp, data))
                        else:
                            rec.update(run_svc(data))
                    except Exception as e:  # one failed run must not lose an hour of others
                        rec.update(error=f"{type(e).__name__}: {e}", trials=None, elapsed_s=time.time() - t0)
                    records.append(rec)
                    log(f"[{d} seed {seed}] {m:9s} " + (f"ERROR {rec['error']}" if "error" in rec else
                        f"val {100 * rec['val_acc']:.1f}  test {100 * rec['test_acc']:.1f}  "
                        f"trials {rec['trials'] or '-'}  {rec['elapsed_s']:.0f}s"))
    finally:
        if args.keep:
            log(f"run folders kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    summary = summarize(records, args.datasets, methods)
    print_report(records, summary, args.datasets, methods)
    result = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "budgets_s": {d: args.budget or DEFAULT_BUDGETS[d] for d in args.datasets},
        "search_s": {d: search_seconds(args.budget or DEFAULT_BUDGETS[d]) for d in args.datasets},
        "seeds": args.seeds, "workers": args.workers,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "optuna": optuna.__version__,
                    "sklearn": sklearn.__version__, "numpy": np.__version__, "autopilot": autopilot.__version__,
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "records": records,
        "summary": summary,
    }
    path = write_record(args.out, "accuracy", result, utc_stamp(started))
    print(f"results: {path}", flush=True)
    return 0 if all("error" not in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
