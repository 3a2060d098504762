"""Prometheus metrics of one server. A registry per app (not the global one),
so several apps in one process (tests) do not collide. Label children are
looked up once and cached: `.labels()` on every request costs more than the
increment itself."""
from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the app)

from ..monitor.alerts import PROM_PREFIX
from ..monitor.drift import METRICS

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25,
                   0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, classes: list[str], rule_names: list[tuple[str, str]]):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("autopilot_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("autopilot_request_latency_seconds", "server-side request latency",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("autopilot_batch_size", "items per ONNX Runtime call (micro-batching)",
                               buckets=BATCH_BUCKETS, registry=r)
        self.items = Histogram("autopilot_request_items", "inputs per predict request", buckets=BATCH_BUCKETS,
                               registry=r)
        self.predicted = Counter("autopilot_predictions", "predictions by predicted class", ["class"], registry=r)
        self.feedback = Counter("autopilot_feedback", "feedback labels received", registry=r)
        self.model_info = Gauge("autopilot_model_info", "the model version being served (value 1)", ["version"],
                                registry=r)
        self.swaps = Counter("autopilot_model_swaps", "model versions swapped in while serving", registry=r)
        self.log_dropped = Counter("autopilot_request_log_dropped", "log records dropped because the log writer "
                                   "fell behind", registry=r)
        self.gauges = {m: Gauge(PROM_PREFIX + m, help_, registry=r) for m, help_ in METRICS.items()}
        self.feature_psi = Gauge("autopilot_feature_psi", "PSI of one input drift feature", ["feature"], registry=r)
        self.feature_drifted = Gauge("autopilot_feature_drifted", "1 when the drift feature counts as drifted",
                                     ["feature"], registry=r)
        self.alert_firing = Gauge("autopilot_alert_firing", "1 while the alert fires", ["alert", "severity"],
                                  registry=r)
        self.alerts_firing = Gauge("autopilot_alerts_firing", "number of alerts firing", registry=r)
        for m in self.gauges.values():
            m.set(math.nan)
        for name, severity in rule_names:
            self.alert_firing.labels(name, severity).set(0)
        self._class_counters = [self.predicted.labels(c) for c in classes]
        self._req = {}
        self._lat = {}
        self._version = None

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        c = self._req.get(key)
        if c is None:
            c = self._req[key] = self.requests.labels(endpoint, str(status))
        c.inc()
        h = self._lat.get(endpoint)
        if h is None:
            h = self._lat[endpoint] = self.latency.labels(endpoint)
        h.observe(seconds)

    def predictions(self, cls_indices) -> None:
        cc = self._class_counters
        for c in cls_indices:
            cc[c].inc()

    def set_version(self, version: str) -> None:
        if self._version is not None:
            self.model_info.remove(self._version)
        self.model_info.labels(version).set(1)
        self._version = version

    def set_monitor(self, metrics: dict, details: dict, engine) -> None:
        for k, g in self.gauges.items():
            v = metrics.get(k)
            g.set(math.nan if v is None else float(v))
        for f in details.get("features", []):
            self.feature_psi.labels(f["name"]).set(f["psi"])
            self.feature_drifted.labels(f["name"]).set(1 if f["drifted"] else 0)
        n = 0
        for s in engine.states.values():
            self.alert_firing.labels(s.rule.name, s.rule.severity).set(1 if s.firing else 0)
            n += s.firing
        self.alerts_firing.set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
