"""Fusion benchmark: the best single model, the ensemble of the search's
trials and the student distilled from it, from the same `autopilot run`.

    .venv/bin/python bench/fusion.py                                   # mnist1d, mnist5k, digits-table x 3 seeds
    .venv/bin/python bench/fusion.py --datasets mnist1d --budget 3m --seeds 0 1 2
    .venv/bin/python bench/fusion.py --datasets digits-table --budget 60s --seeds 0

Each data set and seed is one full `autopilot.run(data, budget=B, seed=s)`
(the default search, compression and fusion stages; one run at a time), so
the three candidates share one budget and one split. From the run's model
card and fusion/results.json: test accuracy of each (read once, after the
choice), parameters; the ensemble-minus-single difference with its paired
standard error (per test example: std of the correctness difference / sqrt n);
batch-1 latency of the three ONNX files re-timed together here (ONNX
Runtime, one thread, interleaved rounds: autopilot.compress.measure); with
--ship balanced (the default) also the ensemble selected within 2x the single
model's latency (`ensemble-capped`, when the free one is over it). Prints
the median over seeds and each seed's values, checks the issue's acceptance
(ensemble above single in the median on mnist1d and mnist5k; the student
keeps >= half the gain at <= 1.2x the single model's latency on at least
one), and writes bench/results/fusion-<UTC time>.json and fusion-latest.json
with the load average at start and end.

`digits-table` is scikit-learn's digits as a table: 64 pixel features per
row in an .npz (kind "table": MLPs only).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from record import utc_stamp, write_record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DATASETS = ("mnist1d", "mnist5k", "digits-table")
BUDGET = {"mnist1d": "5m", "mnist5k": "7m", "digits-table": "90s"}
KEEP_GAIN, MAX_LATENCY = 0.5, 1.2  # the acceptance for the student
CAPPED = "ensemble-capped"  # autopilot.fusion.stage.CAPPED


def data_path(name: str, tmp: Path) -> str:
    if name != "digits-table":
        return name
    from autopilot.data import load

    ds = load("digits")
    path = tmp / "digits-table.npz"
    np.savez(path, X=ds.X.reshape(len(ds.X), -1).astype(np.float32), y=ds.y)
    return str(path)


def one_run(name: str, seed: int, budget: str, runs: Path, workers: int | None, seconds: float) -> dict:
    import autopilot
    from autopilot.compress import measure
    from autopilot.rundata import load_run_data
    from autopilot.schemas.card import read_card
    from autopilot.schemas.fusion import read_fusion

    t0 = time.time()
    options = {"workers": workers} if workers else {}
    rd = autopilot.run(data_path(name, runs), budget=budget, seed=seed, runs_dir=runs, name=f"{name}-{seed}",
                       quiet=True, overwrite=True, **options)
    wall = time.time() - t0
    card = read_card(rd.path)
    if card.ensemble is None:
        return {"seed": seed, "wall_s": round(wall, 1), "ensemble": None,
                "note": "no ensemble: fewer than two trained trials"}
    res = read_fusion(rd.path)
    _, _, data, _ = load_run_data(rd)
    Xte, yte = data["test"]
    files = {c.name: rd.path / c.file for c in res.candidates}
    correct = {n: measure.onnx_logits(p, Xte).argmax(1) == yte for n, p in files.items()}
    lat = measure.measure_latency(files, Xte, budget_s=seconds, batches=(1,))
    # The best single model is the best trial's own fp32 export ("fp32" when
    # compression shipped another file of it, else "single").
    best = "fp32" if "fp32" in correct else "single"
    d = correct["ensemble"].astype(float) - correct[best].astype(float)
    out = {"seed": seed, "wall_s": round(wall, 1), "test_examples": int(len(yte)), "chosen": res.chosen,
           "members": card.ensemble.members, "weights": card.ensemble.weights, "pool": res.selection.pool,
           "models": [m.models for m in res.selection.members], "judged_on": res.judged_on,
           "ens_minus_single": float(d.mean()), "ens_minus_single_se": float(d.std(ddof=1) / np.sqrt(len(d))),
           "load_average": measure.load_average()}
    for c in res.candidates:
        out["shipped-single" if c.name == "single" and best == "fp32" else
            "single" if c.name == "fp32" else c.name] = {"test_acc": float(correct[c.name].mean()), "val_acc": c.val_acc, "params": c.params,
                       "file_bytes": c.file_bytes, "latency_ms_b1": lat[c.name]["latency_ms"]["1"]["p50"],
                       "method": c.method}
    if "student" in out:
        out["student"]["train"] = res.candidate("student").train.model_dump(mode="json")
    return out


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(name: str, rows: list[dict]) -> dict:
    ok = [r for r in rows if r.get("ensemble")]

    def fig(cand, key):
        return med([r[cand][key] for r in ok if cand in r])

    single, ens, stu = fig("single", "test_acc"), fig("ensemble", "test_acc"), fig("student", "test_acc")
    capped = fig(CAPPED, "test_acc")  # --ship balanced's ensemble within 2x the single's latency, when one was made
    diffs = [r["ens_minus_single"] for r in ok]
    ses = [r["ens_minus_single_se"] for r in ok]
    # Per seed, paired: the share of the ensemble's gain the student keeps (0
    # when there is no gain or no student: nothing kept), and its latency.
    gains = [((r["student"]["test_acc"] - r["single"]["test_acc"]) / (r["ensemble"]["test_acc"] - r["single"]["test_acc"]))
             if "student" in r and r["ensemble"]["test_acc"] > r["single"]["test_acc"] else 0.0 for r in rows]
    lat_ratio = [r["student"]["latency_ms_b1"] / r["single"]["latency_ms_b1"] if "student" in r else None for r in ok]
    s = {"data": name, "seeds": len(rows), "with_ensemble": len(ok),
         "single_test": single, "ensemble_test": ens, "student_test": stu, "capped_test": capped,
         "capped_runs": sum(CAPPED in r for r in ok), "shipped": [r.get("chosen") for r in ok],
         "ens_minus_single_median": med(diffs),
         # the mean difference over the test examples of every seed that made an ensemble (the seeds'
         # test splits are the same size) and its SE (seeds independent): a gain of one or two
         # examples in 750 is the size of one seed's SE; the pooled figure says whether it holds
         # across seeds
         "ens_minus_single_pooled": float(np.mean(diffs)) if diffs else None,
         "ens_minus_single_se_pooled": float(np.sqrt(np.sum(np.square(ses))) / len(ses)) if ses else None,
         # the median of the per-seed paired differences (a run without an ensemble counts as 0)
         "ensemble_beats_single": bool(med([r.get("ens_minus_single", 0.0) for r in rows]) > 0),
         "student_gain_kept_median": med(gains), "student_latency_ratio_median": med(lat_ratio),
         "params": {c: fig(c, "params") for c in ("single", "ensemble", "student", CAPPED)},
         "latency_ms_b1": {c: fig(c, "latency_ms_b1") for c in ("single", "ensemble", "student", CAPPED)}}
    g, lr = s["student_gain_kept_median"], s["student_latency_ratio_median"]
    s["student_accepted"] = bool(g is not None and lr is not None and g >= KEEP_GAIN and lr <= MAX_LATENCY)
    return s


def pct(x):
    return "—" if x is None else f"{100 * x:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--budget", help="one budget for every run, e.g. 3m (default per data set: "
                                     + ", ".join(f"{k} {v}" for k, v in BUDGET.items()) + ")")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--workers", type=int, help="trial processes (default: autopilot's own)")
    ap.add_argument("--seconds", type=float, default=5.0, help="latency timing per run (default 5)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--keep", action="store_true", help="keep the run folders (path printed)")
    args = ap.parse_args(argv)

    from autopilot.compress import measure

    load_start = measure.load_average()
    tmp = Path(tempfile.mkdtemp(prefix="fusion-bench-"))
    per_data = {}
    try:
        for name in args.datasets:
            budget = args.budget or BUDGET[name]
            rows = []
            for seed in args.seeds:
                r = one_run(name, seed, budget, tmp, args.workers, args.seconds)
                rows.append(r)
                if r.get("ensemble"):
                    print(f"{name} seed {seed}: single {pct(r['single']['test_acc'])} ensemble "
                          f"{pct(r['ensemble']['test_acc'])} (diff {100 * r['ens_minus_single']:+.2f} ± "
                          f"{100 * r['ens_minus_single_se']:.2f}) student "
                          f"{pct(r.get('student', {}).get('test_acc'))} capped {pct(r.get(CAPPED, {}).get('test_acc'))} "
                          f"({r.get(CAPPED, {}).get('latency_ms_b1', 0) / r['single']['latency_ms_b1']:.2f}x); "
                          f"ships {r['chosen']}; load {r['load_average']}; "
                          f"{r['wall_s']:.0f} s", file=sys.stderr, flush=True)
                else:
                    print(f"{name} seed {seed}: {r['note']}", file=sys.stderr, flush=True)
            per_data[name] = {"budget": budget, "runs": rows, "summary": summarize(name, rows)}
    finally:
        if args.keep:
            print(f"runs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'data':<13} {'single':>7} {'ensemble':>8} {'ens-single':>10} {'pooled ± SE':>15} {'student':>8} {'gain kept':>9} "
          f"{'lat b1 ms single/ens/student':>30} {'params single/ens/student':>27}")
    for name, d in per_data.items():
        s = d["summary"]
        lat, par = s["latency_ms_b1"], s["params"]
        diff, pooled = ("—", "—") if s["ens_minus_single_median"] is None else (
            f"{100 * s['ens_minus_single_median']:+.2f}",
            f"{100 * s['ens_minus_single_pooled']:+.2f} ± {100 * s['ens_minus_single_se_pooled']:.2f}")
        kept = "—" if s["student_gain_kept_median"] is None else f"{s['student_gain_kept_median']:.2f}"
        lats = "/".join("—" if lat[c] is None else f"{lat[c]:.3f}" for c in ("single", "ensemble", "student"))
        pars = "/".join("—" if par[c] is None else f"{int(par[c]):,}" for c in ("single", "ensemble", "student"))
        print(f"{name:<13} {pct(s['single_test']):>7} {pct(s['ensemble_test']):>8} {diff:>10} {pooled:>15} {pct(s['student_test']):>8} "
              f"{kept:>9} {lats:>30} {pars:>27}")
    print("(test accuracy in %, median over seeds; ens-single: the median of the seeds' paired differences in "
          "points; pooled: their mean over all seeds' test examples ± its SE)")
    acceptance = {
        "ensemble_beats_single": {n: per_data[n]["summary"]["ensemble_beats_single"]
                                  for n in ("mnist1d", "mnist5k") if n in per_data},
        "student_keeps_half_gain_within_1.2x_latency": {n: d["summary"]["student_accepted"] for n, d in per_data.items()},
    }
    print("acceptance:", json.dumps(acceptance))
    load_end = measure.load_average()
    print(f"load average: start {load_start}, end {load_end}")

    stamp = utc_stamp()
    doc = {"benchmark": "fusion", "created": stamp, "seeds": args.seeds, "workers": args.workers,
           "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
           "load_average": {"start": load_start, "end": load_end}, "acceptance": acceptance, "data": per_data}
    path = write_record(args.out, "fusion", doc, stamp)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
