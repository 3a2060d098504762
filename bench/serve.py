"""Serving benchmark: `autopilot serve` under load on 127.0.0.1, beside the
same inputs run through ONNX Runtime in-process (the limit), measured by two
clients: our own (autopilot.serve.client, the one the tests use) and wrk.

    .venv/bin/python bench/serve.py --run runs/mnist5k-001                # acceptance: 32 connections x 30 s x 3, ~5 min
    .venv/bin/python bench/serve.py --run runs/digits-001 --duration 5 --levels 1 8 --repeats 1   # smoke test

What runs:
  1. the run's model/, data/ and run.json are copied to a temporary run
     directory (the benchmark's request log and rules never touch the run);
  2. the server starts as its own process (`python -m autopilot.serve`), with
     its request log and monitoring on, as a user runs it;
  3. per concurrency level, that many closed-loop connections (each sends a
     request, waits for the answer, sends the next) post single inputs from
     the run's test split for the given time, with our client (minimal
     HTTP/1.1 keep-alive on asyncio+uvloop: it shares the 2 cores with the
     server, so a heavier client would measure itself). Every 50th answer is
     checked against in-process ORT. At the largest level this repeats
     --repeats times, alternating with wrk (`wrk -t2 -cN --latency`, a Lua
     script posting the same test inputs) when /usr/bin/wrk is installed
     (Debian package wrk); medians are reported;
  4. ONNX Runtime in-process, one thread: batch 1 in a loop (latency floor)
     and batch 32 (throughput ceiling).
Nothing leaves 127.0.0.1; every loop is bounded by its duration.

The machine is shared (2 cores; the load average is recorded before and
after every measurement), so single runs are noisy: read the medians.

Output: a table on stdout and JSON in bench/results/serve-<UTC time>.json and
serve-latest.json: per level the throughput, p50/p90/p99/max latency, status
counts, lost requests (sent but not answered), the load average; the wrk
runs; the medians at the largest level against the 50 ms p99 target; the ORT
figures; and the ratios server/ORT.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson

from record import utc_stamp, write_record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from autopilot.serve.client import HOST, ServerProcess, load  # noqa: E402

P99_TARGET_MS = 50.0

def copy_run(src: Path, dst: Path) -> Path:
    """Only what serving needs; the benchmark writes its log and rules here."""
    dst.mkdir(parents=True)
    for name in ("model", "data", "compress", "monitor"):
        if (src / name).exists():
            shutil.copytree(src / name, dst / name)
    shutil.copy2(src / "run.json", dst / "run.json")
    for f in ("serve", ):
        shutil.rmtree(dst / f, ignore_errors=True)
    return dst


def test_inputs(run: Path, limit: int = 1000) -> np.ndarray:
    from autopilot.rundir import RunDir
    from autopilot.rundata import load_run_data

    _config, _ds, data, _info = load_run_data(RunDir(run))
    X = np.ascontiguousarray(data["test"][0][:limit], dtype=np.float32)
    return X


# -- our client -----------------------------------------------------------------

def own_client(port: int, bodies, expect, concurrency: int, duration: float) -> dict:
    answers = checked = wrong = 0

    def check(i: int, status: int, data: bytes) -> None:  # every 50th answer against in-process ORT
        nonlocal answers, checked, wrong
        answers += 1
        if status == 200 and answers % 50 == 0:
            checked += 1
            wrong += orjson.loads(data)["predictions"][0]["class"] != expect[i]

    la0 = os.getloadavg()
    r = load(port, bodies, concurrency=concurrency, duration=duration, on_response=check)
    lat = np.asarray(r.latencies_s) * 1e3
    return {
        "client": "ours", "concurrency": concurrency, "duration_s": round(r.elapsed_s, 2), "requests": r.answered,
        "throughput_rps": round(r.answered / r.elapsed_s, 1),
        "p50_ms": _pct(lat, 50), "p90_ms": _pct(lat, 90), "p99_ms": _pct(lat, 99),
        "max_ms": round(float(lat.max()), 3) if len(lat) else None,
        "status": {str(k): v for k, v in sorted(r.status.items())},
        "errors_5xx": sum(v for k, v in r.status.items() if k >= 500),
        "non_200": sum(v for k, v in r.status.items() if k != 200),
        "lost": r.lost, "connection_errors": r.errors, "checked_answers": checked, "wrong_answers": wrong,
        "loadavg_before": [round(v, 2) for v in la0], "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }


# -- wrk ------------------------------------------------------------------------

def wrk_script(bodies: list[bytes], path: Path, n: int = 100) -> Path:
    """A Lua script that posts the first n bodies in turn."""
    items = ",\n".join(f"[==[{b.decode()}]==]" for b in bodies[:n])
    path.write_text('local bodies = {\n' + items + '\n}\nlocal i = 0\n'
                    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    'request = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n')
    return path


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def run_wrk(wrk: str, port: int, script: Path, concurrency: int, duration: float) -> dict:
    la0 = os.getloadavg()
    cmd = [wrk, "-t2", f"-c{concurrency}", f"-d{int(duration)}s", "--latency", "-s", str(script),
           f"http://{HOST}:{port}/v1/predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    pct = {int(m.group(1)): _ms(m.group(2)) for m in re.finditer(r"^\s+(\d+)%\s+(\S+)", out, re.M)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    total = re.search(r"(\d+) requests in", out)
    return {"client": "wrk", "command": " ".join(["wrk", *cmd[1:-3], "-s", "post.lua", cmd[-1]]),
            "concurrency": concurrency, "requests": int(total.group(1)) if total else None,
            "throughput_rps": float(rps.group(1)) if rps else None,
            "p50_ms": pct.get(50), "p90_ms": pct.get(90), "p99_ms": pct.get(99),
            "non_200": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else None,
            "loadavg_before": [round(v, 2) for v in la0], "loadavg_after": [round(v, 2) for v in os.getloadavg()]}


def _pct(a: np.ndarray, q: float):
    return round(float(np.percentile(a, q)), 3) if len(a) else None


# -- the limit: ONNX Runtime in this process ----------------------------------

def ort_inprocess(onnx: Path, X: np.ndarray, seconds: float) -> dict:
    from autopilot.runtime.model import open_session

    s = open_session(onnx, threads=1)
    name = s.get_inputs()[0].name
    for x in X[:20]:
        s.run(None, {name: x[None]})
    lat = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        x = X[i % len(X)][None]
        t = time.perf_counter()
        s.run(None, {name: x})
        lat.append(time.perf_counter() - t)
        i += 1
    lat = np.asarray(lat) * 1e3
    n32 = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        j = (n32 * 32) % max(1, len(X) - 32)
        s.run(None, {name: X[j:j + 32]})
        n32 += 1
    el = time.perf_counter() - t0
    return {"batch1_p50_ms": _pct(lat, 50), "batch1_p99_ms": _pct(lat, 99),
            "batch1_rps": round(len(lat) / float(lat.sum() / 1e3), 1),
            "batch32_items_per_s": round(n32 * 32 / el, 1), "threads": 1}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/mnist5k-001", help="a finished run directory, e.g. of `autopilot run mnist5k --budget 10m` (default runs/mnist5k-001)")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels (default 1 8 32)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of each run at the largest level (default 30)")
    ap.add_argument("--repeats", type=int, default=3, help="runs at the largest level, per client (default 3)")
    ap.add_argument("--short", type=float, default=15.0, help="seconds at the other levels (default 15)")
    ap.add_argument("--ort-seconds", type=float, default=5.0, help="seconds for each in-process ORT measurement")
    ap.add_argument("--server-args", default="", help="extra arguments for the server, e.g. \"--max-wait-ms 1\"")
    ap.add_argument("--no-wrk", action="store_true", help="our client only, even when wrk is installed")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="results folder")
    args = ap.parse_args(argv)

    src = Path(args.run).resolve()
    if not (src / "model" / "card.json").exists():
        print(f"error: no finished run at {args.run}", file=sys.stderr)
        return 2
    started = datetime.now(timezone.utc)
    tmp = Path(tempfile.mkdtemp(prefix="autopilot-bench-serve-"))
    run = copy_run(src, tmp / src.name)
    X = test_inputs(run)
    from autopilot.registry.versions import current
    from autopilot.runtime.model import ServedModel

    ref = current(run)
    model = ServedModel.load(ref.version, ref.onnx, ref.card)
    expect = [model.classes[c] for c in model.predict_proba(X).argmax(1)]
    bodies = [orjson.dumps({"inputs": [x]}, option=orjson.OPT_SERIALIZE_NUMPY) for x in X]
    print(f"run {src.name} ({ref.onnx.name}): {len(X)} test inputs of shape {list(X.shape[1:])}, "
          f"body ~{len(bodies[0])} bytes", file=sys.stderr)

    ort = ort_inprocess(ref.onnx, X, args.ort_seconds)
    print(f"ORT in-process: batch 1 p50 {ort['batch1_p50_ms']} ms, {ort['batch1_rps']} items/s; "
          f"batch 32 {ort['batch32_items_per_s']} items/s", file=sys.stderr)

    wrk = None if args.no_wrk else shutil.which("wrk")
    script = wrk_script(bodies, tmp / "post.lua") if wrk else None
    levels, top_runs = [], []

    def show(r: dict) -> None:
        print(f"  {r['client']:>4} x{r['concurrency']}: {r['throughput_rps']} req/s, p50 {r['p50_ms']} ms, "
              f"p99 {r['p99_ms']} ms, non-200 {r['non_200']}, load {r['loadavg_after'][0]}", file=sys.stderr)

    server = ServerProcess(run, *args.server_args.split(), log_path=tmp / "server.log", cwd=ROOT)
    try:
        top = max(args.levels)
        for c in sorted(set(args.levels) - {top}):
            print(f"{c} connection(s) for {args.short:.0f} s ...", file=sys.stderr)
            levels.append(own_client(server.port, bodies, expect, c, args.short))
            show(levels[-1])
        for k in range(args.repeats):  # alternate the clients, so both see the same drift of the machine's load
            print(f"{top} connections for {args.duration:.0f} s, run {k + 1} of {args.repeats} ...", file=sys.stderr)
            top_runs.append(own_client(server.port, bodies, expect, top, args.duration))
            show(top_runs[-1])
            if wrk:
                top_runs.append(run_wrk(wrk, server.port, script, top, args.duration))
                show(top_runs[-1])
        prom = server.get("/metrics")[1].decode()
    finally:
        server.stop()
    batches = _batch_summary(prom)
    logged = _logged(run)
    own_top = [r for r in top_runs if r["client"] == "ours"]
    answered = sum(r["status"].get("200", 0) for r in levels + own_top)
    wrk_answered = sum((r["requests"] or 0) - r["non_200"] for r in top_runs if r["client"] == "wrk")
    medians = {}
    for client in ("ours", "wrk"):
        rs = [r for r in top_runs if r["client"] == client]
        if rs:
            med = {k: round(float(np.median([r[k] for r in rs])), 3) for k in ("throughput_rps", "p50_ms", "p90_ms", "p99_ms")}
            medians[client] = {**med, "runs": len(rs), "p99_ms_each": [r["p99_ms"] for r in rs],
                               "p99_under_target": med["p99_ms"] < P99_TARGET_MS}
    low = min(levels + own_top, key=lambda r: r["concurrency"])
    result = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # paths say nothing about the figures and name the machine: the run folder becomes RUN
        "argv": [a if a != args.run else "RUN" for a in (sys.argv[1:] if argv is None else argv)],
        "run": src.name, "served_file": ref.onnx.name, "input_shape": list(X.shape[1:]), "body_bytes": len(bodies[0]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "server_args": args.server_args,
        "clients": {"ours": "autopilot.serve.client: asyncio+uvloop raw HTTP/1.1 keep-alive, closed loop, same machine",
                    "wrk": "wrk -t2 --latency, a Lua script posting the same test inputs" if wrk else "not installed"},
        "p99_target_ms": P99_TARGET_MS, f"medians_at_{top}_connections": medians,
        "ort_inprocess": ort, "levels": levels + own_top, "top_level_runs": top_runs, "server_batches": batches,
        # every answered prediction must also be in the request log (written off the request path)
        "request_log": {"predictions_logged": logged, "answered_200": answered + wrk_answered,
                        "dropped": _prom_value(prom, "autopilot_request_log_dropped_total")},
        "ratios": {
            "server_rps_over_ort_batch1_rps": {r["client"] + "@" + str(r["concurrency"]): round(r["throughput_rps"] / ort["batch1_rps"], 3)
                                               for r in levels + [r for r in top_runs if r["throughput_rps"]]},
            f"p50_added_ms_at_concurrency_{low['concurrency']}": round(low["p50_ms"] - ort["batch1_p50_ms"], 3),
        },
    }
    out = Path(args.out)
    write_record(out, "serve", result, utc_stamp(started))
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'client':>6} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-200':>8} {'load':>5}")
    for r in levels + top_runs:
        print(f"{r['client']:>6} {r['concurrency']:>5} {r['throughput_rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} "
              f"{r['non_200']:>8} {r['loadavg_after'][0]:>5}")
    for client, m in medians.items():
        print(f"median of {m['runs']} at {top} connections, {client}: {m['throughput_rps']} req/s, p99 {m['p99_ms']} ms "
              f"({'under' if m['p99_under_target'] else 'OVER'} the {P99_TARGET_MS:g} ms target)")
    print(f"ORT in-process batch 1: p50 {ort['batch1_p50_ms']} ms, {ort['batch1_rps']} items/s; batch 32: "
          f"{ort['batch32_items_per_s']} items/s; mean server batch {batches.get('mean')}")
    print(f"request log: {logged} predictions logged of {answered + wrk_answered} answered, "
          f"{result['request_log']['dropped']} dropped")
    print(f"results: {out / 'serve-latest.json'}")
    return 0


def _logged(run: Path) -> int | None:
    """Rows in the server's request log after it shut down (it flushes on exit)."""
    import sqlite3

    db = run / "serve" / "requests.db"
    if not db.exists():
        return None
    with sqlite3.connect(db) as c:
        return c.execute("select count(*) from predictions").fetchone()[0]


def _prom_value(prom: str, name: str) -> float | None:
    for line in prom.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def _batch_summary(prom: str) -> dict:
    """Mean items per ORT call, from the server's own histogram."""
    total = count = None
    for line in prom.splitlines():
        if line.startswith("autopilot_batch_size_sum"):
            total = float(line.split()[-1])
        elif line.startswith("autopilot_batch_size_count"):
            count = float(line.split()[-1])
    return {"calls": count, "items": total, "mean": round(total / count, 2) if count else None}


if __name__ == "__main__":
    sys.exit(main())
