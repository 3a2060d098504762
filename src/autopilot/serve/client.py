"""A client for `autopilot serve`, shared by the tests and bench/serve.py:
start a server process and wait until it is ready, call its endpoints, and
put it under load from many keep-alive connections.

The load client speaks minimal HTTP/1.1 over asyncio streams on purpose:
it shares the 2 cores with the server it measures, and httpx cost ~5x the
CPU per request. It only talks to 127.0.0.1 and every loop is bounded by a
body count, a duration or a stop event.
"""
from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# -- one server process ---------------------------------------------------------

class ServerProcess:
    """`autopilot serve RUN` in its own process, as a user runs it; by
    default `python -m autopilot.serve`, or any `command` (e.g. the
    `autopilot` console script of another virtual environment)."""

    def __init__(self, run: str | Path, *args: str, command: list[str] | None = None, log_path: str | Path | None = None,
                 host: str = HOST, ready_timeout: float = 120.0, cwd: str | Path | None = None):
        self.run, self.host, self.port = Path(run), host, free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.log_path = Path(log_path) if log_path else self.run.parent / f"server-{self.port}.log"
        argv = [*(command or [sys.executable, "-m", "autopilot.serve"]), str(self.run), "--host", host,
                "--port", str(self.port), *args]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd)
        end = time.monotonic() + ready_timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready in {ready_timeout:.0f} s: {self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 15.0) -> int | None:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def request(self, method: str, path: str, body: bytes | None = None, headers=None,
                timeout: float = 30.0) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path: str) -> tuple[int, bytes]:
        return self.request("GET", path)

    def post(self, path: str, doc) -> tuple[int, dict]:
        """POST JSON (a document, or bytes sent as they are); the answer parsed."""
        if isinstance(doc, bytes):
            body = doc
        else:
            import orjson

            body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        st, out = self.request("POST", path, body, {"Content-Type": "application/json"})
        return st, (json.loads(out) if out else {})

    def monitor(self) -> dict:
        return json.loads(self.get("/v1/monitor")[1])

    def metric(self, name: str) -> dict[str, float]:
        """Samples of one Prometheus metric: {label string: value}."""
        out = {}
        for line in self.get("/metrics")[1].decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                key, _, v = line.rpartition(" ")
                out[key[len(name):]] = float(v)
        return out


# -- load -----------------------------------------------------------------------

@dataclass
class LoadResult:
    sent: int = 0
    answered: int = 0
    errors: int = 0                      # connection errors (reset, closed mid-answer, refused)
    status: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)  # one per answer, request written -> answer read
    elapsed_s: float = 0.0

    @property
    def lost(self) -> int:
        """Requests sent but never answered."""
        return self.sent - self.answered


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, the server asked to close) of one HTTP/1.1 response with a Content-Length."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("connection closed")
    status, length, close = int(line[9:12]), 0, False
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


async def run_load(port: int, bodies: list[bytes], *, concurrency: int = 8, path: str = "/v1/predict",
                   duration: float | None = None, stop: threading.Event | None = None,
                   on_response: Callable[[int, int, bytes], None] | None = None, pause: float = 0.0,
                   host: str = HOST) -> LoadResult:
    """`concurrency` closed-loop keep-alive connections, each sending a
    request and waiting for its answer before the next. Without `duration`
    and `stop`, every body is posted exactly once; with either, connections
    loop over the bodies (each from its own offset) until it ends.
    `on_response(body index, status, answer)` sees every answer."""
    res = LoadResult()
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: ".encode()
    looping = duration is not None or stop is not None
    queue = list(range(len(bodies)))[::-1]
    t0 = time.perf_counter()
    stop_at = t0 + duration if duration is not None else float("inf")

    async def connection(k: int) -> None:
        reader = writer = None
        j = k * 7919  # spread the connections over the bodies
        try:
            while True:
                if looping:
                    if (stop is not None and stop.is_set()) or time.perf_counter() >= stop_at:
                        return
                    i = j % len(bodies)
                    j += 1
                elif queue:
                    i = queue.pop()
                else:
                    return
                if writer is None:
                    try:
                        reader, writer = await asyncio.open_connection(host, port)
                    except OSError:
                        res.errors += 1
                        await asyncio.sleep(0.01)
                        continue
                res.sent += 1
                t = time.perf_counter()
                try:
                    writer.write(head + str(len(bodies[i])).encode() + b"\r\n\r\n" + bodies[i])
                    status, data, close = await read_response(reader)
                except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                    res.errors += 1
                    writer.close()
                    reader = writer = None
                    continue
                res.latencies_s.append(time.perf_counter() - t)
                res.answered += 1
                res.status[status] = res.status.get(status, 0) + 1
                if on_response is not None:
                    on_response(i, status, data)
                if close:
                    writer.close()
                    reader = writer = None
                if pause:
                    await asyncio.sleep(pause)
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(connection(k) for k in range(concurrency)))
    res.elapsed_s = time.perf_counter() - t0
    return res


def load(port: int, bodies: list[bytes], **kwargs) -> LoadResult:
    """run_load in its own event loop (uvloop when installed, as the server uses)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_load(port, bodies, **kwargs))
    return uvloop.run(run_load(port, bodies, **kwargs))
