"""Monitoring: drift statistics (checked against scipy), alert rules, the
server's evaluator end to end (real server, real SQLite, a real webhook
receiver on 127.0.0.1) and `autopilot monitor`. Model versions and the
retrain loop are tested in test_registry.py and test_retrain.py."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import yaml

from autopilot.monitor.alerts import AlertEngine, RulesError, load_config, parse_config
from autopilot.monitor.drift import compute_metrics, ks_pvalue, ks_statistic, psi
from autopilot.monitor.features import Reducer
from autopilot.monitor.reference import feature_stats, reference_from_arrays
from autopilot.monitor.window import Window

from .test_serve import HOST, Server, blast, bodies_of, digits_data, local_model, run_copy, trained_run  # noqa: F401


# The first test of a session makes the shared run with `autopilot run` (minutes on a busy machine).
pytestmark = pytest.mark.timeout(1800)


def monitor_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autopilot.monitor", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


# -- statistics against reference implementations -----------------------------

def test_ks_and_psi_against_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    ref = rng.normal(size=20000)
    q = feature_stats(ref[:, None])["quantiles"][0]
    for shift, n in ((0.0, 500), (0.3, 500), (1.0, 200)):
        live = rng.normal(shift, 1, size=n)
        want = stats.ks_2samp(ref, live)
        d = ks_statistic(q, live)
        assert abs(d - want.statistic) < 0.015, (shift, d, want.statistic)
        # the same p-value as scipy's asymptotic two-sample test, from the statistic and the two sizes
        want_p = stats.ks_2samp(ref, live, method="asymp").pvalue
        assert ks_pvalue(want.statistic, n, len(ref)) == pytest.approx(want_p, rel=1e-9, abs=1e-300)
    # vectorised over features: one call, the same numbers
    ds = np.array([0.01, 0.05, 0.2])
    assert np.allclose(ks_pvalue(ds, 300, 1000), [ks_pvalue(float(d), 300, 1000) for d in ds])
    assert ks_pvalue(0.01, 300, 1000) > 0.99 and ks_pvalue(0.2, 300, 1000) < 1e-6
    # PSI by hand: sum (a - e) ln(a / e)
    ref_p = np.array([0.25, 0.25, 0.5])
    counts = np.array([50, 25, 25])
    live = (counts + 0.5) / (100 + 1.5)
    assert psi(ref_p, counts) == pytest.approx(np.sum((live - ref_p) * np.log(live / ref_p)))
    assert psi(ref_p, np.array([2500, 2500, 5000])) < 1e-4


def test_reducer_pools_blocks():
    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype(np.float32)
    f = Reducer("image", (1, 28, 28))(x)
    assert f.shape == (3, 49)
    assert np.allclose(f, x.reshape(3, 7, 4, 7, 4).mean((2, 4)).reshape(3, 49), atol=1e-6)
    assert Reducer("image", (1, 8, 8)).n_features == 16
    assert Reducer("signal", (2, 40))(np.ones((2, 2, 40))).shape == (2, 28)
    assert Reducer("table", (5,))(np.ones((4, 5))).shape == (4, 5)


def test_shifted_inputs_drift_and_in_distribution_does_not(run_copy, digits_data):
    """Inverted, noisy and never-seen inputs drift; held-out inputs from the
    training distribution do not, at the default thresholds."""
    model = local_model(run_copy)
    ref = reference_from_arrays(model, digits_data["train"][0], digits_data["val"][0], digits_data["val"][1])
    red = Reducer("image", (1, 8, 8))
    X = np.concatenate([digits_data["test"][0], digits_data["val"][0]])
    rng = np.random.default_rng(0)

    def metrics(Xw):
        p = model.predict_proba(Xw.astype(np.float32))
        w = Window(red(Xw), p.argmax(1), p.max(1), np.ones(len(Xw)), np.full(len(Xw), 200), np.zeros(0, int), np.zeros(0, int))
        return compute_metrics(w, ref)[0]

    for _ in range(20):
        m = metrics(X[rng.choice(len(X), 200)])
        assert m["input_drift_share"] <= 0.3 and m["prediction_drift_psi"] <= 0.25, m
    base = X[rng.choice(len(X), 200)]
    for name, shifted in (("inverted", 1 - base), ("noisy", np.clip(base + rng.normal(0, 0.3, base.shape), 0, 1)),
                          ("never seen", rng.random(base.shape))):
        m = metrics(shifted)
        assert m["input_drift_share"] > 0.3, (name, m)


# -- rules ------------------------------------------------------------------

def test_default_rules_written_and_parsed(tmp_path):
    cfg = load_config(tmp_path)
    assert (tmp_path / "monitor" / "rules.yaml").exists()
    names = [r.name for r in cfg.rules]
    assert names == ["InputDrift", "PredictionDrift", "LowConfidence", "AccuracyDrop", "HighLatency", "ServerErrors"]
    assert cfg.interval_s == 10 and cfg.window == 500 and cfg.rules[0].for_s == 60
    low = cfg.rules[2]
    assert low.threshold is None and low.limit({"mean_confidence": 0.9}) == pytest.approx(0.72)
    rule = {"name": "A", "metric": "error_rate", "op": ">", "threshold": 1}
    for bad, msg in (({"rules": [{**rule, "metric": "nope"}]}, "rules[1] (A).metric: unknown metric 'nope'"),
                     ({"rules": [rule, {**rule, "name": "B", "op": "!"}]}, "rules[2] (B).op: op must be one of > >= < <=, got '!'"),
                     ({"rules": [{k: v for k, v in rule.items() if k != "threshold"}]}, "rules[1] (A): give exactly one of"),
                     ({"rules": [{**rule, "coefficient": 2}]}, "rules[1] (A): give exactly one of"),
                     ({"rules": [{**rule, "for": "soon"}]}, "rules[1] (A).for: cannot read duration 'soon'"),
                     ({"rules": [{**rule, "colour": 2}]}, "rules[1] (A): unknown field 'colour'"),
                     ({"rules": [{**rule, "threshold": True}]}, "rules[1] (A).threshold: must be a number, got True"),
                     ({"rules": [{**rule, "name": "no spaces"}]}, "rules[1] (no spaces).name: must be an identifier"),
                     ({"rules": [{k: v for k, v in rule.items() if k != "name"}]}, "rules[1]: missing field 'name'"),
                     ({"rules": [rule, rule]}, "duplicate rule name 'A'"),
                     ({"evaluation": {"window": 0}}, "evaluation.window: Input should be greater than 0, got 0"),
                     ({"evaluation": {"windw": 3}}, "evaluation: unknown field 'windw'"),
                     ({"drift": {"ks_alpha": 2}}, "drift.ks_alpha: Input should be less than 1, got 2"),
                     ({"retrain": {"args": "--from-feedback"}}, "retrain.args: Input should be a valid list"),
                     ([1, 2], "expected a mapping with a 'rules' list")):
        with pytest.raises(RulesError) as e:
            parse_config(bad, "rules.yaml")
        assert str(e.value).startswith("rules.yaml: " + msg) and "\n" not in str(e.value), (msg, str(e.value))


def test_bad_rules_file_stops_serve_and_monitor_with_one_line(run_copy):
    bad = run_copy / "bad-rules.yaml"
    bad.write_text("rules:\n  - {name: Slow, metric: latency_p99_ms, op: '>', threshold: fast}\n")
    want = f"error: {bad}: rules[1] (Slow).threshold: must be a number, got 'fast'"
    for cmd in ([sys.executable, "-m", "autopilot.serve", str(run_copy), "--rules", str(bad), "--port", "0"],
                [sys.executable, "-m", "autopilot.monitor", "monitor", str(run_copy), "--rules", str(bad)]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and res.stderr.strip() == want, (cmd, res.stderr)
    bad.write_text("rules: [unclosed\n")
    res = subprocess.run([sys.executable, "-m", "autopilot.monitor", "monitor", str(run_copy), "--rules", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith(f"error: cannot read rules {bad}") and "Traceback" not in res.stderr


def test_alert_engine_pending_firing_resolved():
    cfg = parse_config({"rules": [{"name": "Drift", "metric": "input_drift_share", "op": ">", "threshold": 0.3, "for": "10s"},
                                  {"name": "Acc", "metric": "accuracy", "op": "<", "coefficient": 0.9, "for": 0}]})
    eng = AlertEngine(cfg.rules, {"accuracy": 0.95})
    assert eng.update({"input_drift_share": 0.5, "accuracy": None}, 100) == []  # pending; None never fires
    assert eng.status()[0]["state"] == "pending"
    assert eng.update({"input_drift_share": 0.5, "accuracy": 0.9}, 105) == []
    ev = eng.update({"input_drift_share": 0.5, "accuracy": 0.8}, 110)
    assert [(e["alert"], e["state"]) for e in ev] == [("Drift", "firing"), ("Acc", "firing")]
    assert ev[1]["limit"] == pytest.approx(0.855)
    ev = eng.update({"input_drift_share": 0.1, "accuracy": 0.8}, 111)
    assert [(e["alert"], e["state"]) for e in ev] == [("Drift", "resolved")]
    assert [s.rule.name for s in eng.firing()] == ["Acc"]


def test_prometheus_rules_use_the_servers_gauges(run_copy, tmp_path):
    from autopilot.serve.metrics import Metrics

    out = tmp_path / "alerts.rules.yml"
    res = monitor_cli("monitor", run_copy, "--prometheus-rules", out)
    assert res.returncode == 0, res.stderr
    doc = yaml.safe_load(out.read_text())
    rules = doc["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == ["InputDrift", "PredictionDrift", "LowConfidence", "AccuracyDrop", "HighLatency", "ServerErrors"]
    exported = {m.name for m in Metrics(["0"], []).registry.collect()}
    for r in rules:
        name, op, value = r["expr"].split()
        assert name in exported and op in (">", "<") and float(value) > 0, r
        assert r["for"] in ("1m", "5m") and r["labels"]["severity"]
    ref = json.loads((run_copy / "monitor" / "reference.json").read_text())
    low = next(r for r in rules if r["alert"] == "LowConfidence")
    assert float(low["expr"].split()[-1]) == pytest.approx(0.8 * ref["baselines"]["mean_confidence"], rel=1e-5)


# -- the server's evaluator, end to end ------------------------------------------

class Hooks:
    """A webhook receiver on 127.0.0.1 that keeps what it is sent."""

    def __init__(self):
        got = self.got = []

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer((HOST, 0), H)
        self.url = f"http://{HOST}:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


FAST_RULES = """
evaluation: {interval: 0.2s, window: 200, min_samples: 100, min_labels: 20, max_age: 1h}
drift: {ks_alpha: 0.01, psi: 0.1}
webhook: WEBHOOK
retrain: {cooldown: 1h, args: ["--data", "/nonexistent/new.npz"]}
rules:
  - {name: InputDrift, metric: input_drift_share, op: ">", threshold: 0.3, for: 1s, on_fire: retrain}
  - {name: PredictionDrift, metric: prediction_drift_psi, op: ">", threshold: 0.25, for: 1s}
  - {name: LowConfidence, metric: mean_confidence, op: "<", coefficient: 0.8, for: 1s}
  - {name: AccuracyDrop, metric: accuracy, op: "<", coefficient: 0.9, for: 1s}
  - {name: HighLatency, metric: latency_p99_ms, op: ">", threshold: 250, for: 5s}
  - {name: ServerErrors, metric: error_rate, op: ">", threshold: 0.01, for: 0s}
"""


def test_drift_alert_fires_on_shift_and_never_in_distribution(run_copy, digits_data):
    hooks = Hooks()
    rules = run_copy / "fast-rules.yaml"
    rules.write_text(FAST_RULES.replace("WEBHOOK", hooks.url))
    s = Server(run_copy, "--rules", str(rules))
    try:
        X = np.concatenate([digits_data["test"][0], digits_data["val"][0]])
        rng = np.random.default_rng(1)
        seen_states: set = set()
        stop = threading.Event()

        def watch():  # every alert state the server reports while traffic flows
            while not stop.is_set():
                for a in s.monitor().get("alerts", []):
                    seen_states.add((a["alert"], a["state"]))
                time.sleep(0.1)

        w = threading.Thread(target=watch)
        w.start()
        res = blast(s.port, bodies_of(X[rng.choice(len(X), 10_000)]), concurrency=8)
        time.sleep(0.6)  # a last evaluation over the final window
        stop.set()
        w.join()
        assert res["status"] == {200: 10_000} and res["errors"] == 0
        assert not any(state == "firing" for _, state in seen_states), seen_states
        m = s.monitor()
        assert m["metrics"]["window_size"] == 200 and m["metrics"]["input_drift_share"] <= 0.3
        assert s.metric("autopilot_alerts_firing")[""] == 0 and hooks.got == []
        res = monitor_cli("monitor", run_copy, "--rules", rules)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "0 alert(s) firing" in res.stdout

        # Now inverted images: the drift alert fires within one window.
        shifted = bodies_of(1 - X[rng.choice(len(X), 400)])
        sent, pending_at, fired_at, t_pending = 0, None, None, None
        while sent < 400 and fired_at is None:
            blast(s.port, shifted[sent:sent + 10], concurrency=2)
            sent += 10
            time.sleep(0.4)  # one log-writer batch (0.1 s) and one evaluation (0.2 s) see these
            state = {a["alert"]: a["state"] for a in s.monitor()["alerts"]}["InputDrift"]
            if state != "inactive" and pending_at is None:
                pending_at, t_pending = sent, time.time()
            if state == "firing":
                fired_at = sent
        print(f"InputDrift pending after {pending_at} shifted requests, firing after {fired_at} (window 200)")
        assert pending_at is not None and pending_at <= 200, pending_at
        assert fired_at is not None and time.time() - t_pending < 3.0
        assert s.metric("autopilot_alert_firing")['{alert="InputDrift",severity="warning"}'] == 1
        assert s.metric("autopilot_input_drift_share")[""] > 0.3
        end = time.time() + 5
        while time.time() < end and not any(a["alert"] == "InputDrift" for h in hooks.got for a in h["alerts"]):
            time.sleep(0.1)
        hook = next(h for h in hooks.got if h["alerts"][0]["alert"] == "InputDrift")
        assert hook["alerts"][0]["state"] == "firing" and hook["run"] == "digits" and hook["model_version"] == "v1"

        res = monitor_cli("monitor", run_copy, "--rules", rules)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "FIRING    InputDrift" in res.stdout
        res = monitor_cli("monitor", run_copy, "--rules", rules, "--json")
        assert "InputDrift" in json.loads(res.stdout)["firing"]

        # on_fire: retrain started `retrain` in its own process (here with data that does not exist)
        end = time.time() + 30
        logs = []
        while time.time() < end:
            logs = list((run_copy / "monitor").glob("retrain-*.log"))
            if logs and "error:" in logs[0].read_text():
                break
            time.sleep(0.2)
        assert logs and "/nonexistent/new.npz" in logs[0].read_text()
    finally:
        s.stop()
        hooks.close()
