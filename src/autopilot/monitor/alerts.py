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
from typing import Annotated, Literal, Optional

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PositiveInt, ValidationError, field_validator,
                      model_validator)

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
        raise RulesError(f"cannot read rules {path}: {' '.join(str(e).split())}") from None
    return parse_config(doc, str(path))


# -- the rules file, validated by pydantic ------------------------------------

def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):  # true/false is not a threshold
        raise ValueError(f"must be a number, got {v!r}")
    return float(v)


Duration = Annotated[float, BeforeValidator(lambda v: parse_duration(v))]
Number = Annotated[float, BeforeValidator(_number)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleSpec(_Strict):
    name: str
    metric: str
    op: str
    threshold: Optional[Number] = None
    coefficient: Optional[Number] = None
    baseline: Optional[str] = None
    for_: Duration = Field(0.0, alias="for")
    severity: str = "warning"
    summary: str = ""
    on_fire: Optional[Literal["retrain"]] = None
    webhook: Optional[str] = None

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"must be an identifier (letters, digits, _), got {v!r}")
        return v

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; one of {', '.join(METRICS)}")
        return v

    @field_validator("baseline")
    @classmethod
    def _known_baseline(cls, v):
        if v is not None and v not in METRICS:
            raise ValueError(f"unknown baseline {v!r}; one of {', '.join(METRICS)}")
        return v

    @field_validator("op")
    @classmethod
    def _known_op(cls, v: str) -> str:
        if v not in OPS:
            raise ValueError(f"op must be one of {' '.join(OPS)}, got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_limit(self):
        if (self.threshold is None) == (self.coefficient is None):
            raise ValueError("give exactly one of 'threshold' (absolute) or 'coefficient' (x baseline)")
        return self


class EvaluationSpec(_Strict):
    interval: Duration = 10.0
    window: PositiveInt = 500
    min_samples: PositiveInt = 200
    min_labels: PositiveInt = 30
    max_age: Duration = 3600.0


class DriftSpec(_Strict):
    ks_alpha: Annotated[float, Field(gt=0, lt=1)] = 0.01
    psi: Annotated[float, Field(ge=0)] = 0.1


class RetrainSpec(_Strict):
    cooldown: Duration = 3600.0
    args: list[str] = Field(default_factory=lambda: ["--from-feedback"])


class RulesFile(_Strict):
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    webhook: Optional[str] = None
    retrain: RetrainSpec = Field(default_factory=RetrainSpec)
    rules: list[RuleSpec] = Field(default_factory=list)

    @field_validator("evaluation", "drift", "retrain", "rules", mode="before")
    @classmethod
    def _empty_is_default(cls, v, info):
        # `drift:` with nothing under it is YAML null: take the defaults
        return v if v is not None else ([] if info.field_name == "rules" else {})

    @model_validator(mode="after")
    def _unique_names(self):
        seen = set()
        for r in self.rules:
            if r.name in seen:
                raise ValueError(f"duplicate rule name {r.name!r}")
            seen.add(r.name)
        return self


def _where(doc, loc: tuple) -> str:
    """('rules', 2, 'op') -> "rules[3] (HighLatency): op": 1-based like a person counts, with the rule's name."""
    parts, node = [], doc
    for i, key in enumerate(loc):
        if isinstance(key, int):
            name = node[key].get("name") if isinstance(node, list) and key < len(node) and isinstance(node[key], dict) else None
            parts[-1] = f"{parts[-1]}[{key + 1}]" + (f" ({name})" if name else "")
        else:
            parts.append(str(key))
        node = node.get(key) if isinstance(node, dict) else (node[key] if isinstance(node, list) and isinstance(key, int) and key < len(node) else None)
    return ".".join(parts)


def _one_line(e: ValidationError, doc, where: str) -> str:
    err = e.errors()[0]
    loc = tuple(k for k in err["loc"] if k not in ("function-after[_one_limit(), RuleSpec]",))
    field = _where(doc, loc)
    if err["type"] == "extra_forbidden":
        field, _, bad = field.rpartition(".")
        msg = f"unknown field {bad!r}"
    elif err["type"] == "missing":
        field, _, bad = field.rpartition(".")
        msg = f"missing field {bad!r}"
    elif err["type"] == "model_type" and not loc:
        msg = "expected a mapping with a 'rules' list"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] != "value_error" and not isinstance(err.get("input"), (dict, list)):
            msg = f"{msg}, got {err['input']!r}"
    more = len(e.errors()) - 1
    return f"{where}: {field + ': ' if field else ''}{msg}" + (f" (and {more} more problem(s))" if more else "")


def parse_config(doc: dict, where: str = "rules") -> Config:
    """A parsed rules file -> Config; a bad one raises RulesError with one line
    naming the file, the rule and the field."""
    if doc is None:
        doc = {}
    try:
        f = RulesFile.model_validate(doc)
    except ValidationError as e:
        raise RulesError(_one_line(e, doc, where)) from None
    except RulesError as e:  # a duration that cannot be read, raised inside a validator
        raise RulesError(f"{where}: {e}") from None
    ev, dr, rt = f.evaluation, f.drift, f.retrain
    rules = [Rule(name=r.name, metric=r.metric, op=r.op,
                  threshold=r.threshold, coefficient=r.coefficient,
                  baseline=r.baseline, for_s=r.for_, severity=r.severity, summary=r.summary, on_fire=r.on_fire,
                  webhook=r.webhook) for r in f.rules]
    return Config(rules=rules, interval_s=ev.interval, window=ev.window, min_samples=ev.min_samples,
                  min_labels=ev.min_labels, max_age_s=ev.max_age, ks_alpha=dr.ks_alpha, psi=dr.psi,
                  webhook=f.webhook, retrain_cooldown_s=rt.cooldown, retrain_args=list(rt.args))


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

