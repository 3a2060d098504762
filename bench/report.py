"""Report benchmark: how long writing report.html takes, and what a browser shows.

    python bench/report.py                  # makes a small real run first (~40 s)
    python bench/report.py --run runs/digits-001

Timing (medians of repeats), ours beside the baseline, the f-string report of
commit b1e8be8 (before Jinja2 templates and Optuna's views), loaded from git:
- warm: `write_report(run)` in a process that already imported everything, as
  at the end of `autopilot run`;
- cold: `python -m autopilot.report RUN` in a fresh process, as `autopilot report`
  (imports of matplotlib, Optuna and scikit-learn's forest for fANOVA included).
The target is under 3 s on a small run.

Browser: headless Chromium (Debian package `chromium`) dumps the rendered DOM,
which must hold the shipped model's test accuracy, the trial count and the two
PNG views; a screenshot is written beside the results for a person to look at.

Writes bench/results/report-latest.json and report-<UTC time>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from record import write_record

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "b1e8be8"  # the last f-string report
TARGET_S = 3.0


def make_run(root: Path) -> Path:
    """The test suite's fixture run: 600 digits as a table, 6 trials, then
    compression aimed at size (so a compressed file ships)."""
    import numpy as np
    from sklearn.datasets import load_digits

    import autopilot

    X, y = load_digits(return_X_y=True)
    keep = np.random.default_rng(0).permutation(len(y))[:600]
    data = root / "digits600.npz"
    np.savez(data, X=(X[keep] / 16).astype(np.float32), y=y[keep])
    from autopilot.compress import compress_run

    path = autopilot.run(str(data), trials=6, compress=False, runs_dir=root, name="digits-report", quiet=True, seed=0).path
    compress_run(path, budget_s=10, target="size", max_drop=5.0)
    return path


def baseline_package(dest: Path) -> str:
    """The baseline report package, extracted from git under another name."""
    pkg = dest / "report_fstrings"
    pkg.mkdir(parents=True)
    files = subprocess.run(["git", "ls-tree", "--name-only", f"{BASELINE_COMMIT}:src/autopilot/report/"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.endswith(".py"):
            text = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:src/autopilot/report/{f}"], cwd=ROOT,
                                  capture_output=True, text=True, check=True).stdout
            (pkg / f).write_text(text)
    return str(dest)


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def cold(cmd: list[str], repeats: int, env_path: str | None = None) -> tuple[float, list[float]]:
    import os

    env = dict(os.environ)
    if env_path:
        env["PYTHONPATH"] = env_path + os.pathsep + env.get("PYTHONPATH", "")
    return median_time(lambda: subprocess.run(cmd, check=True, capture_output=True, env=env), repeats)


def chromium_check(report: Path, run: Path, shot: Path) -> dict:
    exe = shutil.which("chromium")
    if exe is None:
        return {"available": False}
    card = json.loads((run / "model" / "card.json").read_text())
    search = json.loads((run / "search.json").read_text())
    ship = card.get("shipped") or {}
    acc = ship.get("test_accuracy")
    if acc is None and (run / "compress" / "results.json").exists():
        res = json.loads((run / "compress" / "results.json").read_text())
        acc = next(c["test_acc"] for c in res["candidates"] if c["name"] == res["chosen"])
    acc = card["test_accuracy"] if acc is None else acc
    with tempfile.TemporaryDirectory() as profile:
        common = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}"]
        t0 = time.perf_counter()
        dom = subprocess.run(common + ["--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
        dom_s = time.perf_counter() - t0
        subprocess.run(common + ["--window-size=1280,4000", f"--screenshot={shot}", report.as_uri()],
                       capture_output=True, timeout=120)
    checks = {"shipped_accuracy": f"{100 * acc:.2f}\u202f%" in dom,
              "trial_count": f"Trials ({len(search['trials'])})" in dom,
              "png_views": dom.count('src="data:image/png;base64,'),
              "sections": re.findall(r'<section id="(\w+)"', dom)}
    return {"available": True, "dump_dom_s": round(dom_s, 2), "dom_chars": len(dom), "checks": checks,
            "screenshot": shot.name if shot.exists() else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="an existing run directory (default: make a small real run)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    load_start = [round(x, 2) for x in __import__("os").getloadavg()]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = args.run.resolve() if args.run else make_run(tmp)
        base_path = baseline_package(tmp / "baseline")
        sys.path.insert(0, base_path)
        import report_fstrings

        from autopilot.report import write_report

        # First call in this process: after make_run() it pays what the end of
        # `autopilot run` pays (its own imports on top of the run's); with --run, imports too.
        t0 = time.perf_counter()
        write_report(run)
        first_s = time.perf_counter() - t0
        report_fstrings.write_report(run)  # warm the baseline too: imports, fonts, caches
        base_warm, base_warm_all = median_time(lambda: report_fstrings.write_report(run), args.repeats)
        ours_warm, ours_warm_all = median_time(lambda: write_report(run), args.repeats)
        cold_n = max(3, args.repeats // 2)
        base_cold, base_cold_all = cold([sys.executable, "-c", f"import report_fstrings; report_fstrings.write_report({str(run)!r})"],
                                        cold_n, base_path)
        ours_cold, ours_cold_all = cold([sys.executable, "-m", "autopilot.report", str(run)], cold_n)
        out = write_report(run)  # leave ours in place for the browser
        results_dir = ROOT / "bench" / "results"
        shot = Path(tempfile.gettempdir()) / "autopilot-report-screenshot.png"
        browser = chromium_check(out, run, shot)
        html = out.read_text(encoding="utf-8")
        result = {
            "benchmark": "report",
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                        "load_average_start": load_start,
                        "load_average_end": [round(x, 2) for x in __import__("os").getloadavg()]},
            "run": {"trials": len(json.loads((run / "search.json").read_text())["trials"]), "name": run.name},
            "baseline": f"f-string report of commit {BASELINE_COMMIT}",
            "warm_s": {"ours": round(ours_warm, 3), "baseline": round(base_warm, 3),
                       "ratio": round(ours_warm / base_warm, 2), "ours_all": [round(t, 3) for t in ours_warm_all],
                       "baseline_all": [round(t, 3) for t in base_warm_all]},
            "cold_s": {"ours": round(ours_cold, 3), "baseline": round(base_cold, 3),
                       "ratio": round(ours_cold / base_cold, 2), "ours_all": [round(t, 3) for t in ours_cold_all],
                       "baseline_all": [round(t, 3) for t in base_cold_all]},
            "first_call_s": {"ours": round(first_s, 3),
                             "after": "autopilot.run in this process" if not args.run else "no run in this process"},
            "target_s": TARGET_S,
            "under_target": {"warm": ours_warm < TARGET_S, "first_call": first_s < TARGET_S, "cold": ours_cold < TARGET_S},
            "report_bytes": len(html.encode()),
            "browser": browser,
        }
    print(f"report on a run of {result['run']['trials']} trials (median of {args.repeats} warm, {cold_n} cold):")
    print(f"  first call in this process ({result['first_call_s']['after']}): {first_s:.2f} s")
    print(f"  warm  ours {ours_warm:.2f} s   baseline {base_warm:.2f} s   ratio {ours_warm / base_warm:.2f}")
    print(f"  cold  ours {ours_cold:.2f} s   baseline {base_cold:.2f} s   ratio {ours_cold / base_cold:.2f}"
          f"   (target < {TARGET_S:.0f} s: {result['under_target']})")
    print(f"  report.html {result['report_bytes'] / 1024:.0f} KiB")
    if browser["available"]:
        print(f"  chromium: {browser['checks']}; screenshot {shot}")
    else:
        print("  chromium: not installed (Debian package `chromium`), browser check skipped")
    write_record(results_dir, "report", result)


if __name__ == "__main__":
    main()
