"""Serving benchmark: `autopilot serve` under load on 127.0.0.1, beside the
same inputs run through ONNX Runtime in-process (the limit).

    .venv/bin/python bench/serve.py --run runs/mnist5k-001                # acceptance: 32 clients x 60 s, ~2 min
    .venv/bin/python bench/serve.py --run runs/digits-001 --duration 5 --levels 1 8   # smoke test

What runs:
  1. the run's model/, data/ and run.json are copied to a temporary run
     directory (the benchmark's request log and rules never touch the run);
  2. the server starts as its own process (`python -m autopilot.serve`), with
     its request log and monitoring on, as a user runs it;
  3. per concurrency level, that many closed-loop clients (each sends a
     request, waits for the answer, sends the next) post single inputs from
     the run's test split for the given time. The client is a minimal HTTP/1.1
     keep-alive client on asyncio+uvloop: it shares the 2 cores with the
     server, so a heavier client (httpx costs ~5x the CPU per request) would
     measure itself. Every 50th answer is checked against in-process ORT;
  4. ONNX Runtime in-process, one thread: batch 1 in a loop (latency floor)
     and batch 32 (throughput ceiling).
Nothing leaves 127.0.0.1; every loop is bounded by its duration.

Output: a table on stdout and JSON in bench/results/serve-<UTC time>.json and
serve-latest.json: per level the throughput, p50/p90/p99/max latency, status
counts, lost requests (sent but not answered), the load average before and
after; the ORT figures; and the ratios server/ORT.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


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
    from autopilot.runner import load_run_data

    _config, _ds, data, _info = load_run_data(RunDir(run))
    X = np.ascontiguousarray(data["test"][0][:limit], dtype=np.float32)
    return X


def start_server(run: Path, port: int, extra: list[str]) -> subprocess.Popen:
    log = open(run / "server.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "autopilot.serve", str(run), "--host", HOST, "--port", str(port), *extra],
                         stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    end = time.time() + 120
    while time.time() < end:
        if p.poll() is not None:
            raise RuntimeError(f"server exited: {(run / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return p
        except OSError:
            pass
        time.sleep(0.2)
    p.kill()
    raise RuntimeError("server did not become ready in 120 s")


# -- the client --------------------------------------------------------------

class Stats:
    def __init__(self):
        self.lat: list[float] = []
        self.status: dict[int, int] = {}
        self.sent = 0
        self.answered = 0
        self.conn_errors = 0
        self.wrong = 0
        self.checked = 0


async def _read_response(reader) -> tuple[int, bytes, bool]:
    line = await reader.readline()
    if not line:
        raise ConnectionError("connection closed")
    status = int(line[9:12])
    length, close = 0, False
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b""):
            break
        k, _, v = h.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"connection" and v.strip().lower() == b"close":
            close = True
    return status, await reader.readexactly(length), close


async def client(index: int, port: int, bodies: list[bytes], expect: list[str], stop_at: float, stats: Stats) -> None:
    reader = writer = None
    i = index * 7919
    while time.perf_counter() < stop_at:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                stats.conn_errors += 1
                await asyncio.sleep(0.01)
                continue
        k = i % len(bodies)
        body = bodies[k]
        req = (b"POST /v1/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
        t = time.perf_counter()
        stats.sent += 1
        try:
            writer.write(req)
            status, data, close = await _read_response(reader)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            stats.conn_errors += 1
            writer.close()
            reader = writer = None
            continue
        stats.lat.append(time.perf_counter() - t)
        stats.answered += 1
        stats.status[status] = stats.status.get(status, 0) + 1
        if status == 200 and stats.answered % 50 == 0:
            stats.checked += 1
            if orjson.loads(data)["predictions"][0]["class"] != expect[k]:
                stats.wrong += 1
        if close:
            writer.close()
            reader = writer = None
        i += 1
    if writer is not None:
        writer.close()


async def load_level(port: int, bodies, expect, concurrency: int, duration: float) -> dict:
    stats = Stats()
    la0 = os.getloadavg()
    t0 = time.perf_counter()
    stop_at = t0 + duration
    await asyncio.gather(*(client(i, port, bodies, expect, stop_at, stats) for i in range(concurrency)))
    elapsed = time.perf_counter() - t0
    lat = np.asarray(stats.lat) * 1e3
    return {
        "concurrency": concurrency, "duration_s": round(elapsed, 2), "requests": stats.answered,
        "throughput_rps": round(stats.answered / elapsed, 1),
        "p50_ms": _pct(lat, 50), "p90_ms": _pct(lat, 90), "p99_ms": _pct(lat, 99),
        "max_ms": round(float(lat.max()), 3) if len(lat) else None,
        "status": {str(k): v for k, v in sorted(stats.status.items())},
        "errors_5xx": sum(v for k, v in stats.status.items() if k >= 500),
        "non_200": sum(v for k, v in stats.status.items() if k != 200),
        "lost": stats.sent - stats.answered, "connection_errors": stats.conn_errors,
        "checked_answers": stats.checked, "wrong_answers": stats.wrong,
        "loadavg_before": [round(v, 2) for v in la0], "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }


def _pct(a: np.ndarray, q: float):
    return round(float(np.percentile(a, q)), 3) if len(a) else None


# -- the limit: ONNX Runtime in this process ----------------------------------

def ort_inprocess(onnx: Path, X: np.ndarray, seconds: float) -> dict:
    from autopilot.serve.model import open_session

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
    ap.add_argument("--duration", type=float, default=60.0, help="seconds at the largest level (default 60)")
    ap.add_argument("--short", type=float, default=15.0, help="seconds at the other levels (default 15)")
    ap.add_argument("--ort-seconds", type=float, default=5.0, help="seconds for each in-process ORT measurement")
    ap.add_argument("--server-args", default="", help="extra arguments for the server, e.g. \"--max-wait-ms 1\"")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="results folder")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))

    src = Path(args.run).resolve()
    if not (src / "model" / "card.json").exists():
        print(f"error: no finished run at {src}", file=sys.stderr)
        return 2
    started = datetime.now(timezone.utc)
    tmp = Path(tempfile.mkdtemp(prefix="autopilot-bench-serve-"))
    run = copy_run(src, tmp / src.name)
    X = test_inputs(run)
    from autopilot.registry.versions import current
    from autopilot.serve.model import ServedModel

    ref = current(run)
    model = ServedModel.load(ref.version, ref.onnx, ref.card)
    expect = [model.classes[c] for c in model.predict_proba(X).argmax(1)]
    bodies = [orjson.dumps({"inputs": [x]}, option=orjson.OPT_SERIALIZE_NUMPY) for x in X]
    print(f"run {src.name}: {len(X)} test inputs of shape {list(X.shape[1:])}, body ~{len(bodies[0])} bytes", file=sys.stderr)

    ort = ort_inprocess(ref.onnx, X, args.ort_seconds)
    print(f"ORT in-process: batch 1 p50 {ort['batch1_p50_ms']} ms, {ort['batch1_rps']} items/s; "
          f"batch 32 {ort['batch32_items_per_s']} items/s", file=sys.stderr)

    port = free_port()
    server = start_server(run, port, args.server_args.split())
    levels = []
    try:
        import uvloop

        top = max(args.levels)
        for c in args.levels:
            d = args.duration if c == top else args.short
            print(f"{c} client(s) for {d:.0f} s ...", file=sys.stderr)
            r = uvloop.run(load_level(port, bodies, expect, c, d))
            levels.append(r)
            print(f"  {r['throughput_rps']} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                  f"non-200 {r['non_200']}, lost {r['lost']}, load {r['loadavg_after'][0]}", file=sys.stderr)
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as resp:
            prom = resp.read().decode()
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    batches = _batch_summary(prom)
    logged = _logged(run)
    answered = sum(r["status"].get("200", 0) for r in levels)
    low = min(levels, key=lambda r: r["concurrency"])
    result = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "run": str(src), "input_shape": list(X.shape[1:]), "body_bytes": len(bodies[0]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "server_args": args.server_args, "client": "asyncio+uvloop raw HTTP/1.1 keep-alive, closed loop, same machine",
        "ort_inprocess": ort, "levels": levels, "server_batches": batches,
        # every answered prediction must also be in the request log (written off the request path)
        "request_log": {"predictions_logged": logged, "answered_200": answered,
                        "dropped": _prom_value(prom, "autopilot_request_log_dropped_total")},
        "ratios": {
            "server_rps_over_ort_batch1_rps": {str(r["concurrency"]): round(r["throughput_rps"] / ort["batch1_rps"], 3) for r in levels},
            f"p50_added_ms_at_concurrency_{low['concurrency']}": round(low["p50_ms"] - ort["batch1_p50_ms"], 3),
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(result, indent=2)
    (out / f"serve-{stamp}.json").write_text(text)
    (out / "serve-latest.json").write_text(text)
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-200':>8} {'lost':>5} {'load':>5}")
    for r in levels:
        print(f"{r['concurrency']:>7} {r['throughput_rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['non_200']:>8} "
              f"{r['lost']:>5} {r['loadavg_after'][0]:>5}")
    print(f"ORT in-process batch 1: p50 {ort['batch1_p50_ms']} ms, {ort['batch1_rps']} items/s; batch 32: "
          f"{ort['batch32_items_per_s']} items/s; mean server batch {batches.get('mean')}")
    print(f"request log: {logged} predictions logged of {answered} answered, {result['request_log']['dropped']} dropped")
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
