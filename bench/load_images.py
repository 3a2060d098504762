"""Image-folder loading at scale: first and second load of 50,000 32x32 colour PNGs.

    .venv/bin/python bench/load_images.py                  # 50,000 images, 3 repeats (~6 min on 2 cores)
    .venv/bin/python bench/load_images.py --n 5000 --repeats 1   # smoke test

Makes a folder of N random 32x32 RGB PNGs in 10 class sub-folders (in a temp
dir, removed afterwards), then measures, each in a fresh Python process so
imports and peak memory are the loader's alone:

| mode | what runs |
|---|---|
| `previous` | the loader as it was before this change: two passes in one process, a list of per-image arrays, `np.stack`, then float32 (reproduced below), then `validate` as `load()` does |
| `pixels-first` | `read_image_folder` on an empty cache: header pass and decoding in a process pool, straight into one uint8 array, then written to the cache |
| `pixels-second` | the same again: read from the cache |
| `load-first` | `autopilot.data.load(folder)` on an empty cache: what `autopilot run` calls (decoding, cache, float32 Dataset, validation, fingerprint) |
| `load-second` | `load(folder)` again: the second run on the same folder |

Time is wall-clock inside the process (imports excluded). Peak memory is the
process's peak resident set (VmHWM) minus its resident set just before
loading, against the uint8 size of the pixels (N x 3 x 32 x 32 bytes). Worker
processes have their own memory; their largest peak is listed separately.
Medians of the repeats are printed and written to
bench/results/load_images-latest.json and load_images-<UTC time>.json.
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
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

MB = 1024 * 1024
MODES = ("previous", "pixels-first", "pixels-second", "load-first", "load-second")


def make_folder(root: Path, n: int, classes: int = 10, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            root / f"class{i % classes}" / f"{i:06d}.png", compress_level=1)


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


def child(mode: str, folder: Path) -> dict:
    """One measurement in this (fresh) process; AUTOPILOT_CACHE is set by the parent."""
    import resource

    from autopilot.data import load
    from autopilot.data.folder import _workers, read_image_folder

    rss0 = _status("VmRSS")
    t0 = time.perf_counter()
    if mode == "previous":  # what load() did: the loader, then validation
        from autopilot.data import Dataset, validate

        x = previous_loader(folder)
        n = len(validate(Dataset("previous", "image", x, np.arange(len(x)) % 10, [str(c) for c in range(10)])))
    elif mode.startswith("pixels"):
        got = read_image_folder(folder)
        n, from_cache = len(got.pixels), got.from_cache
        assert from_cache == (mode == "pixels-second"), (mode, from_cache)
    else:
        n = len(load(str(folder)))
    seconds = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"mode": mode, "images": n, "seconds": seconds, "peak_mb": (_status("VmHWM") - rss0) / MB,
            "worker_peak_mb": kids / MB, "workers": _workers(n) if "first" in mode else 1}


def measure(mode: str, folder: Path, cache: Path) -> dict:
    env = {**os.environ, "AUTOPILOT_CACHE": str(cache)}
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--folder", str(folder)], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="images to make (default 50000)")
    ap.add_argument("--repeats", type=int, default=3, help="measurements of each mode (default 3)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, Path(args.folder))))
        return 0

    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="autopilot-bench-"))
    try:
        folder = tmp / "photos"
        t0 = time.perf_counter()
        make_folder(folder, args.n)
        print(f"made {args.n} PNGs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        uint8_mb = args.n * 3 * 32 * 32 / MB
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        for r in range(args.repeats):
            pixels_cache, load_cache = tmp / f"cache-p{r}", tmp / f"cache-l{r}"  # empty: a first run
            for mode, cache in (("previous", tmp / "unused"), ("pixels-first", pixels_cache),
                                ("pixels-second", pixels_cache), ("load-first", load_cache),
                                ("load-second", load_cache)):
                m = measure(mode, folder, cache)
                runs[mode].append(m)
                print(f"repeat {r + 1}: {mode:14s} {m['seconds']:6.2f} s  peak {m['peak_mb']:7.1f} MB "
                      f"({m['peak_mb'] / uint8_mb:.2f}x uint8)", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {}
    for mode, ms in runs.items():
        summary[mode] = {
            "seconds_median": statistics.median(m["seconds"] for m in ms),
            "peak_mb_median": statistics.median(m["peak_mb"] for m in ms),
            "peak_over_uint8": statistics.median(m["peak_mb"] for m in ms) / uint8_mb,
            "worker_peak_mb_median": statistics.median(m["worker_peak_mb"] for m in ms),
            "workers": ms[0]["workers"],
            "seconds": [round(m["seconds"], 3) for m in ms],
            "peak_mb": [round(m["peak_mb"], 1) for m in ms],
        }
    prev = summary["previous"]
    ratios = {
        "first_load_speedup_vs_previous": prev["seconds_median"] / summary["load-first"]["seconds_median"],
        "second_load_speedup_vs_previous": prev["seconds_median"] / summary["load-second"]["seconds_median"],
        "pixels_peak_vs_previous_peak": summary["pixels-first"]["peak_mb_median"] / prev["peak_mb_median"],
    }
    acceptance = {
        "second_load_under_10s": summary["load-second"]["seconds_median"] < 10.0,
        "pixels_peak_under_2x_uint8": summary["pixels-first"]["peak_over_uint8"] < 2.0,
        "dataset_peak_under_2x_uint8": summary["load-first"]["peak_over_uint8"] < 2.0,
    }

    print(f"\n{args.n} PNGs of 32x32 RGB, uint8 size {uint8_mb:.1f} MB, median of {args.repeats} "
          f"(workers for first loads: {summary['pixels-first']['workers']})")
    print(f"{'mode':15s} {'seconds':>8s} {'peak MB':>8s} {'x uint8':>8s} {'worker MB':>10s}")
    for mode, s in summary.items():
        print(f"{mode:15s} {s['seconds_median']:8.2f} {s['peak_mb_median']:8.1f} {s['peak_over_uint8']:8.2f} "
              f"{s['worker_peak_mb_median']:10.1f}")
    for k, v in {**ratios, **acceptance}.items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result = {"benchmark": "load_images", "images": args.n, "image_shape": [3, 32, 32], "uint8_mb": uint8_mb,
              "repeats": args.repeats, "summary": summary, "ratios": ratios, "acceptance": acceptance,
              "runs": runs, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                        "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
              "utc": stamp}
    for path in (out / f"load_images-{stamp}.json", out / "load_images-latest.json"):
        path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'load_images-latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
