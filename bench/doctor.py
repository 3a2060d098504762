"""Doctor benchmark: how long the pre-flight takes, and what the live doctor costs.

    python bench/doctor.py                         # pre-flight on mnist5k, digits, mnist1d + live overhead
    python bench/doctor.py --datasets mnist5k --no-live

Pre-flight: `autopilot.doctor.doctor_dataset(ds, splits, model=default, budget_s=20)`, exactly
what `autopilot run` calls: the data checks plus the set-up probes on the
default model. The first data set pays the process's one-off costs (e.g. the
first optimiser step imports torch._dynamo, ~1.5 s), as a fresh `autopilot run`
does; mnist5k goes first so its number is the honest, cold one.

Live overhead: the default model trained on digits with and without
`LiveDoctor`, runs alternated (median and min of each); the time spent
inside the doctor's callbacks themselves; and the steady-state cost per step
measured in interleaved blocks of 60 steps (the most trustworthy number). On a busy machine the wall-clock
difference is mostly noise; the in-callback share is the steady number (the
ReLU forward hooks add nothing measurable between samples: they return at once).

Writes bench/results/doctor-latest.json and doctor-<UTC time>.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from record import write_record


def preflight(name: str, budget: float) -> dict:
    from autopilot.data import load, split
    from autopilot.doctor import doctor_dataset
    from autopilot.search.space import default_model

    ds = load(name)
    splits = split(ds.y, seed=0, val=0.15, test=0.15)
    t0 = time.perf_counter()
    model, hp = default_model(ds, splits)  # built inside the timing, as the run does
    report = doctor_dataset(ds, splits, model=model, hparams=hp, budget_s=budget)
    wall = time.perf_counter() - t0
    d = report.to_dict()
    return {"dataset": name, "budget_s": budget, "elapsed_s": round(report.elapsed_s, 3), "wall_s": round(wall, 3),
            "worst": report.worst, "checks": d["checks"],
            "findings": [{"id": f["id"], "severity": f["severity"]} for f in d["findings"]],
            "suggested_lr": (report.get("lr-range").evidence.get("suggested_lr") if report.get("lr-range") else None)}


class Timed:
    """Wraps a callback and adds up the time spent inside it."""

    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __getattr__(self, name):
        fn = getattr(self.inner, name)

        def timed(*args):
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1
        return timed


def live_overhead(epochs: int, repeats: int) -> dict:
    import torch

    from autopilot.data import load, split
    from autopilot.data.stats import arrays
    from autopilot.doctor import LiveDoctor
    from autopilot.search.space import default_model
    from autopilot.train import train

    torch.set_num_threads(1)
    ds = load("digits")
    splits = split(ds.y, seed=0)
    a = arrays(ds, splits)

    def once(with_live: bool):
        model, hp = default_model(ds, splits)
        cb = Timed(LiveDoctor()) if with_live else None
        t = time.perf_counter()
        train(model, a["train"], a["val"], {**hp, "epochs": epochs}, kind=ds.kind, callbacks=[cb] if cb else [])
        return time.perf_counter() - t, cb

    once(False)  # warm-up: imports (kornia), allocator, dynamo
    plain, live, inside, findings = [], [], [], []
    for _ in range(repeats):
        plain.append(once(False)[0])
        t, cb = once(True)
        live.append(t)
        inside.append(cb.seconds / t)
        findings = [f.id for f in cb.inner.findings]
    p, l_ = statistics.median(plain), statistics.median(live)
    return {"dataset": "digits", "epochs": epochs, "repeats": repeats, "plain_s": [round(v, 3) for v in plain],
            "live_s": [round(v, 3) for v in live], "median_plain_s": round(p, 3), "median_live_s": round(l_, 3),
            "wall_overhead": round(l_ / p - 1, 4), "wall_overhead_min": round(min(live) / min(plain) - 1, 4),
            "inside_callbacks_share": round(statistics.median(inside), 4),
            "findings_on_healthy_run": findings}


def step_overhead(blocks: int = 8, steps: int = 60) -> dict:
    """Steady-state cost per training step, interleaved blocks, min and median:
    far less noisy than whole runs on a shared machine."""
    import torch
    from torch.nn import functional as F

    from autopilot.data import load, split
    from autopilot.doctor import LiveDoctor
    from autopilot.search.space import default_model

    torch.set_num_threads(1)
    ds = load("digits")
    splits = split(ds.y, seed=0)
    model, _ = default_model(ds, splits)
    x, y = torch.as_tensor(ds.X[:64]), torch.as_tensor(ds.y[:64])
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def block(with_live: bool) -> float:
        live = LiveDoctor() if with_live else None
        if live:
            live.on_train_start(model, opt, {}, 600)  # a 600-step run: samples every 24 steps
        t = time.perf_counter()
        for i in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if live:
                live.on_step(i + 1, loss.item(), model, opt, 1e-3)
        dt = (time.perf_counter() - t) / steps
        if live:
            live.on_train_end(None)
        return dt * 1000

    block(False)
    plain, live = [], []
    for _ in range(blocks):
        plain.append(block(False))
        live.append(block(True))
    return {"ms_per_step_plain": {"min": round(min(plain), 3), "median": round(statistics.median(plain), 3)},
            "ms_per_step_live": {"min": round(min(live), 3), "median": round(statistics.median(live), 3)},
            "overhead_min": round(min(live) / min(plain) - 1, 4),
            "overhead_median": round(statistics.median(live) / statistics.median(plain) - 1, 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["mnist5k", "digits", "mnist1d"])
    ap.add_argument("--budget", type=float, default=20.0, help="doctor budget in seconds (default 20)")
    ap.add_argument("--no-live", action="store_true", help="skip the live-overhead measurement")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per live-overhead run (default 5)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)

    import torch

    import autopilot

    load_start = os.getloadavg()
    started = time.time()
    pre = []
    for name in args.datasets:
        r = preflight(name, args.budget)
        pre.append(r)
        print(f"\n{name}: {r['elapsed_s']:.2f} s (budget {args.budget:g} s), worst finding: {r['worst']}", flush=True)
        for c in r["checks"]:
            print(f"  {c['id']:<24} {c['status']:<8} {c['seconds']:6.2f} s  {c.get('note', '')}")
        print(f"  {'total':<24} {'':<8} {r['elapsed_s']:6.2f} s")
    live = None
    if not args.no_live:
        live = live_overhead(args.epochs, args.repeats)
        live["per_step"] = step_overhead()
        print(f"\nlive doctor on digits ({args.epochs} epochs × {args.repeats}): plain {live['median_plain_s']:.2f} s, "
              f"with LiveDoctor {live['median_live_s']:.2f} s (wall overhead {live['wall_overhead']:+.1%} by median, "
              f"{live['wall_overhead_min']:+.1%} by min: noisy on a busy machine); "
              f"time inside its callbacks {live['inside_callbacks_share']:.2%}; "
              f"findings on this healthy run: {live['findings_on_healthy_run'] or 'none'}")
        ps = live["per_step"]
        print(f"per training step (default digits model, batch 64, interleaved blocks): plain "
              f"{ps['ms_per_step_plain']['min']:.2f} ms, with LiveDoctor {ps['ms_per_step_live']['min']:.2f} ms "
              f"(overhead {ps['overhead_min']:+.1%} by min, {ps['overhead_median']:+.1%} by median)")
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "preflight": pre,
        "live": live,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "numpy": np.__version__, "autopilot": autopilot.__version__,
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "elapsed_s": round(time.time() - started, 1),
        "within_budget": all(r["elapsed_s"] <= args.budget for r in pre),
    }
    out = Path(args.out)
    write_record(out, "doctor", result)
    print(f"\nwrote {out / 'doctor-latest.json'} (load average {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f})")
    return 0 if result["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
