"""`autopilot serve`: a real server process on 127.0.0.1, real ONNX Runtime,
real SQLite, no mocks. One small digits model is trained once per session
and shared with test_monitor.py."""
from __future__ import annotations

import base64
import io
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import pytest

from autopilot.registry import versions
from autopilot.rundir import RunDir
from autopilot.rundata import load_run_data
from autopilot.runtime.model import ServedModel
from autopilot.serve.client import HOST, ServerProcess, free_port, load

from .conftest import built_once


# -- shared fixtures and helpers (test_monitor.py imports these) --------------

ROOT = Path(__file__).resolve().parents[1]

# The first test of a session makes the shared run with `autopilot run` (minutes on a busy machine).
pytestmark = pytest.mark.timeout(1800)


def autopilot_command() -> list[str]:
    """The documented command: the `autopilot` console script beside this Python."""
    script = Path(sys.executable).parent / "autopilot"
    return [str(script)] if script.exists() else [sys.executable, "-m", "autopilot"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One digits model for the whole session, made by `autopilot run` as a
    user makes it (one trial, no time limit: the trial always finishes).
    test_monitor.py and every xdist worker share it (conftest.built_once)."""
    def build(base: Path) -> None:
        res = subprocess.run([*autopilot_command(), "run", "digits", "--trials", "1", "--cv", "0", "--workers", "1", "--no-doctor",
                              "--no-compress", "--quiet", "--runs-dir", str(base), "--name", "digits", "--overwrite"],
                             capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]

    run = built_once(tmp_path_factory, "serve-digits", build) / "digits"
    assert (run / "monitor" / "reference.json").exists()  # `autopilot run` writes the drift reference last
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy: tests write logs, rules and versions into it."""
    dst = tmp_path / "digits"
    shutil.copytree(trained_run, dst, ignore=shutil.ignore_patterns("serve", "retrain", "v[0-9]*", "versions.json"))
    return dst


@pytest.fixture(scope="session")
def digits_data(trained_run):
    _config, _ds, data, _info = load_run_data(RunDir(trained_run))
    return data


Server = ServerProcess  # `python -m autopilot.serve RUN ...` in its own process


def blast(port: int, bodies: list[bytes], concurrency: int = 8, **kwargs) -> dict:
    """The shared load client (autopilot.serve.client), its counts as a dict."""
    r = load(port, bodies, concurrency=concurrency, **kwargs)
    return {"status": r.status, "errors": r.errors, "sent": r.sent, "answered": r.answered}


def bodies_of(X: np.ndarray) -> list[bytes]:
    return [orjson.dumps({"inputs": [x]}, option=orjson.OPT_SERIALIZE_NUMPY) for x in X]


def png_b64(img: np.ndarray, size: tuple[int, int] | None = None, fmt: str = "PNG") -> str:
    from PIL import Image

    im = Image.fromarray(np.round(img[0] * 255).astype(np.uint8), mode="L")
    if size:
        im = im.resize(size, Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def local_model(run: Path) -> ServedModel:
    ref = versions.current(run)
    return ServedModel.load(ref.version, ref.onnx, ref.card)


# -- tests -----------------------------------------------------------------

@pytest.fixture
def server(run_copy):
    s = Server(run_copy, "--max-body", "200000", "--max-items", "64")
    yield s
    s.stop()


SYS_MODULES_CHECK = """
import sys
from autopilot.cli import main
sys.argv = ["autopilot", "serve", RUN, "--port", PORT]
try:
    main()
finally:
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "sklearn", "optuna", "kornia"))
    print("HEAVY MODULES:", heavy, flush=True)
"""


def test_autopilot_serve_never_imports_torch(run_copy):
    """`autopilot serve RUN`, the documented command, as its own process:
    no torch module, no torch library mapped, even when it first builds the
    missing drift reference (which it does in a subprocess)."""
    shutil.rmtree(run_copy / "monitor")
    with Server(run_copy, command=[*autopilot_command(), "serve"]) as server:
        maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
        assert "libtorch" not in maps and "libc10" not in maps  # no torch shared library in the process
        assert "torch not loaded" in server.log()
        assert server.post("/v1/predict", {"inputs": [np.zeros((1, 8, 8))]})[0] == 200
        assert (run_copy / "monitor" / "reference.json").exists() and (run_copy / "monitor" / "rules.yaml").exists()
    # The same entry point in a process that reports its sys.modules after serving and shutting down.
    port = free_port()
    code = SYS_MODULES_CHECK.replace("RUN", repr(str(run_copy))).replace("PORT", repr(str(port)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.time() + 120
        while time.time() < end and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "serving" in out and "HEAVY MODULES: []" in out, out[-2000:]


def test_predict_matches_onnx_runtime_in_process(server, run_copy, digits_data):
    X = digits_data["test"][0][:20]
    model = local_model(run_copy)
    want = model.predict_proba(X)
    st, out = server.post("/v1/predict", {"inputs": X})
    assert st == 200, out
    assert out["model_version"] == "v1"
    preds = out["predictions"]
    assert len(preds) == 20 and len({p["id"] for p in preds}) == 20
    for p, w in zip(preds, want):
        assert p["class"] == model.classes[int(w.argmax())]
        got = np.array([p["probabilities"][c] for c in model.classes])
        assert np.allclose(got, w, atol=1e-5) and abs(got.sum() - 1) < 1e-4
    # flat lists of 64 numbers and 0..255 grey levels are read the same way
    st, flat = server.post("/v1/predict", {"inputs": [X[0].ravel().tolist(), (X[1] * 255).tolist()]})
    assert st == 200
    assert [p["class"] for p in flat["predictions"]] == [preds[0]["class"], preds[1]["class"]]


def test_predict_base64_images(server, run_copy, digits_data):
    X = digits_data["test"][0][:10]
    model = local_model(run_copy)
    q = np.round(X * 255) / 255  # what a PNG holds
    want = [model.classes[c] for c in model.predict_proba(q.astype(np.float32)).argmax(1)]
    st, out = server.post("/v1/predict", {"inputs": [png_b64(x) for x in X]})
    assert st == 200, out
    assert [p["class"] for p in out["predictions"]] == want
    # a larger PNG is resized to 8x8; a JPEG and a data: URL work too
    st, out = server.post("/v1/predict", {"inputs": [png_b64(X[0], (32, 32)), png_b64(X[0], fmt="JPEG"),
                                                     "data:image/png;base64," + png_b64(X[0])]})
    assert st == 200, out
    assert out["predictions"][2]["class"] == want[0]


def test_health_ready_model_and_metrics(server):
    assert server.get("/healthz") == (200, b'{"status":"ok"}')
    st, body = server.get("/readyz")
    assert st == 200 and json.loads(body)["model_version"] == "v1"
    st, body = server.get("/v1/model")
    card = json.loads(body)
    assert st == 200 and card["model_version"] == "v1" and card["input_shape"] == [1, 8, 8]
    assert card["classes"] == [str(d) for d in range(10)] and "test_accuracy" in card
    server.post("/v1/predict", {"inputs": [np.zeros((1, 8, 8))]})
    server.post("/v1/predict", {"inputs": [[1, 2]]})
    text = server.get("/metrics")[1].decode()
    for name in ("autopilot_requests_total", "autopilot_request_latency_seconds_bucket", "autopilot_batch_size_bucket",
                 "autopilot_predictions_total", "autopilot_input_drift_share", "autopilot_prediction_drift_psi",
                 "autopilot_mean_confidence", "autopilot_accuracy", "autopilot_latency_p99_ms", "autopilot_error_rate",
                 "autopilot_alert_firing", "autopilot_alerts_firing", "autopilot_model_info"):
        assert name in text, name
    assert server.metric("autopilot_requests_total")['{endpoint="predict",status="200"}'] == 1
    assert server.metric("autopilot_requests_total")['{endpoint="predict",status="422"}'] == 1
    assert server.metric("autopilot_model_info") == {'{version="v1"}': 1.0}


def test_concurrent_single_requests_share_onnx_runtime_calls(server, digits_data):
    X = digits_data["test"][0][:50]
    model_answers = {}
    res = blast(server.port, bodies_of(np.tile(X, (8, 1, 1, 1))), concurrency=32,
                on_response=lambda i, st, d: model_answers.setdefault(i % 50, set()).add(orjson.loads(d)["predictions"][0]["class"]))
    assert res["status"] == {200: 400} and res["errors"] == 0
    assert all(len(v) == 1 for v in model_answers.values())  # batching never mixes up answers
    calls = server.metric("autopilot_batch_size_count")[""]
    items = server.metric("autopilot_batch_size_sum")[""]
    assert items == 400
    assert calls < 400, "no two requests ever shared an ONNX Runtime call"


BAD = [
    (b"", 400, "empty body"),
    (b"{not json", 400, "not valid JSON"),
    (b'{"inputs": [[NaN]]}', 400, "not valid JSON"),
    (b'[1, 2]', 422, "expected a JSON object"),
    (b'{"x": 1}', 422, "expected a JSON object"),
    (b'{"inputs": 5}', 422, "must be a list"),
    (b'{"inputs": []}', 422, "empty"),
    (b'{"inputs": [[1, 2, 3]]}', 422, "expected shape [1, 8, 8]"),
    (b'{"inputs": [[[1, 2], [3]]]}', 422, "not a regular array"),
    (b'{"inputs": [{"a": 1}]}', 422, "trained on a CSV table"),
    (b'{"inputs": [null]}', 422, "null"),
    (orjson.dumps({"inputs": [[[["a"] * 8] * 8]]}), 422, "a string where numbers"),
    (orjson.dumps({"inputs": [[[[True] * 8] * 8]]}), 422, "true/false"),
    (orjson.dumps({"inputs": [[[[1e39] * 8] * 8]]}), 422, "non-finite"),
    (orjson.dumps({"inputs": [np.zeros((1, 8, 8)), [[[1e39] * 8] * 8]]}, option=orjson.OPT_SERIALIZE_NUMPY), 422,
     "inputs[1]: non-finite"),
    (b'{"inputs": ["@@@not base64@@@"]}', 400, "bad base64"),
    (b'{"inputs": ["' + base64.b64encode(b"hello, not an image") + b'"]}', 400, "not a readable PNG or JPEG"),
    (orjson.dumps({"inputs": [np.zeros((1, 8, 8))] * 65}, option=orjson.OPT_SERIALIZE_NUMPY), 413, "too many inputs"),
    (b'{"inputs": [' + b"0," * 150000 + b'0]}', 413, "over the limit"),
]


def test_bad_requests_get_clear_4xx_and_server_keeps_serving(server, run_copy, digits_data):
    for body, status, text in BAD:
        st, out = server.post("/v1/predict", body)
        assert st == status and text in out["detail"], (body[:60], st, out)
    # A GIF is refused by format
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="GIF")
    st, out = server.post("/v1/predict", {"inputs": [base64.b64encode(buf.getvalue()).decode()]})
    assert st == 415 and "GIF" in out["detail"]

    # 1000 malformed requests, concurrently: never a 5xx, never a dropped connection
    bodies = [b for b, st, _ in BAD if st != 413 or len(b) < 100000] * 60
    res = blast(server.port, bodies[:1000], concurrency=16)
    assert res["answered"] == 1000 and res["errors"] == 0
    assert all(400 <= st < 500 for st in res["status"]), res["status"]
    # ... and the server still answers correctly
    X = digits_data["test"][0][:30]
    want = [local_model(run_copy).classes[c] for c in local_model(run_copy).predict_proba(X).argmax(1)]
    st, out = server.post("/v1/predict", {"inputs": X})
    assert st == 200 and [p["class"] for p in out["predictions"]] == want
    assert not any(k.endswith('status="500"}') for k in server.metric("autopilot_requests_total"))


def test_request_log_and_feedback(server, run_copy, digits_data):
    import sqlalchemy as sa

    X, y = digits_data["test"][0][:40], digits_data["test"][1][:40]
    st, out = server.post("/v1/predict", {"inputs": X})
    ids = [p["id"] for p in out["predictions"]]
    for pid, label in zip(ids[:30], y[:30]):
        st, fb = server.post("/v1/feedback", {"id": pid, "label": str(label)})
        assert st == 200 and fb["recorded"], fb
    st, fb = server.post("/v1/feedback", {"id": ids[30], "label": int(y[30])})  # an index works too
    assert st == 200
    assert server.post("/v1/feedback", {"id": "nope", "label": "1"})[0] == 404
    st, fb = server.post("/v1/feedback", {"id": ids[0], "label": "cat"})
    assert st == 422 and "unknown label" in fb["detail"]
    assert server.post("/v1/feedback", {"label": "1"})[0] == 422

    db = run_copy / "serve" / "requests.db"
    eng = sa.create_engine(f"sqlite:///{db}")
    deadline = time.time() + 10
    while time.time() < deadline:  # written off the request path: wait for the writer thread
        with eng.connect() as c:
            n_fb = c.execute(sa.text("select count(*) from feedback")).scalar()
            n_resp = c.execute(sa.text("select count(*) from responses where endpoint='feedback'")).scalar()
        if n_fb == 31 and n_resp == 34:
            break
        time.sleep(0.1)
    with eng.connect() as c:
        rows = c.execute(sa.text("select id, ts, cls, confidence, latency_ms, x_mean, x_max, features, raw, model_version "
                                 "from predictions order by seq")).all()
        fb = dict(c.execute(sa.text("select id, label from feedback")).all())
        statuses = [r[0] for r in c.execute(sa.text("select status from responses where endpoint='feedback'"))]
    assert [r[0] for r in rows] == ids
    for r, x in zip(rows, X):
        assert r[1] > 0 and 0 <= r[2] < 10 and 0 < r[3] <= 1 and r[4] > 0 and r[9] == "v1"
        assert abs(r[5] - x.mean()) < 1e-5 and abs(r[6] - x.max()) < 1e-6
        assert len(np.frombuffer(r[7], np.float32)) == 16  # 8x8 pooled to 4x4
        assert np.array_equal(np.frombuffer(r[8], np.float32).reshape(1, 8, 8), x)
    assert len(fb) == 31 and all(fb[i] == int(lab) for i, lab in zip(ids, y[:31]))
    assert sorted(statuses) == [200] * 31 + [404, 422, 422]
    eng.dispose()


def test_request_log_keeps_raw_inputs_bounded(tmp_path):
    """Any SQLAlchemy URL; after close, raw inputs are kept exactly for the
    newest `raw_keep` predictions and for labelled ones."""
    import sqlalchemy as sa

    from autopilot.monitor.features import Reducer
    from autopilot.runtime.requestlog import RequestLog

    url = f"sqlite:///{tmp_path / 'elsewhere' / 'log.sqlite'}"
    log = RequestLog(url, Reducer("table", (3,)), raw_keep=100)
    log.start()
    x = np.arange(3, dtype=np.float32)[None]
    for i in range(300):
        log.log_predictions(f"r{i}", time.time(), [f"p{i}"], x + i, np.array([i % 2]), np.array([0.9]), 1.0, "v1")
        if i == 5:
            log.log_feedback("p5", 1, time.time(), 1)
        if i % 50 == 0:
            assert log.flush()
    log.close()
    assert log.written == 300 and log.dropped == 0
    with sa.create_engine(url).connect() as c:
        kept = [r[0] for r in c.execute(sa.text("select id from predictions where raw is not null order by seq"))]
        n = c.execute(sa.text("select count(*) from predictions")).scalar()
        raw5 = c.execute(sa.text("select raw from predictions where id = 'p5'")).scalar()
    assert n == 300
    assert kept == ["p5"] + [f"p{i}" for i in range(200, 300)]
    assert np.array_equal(np.frombuffer(raw5, np.float32), x[0] + 5)  # the labelled input, as sent


def test_promoted_version_is_swapped_in_without_failed_requests(run_copy, digits_data):
    """A new model version appears while clients hammer the server: every
    request succeeds, and answers come from v2 soon after; rollback returns to v1."""
    s = Server(run_copy, "--no-monitor")
    try:
        vs = versions.ensure_versions(run_copy)
        assert vs["current"] == "v1" and (run_copy / "model" / "v1" / "model.onnx").exists()
        seen = []
        stop = threading.Event()
        bodies = bodies_of(digits_data["test"][0][:50])
        out: dict = {}
        t = threading.Thread(target=lambda: out.update(blast(s.port, bodies, concurrency=8, stop=stop,
                                                             on_response=lambda i, st, d: seen.append(orjson.loads(d)["model_version"] if st == 200 else st))))
        t.start()
        time.sleep(1.0)
        # the same weights as a new version: what a retrain's promotion does to the files
        v2 = versions.add_version(run_copy, run_copy / "model" / "v1", {"source": "test"})
        versions.promote(run_copy, v2)
        end = time.time() + 15
        while time.time() < end and (not seen or seen[-1] != "v2"):
            time.sleep(0.1)
        time.sleep(0.5)
        assert versions.rollback(run_copy) == "v1"
        end = time.time() + 15
        while time.time() < end and seen[-1] != "v1":
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
        t.join(30)
        assert out["errors"] == 0 and set(out["status"]) == {200}, out
        assert out["sent"] == out["answered"]
        # v1 ... v2 ... v1, in that order, no other answers
        changes = [v for i, v in enumerate(seen) if i == 0 or seen[i - 1] != v]
        assert changes == ["v1", "v2", "v1"], changes
        assert s.metric("autopilot_model_swaps_total")[""] == 2
        hist = json.loads((run_copy / "model" / "versions.json").read_text())["history"]
        assert [h["action"] for h in hist] == ["init", "promote", "rollback"]
    finally:
        s.stop()


# -- a serving-only install ---------------------------------------------------------

def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[name.lower().replace("_", "-")] = version
    return out


def test_serving_requirements_are_exact_pins_from_requirements_txt():
    serve, full = pins(ROOT / "requirements-serve.txt"), pins(ROOT / "requirements.txt")
    assert serve and all(v for v in serve.values()), "every serving requirement is pinned with =="
    assert {k: full.get(k) for k in serve} == serve, "requirements-serve.txt must be a subset of requirements.txt"
    assert not {"torch", "kornia", "optuna", "scikit-learn", "torch-pruning", "onnx"} & set(serve)


@pytest.mark.slow
def test_serving_only_install_serves_a_run_without_torch(run_copy, digits_data, tmp_path, monkeypatch):
    """A fresh virtual environment with requirements-serve.txt and the package
    (--no-deps), no torch in it, serves a run made by `autopilot run` and
    answers what ONNX Runtime answers here."""
    # The new environment must import its own copy, not a source tree that
    # PYTHONPATH puts first (as when the suite runs from a work tree).
    monkeypatch.delenv("PYTHONPATH", raising=False)
    env = tmp_path / "serve-env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
    py = env / "bin" / "python"
    # --no-compile: byte-compiling the wheels is a third of the install's CPU, and proves nothing here.
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    pkg = tmp_path / "pkg"  # a clean copy, so the build leaves nothing in the work tree
    shutil.copytree(ROOT / "src", pkg / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, pkg / name)
    for args in (["-r", str(ROOT / "requirements-serve.txt")], ["--no-deps", str(pkg)]):
        res = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=1800, cwd=tmp_path)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    probe = ("import importlib.util, autopilot; print(importlib.util.find_spec('torch') is None, autopilot.__file__)")
    res = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    no_torch, where = res.stdout.split()
    assert no_torch == "True" and where.startswith(str(env)), res.stdout + res.stderr

    X = digits_data["test"][0][:25]
    want = local_model(run_copy).predict_proba(X)
    with Server(run_copy, command=[str(env / "bin" / "autopilot"), "serve"], cwd=tmp_path) as server:
        st, out = server.post("/v1/predict", {"inputs": X})
        assert st == 200, out
        got = np.array([[p["probabilities"][c] for c in sorted(p["probabilities"], key=int)] for p in out["predictions"]])
        assert np.allclose(got, want, atol=1e-5)
        st, fb = server.post("/v1/feedback", {"id": out["predictions"][0]["id"], "label": str(digits_data["test"][1][0])})
        assert st == 200 and fb["recorded"]
        assert server.metric("autopilot_requests_total")['{endpoint="predict",status="200"}'] == 1
        assert "torch not loaded" in server.log()
