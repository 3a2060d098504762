"""The report reads a run directory (real or half-written) and writes one HTML file."""
import json
import re

import numpy as np
import pytest

from autopilot.report import write_report

CLASSES = ["zero", "one", "two", "three"]


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def make_run(root, classes=CLASSES, parts=("run", "profile", "search", "metrics", "card", "spec"), seed=0):
    """A fake but well-formed run directory following the contract."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    d = root / "digits-001"
    d.mkdir()
    if "run" in parts:
        _write(d / "run.json", {
            "name": "digits-001", "created": "2025-01-02T03:04:05+00:00", "autopilot_version": "0.1.0", "seed": 0,
            "config": {"data": "digits", "budget_s": 120.0, "trials": None, "sampler": "tpe", "pruner": "hyperband",
                       "workers": 2},
            "versions": {"python": "3.12.1", "torch": "2.13.0", "optuna": "5.0.0", "onnxruntime": "1.32.0"},
            "data": {"name": "digits", "kind": "image", "source": "sklearn.datasets.load_digits", "examples": 1797,
                     "input_shape": [1, 8, 8], "classes": list(classes), "class_counts": [int(x) for x in rng.integers(150, 200, k)],
                     "feature_names": None, "skipped_files": 0, "fingerprint": "sha256:abc123"},
            "status": "done"})
    if "profile" in parts:
        split = lambda n: {"size": n, "class_counts": [n // k] * k}  # noqa: E731
        _write(d / "data" / "profile.json", {
            "splits": {"train": split(1257), "val": split(270), "test": split(270)},
            "imbalance_ratio": 1.1, "duplicates_in_train": 2, "leaks": {"val": 0, "test": 1},
            "pixel_mean": 0.31, "constant_features": 3})
    if "search" in parts:
        trials, t = [], 0.0
        for n in range(14):
            state = "FAIL" if n == 5 else "PRUNED" if n % 4 == 3 else "COMPLETE"
            dur = float(rng.uniform(2, 6))
            t += dur
            trials.append({"number": n, "state": state,
                           "value": None if state == "FAIL" else float(rng.uniform(0.80, 0.97)),
                           "params": {"lr": float(10 ** rng.uniform(-4, -2)), "width": int(rng.choice([32, 64])),
                                      "family": "cnn"},
                           "duration_s": dur, "finished_s": t, "epochs": 8,
                           "error": "Traceback (most recent call last):\nRuntimeError: shape mismatch" if state == "FAIL" else None})
        best = max((x for x in trials if x["state"] == "COMPLETE"), key=lambda x: x["value"])["number"]
        _write(d / "search.json", {"sampler": "TPESampler", "pruner": "HyperbandPruner", "started_at": 1.7e9,
                                   "elapsed_s": t, "best_trial": best, "trials": trials})
    else:
        best = 0
    if "metrics" in parts:
        rows = [{"epoch": e, "train_loss": 2 / e, "train_acc": 1 - 0.5 / e, "val_loss": 2.2 / e,
                 "val_acc": 1 - 0.6 / e, "lr": 1e-3 / e, "time_s": 0.4} for e in range(1, 9)]
        p = d / "trials" / str(best) / "metrics.jsonl"
        p.parent.mkdir(parents=True)
        p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if "card" in parts:
        cm = np.diag(rng.integers(50, 70, k)) + rng.integers(0, 3, (k, k))
        _write(d / "model" / "card.json", {
            "test_accuracy": 0.9344, "test_accuracy_se": 0.0151, "val_accuracy": 0.9481, "params": 12345,
            "family": "cnn", "data_fingerprint": "sha256:abc123", "seed": 0, "budget_s": 120.0, "elapsed_s": 118.0,
            "best_trial": best, "confusion_matrix": cm.tolist(),
            "per_class_accuracy": (np.diag(cm) / cm.sum(1)).tolist(),
            "onnx_parity": {"max_abs_diff": 2.4e-6, "argmax_agree": 1.0},
            "versions": {"python": "3.12.1", "torch": "2.13.0"},
            "hyperparameters": {"lr": 0.003, "batch_size": 64, "epochs": 8}})
    if "spec" in parts:
        _write(d / "model" / "spec.json", {"family": "cnn", "widths": [32, 64], "depth": 2, "dropout": 0.1})
    return d


def _no_external_refs(html):
    stripped = re.sub(r'\sxmlns(:\w+)?="[^"]*"', "", html)
    assert "http://" not in stripped and "https://" not in stripped
    assert "<script" not in html.lower() and "<link" not in html.lower() and " src=" not in html


def test_full_run(tmp_path):
    d = make_run(tmp_path)
    _write(d / "doctor.json", {"findings": [
        {"id": "class-imbalance", "severity": "warning", "evidence": {"ratio": 1.1}, "why": "rare classes",
         "suggestion": "weight the loss"}]})
    out = write_report(d)
    assert out == d / "report.html" and out.is_file()
    html = out.read_text(encoding="utf-8")
    assert "93.4" in html  # test accuracy 0.9344
    for c in CLASSES:
        assert c in html
    assert html.count("<svg") >= 4  # class counts, search progress, learning curves, confusion matrix
    assert "class-imbalance" in html and "weight the loss" in html
    assert "RuntimeError: shape mismatch" in html
    assert "could not be rendered" not in html
    assert "missing" not in html.lower()
    _no_external_refs(html)
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing behind


def test_only_run_json(tmp_path):
    d = make_run(tmp_path, parts=("run",))
    html = write_report(d).read_text(encoding="utf-8")
    assert "model/card.json" in html and "missing" in html and "no model" in html
    assert "could not be rendered" not in html
    _no_external_refs(html)


def test_empty_and_malformed_parts(tmp_path):
    d = make_run(tmp_path, parts=("run", "search", "metrics"))
    (d / "data").mkdir()
    (d / "data" / "profile.json").write_text('{"splits": {"train": ', encoding="utf-8")  # cut mid-write
    p = next((d / "trials").iterdir()) / "metrics.jsonl"
    p.write_text(p.read_text() + '{"epoch": 9, "train_lo', encoding="utf-8")
    _write(d / "model" / "card.json", {"test_accuracy": "n/a", "confusion_matrix": [[1, 2], [3]],
                                       "per_class_accuracy": None})
    html = write_report(d).read_text(encoding="utf-8")
    assert "not valid JSON" in html and "unreadable line" in html
    assert "could not be rendered" not in html
    # A directory with nothing in it still gets a report.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "run.json" in write_report(empty).read_text(encoding="utf-8")


def test_class_names_are_escaped(tmp_path):
    evil = "<script>alert('x')</script>"
    d = make_run(tmp_path, classes=["cat", evil, "a&b", "$x$"])
    html = write_report(d).read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html and "a&amp;b" in html
    assert "could not be rendered" not in html


def test_many_classes_show_worst_table(tmp_path):
    classes = [f"c{i:02d}" for i in range(40)]
    d = make_run(tmp_path, classes=classes)
    html = write_report(d).read_text(encoding="utf-8")
    assert "too many for a readable heat map" in html and "most often predicted as" in html
    assert "Confusion matrix (test)" not in html  # the heat-map title
    assert "could not be rendered" not in html


def test_missing_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nope")


def test_compression_section_shows_every_candidate_and_the_choice(tmp_path):
    import json

    d = make_run(tmp_path)
    (d / "compress").mkdir()
    cand = lambda name, p50, base=False: {"name": name, "method": name, "baseline": base, "val_acc": 0.99, "test_acc": 0.98,
                                          "file_bytes": 4096, "params": 100, "latency_ms": {"1": {"p50": p50}, "64": {"p50": 1.0}},
                                          "throughput_per_s": {"64": 6400.0}, "pareto": not base}
    (d / "compress" / "results.json").write_text(json.dumps({
        "chosen": "int8s", "reason": "int8s: 2.0x faster <within limit>", "target": "latency", "elapsed_s": 12.0,
        "candidates": [cand("fp32", 0.2, True), cand("int8s", 0.1)]}))
    html = write_report(d).read_text()
    assert "<h2>Compression" in html and "int8s" in html and "fp32" in html
    assert "&lt;within limit&gt;" in html and "<within limit>" not in html
