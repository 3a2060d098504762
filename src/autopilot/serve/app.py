"""The HTTP server: FastAPI over ONNX Runtime, without torch.

    POST /v1/predict   {"inputs": [x, ...]} -> {"model_version", "predictions": [{"id", "class", "probabilities"}]}
    POST /v1/feedback  {"id", "label"}      -> records the true label of a prediction
    GET  /v1/model     the model card of the version being served
    GET  /v1/monitor   the latest monitoring metrics and alert states
    GET  /healthz      the process is up
    GET  /readyz       a model is loaded and the batcher runs (503 before)
    GET  /metrics      Prometheus

The hot path (predict) takes the raw body and answers with orjson bytes:
FastAPI/pydantic models for 784 floats per input would cost more than the
model. Everything slow (SQL, drift features, statistics) happens in
background threads fed by one queue put per request.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from ..registry import versions
from ..monitor.alerts import Config, load_config
from ..monitor.evaluator import Evaluator
from ..monitor.features import Reducer
from ..monitor.reference import load_reference
from ..monitor.window import LiveWindow
from ..rundir import RunDir
from .batcher import MicroBatcher
from .metrics import CONTENT_TYPE_LATEST, Metrics
from ..runtime.model import ServedModel
from ..runtime.requestlog import RequestLog, default_url
from .schema import BadRequest, parse_feedback, parse_inputs
from .settings import Settings

log = logging.getLogger("autopilot.serve")
JSON = "application/json"


@dataclass
class State:
    run: RunDir
    settings: Settings
    model: ServedModel
    batcher: MicroBatcher
    log: RequestLog
    metrics: Metrics
    window: LiveWindow
    config: Config
    evaluator: Evaluator | None
    reference: dict | None
    versions_stamp: tuple | None = None
    tasks: list = field(default_factory=list)
    ids: "PredictionIds" = field(default_factory=lambda: PredictionIds())


class PredictionIds:
    """32 hex digits like a uuid4, unique across restarts: a random 64-bit
    prefix per process and a counter. uuid4() per prediction read
    os.urandom each time, ~5 % of the event loop's time under load."""

    def __init__(self):
        self.prefix = uuid.uuid4().hex[:16]
        self.counter = itertools.count()

    def take(self, n: int) -> list[str]:
        p, c = self.prefix, self.counter
        return [f"{p}{next(c):016x}" for _ in range(n)]


def ensure_reference(run_dir, *, build: bool = True, timeout: float = 600) -> dict | None:
    """The drift reference of the current version; built in a subprocess when
    missing, because the data loaders of some data sets import torch and this
    process must not."""
    ref = versions.current(run_dir)
    if not ref.reference.exists() and build:
        log.warning("building the drift reference %s (once)", ref.reference)
        p = subprocess.run([sys.executable, "-m", "autopilot.monitor.reference", str(run_dir)], capture_output=True,
                           text=True, timeout=timeout)
        if p.returncode != 0:
            log.warning("no drift reference, drift monitoring is off: %s", (p.stderr or p.stdout).strip()[-500:])
    return load_reference(ref.reference)


def create_app(run_dir: str | Path, settings: Settings | None = None) -> "FastPath":
    """The ASGI app to give uvicorn: FastAPI behind the predict fast path.
    The FastAPI app itself is `.fastapi`."""
    settings = settings or Settings()
    run = RunDir(Path(run_dir).resolve())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        st = _start(run, settings)
        app.state.s = st
        st.batcher.start()
        st.log.start()
        if st.evaluator is not None:
            st.evaluator.start()
        st.tasks.append(asyncio.get_running_loop().create_task(_watch_versions(st)))
        # Everything loaded so far lives as long as the server: move it out of
        # the collector's reach. Each JSON input makes dozens of short-lived
        # lists, and full collections scanning FastAPI's, SQLAlchemy's and
        # numpy's objects cost ~14 % of the event loop's time under load.
        gc.collect()
        gc.freeze()
        log.warning("serving %s: model %s (%s), torch %s", run.path, st.model.version, st.model.path.name,
                    "LOADED" if "torch" in sys.modules else "not loaded")
        try:
            yield
        finally:
            for t in st.tasks:
                t.cancel()
            await st.batcher.stop()
            if st.evaluator is not None:
                st.evaluator.stop()
            st.log.close()

    app = FastAPI(title="autopilot", version="1", lifespan=lifespan)
    _routes(app)
    return FastPath(app)


def _start(run: RunDir, s: Settings) -> State:
    ref = versions.current(run.path)
    if not ref.onnx.exists() or not ref.card.exists():
        raise FileNotFoundError(f"no model in {run.path} ({ref.onnx} missing); finish `autopilot run` first")
    model = ServedModel.load(ref.version, ref.onnx, ref.card, threads=s.threads)
    config = load_config(run.path, s.rules)
    reference = ensure_reference(run.path, build=s.build_reference) if s.monitor else None
    reducer = Reducer(model.kind, model.input_shape)
    window = LiveWindow(reducer.n_features, size=config.window, feedback_size=config.window)
    metrics = Metrics(model.classes, [(r.name, r.severity) for r in config.rules])
    metrics.set_version(model.version)
    batcher = MicroBatcher(model, max_batch=s.max_batch, max_wait_ms=s.max_wait_ms, inline_ms=s.inline_ms,
                           on_batch=metrics.batch.observe)
    rlog = RequestLog(s.log_url or default_url(run.path), reducer, raw_keep=s.raw_keep, listeners=[window],
                      on_drop=metrics.log_dropped.inc)
    evaluator = None
    if s.monitor:
        evaluator = Evaluator(window, config, reference, run_dir=run.path, run_name=run.name,
                              on_update=metrics.set_monitor)
        evaluator.model_version = model.version
    return State(run, s, model, batcher, rlog, metrics, window, config, evaluator, reference,
                 versions_stamp=_stamp(run.path))


def _stamp(run_dir) -> tuple | None:
    try:
        st = os.stat(versions.versions_file(run_dir))
        return (st.st_mtime_ns, st.st_size, st.st_ino)
    except FileNotFoundError:
        return None


async def _watch_versions(st: State) -> None:
    """Poll model/versions.json; when another version becomes current, load
    it beside the old one (requests keep flowing), then swap one reference.
    Batches already running finish on the old session."""
    while True:
        await asyncio.sleep(st.settings.poll_s)
        stamp = _stamp(st.run.path)
        if stamp == st.versions_stamp:
            continue
        st.versions_stamp = stamp
        try:
            ref = versions.current(st.run.path)
            if ref.version == st.model.version:
                continue
            new = await asyncio.to_thread(ServedModel.load, ref.version, ref.onnx, ref.card, st.settings.threads)
            if new.input_shape != st.model.input_shape or new.classes != st.model.classes:
                log.error("version %s has another input shape or classes; not swapped in", ref.version)
                continue
            reference = load_reference(ref.reference)
        except Exception:  # a bad version file must not stop the server: keep serving the old one
            log.exception("could not load the promoted model version; still serving %s", st.model.version)
            continue
        old = st.model.version
        st.batcher.model = new
        st.model = new
        st.reference = reference
        st.window.clear()
        if st.evaluator is not None:
            st.evaluator.set_reference(reference)
            st.evaluator.model_version = new.version
        st.metrics.set_version(new.version)
        st.metrics.swaps.inc()
        log.warning("model %s -> %s", old, new.version)


def _error(st: State, endpoint: str, status: int, message: str, t0: float, n: int = 0,
           close: bool = False) -> tuple[int, bytes, bool]:
    seconds = time.perf_counter() - t0
    st.metrics.request(endpoint, status, seconds)
    st.log.log_response(time.time(), endpoint, status, n, seconds * 1e3, message)
    return status, orjson.dumps({"detail": message}), close


DRAIN_FACTOR = 8  # an oversized body up to 8x the limit is read and dropped, so the connection stays usable


async def _read_body(body_chunks, content_length: str | None, limit: int) -> bytes:
    if content_length is not None and not content_length.isdigit():
        raise BadRequest(400, "bad Content-Length header", close=True)
    declared = int(content_length) if content_length is not None else None
    chunks, n = [], 0
    async for chunk in body_chunks:
        n += len(chunk)
        if n > limit or (declared is not None and declared > limit):
            # Read on (discarding) so the client gets its 413 on a clean
            # keep-alive connection; a far larger body is cut off instead.
            if n > DRAIN_FACTOR * limit:
                raise BadRequest(413, f"body over the limit of {limit} bytes", close=True)
            chunks = None
            continue
        chunks.append(chunk)
    if chunks is None:
        raise BadRequest(413, f"body of {n} bytes is over the limit of {limit} bytes")
    return b"".join(chunks)


async def handle_predict(st: State, body_chunks, content_length: str | None) -> tuple[int, bytes, bool]:
    """The whole predict request: body -> checks -> micro-batched ORT -> JSON.
    Shared by the FastAPI route and the raw ASGI fast path (see FastPath)."""
    t0 = time.perf_counter()
    model = st.model
    try:
        body = await _read_body(body_chunks, content_length, st.settings.max_body_bytes)
        x = parse_inputs(body, model.input_shape, model.kind, st.settings.max_items, model.preprocess)
    except BadRequest as e:
        return _error(st, "predict", e.status, e.message, t0, close=e.close)
    try:
        probs, model = await st.batcher.infer(x)
        cls = probs.argmax(1)
        conf = probs[np.arange(len(cls)), cls]
        classes = model.classes
        ids = st.ids.take(len(cls))
        rows = probs.astype(np.float64).round(6).tolist()
        if model.task == "regression":  # one predicted value per input
            out = orjson.dumps({"model_version": model.version, "predictions": [
                {"id": i, "value": p[0]} for i, p in zip(ids, rows)]})
        else:
            out = orjson.dumps({"model_version": model.version, "predictions": [
                {"id": i, "class": classes[c], "probabilities": dict(zip(classes, p))}
                for i, c, p in zip(ids, cls.tolist(), rows)]})
    except asyncio.CancelledError:
        raise
    except Exception as e:  # a bug or a model failure: 500, counted and logged; the server goes on
        log.exception("predict failed")
        return _error(st, "predict", 500, f"internal error: {type(e).__name__}", t0, len(x))
    seconds = time.perf_counter() - t0
    now = time.time()
    st.metrics.request("predict", 200, seconds)
    st.metrics.items.observe(len(cls))
    if model.task != "regression":  # per-class counters; a regression model's values are in the request log
        st.metrics.predictions(cls.tolist())
    st.log.log_predictions(ids[0], now, ids, x, cls, conf, seconds * 1e3, model.version)
    st.log.log_response(now, "predict", 200, len(cls), seconds * 1e3)
    return 200, out, False


class FastPath:
    """ASGI wrapper that answers POST /v1/predict directly and hands every
    other request (and the lifespan) to FastAPI. Measured on this 2-core
    machine, FastAPI's middleware stack (error, telemetry, body-limit and
    exit-stack layers, dependency solving) cost ~3x the predict handler
    itself; the route is still declared in FastAPI, for the OpenAPI page and
    for anyone mounting the FastAPI app alone, and runs the same code."""

    def __init__(self, app: FastAPI):
        self.fastapi = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/v1/predict" and scope["method"] == "POST":
            st = getattr(self.fastapi.state, "s", None)
            if st is not None:
                cl = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), None)
                status, out, close = await handle_predict(st, _asgi_chunks(receive), cl)
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
                if close:
                    headers.append((b"connection", b"close"))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": out})
                return
        await self.fastapi(scope, receive, send)


async def _asgi_chunks(receive):
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":  # nobody to answer; uvicorn drops the reply
            raise BadRequest(400, "client disconnected before sending the whole body")
        yield msg.get("body", b"")
        if not msg.get("more_body", False):
            return


def _response(status: int, out: bytes, close: bool = False) -> Response:
    headers = {"Connection": "close"} if close else None  # the rest of a huge body was not read
    return Response(out, status_code=status, media_type=JSON, headers=headers)


def _routes(app: FastAPI) -> None:
    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        st: State = request.app.state.s
        return _response(*await handle_predict(st, request.stream(), request.headers.get("content-length")))

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        t0 = time.perf_counter()
        st: State = request.app.state.s
        try:
            body = await _read_body(request.stream(), request.headers.get("content-length"), 64 << 10)
            pid, label = parse_feedback(body, st.model.classes)
            cls = st.log.predicted_class(pid)
            if cls is None:
                raise BadRequest(404, f"no prediction with id {pid!r} in the request log")
        except BadRequest as e:
            return _response(*_error(st, "feedback", e.status, e.message, t0))
        now, seconds = time.time(), time.perf_counter() - t0
        st.log.log_feedback(pid, label, now, cls)
        st.log.log_response(now, "feedback", 200, 1, seconds * 1e3)
        st.metrics.feedback.inc()
        st.metrics.request("feedback", 200, seconds)
        return Response(orjson.dumps({"id": pid, "label": st.model.classes[label], "recorded": True}), media_type=JSON)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        st: State | None = getattr(request.app.state, "s", None)
        if st is None or not st.batcher.running:
            return Response(b'{"status":"starting"}', status_code=503, media_type=JSON)
        return Response(orjson.dumps({"status": "ready", "model_version": st.model.version}), media_type=JSON)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return Response(request.app.state.s.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model")
    async def model_card(request: Request) -> Response:
        st: State = request.app.state.s
        return Response(orjson.dumps({"model_version": st.model.version, "file": st.model.path.name, **st.model.card}),
                        media_type=JSON)

    @app.get("/v1/monitor")
    async def monitor(request: Request) -> Response:
        st: State = request.app.state.s
        latest = st.evaluator.latest if st.evaluator is not None else {}
        return Response(orjson.dumps({"model_version": st.model.version, **latest}, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type=JSON)
