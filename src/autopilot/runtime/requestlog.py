"""The request log: every prediction, every response status and every
feedback label, in a SQL database (SQLite in RUN/serve/requests.db by
default; any SQLAlchemy URL works).

Writing happens off the request path: the handler puts one tuple on a queue
and a background thread drains it in batches (one transaction per batch),
computes the drift features for the whole batch in one matmul, and hands the
rows to listeners (the live monitoring window). Raw inputs are kept for the
latest `raw_keep` predictions and for every prediction that got a label, so
they can be labelled and used for retraining without the log growing
without bound. Arrays are stored as float32 bytes, never pickled.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import sqlalchemy as sa

log = logging.getLogger("autopilot.requestlog")

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("request_id", sa.String(40)),
    sa.Column("model_version", sa.String(32)),
    sa.Column("cls", sa.Integer),
    sa.Column("confidence", sa.Float),
    sa.Column("latency_ms", sa.Float),
    # input summary: cheap to query by hand, e.g. to spot blank images
    sa.Column("x_mean", sa.Float), sa.Column("x_std", sa.Float),
    sa.Column("x_min", sa.Float), sa.Column("x_max", sa.Float),
    sa.Column("features", sa.LargeBinary),  # float32 drift features (monitor.features.Reducer)
    sa.Column("raw", sa.LargeBinary, nullable=True),  # float32 input, kept bounded (see raw_keep)
)

responses = sa.Table(
    "responses", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("endpoint", sa.String(32)),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("n_items", sa.Integer),
    sa.Column("latency_ms", sa.Float),
    sa.Column("message", sa.String(300), nullable=True),
)

feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # the prediction's id
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("label", sa.Integer, nullable=False),
    sa.Column("cls", sa.Integer),  # what was predicted, for accuracy without a join
)


def default_url(run_dir) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'serve' / 'requests.db'}"


def make_engine(url: str) -> sa.Engine:
    """WAL for SQLite: `autopilot monitor` can read while the server writes."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn, _record):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; a crash loses at most the last batch
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()
    metadata.create_all(engine)
    return engine


class RequestLog:
    MAX_PENDING = 100_000   # beyond this the log drops records (counted) rather than eat the memory
    MAX_BATCH = 2_000
    # After the first record of a batch, wait this long for more: one
    # transaction per request cost ~0.5 ms of CPU at low load; batching by
    # time makes it one transaction per 100 ms whatever the traffic (feedback
    # looks ids up in memory first, so it never waits for the writer).
    GATHER_S = 0.1
    RECENT_IDS = 200_000    # ids the feedback endpoint recognises without a database query
    MAX_VARIABLES = 30_000  # bound parameters per statement (SQLite allows 32,766)

    def __init__(self, url: str, reducer, *, raw_keep: int = 10_000, listeners=(), on_drop=None):
        self.url, self.reducer, self.raw_keep = url, reducer, int(raw_keep)
        self.listeners = list(listeners)
        self.on_drop = on_drop
        self.engine = make_engine(url)
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        # Two counters, each written by one thread only, so no lock is needed:
        # puts on the event loop, done in the writer thread.
        self._puts = 0
        self._done = 0
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._stop = threading.Event()
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._pruned_to = 0
        self._since_prune = 0
        self._inserts: dict[tuple[str, int], str] = {}  # (table, rows) -> multi-row INSERT for SQLite
        self.dropped = 0
        self.written = 0

    # -- called on the event loop: one queue put each, nothing else ---------
    def log_predictions(self, request_id: str, ts: float, ids: list[str], x: np.ndarray, cls: np.ndarray,
                        conf: np.ndarray, latency_ms: float, version: str) -> None:
        recent = self._recent
        for i, c in zip(ids, cls.tolist()):
            recent[i] = c
        while len(recent) > self.RECENT_IDS:
            recent.popitem(last=False)
        self._put(("p", request_id, ts, ids, x, cls, conf, latency_ms, version))

    def log_response(self, ts: float, endpoint: str, status: int, n_items: int, latency_ms: float,
                     message: str | None = None) -> None:
        self._put(("r", ts, endpoint, status, n_items, latency_ms, message[:300] if message else None))

    def log_feedback(self, pid: str, label: int, ts: float, cls: int | None) -> None:
        self._put(("f", pid, label, ts, cls))

    def _put(self, rec) -> None:
        if self._puts - self._done >= self.MAX_PENDING:
            self.dropped += 1
            if self.on_drop:
                self.on_drop()
            return
        self._puts += 1
        self._q.put(rec)

    def predicted_class(self, pid: str) -> int | None:
        """The class predicted for `pid`, or None when no such prediction was logged."""
        c = self._recent.get(pid)
        if c is not None:
            return c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(predictions.c.cls).where(predictions.c.id == pid)).first()
        return None if row is None else int(row[0])

    # -- the writer thread ---------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then prune once more, so the raw-input bound
        holds exactly after shutdown."""
        self._stop.set()
        self._q.put(None)
        self._thread.join(timeout)
        if self.raw_keep >= 0:
            try:
                self.prune_raw()
            except Exception:  # shutting down: a failed prune only keeps a few more raw rows
                log.exception("request log: final prune failed")
        self.engine.dispose()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (tests, shutdown)."""
        end = time.monotonic() + timeout
        target = self._puts
        while self._done < target and time.monotonic() < end:
            time.sleep(0.01)
        return self._done >= target

    def _run(self) -> None:
        while True:
            try:
                rec = self._q.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            batch = [] if rec is None else [rec]
            if rec is not None and not self._stop.is_set():
                self._stop.wait(self.GATHER_S)
            while len(batch) < self.MAX_BATCH:
                try:
                    rec = self._q.get_nowait()
                except queue.Empty:
                    break
                if rec is not None:
                    batch.append(rec)
            if batch:
                try:
                    self._write(batch)
                except Exception:  # a database hiccup loses this batch of log rows, never the server
                    log.exception("request log: could not write %d record(s)", len(batch))
                finally:
                    self._done += len(batch)
            if self._stop.is_set() and self._q.empty():
                return

    def _write(self, batch: list) -> None:
        preds = [r for r in batch if r[0] == "p"]
        resps = [r for r in batch if r[0] == "r"]
        fbs = [r for r in batch if r[0] == "f"]
        pred_rows, fb_rows = [], []
        feats = None
        if preds:
            X = np.concatenate([r[4] for r in preds])
            flat = X.reshape(len(X), -1)
            feats = self.reducer(X)
            # Column by column with numpy, then one zip: this thread holds the
            # GIL the event loop needs, so no Python work per value.
            n_each = [len(r[3]) for r in preds]
            ids_all = [pid for r in preds for pid in r[3]]
            ts_col = np.repeat([r[2] for r in preds], n_each)
            lat_col = np.repeat([r[7] for r in preds], n_each)
            cls_col = np.concatenate([np.asarray(r[5]) for r in preds]).astype(np.int64)
            conf_col = np.concatenate([np.asarray(r[6]) for r in preds]).astype(np.float64)
            keys = ("id", "ts", "request_id", "model_version", "cls", "confidence", "latency_ms", "x_mean", "x_std",
                    "x_min", "x_max", "features", "raw")
            pred_rows = [dict(zip(keys, row)) for row in zip(
                ids_all, ts_col.tolist(), [r[1] for r, n in zip(preds, n_each) for _ in range(n)],
                [r[8] for r, n in zip(preds, n_each) for _ in range(n)], cls_col.tolist(), conf_col.tolist(),
                lat_col.tolist(), flat.mean(1).tolist(), flat.std(1).tolist(), flat.min(1).tolist(),
                flat.max(1).tolist(), [f.tobytes() for f in feats],
                [x.tobytes() for x in flat] if self.raw_keep != 0 else [None] * len(flat))]  # 0: no raw inputs at all
            ts_all, cls_all, conf_all, lat_all = ts_col, cls_col, conf_col, lat_col
        for _t, pid, label, ts, cls in fbs:
            fb_rows.append({"id": pid, "ts": ts, "label": label, "cls": cls})
        with self.engine.begin() as conn:
            if pred_rows:
                self._insert_many(conn, predictions, pred_rows)
            if resps:
                self._insert_many(conn, responses, [
                    {"ts": ts, "endpoint": ep, "status": st, "n_items": n, "latency_ms": lat, "message": msg}
                    for _t, ts, ep, st, n, lat, msg in resps])
            if fb_rows:
                # A second label for the same prediction replaces the first.
                conn.execute(feedback.delete().where(feedback.c.id.in_([r["id"] for r in fb_rows])))
                conn.execute(feedback.insert(), list({r["id"]: r for r in fb_rows}.values()))
        self.written += len(pred_rows)
        self._since_prune += len(pred_rows)
        if self.raw_keep >= 0 and self._since_prune >= max(100, self.raw_keep // 10):
            self.prune_raw()
        for listener in self.listeners:
            try:
                if pred_rows:
                    listener.add_predictions(np.asarray(ts_all), feats, np.asarray(cls_all), np.asarray(conf_all),
                                             np.asarray(lat_all))
                if resps:
                    listener.add_responses(np.asarray([r[1] for r in resps]), np.asarray([r[3] for r in resps]))
                for r in fb_rows:
                    if r["cls"] is not None:
                        listener.add_feedback(r["ts"], r["cls"], r["label"])
            except Exception:
                log.exception("request log: listener failed")

    def _insert_many(self, conn, table: sa.Table, rows: list[dict]) -> None:
        """All rows in few multi-row INSERT statements, not an executemany.
        Why: the driver releases the GIL around every statement it steps, and
        each of those hand-overs took the GIL from the event loop on a busy
        machine; with one statement per row, the log writer doubled the
        server's p99 latency (measured with wrk, 32 connections). SQLite gets
        a statement compiled once per chunk size; other databases get
        SQLAlchemy's multi-row VALUES."""
        if not self.engine.dialect.positional:
            conn.execute(table.insert().values(rows))
            return
        cols = list(rows[0])
        per = 1 << (max(1, self.MAX_VARIABLES // len(cols)).bit_length() - 1)
        i = 0
        while i < len(rows):
            # power-of-two chunks (100 rows = 64 + 32 + 4): a few statements
            # per batch and a few cached statement texts per table
            size = min(per, 1 << ((len(rows) - i).bit_length() - 1))
            chunk = rows[i:i + size]
            i += size
            key = (table.name, len(chunk))
            sql = self._inserts.get(key)
            if sql is None:
                one = "(" + ", ".join("?" * len(cols)) + ")"
                sql = self._inserts[key] = (f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES "
                                            + ", ".join([one] * len(chunk)))
            conn.exec_driver_sql(sql, tuple(r[c] for r in chunk for c in cols))

    def prune_raw(self) -> None:
        """Drop raw inputs older than the newest `raw_keep`, except labelled ones."""
        self._since_prune = 0
        with self.engine.begin() as conn:
            top = conn.execute(sa.select(sa.func.max(predictions.c.seq))).scalar() or 0
            cut = top - self.raw_keep
            if cut <= self._pruned_to:
                return
            labelled = sa.select(feedback.c.id)
            conn.execute(predictions.update()
                         .where(predictions.c.seq > self._pruned_to, predictions.c.seq <= cut,
                                predictions.c.raw.is_not(None), predictions.c.id.not_in(labelled))
                         .values(raw=None))
            self._pruned_to = cut
