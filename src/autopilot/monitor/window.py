"""The evaluation window: the most recent predictions, responses and labels.

Two sources give the same `Window`: `LiveWindow`, ring buffers the server's
request-log thread fills as it writes, and `window_from_db`, which reads the
request log (what `autopilot monitor` uses, with or without a server).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass
class Window:
    features: np.ndarray     # (n, F) drift features of the last n predictions
    classes: np.ndarray      # (n,) predicted class indices
    confidence: np.ndarray   # (n,)
    latency_ms: np.ndarray   # (n,) server-side latency of the request each came in
    statuses: np.ndarray     # (m,) HTTP status of the last m responses
    pred_labelled: np.ndarray  # (k,) predicted class of the last k labelled predictions
    labels: np.ndarray         # (k,) their true labels

    @property
    def n(self) -> int:
        return int(len(self.classes))


class _Ring:
    """Fixed-size ring of rows; `last(t0)` returns rows newer than t0, oldest first."""

    def __init__(self, size: int, width: int | None, dtype=np.float64):
        self.size = size
        self.ts = np.full(size, -np.inf)
        self.data = np.zeros((size,) if width is None else (size, width), dtype=dtype)
        self.i = 0  # total rows ever added

    def add(self, ts: np.ndarray, rows: np.ndarray) -> None:
        n = len(ts)
        if n >= self.size:
            ts, rows, n = ts[-self.size:], rows[-self.size:], self.size
        idx = (self.i + np.arange(n)) % self.size
        self.ts[idx] = ts
        self.data[idx] = rows
        self.i += n

    def last(self, since: float) -> np.ndarray:
        n = min(self.i, self.size)
        idx = (self.i - n + np.arange(n)) % self.size
        keep = idx[self.ts[idx] >= since]
        return self.data[keep]

    def clear(self) -> None:
        self.ts[:] = -np.inf
        self.i = 0


class LiveWindow:
    """Filled by the request-log thread, read by the evaluator thread."""

    def __init__(self, n_features: int, size: int = 500, feedback_size: int = 500):
        self._lock = threading.Lock()
        self._preds = _Ring(size, n_features + 3)  # features | class | confidence | latency
        self._resp = _Ring(size, None)
        self._fb = _Ring(feedback_size, 2)
        self.n_features = n_features

    def add_predictions(self, ts, features, cls, conf, latency_ms) -> None:
        rows = np.column_stack([features, cls, conf, latency_ms])
        with self._lock:
            self._preds.add(ts, rows)

    def add_responses(self, ts, statuses) -> None:
        with self._lock:
            self._resp.add(ts, statuses)

    def add_feedback(self, ts, cls, label) -> None:
        with self._lock:
            self._fb.add(np.asarray([ts]), np.asarray([[cls, label]]))

    def clear(self) -> None:
        """After a model swap: statistics of the old model's predictions must
        not decide alerts on the new one."""
        with self._lock:
            self._preds.clear()
            self._resp.clear()
            self._fb.clear()

    def snapshot(self, since: float = -np.inf) -> Window:
        with self._lock:
            p = self._preds.last(since)
            r = self._resp.last(since)
            f = self._fb.last(since)
        F = self.n_features
        return Window(p[:, :F], p[:, F].astype(np.int64), p[:, F + 1], p[:, F + 2], r.astype(np.int64),
                      f[:, 0].astype(np.int64), f[:, 1].astype(np.int64))


def window_from_db(engine, *, until: float, since: float, size: int, feedback_size: int, n_features: int,
                   version: str | None = None) -> Window:
    """The same window from the request log: the last `size` predictions and
    responses and `feedback_size` labels with since <= ts <= until; only
    predictions of model `version` when given (the server, too, starts a new
    window when it swaps versions)."""
    import sqlalchemy as sa

    from ..runtime.requestlog import feedback, predictions, responses

    p, r, f = predictions.c, responses.c, feedback.c
    q = sa.select(p.features, p.cls, p.confidence, p.latency_ms).where(p.ts <= until, p.ts >= since)
    if version is not None:
        q = q.where(p.model_version == version)
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(p.seq.desc()).limit(size)).all()
        st = conn.execute(sa.select(r.status).where(r.ts <= until, r.ts >= since)
                          .order_by(r.seq.desc()).limit(size)).all()
        fq = sa.select(f.cls, f.label).where(f.ts <= until, f.ts >= since, f.cls.is_not(None))
        if version is not None:
            fq = fq.join(predictions, predictions.c.id == f.id).where(p.model_version == version)
        fb = conn.execute(fq.order_by(f.ts.desc()).limit(feedback_size)).all()
    rows = rows[::-1]
    feats = np.stack([np.frombuffer(x[0], dtype=np.float32) for x in rows]) if rows else np.zeros((0, n_features), np.float32)
    return Window(feats, np.asarray([x[1] for x in rows], dtype=np.int64), np.asarray([x[2] for x in rows], dtype=float),
                  np.asarray([x[3] for x in rows], dtype=float), np.asarray([x[0] for x in st], dtype=np.int64),
                  np.asarray([x[0] for x in fb], dtype=np.int64), np.asarray([x[1] for x in fb], dtype=np.int64))
