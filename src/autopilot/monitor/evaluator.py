"""The server's background evaluator: every `interval`, the live window ->
metrics -> alert rules -> gauges, webhooks and (if a rule says so) retraining."""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

from .alerts import AlertEngine, Config, post_webhook
from .drift import compute_metrics
from .window import LiveWindow

log = logging.getLogger("autopilot.monitor")


class Evaluator:
    def __init__(self, window: LiveWindow, config: Config, reference: dict | None, *, run_dir, run_name: str,
                 on_update=None):
        self.window, self.config = window, config
        self.run_dir, self.run_name = Path(run_dir), run_name
        self.on_update = on_update  # (metrics, details, engine) -> None: the server sets its gauges
        self._lock = threading.Lock()
        self.set_reference(reference)
        self.latest: dict = {"metrics": {}, "details": {}, "alerts": [], "time": None}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="evaluator", daemon=True)
        self._retrain: subprocess.Popen | None = None
        self._last_retrain = -float("inf")
        self.model_version = None

    def set_reference(self, reference: dict | None) -> None:
        """A new model version comes with its own reference: alert states start over."""
        with self._lock:
            self.reference = reference
            self.engine = AlertEngine(self.config.rules, (reference or {}).get("baselines", {}))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            try:
                self.evaluate(time.time())
            except Exception:  # monitoring must never take the server down
                log.exception("evaluator failed")

    def evaluate(self, now: float) -> dict:
        c = self.config
        with self._lock:
            w = self.window.snapshot(since=now - c.max_age_s)
            metrics, details = compute_metrics(w, self.reference, min_samples=c.min_samples, min_labels=c.min_labels,
                                               ks_alpha=c.ks_alpha, psi_min=c.psi)
            events = self.engine.update(metrics, now)
            self.latest = {"time": now, "metrics": metrics, "details": details, "alerts": self.engine.status()}
            engine = self.engine
        if self.on_update is not None:
            self.on_update(metrics, details, engine)
        for e in events:
            log.warning("alert %s %s: %s = %s (%s %s)", e["alert"], e["state"], e["metric"], e["value"], e["op"], e["limit"])
            self._notify(e)
            rule = engine.states[e["alert"]].rule
            if e["state"] == "firing" and rule.on_fire == "retrain":
                self._start_retrain(e)
        return self.latest

    def _notify(self, event: dict) -> None:
        rule = self.engine.states[event["alert"]].rule
        url = rule.webhook or self.config.webhook
        if url:
            post_webhook(url, {"run": self.run_name, "model_version": self.model_version, "alerts": [event]})

    def _start_retrain(self, event: dict) -> None:
        """A separate process: training needs torch, which the server never imports."""
        now = time.time()
        if self._retrain is not None and self._retrain.poll() is None:
            log.warning("retrain already running; %s does not start another", event["alert"])
            return
        if now - self._last_retrain < self.config.retrain_cooldown_s:
            log.warning("retrain skipped: cooldown (%ss) not over", self.config.retrain_cooldown_s)
            return
        self._last_retrain = now
        out = self.run_dir / "monitor" / f"retrain-{time.strftime('%Y%m%dT%H%M%S')}.log"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "autopilot.retrain", str(self.run_dir), *self.config.retrain_args]
        log.warning("alert %s: starting %s (log %s)", event["alert"], " ".join(cmd), out)
        with open(out, "w") as f:
            self._retrain = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
