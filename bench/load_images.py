"""Image-folder loading at scale, and a whole run's memory: 50,000 32x32 colour PNGs.

    .venv/bin/python bench/load_images.py --folder /tmp/photos-50k        # made once, kept; 3 repeats + 1 run (~15 min)
    .venv/bin/python bench/load_images.py --folder /tmp/photos-50k --before /tmp/autopilot-before   # + the code before
    .venv/bin/python bench/load_images.py --n 5000 --repeats 1 --no-run   # smoke test

Uses the folder given by --folder, making it there first when it does not
exist (N coloured-shape "photos" from autopilot.data.synthetic.write_folder, 10
classes: a model can learn them, so the whole run is a real one); without
--folder a temporary one is made and removed. Then measures, each in a fresh
Python process so imports and peak memory are the measured code's alone:

| mode | what runs |
|---|---|
| `previous` | the loader before the uint8 cache: two passes in one process, a list of per-image arrays, `np.stack`, then float32 (reproduced below), then `validate` as `load()` does |
| `pixels-first` | `read_image_folder` on an empty cache: header pass and decoding in a process pool, straight into one uint8 array, then written to the cache |
| `pixels-second` | the same again: read from the cache |
| `load-first` | `autopilot.data.load(folder)` on an empty cache: what `autopilot run` calls (decoding, cache, Dataset, validation) |
| `load-second` | `load(folder)` again: the second run on the same folder |
| `run` | `autopilot.run(folder, budget=--run-budget)` (3m) on the warm cache: doctor, search, final model, compression, drift reference, report |
| `before:load-first`, `before:load-second`, `before:run` | with --before SRC: the same with SRC/src first on the path (e.g. `git archive <commit> src` of the code before uint8 data sets) |

Time is wall-clock inside the process (imports excluded). Peak memory is the
process's peak resident set (VmHWM) minus its resident set just before
loading (for `run`: just before the run, after imports), against the uint8
size of the pixels (N x 3 x 32 x 32 bytes). Worker processes (decoding pool,
trial workers) have their own memory; their largest peak is listed
separately. Medians of the repeats (the run modes: --run-repeats) are printed
and written to bench/results/load_images-latest.json and load_images-<UTC time>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from record import utc_stamp, write_record

MB = 1024 * 1024
LOAD_MODES = ("previous", "pixels-first", "pixels-second", "load-first", "load-second")
RUN_MODE = "run"
BEFORE = "before:"  # prefix of a mode measured with the --before sources


def make_folder(root: Path, n: int, seed: int = 0) -> None:
    """N coloured-shape photos in 10 class folders (see autopilot.data.synthetic)."""
    from autopilot.data.synthetic import write_folder

    write_folder(root, n=n, size=32, seed=seed)


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def previous_loader(root: Path) -> np.ndarray:
    """The image-folder loader before the uint8 cache (commit b1e8be8), minus
    its error handling: one process, a list of arrays, stack, float32."""
    from PIL import Image

    from autopilot.data.images import choose_size, decode, is_grey, list_images

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    files = [(p, ci) for ci, d in enumerate(class_dirs) for p in list_images(d)]
    sizes = {}
    for p, _ in files:
        with Image.open(p) as im:
            sizes[p] = im.size
    h, w = choose_size(list(sizes.values()))
    arrays, grey = [], True
    for p, _ in files:
        im = decode(p, (h, w))
        grey = grey and is_grey(im)
        arrays.append(np.asarray(im))
    x = np.stack([np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a for a in arrays]).transpose(0, 3, 1, 2)
    return x.astype(np.float32) / 255.0


def child(mode: str, folder: Path, run_budget: str, runs_dir: Path | None) -> dict:
    """One measurement in this (fresh) process; AUTOPILOT_CACHE is set by the parent."""
    import resource

    import autopilot
    from autopilot.data import load

    rss0 = _status("VmRSS")
    t0 = time.perf_counter()
    extra = {}
    if mode == "previous":  # what load() did: the loader, then validation
        from autopilot.data import Dataset, validate

        x = previous_loader(folder)
        n = len(validate(Dataset("previous", "image", x, np.arange(len(x)) % 10, [str(c) for c in range(10)])))
    elif mode.startswith("pixels"):
        from autopilot.data.folder import read_image_folder

        got = read_image_folder(folder)
        n, from_cache = len(got.pixels), got.from_cache
        assert from_cache == (mode == "pixels-second"), (mode, from_cache)
    elif mode == RUN_MODE:
        # force: a doctor finding must not stop the measurement (the run is measured, not judged).
        # A run that stops (e.g. no trial finished in the budget) is still measured up to there.
        try:
            rd = autopilot.run(str(folder), budget=run_budget, runs_dir=runs_dir, quiet=True, force=True)
            card = json.loads((rd.model_dir / "card.json").read_text())
            n, extra = card["test_examples"], {"test_accuracy": card["test_accuracy"], "trials": card["trials"]}
        except Exception as e:  # noqa: BLE001 - reported beside the figures
            n, extra = 0, {"test_accuracy": None, "error": f"{type(e).__name__}: {e}"[:300]}
    else:
        ds = load(str(folder))
        n = len(ds)
        extra = {"dataset_mb": ds.X.nbytes / MB, "dtype": str(ds.X.dtype)}
    seconds = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"mode": mode, "images": n, "seconds": seconds, "peak_mb": (_status("VmHWM") - rss0) / MB,
            "worker_peak_mb": kids / MB, **extra}


def measure(mode: str, folder: Path, cache: Path, *, src: Path | None = None, run_budget: str = "3m",
            runs_dir: Path | None = None) -> dict:
    env = {**os.environ, "AUTOPILOT_CACHE": str(cache)}
    if src is not None:  # the code to measure goes first on the path (it wins over the installed package)
        env["PYTHONPATH"] = os.pathsep.join([str(src / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--child", mode.removeprefix(BEFORE), "--folder", str(folder),
           "--run-budget", run_budget] + (["--runs-dir", str(runs_dir)] if runs_dir else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "mode": mode}


def _summary(ms: list[dict], uint8_mb: float) -> dict:
    peak = statistics.median(m["peak_mb"] for m in ms)
    return {
        "seconds_median": statistics.median(m["seconds"] for m in ms),
        "peak_mb_median": peak,
        "peak_over_uint8": peak / uint8_mb,
        "worker_peak_mb_median": statistics.median(m["worker_peak_mb"] for m in ms),
        "seconds": [round(m["seconds"], 3) for m in ms],
        "peak_mb": [round(m["peak_mb"], 1) for m in ms],
        **({"test_accuracy": [m["test_accuracy"] for m in ms]} if "test_accuracy" in ms[0] else {}),
        **({"errors": [m["error"] for m in ms if m.get("error")]} if any(m.get("error") for m in ms) else {}),
        **({"dataset_mb": ms[0]["dataset_mb"], "dtype": ms[0]["dtype"]} if "dataset_mb" in ms[0] else {}),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="images to make (default 50000)")
    ap.add_argument("--folder", help="image folder to use; made there (and kept) when it does not exist")
    ap.add_argument("--repeats", type=int, default=3, help="measurements of each load mode (default 3)")
    ap.add_argument("--run-repeats", type=int, default=1, help="measurements of the whole run (default 1)")
    ap.add_argument("--run-budget", default="3m", help="the whole run's --budget (default 3m)")
    ap.add_argument("--no-run", action="store_true", help="measure loading only")
    ap.add_argument("--before", help="a source tree (with src/autopilot) to measure too, e.g. the code before")
    ap.add_argument("--before-label", help="what --before is, for the JSON (default: its folder name, no path)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--child", choices=LOAD_MODES + (RUN_MODE,), help=argparse.SUPPRESS)
    ap.add_argument("--runs-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, Path(args.folder), args.run_budget,
                               Path(args.runs_dir) if args.runs_dir else None)))
        return 0

    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="autopilot-bench-"))
    before = Path(args.before).resolve() if args.before else None
    try:
        folder = Path(args.folder) if args.folder else tmp / "photos"
        if not folder.exists():
            t0 = time.perf_counter()
            make_folder(folder, args.n)
            print(f"made {args.n} PNGs in {folder} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        n = sum(1 for _ in folder.rglob("*.png"))
        uint8_mb = n * 3 * 32 * 32 / MB
        runs: dict[str, list[dict]] = {}

        def note(r: int, m: dict) -> None:
            runs.setdefault(m["mode"], []).append(m)
            print(f"repeat {r + 1}: {m['mode']:20s} {m['seconds']:7.2f} s  peak {m['peak_mb']:7.1f} MB "
                  f"({m['peak_mb'] / uint8_mb:.2f}x uint8), workers' peak {m['worker_peak_mb']:.0f} MB",
                  file=sys.stderr)

        for r in range(args.repeats):
            pixels_cache, load_cache = tmp / f"cache-p{r}", tmp / f"cache-l{r}"  # empty: a first run
            plan = [("previous", tmp / "unused", None), ("pixels-first", pixels_cache, None),
                    ("pixels-second", pixels_cache, None), ("load-first", load_cache, None),
                    ("load-second", load_cache, None)]
            if before is not None:
                plan += [(BEFORE + "load-first", tmp / f"cache-b{r}", before),
                         (BEFORE + "load-second", tmp / f"cache-b{r}", before)]
            for mode, cache, src in plan:
                note(r, measure(mode, folder, cache, src=src))
        if not args.no_run:  # on the caches the load modes left warm: the run's data comes from them
            for r in range(args.run_repeats):
                for mode, cache, src in [(RUN_MODE, tmp / "cache-l0", None)] + (
                        [(BEFORE + RUN_MODE, tmp / "cache-b0", before)] if before is not None else []):
                    note(r, measure(mode, folder, cache, src=src, run_budget=args.run_budget,
                                    runs_dir=tmp / f"runs-{mode.replace(':', '-')}-{r}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {mode: _summary(ms, uint8_mb) for mode, ms in runs.items()}
    prev = summary["previous"]
    ratios = {
        "first_load_speedup_vs_previous": prev["seconds_median"] / summary["load-first"]["seconds_median"],
        "second_load_speedup_vs_previous": prev["seconds_median"] / summary["load-second"]["seconds_median"],
        "pixels_peak_vs_previous_peak": summary["pixels-first"]["peak_mb_median"] / prev["peak_mb_median"],
    }
    for mode in ("load-first", "load-second", RUN_MODE):
        if BEFORE + mode in summary:
            b, a = summary[BEFORE + mode], summary[mode]
            ratios[f"{mode}_peak_vs_before"] = a["peak_mb_median"] / b["peak_mb_median"]
            ratios[f"{mode}_seconds_vs_before"] = a["seconds_median"] / b["seconds_median"]
            ratios[f"{mode}_peak_mb_saved"] = b["peak_mb_median"] - a["peak_mb_median"]
    acceptance = {
        "second_load_under_10s": summary["load-second"]["seconds_median"] < 10.0,
        "pixels_peak_under_2x_uint8": summary["pixels-first"]["peak_over_uint8"] < 2.0,
        "dataset_first_load_peak_under_2x_uint8": summary["load-first"]["peak_over_uint8"] < 2.0,
        "dataset_second_load_peak_under_2x_uint8": summary["load-second"]["peak_over_uint8"] < 2.0,
    }

    print(f"\n{n} PNGs of 32x32 RGB, uint8 size {uint8_mb:.1f} MB, median of {args.repeats} "
          f"(whole run: {args.run_repeats}, budget {args.run_budget})")
    print(f"{'mode':20s} {'seconds':>8s} {'peak MB':>8s} {'x uint8':>8s} {'worker MB':>10s}")
    for mode, s in summary.items():
        print(f"{mode:20s} {s['seconds_median']:8.2f} {s['peak_mb_median']:8.1f} {s['peak_over_uint8']:8.2f} "
              f"{s['worker_peak_mb_median']:10.1f}")
    for k, v in {**ratios, **acceptance}.items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")

    out = Path(args.out)
    stamp = utc_stamp()
    result = {"benchmark": "load_images", "images": n, "image_shape": [3, 32, 32], "uint8_mb": uint8_mb,
              "repeats": args.repeats, "run_repeats": 0 if args.no_run else args.run_repeats,
              "run_budget": args.run_budget, "before": args.before_label or (before.name if before else None),
              "summary": summary, "ratios": ratios, "acceptance": acceptance,
              "runs": runs, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                        "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
              "utc": stamp}
    write_record(out, "load_images", result, stamp)
    print(f"wrote {out / 'load_images-latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
