"""Pruning benchmark: comparing trials at the same point of their own
learning-rate schedules (new) vs at the same epoch count (old), at equal budget.

Each trial's schedule spans its own `epochs`, so at epoch 3 a 10-epoch
schedule is well into its decay while a 45-epoch one is still warming up.
The old step (epochs trained) let Hyperband prune long schedules for that
reason; the new step is per mille of the planned schedule
(autopilot.search.study.PROGRESS_STEPS). This script runs the same search
both ways and compares the test accuracy of the model each would ship.

For each data set and seed, on the same split, one search per behaviour:
  schedule  trials report at per mille of their planned epochs; Hyperband rungs
            at 10 %, 30 %, 90 % of each schedule (autopilot's behaviour)
  epoch     trials report at their epoch count; Hyperband rungs at 3, 9, 27
            epochs (the former behaviour, kept in the code for this bench)
Everything else is identical: autopilot's TPE sampler with the same seed and
the same enqueued default first trial, the same Objective (trials cut by the
deadline are pruned in both), one torch thread, and a budget in CPU seconds of
the search's own process (time.process_time), so that other work on a shared
machine changes how long the bench takes, not what a search gets to spend.
The trial to ship is chosen by autopilot.search.select.best_trial and its
weights are evaluated once on the test split. Besides the medians over seeds,
the two shipped models of each seed are compared on the same test examples
(seeds pooled): an exact McNemar test and a 95 % upper bound on the accuracy
the new behaviour loses (autopilot.stats).

    .venv/bin/python bench/pruning.py --jobs 2               # full: 2 data sets x 3 seeds x 2, 16 CPU-minutes
    .venv/bin/python bench/pruning.py --budget 20 --seeds 0 --datasets digits   # smoke test
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

from record import utc_stamp, write_record

DATASETS = ("digits", "mnist1d", "mnist5k")
DEFAULT_DATASETS = ("digits", "mnist1d")
# CPU seconds of search per run: room for ~5-15 trials with pruning at one thread.
DEFAULT_BUDGETS = {"digits": 60.0, "mnist1d": 100.0, "mnist5k": 300.0}
BEHAVIOURS = ("schedule", "epoch")  # new, old


def build_data(dataset: str, seed: int):
    """The arrays and model facts as runner.create_run builds them."""
    from autopilot.data import load, split
    from autopilot.data.stats import arrays, data_info

    ds = load(dataset)
    splits = split(ds.y, seed=seed, val=0.15, test=0.15)
    return arrays(ds, splits), data_info(ds, splits)


def one_search(dataset: str, seed: int, behaviour: str, budget_cpu_s: float, run_path: str) -> dict:
    """One search to its CPU budget, in a fresh process; returns its record."""
    import optuna
    import torch
    from optuna.trial import TrialState

    from autopilot.config import RunConfig
    from autopilot.models import load_model
    from autopilot.rundir import RunDir
    from autopilot.search import space
    from autopilot.search.select import best_trial
    from autopilot.search.study import Objective, make_pruner, make_sampler
    from autopilot.train import predict_logits

    torch.set_num_threads(1)
    data, info = build_data(dataset, seed)
    run = RunDir(run_path)
    run.path.mkdir(parents=True)
    config = RunConfig(data=dataset, seed=seed, sampler="tpe", pruner="hyperband", device="cpu", workers=1)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", seed, info),
                                pruner=make_pruner("hyperband", behaviour))
    study.enqueue_trial(space.default_params(info))
    wall0, cpu0 = time.time(), time.process_time()
    deadline = cpu0 + budget_cpu_s
    objective = Objective(run, data, info, config, deadline=deadline, progress=behaviour, clock=time.process_time)
    while time.process_time() < deadline:
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
    cpu_s, wall_s = time.process_time() - cpu0, time.time() - wall0

    trials = study.get_trials(deepcopy=False)
    epochs = sum(t.user_attrs.get("epochs", 0) for t in trials)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    counts["pruned_by_deadline"] = sum(t.user_attrs.get("stopped") == "deadline" for t in trials)
    chosen = best_trial(study, run)
    rec = {"trials": counts, "n_trials": len(trials), "epochs_trained": epochs, "cpu_s": cpu_s, "wall_s": wall_s,
           "planned_epochs_complete": sorted(t.user_attrs.get("planned_epochs") for t in trials
                                             if t.state == TrialState.COMPLETE)}
    if chosen is None:
        return {**rec, "error": "no trial to ship"}
    model, spec = load_model(run.trial_dir(chosen.trial.number))
    Xte, yte = data["test"]
    correct = predict_logits(model, torch.as_tensor(Xte)).argmax(1).numpy() == yte  # test used once
    return {**rec, "val_acc": float(chosen.trial.user_attrs["best_val_acc"]), "test_acc": float(correct.mean()),
            "test_examples": int(len(yte)), "test_correct": "".join("1" if c else "0" for c in correct),
            "selected": chosen.trial.number, "how": chosen.how, "family": spec["family"],
            "selected_epochs": chosen.trial.user_attrs.get("planned_epochs")}


def _job(args):
    dataset, seed, behaviour, budget, tmp = args
    t0 = time.time()
    rec = {"dataset": dataset, "seed": seed, "behaviour": behaviour, "budget_cpu_s": budget}
    try:
        rec.update(one_search(dataset, seed, behaviour, budget, str(Path(tmp) / f"{dataset}-s{seed}-{behaviour}")))
    except Exception as e:  # one failed search must not lose the others
        rec.update(error=f"{type(e).__name__}: {e}", wall_s=time.time() - t0)
    return rec


# ---------------------------------------------------------------- report

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(records: list[dict], datasets) -> dict:
    summary = {}
    for d in datasets:
        summary[d] = {}
        for b in BEHAVIOURS:
            rs = [r for r in records if r["dataset"] == d and r["behaviour"] == b]
            summary[d][b] = {"median_test_acc": median(r.get("test_acc") for r in rs),
                             "median_val_acc": median(r.get("val_acc") for r in rs),
                             "median_trials": median(r.get("n_trials") for r in rs),
                             "median_complete": median((r.get("trials") or {}).get("complete") for r in rs),
                             "median_epochs_trained": median(r.get("epochs_trained") for r in rs),
                             # What the pruner let finish: the old step favoured short, already annealed schedules.
                             "planned_epochs_of_complete": [e for r in rs for e in r.get("planned_epochs_complete", [])],
                             "failed_seeds": [r["seed"] for r in rs if "error" in r]}
        new, old = summary[d]["schedule"]["median_test_acc"], summary[d]["epoch"]["median_test_acc"]
        if new is not None and old is not None:
            paired = [(n.get("test_acc"), o.get("test_acc"))
                      for n in records for o in records
                      if n["dataset"] == o["dataset"] == d and n["seed"] == o["seed"]
                      and n["behaviour"] == "schedule" and o["behaviour"] == "epoch"]
            diffs = [a - b for a, b in paired if a is not None and b is not None]
            summary[d]["new_vs_old_test"] = {"difference_points": 100 * (new - old), "ratio": new / old if old else None,
                                             "median_paired_difference_points": 100 * median(diffs) if diffs else None,
                                             "new_ge_old": new >= old, **pooled_paired(records, d)}
    return summary


def pooled_paired(records: list[dict], dataset: str) -> dict:
    """The shipped models of both behaviours on the same test examples, every
    seed pooled: where they disagree, an exact McNemar test (two-sided), and
    the 95 % upper bound on how much accuracy the new behaviour loses."""
    from autopilot.stats import drop_upper_bound, mcnemar_p, paired

    old_correct, new_correct = [], []
    for n in records:
        if n["dataset"] != dataset or n["behaviour"] != "schedule" or "test_correct" not in n:
            continue
        o = next((r for r in records if r["dataset"] == dataset and r["seed"] == n["seed"]
                  and r["behaviour"] == "epoch" and "test_correct" in r), None)
        if o is not None:
            old_correct += [c == "1" for c in o["test_correct"]]
            new_correct += [c == "1" for c in n["test_correct"]]
    if not new_correct:
        return {}
    p = paired(old_correct, new_correct)  # B = new, A = old
    return {"pooled_examples": p.n, "new_only_right": p.b_only, "old_only_right": p.a_only,
            "pooled_difference_points": 100 * p.diff, "mcnemar_p_two_sided": mcnemar_p(p, "two-sided"),
            "new_loses_at_most_points_95": 100 * drop_upper_bound(p, 0.95)}


def print_report(records, summary, datasets) -> None:
    from rich.console import Console
    from rich.table import Table

    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    table = Table(title="pruning: test accuracy (%) of the shipped trial at equal CPU budget; median over seeds, then each seed")
    for col in ("data set", "pruner compares", "test", "val", "test per seed", "trials c/p(deadline)/f per seed",
                "epochs trained per seed"):
        table.add_column(col, justify="left" if col in ("data set", "pruner compares") else "right")
    label = {"schedule": "same % of schedule (new)", "epoch": "same epoch (old)"}
    for d in datasets:
        for b in BEHAVIOURS:
            rs = [r for r in records if r["dataset"] == d and r["behaviour"] == b]
            trials = " ".join("err" if "error" in r else "{complete}/{pruned}({pruned_by_deadline})/{fail}".format(**r["trials"])
                              for r in rs)
            table.add_row(d, label[b], pct(summary[d][b]["median_test_acc"]), pct(summary[d][b]["median_val_acc"]),
                          " ".join(pct(r.get("test_acc")) for r in rs), trials,
                          " ".join(str(r.get("epochs_trained", "-")) for r in rs))
        table.add_section()
    con = Console(width=max(140, Console().width))
    con.print(table)
    for d in datasets:
        c = summary[d].get("new_vs_old_test")
        if c:
            con.print(f"{d}: new vs old, median test acc {100 * summary[d]['schedule']['median_test_acc']:.2f} vs "
                      f"{100 * summary[d]['epoch']['median_test_acc']:.2f} ({c['difference_points']:+.2f} points, "
                      f"ratio {c['ratio']:.4f}); median paired difference {c['median_paired_difference_points']:+.2f} "
                      f"points; new >= old: {'yes' if c['new_ge_old'] else 'NO'}", highlight=False)
            if "pooled_examples" in c:
                con.print(f"{d}: paired on {c['pooled_examples']} test examples (seeds pooled): new alone right on "
                          f"{c['new_only_right']}, old alone on {c['old_only_right']} ({c['pooled_difference_points']:+.2f} "
                          f"points), exact McNemar p = {c['mcnemar_p_two_sided']:.3f}; the new behaviour loses at most "
                          f"{c['new_loses_at_most_points_95']:.2f} points (95 % upper bound)", highlight=False)


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DEFAULT_DATASETS),
                   help="data sets (default: digits mnist1d)")
    p.add_argument("--budget", type=float, default=None,
                   help="CPU seconds of search per run for every data set (default: digits 60, mnist1d 100, mnist5k 300)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="seeds; each is a different split, sampler seed and weight init (default: 0 1 2)")
    p.add_argument("--jobs", type=int, default=1,
                   help="searches run at the same time, each in its own single-threaded process (default 1); "
                        "budgets are CPU time, so this changes the wall time only")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="folder for pruning-<UTC time>.json and pruning-latest.json (default: bench/results)")
    p.add_argument("--keep", action="store_true", help="keep the temporary run folders (their path is printed)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import numpy as np
    import optuna
    import torch

    import autopilot

    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="autopilot-bench-pruning-"))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    started = datetime.now(timezone.utc)
    load_start = os.getloadavg()
    jobs = [(d, seed, b, args.budget or DEFAULT_BUDGETS[d], str(tmp))
            for d in args.datasets for seed in args.seeds for b in BEHAVIOURS]
    records = []
    try:
        # A fresh process per search (maxtasksperchild=1): no state carries over,
        # and process_time measures that search alone.
        with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            for rec in pool.imap_unordered(_job, jobs):
                records.append(rec)
                log(f"[{rec['dataset']} seed {rec['seed']}] {rec['behaviour']:8s} " + (
                    f"ERROR {rec['error']}" if "error" in rec else
                    f"test {100 * rec['test_acc']:.1f} val {100 * rec['val_acc']:.1f} trials {rec['trials']} "
                    f"epochs {rec['epochs_trained']} cpu {rec['cpu_s']:.0f}s wall {rec['wall_s']:.0f}s ({rec['how']})"))
    finally:
        if args.keep:
            log(f"run folders kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    order = {j[:3]: i for i, j in enumerate(jobs)}
    records.sort(key=lambda r: order[(r["dataset"], r["seed"], r["behaviour"])])

    summary = summarize(records, args.datasets)
    print_report(records, summary, args.datasets)
    result = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "budgets_cpu_s": {d: args.budget or DEFAULT_BUDGETS[d] for d in args.datasets},
        "seeds": args.seeds, "jobs": args.jobs, "torch_threads_per_search": 1,
        "behaviours": {"schedule": "new: step = per mille of the trial's planned epochs; Hyperband 100..1000, x3",
                       "epoch": "old: step = epochs trained; Hyperband 3..45 epochs, x3"},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "optuna": optuna.__version__, "numpy": np.__version__,
                    "autopilot": autopilot.__version__, "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "records": records,
        "summary": summary,
    }
    path = write_record(args.out, "pruning", result, utc_stamp(started))
    print(f"results: {path}", flush=True)
    return 0 if all("error" not in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
