"""Alert rules (YAML), their evaluation over time, notifications, and the
same rules as Prometheus alerting rules.

A rule compares one metric (see drift.METRICS) with a threshold, either
absolute (`threshold: 0.3`) or relative to the reference baseline
(`coefficient: 0.9` -> 0.9 x the baseline of the same metric, or of
`baseline: NAME`). It fires when the comparison has held for `for:` (as in
Prometheus: pending first, firing after the duration). A metric that cannot
be computed yet (too few samples) never fires a rule.
"""
from __future__ import annotations

import json
import logging
import math
import operator
import re
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .drift import METRICS

log = logging.getLogger("autopilot.monitor")

RULES_FILE = "rules.yaml"

# The defaults, written to RUN/monitor/rules.yaml when it is absent: one
# visible place to read and edit them.
DEFAULT_RULES = """\
# Alert rules for `autopilot serve` and `autopilot monitor` (written because none existed; edit freely).
# metric: one of input_drift_share, input_drift_psi_max, prediction_drift_psi, mean_confidence,
#   accuracy, latency_p50_ms, latency_p99_ms, error_rate, client_error_rate, window_size
# op: > >= < <=     threshold: absolute   or   coefficient: x baseline (from monitor/reference.json;
#   `baseline: NAME` picks another baseline than the metric's own)
# for: how long the comparison must hold before the alert fires (0s: at once)
# on_fire: retrain   starts `autopilot retrain RUN --from-feedback` (see retrain: below)

evaluation:
  interval: 10s        # how often the server evaluates the rules
  window: 500          # the most recent predictions the statistics use
  min_samples: 200     # fewer predictions in the window: no drift, confidence or latency verdict
  min_labels: 30       # fewer feedback labels: no accuracy verdict
  max_age: 1h          # older predictions leave the window even without new traffic

drift:
  ks_alpha: 0.01       # a feature drifts when its KS p-value is below this ...
  psi: 0.1             # ... and its PSI is at least this

webhook: null          # e.g. http://127.0.0.1:9000/alerts: JSON POSTed when an alert fires or resolves

retrain:
  cooldown: 1h         # at most one automatic retrain per cooldown
  args: ["--from-feedback", "--budget", "5m"]

rules:
  - name: InputDrift
    metric: input_drift_share
    op: ">"
    threshold: 0.3
    for: 1m
    severity: warning
    summary: more than 30 % of the input features have drifted from the training data
  - name: PredictionDrift
    metric: prediction_drift_psi
    op: ">"
    threshold: 0.25
    for: 1m
    severity: warning
    summary: the distribution of predicted classes moved away from validation (PSI > 0.25)
  - name: LowConfidence
    metric: mean_confidence
    op: "<"
    coefficient: 0.8
    for: 5m
    severity: warning
    summary: mean confidence below 80 % of its validation value
  - name: AccuracyDrop
    metric: accuracy
    op: "<"
    coefficient: 0.9
    for: 5m
    severity: critical
    summary: accuracy on labelled feedback below 90 % of the test accuracy
    # on_fire: retrain
  - name: HighLatency
    metric: latency_p99_ms
    op: ">"
    threshold: 250
    for: 5m
    severity: warning
    summary: p99 server latency above 250 ms
  - name: ServerErrors
    metric: error_rate
    op: ">"
    threshold: 0.01
    for: 1m
    severity: critical
    summary: more than 1 % of responses are 5xx
"""

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
PROM_PREFIX = "autopilot_"


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the rule and field."""


def parse_duration(v) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", str(v))
    if not m:
        raise RulesError(f"cannot read duration {v!r}; use e.g. 30s, 5m, 1h")
    return float(m.group(1)) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]


def prom_duration(seconds: float) -> str:
    s = int(round(seconds))
    for unit, size in (("h", 3600), ("m", 60)):
        if s and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


@dataclass
class Rule:
    name: str
    metric: str
    op: str
    threshold: float | None = None
    coefficient: float | None = None
    baseline: str | None = None
    for_s: float = 0.0
    severity: str = "warning"
    summary: str = ""
    on_fire: str | None = None
    webhook: str | None = None

    def limit(self, baselines: dict) -> float | None:
        """The number the metric is compared with; None when the baseline is unknown."""
        if self.threshold is not None:
            return self.threshold
        b = baselines.get(self.baseline or self.metric)
        return None if b is None else self.coefficient * float(b)

    def holds(self, value, baselines: dict) -> bool:
        lim = self.limit(baselines)
        if value is None or lim is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return OPS[self.op](value, lim)


@dataclass
class Config:
    rules: list[Rule]
    interval_s: float = 10.0
    window: int = 500
    min_samples: int = 200
    min_labels: int = 30
    max_age_s: float = 3600.0
    ks_alpha: float = 0.01
    psi: float = 0.1
    webhook: str | None = None
    retrain_cooldown_s: float = 3600.0
    retrain_args: list[str] = field(default_factory=lambda: ["--from-feedback"])


def rules_path(run_dir) -> Path:
    return Path(run_dir) / "monitor" / RULES_FILE


def load_config(run_dir=None, path: str | Path | None = None) -> Config:
    """Rules from `path`, else RUN/monitor/rules.yaml (written with the defaults if absent)."""
    if path is None:
        path = rules_path(run_dir)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(DEFAULT_RULES)
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RulesError(f"cannot read rules {path}: {e}") from None
    return parse_config(doc, str(path))


def parse_config(doc: dict, where: str = "rules") -> Config:
    if not isinstance(doc, dict):
        raise RulesError(f"{where}: expected a mapping with a 'rules' list")
    ev, dr, rt = doc.get("evaluation") or {}, doc.get("drift") or {}, doc.get("retrain") or {}
    rules = []
    names = set()
    for i, r in enumerate(doc.get("rules") or []):
        at = f"{where}: rule {i + 1}" + (f" ({r.get('name')})" if isinstance(r, dict) and r.get("name") else "")
        if not isinstance(r, dict):
            raise RulesError(f"{at}: expected a mapping")
        unknown = set(r) - {"name", "metric", "op", "threshold", "coefficient", "baseline", "for", "severity",
                            "summary", "on_fire", "webhook"}
        if unknown:
            raise RulesError(f"{at}: unknown field(s) {', '.join(sorted(unknown))}")
        name = r.get("name")
        if not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            raise RulesError(f"{at}: 'name' must be an identifier (letters, digits, _)")
        if name in names:
            raise RulesError(f"{at}: duplicate rule name {name!r}")
        names.add(name)
        if r.get("metric") not in METRICS:
            raise RulesError(f"{at}: unknown metric {r.get('metric')!r}; one of {', '.join(METRICS)}")
        if r.get("op") not in OPS:
            raise RulesError(f"{at}: op must be one of {' '.join(OPS)}")
        if (r.get("threshold") is None) == (r.get("coefficient") is None):
            raise RulesError(f"{at}: give exactly one of 'threshold' (absolute) or 'coefficient' (x baseline)")
        for k in ("threshold", "coefficient"):
            if r.get(k) is not None and (isinstance(r[k], bool) or not isinstance(r[k], (int, float))):
                raise RulesError(f"{at}: {k} must be a number")
        if r.get("baseline") is not None and r["baseline"] not in METRICS:
            raise RulesError(f"{at}: unknown baseline {r['baseline']!r}")
        if r.get("on_fire") not in (None, "retrain"):
            raise RulesError(f"{at}: on_fire must be 'retrain' or absent")
        rules.append(Rule(name=str(name), metric=r["metric"], op=r["op"],
                          threshold=None if r.get("threshold") is None else float(r["threshold"]),
                          coefficient=None if r.get("coefficient") is None else float(r["coefficient"]),
                          baseline=r.get("baseline"), for_s=parse_duration(r.get("for", 0)),
                          severity=str(r.get("severity", "warning")), summary=str(r.get("summary", "")),
                          on_fire=r.get("on_fire"), webhook=r.get("webhook")))
    args = rt.get("args", ["--from-feedback"])
    if not isinstance(args, list):
        raise RulesError(f"{where}: retrain.args must be a list of strings")
    return Config(
        rules=rules, interval_s=parse_duration(ev.get("interval", "10s")), window=int(ev.get("window", 500)),
        min_samples=int(ev.get("min_samples", 200)), min_labels=int(ev.get("min_labels", 30)),
        max_age_s=parse_duration(ev.get("max_age", "1h")), ks_alpha=float(dr.get("ks_alpha", 0.01)),
        psi=float(dr.get("psi", 0.1)), webhook=doc.get("webhook"),
        retrain_cooldown_s=parse_duration(rt.get("cooldown", "1h")), retrain_args=[str(a) for a in args])


@dataclass
class AlertState:
    rule: Rule
    pending_since: float | None = None
    firing: bool = False
    value: float | None = None
    limit: float | None = None


class AlertEngine:
    """Prometheus semantics: a rule whose comparison holds is pending, and
    firing once it has held for `for_s`; it resolves as soon as it stops holding."""

    def __init__(self, rules: list[Rule], baselines: dict):
        self.baselines = dict(baselines or {})
        self.states = {r.name: AlertState(r) for r in rules}

    def update(self, metrics: dict, now: float) -> list[dict]:
        """Feed one evaluation; returns transitions ("firing" / "resolved")."""
        events = []
        for s in self.states.values():
            r = s.rule
            s.value, s.limit = metrics.get(r.metric), r.limit(self.baselines)
            if r.holds(s.value, self.baselines):
                if s.pending_since is None:
                    s.pending_since = now
                if not s.firing and now - s.pending_since >= r.for_s:
                    s.firing = True
                    events.append(self._event(s, "firing", now))
            else:
                if s.firing:
                    events.append(self._event(s, "resolved", now))
                s.pending_since, s.firing = None, False
        return events

    def firing(self) -> list[AlertState]:
        return [s for s in self.states.values() if s.firing]

    def status(self) -> list[dict]:
        return [{"alert": s.rule.name, "metric": s.rule.metric, "op": s.rule.op, "value": s.value, "limit": s.limit,
                 "for_s": s.rule.for_s, "severity": s.rule.severity,
                 "state": "firing" if s.firing else ("pending" if s.pending_since is not None else "inactive"),
                 "since": s.pending_since, "summary": s.rule.summary} for s in self.states.values()]

    @staticmethod
    def _event(s: AlertState, state: str, now: float) -> dict:
        return {"alert": s.rule.name, "state": state, "metric": s.rule.metric, "value": s.value, "op": s.rule.op,
                "limit": s.limit, "severity": s.rule.severity, "summary": s.rule.summary, "time": now,
                "since": s.pending_since}


def post_webhook(url: str, payload: dict, timeout: float = 5.0) -> None:
    """POST JSON in a daemon thread: a slow receiver never stalls evaluation."""
    def send():
        try:
            req = urllib.request.Request(url, data=json.dumps(payload, default=str).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                resp.read()
        except Exception as e:  # noqa: BLE001 - a webhook failure is logged, never raised
            log.warning("webhook %s failed: %s", url, e)

    threading.Thread(target=send, name="webhook", daemon=True).start()


def prometheus_rules(config: Config, baselines: dict, run_name: str) -> dict:
    """The rules as a Prometheus rule file over the gauges the server exports
    (autopilot_<metric>); relative thresholds become numbers from the baselines."""
    out = []
    for r in config.rules:
        lim = r.limit(baselines)
        if lim is None:
            log.warning("rule %s: no baseline for %s; left out of the Prometheus rules", r.name, r.baseline or r.metric)
            continue
        rule = {"alert": r.name, "expr": f"{PROM_PREFIX}{r.metric} {r.op} {lim:.6g}", "for": prom_duration(r.for_s),
                "labels": {"severity": r.severity, "run": run_name},
                "annotations": {"summary": r.summary or f"{r.metric} {r.op} {lim:.6g}",
                                "description": f"{r.metric} is {{{{ $value }}}} ({r.op} {lim:.6g})"}}
        out.append(rule)
    return {"groups": [{"name": f"autopilot-{run_name}", "rules": out}]}

