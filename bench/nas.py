"""Architecture search benchmark: the component space against the former
template space at equal budget, with scikit-learn's SVC as the plain reference.

For each data set and seed, on the same train/val/test split:
  components  autopilot.runner.run(..., space="components") as a user gets it
              (per-stage operations, blocks, widths, skips, SE), compression and
              fusion off so the figures are the searched model's own.
  templates   the same run with space="templates" (a CNN doubling its width each
              stage, a 1-D CNN, an MLP: family, first width, depth, one residual flag).
  svc         StandardScaler + SVC(gamma="scale"), C in {1, 10} picked on
              validation (bench/accuracy.py's), trained on at most --svc-max-train
              examples (an SVC on 49,000 Fashion-MNIST images takes many minutes).
Reported: median test accuracy, parameters and ONNX Runtime batch-1 latency of
the shipped model over the seeds; components minus templates beside them. The
runs go one after another so that none steals CPU from another.

    python bench/nas.py                                         # full: 3 data sets x 3 seeds x 10 min x 2
    python bench/nas.py --budget 2m --seeds 0 --datasets mnist5k  # reduced
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import build_data, median, run_svc  # noqa: E402  (bench/accuracy.py: the same SVC and splits)
from record import write_record  # noqa: E402

DATASETS = ("mnist5k", "mnist1d", "fashion")
SPACES = ("components", "templates")
DEFAULT_BUDGET = "10m"
SVC_MAX_TRAIN = 10000


def run_space(dataset: str, space: str, seed: int, budget: str, tmp: Path) -> dict:
    from rich.console import Console

    from autopilot.rundir import read_json
    from autopilot.runner import run

    t0 = time.time()
    rd = run(dataset, budget=budget, seed=seed, runs_dir=tmp, name=f"{dataset}-{space}-s{seed}", space=space,
             quiet=True, doctor=False, compress=False, fusion=False, console=Console(stderr=True, quiet=True))
    card = read_json(rd.model_dir / "card.json")
    search = read_json(rd.search_json)
    spec = read_json(rd.model_dir / "spec.json")
    return {"test_acc": card["test_accuracy"], "val_acc": card["val_accuracy"], "params": card["params"],
            "latency_ms": card["fp32"]["latency_ms_batch1"], "family": spec["family"],
            "spec_version": spec.get("version", 1), "trials": len(search["trials"]), "elapsed_s": time.time() - t0}


def svc_reference(dataset: str, seed: int, max_train: int) -> dict:
    data, _ = build_data(dataset, seed)
    X, y = data["train"]
    if len(y) > max_train:
        keep = np.random.default_rng(seed).permutation(len(y))[:max_train]
        data = {**data, "train": (X[keep], y[keep])}
    return {**run_svc(data), "train_examples": int(min(len(y), max_train))}


def summarize(records: list[dict], datasets) -> dict:
    out = {}
    for d in datasets:
        row = {}
        for m in (*SPACES, "svc"):
            rs = [r for r in records if r["dataset"] == d and r["method"] == m]
            row[m] = {k: median([r.get(k) for r in rs]) for k in ("test_acc", "params", "latency_ms")}
            row[m]["n"] = len(rs)
        c, t = row["components"]["test_acc"], row["templates"]["test_acc"]
        row["components_minus_templates"] = None if c is None or t is None else c - t
        out[d] = row
    return out


def print_report(summary: dict) -> None:
    print(f"{'data set':10s} {'method':11s} {'test acc':>9s} {'params':>9s} {'latency':>9s}")
    for d, row in summary.items():
        for m in (*SPACES, "svc"):
            r = row[m]
            acc = "-" if r["test_acc"] is None else f"{r['test_acc']:.4f}"
            params = "-" if r["params"] is None else f"{r['params']:,.0f}"
            lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}ms"
            print(f"{d:10s} {m:11s} {acc:>9s} {params:>9s} {lat:>9s}")
        diff = row["components_minus_templates"]
        print(f"{d:10s} {'difference':11s} {'-' if diff is None else f'{100 * diff:+.2f} pts':>9s}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", default=DEFAULT_BUDGET, help=f"budget of each run (default {DEFAULT_BUDGET})")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2: median of 3)")
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated (default {','.join(DATASETS)})")
    p.add_argument("--svc-max-train", type=int, default=SVC_MAX_TRAIN, help=f"SVC training examples at most (default {SVC_MAX_TRAIN})")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="folder for nas-<UTC time>.json and nas-latest.json (default: bench/results)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets = [d for d in args.datasets.split(",") if d]
    load_start = os.getloadavg()  # a busy machine means fewer trials: keep the evidence
    records = []
    with tempfile.TemporaryDirectory(prefix="autopilot-bench-nas-") as tmp:
        for d in datasets:
            for seed in seeds:
                for m in SPACES:
                    rec = {"dataset": d, "method": m, "seed": seed, "budget": args.budget, "loadavg": os.getloadavg()}
                    rec.update(run_space(d, m, seed, args.budget, Path(tmp)))
                    print(json.dumps(rec), flush=True)
                    records.append(rec)
                rec = {"dataset": d, "method": "svc", "seed": seed, **svc_reference(d, seed, args.svc_max_train)}
                print(json.dumps(rec), flush=True)
                records.append(rec)
    summary = summarize(records, datasets)
    print_report(summary)
    result = {"benchmark": "nas", "budget": args.budget, "seeds": seeds, "datasets": datasets, "summary": summary,
              "records": records, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                              "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path = write_record(args.out, "nas", result)
    print(f"results: bench/results/{path.name}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
