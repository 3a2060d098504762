"""Compression: real training, real ONNX Runtime, real measurements.

The models are small (digits, trained here in seconds) so the whole file
runs in about a minute; the acceptance numbers on mnist5k / mnist1d come
from bench/compress.py on full runs.
"""
import copy
import io
import time

import numpy as np
import pytest
import torch
from rich.console import Console

from autopilot.compress import choose, compress_budget_s, compress_run, measure, pareto_front
from autopilot.compress.distill import distill, distill_loss
from autopilot.compress.prune import prune_channels
from autopilot.compress.quantize import calibration_samples, quantize_dynamic_int8, quantize_static_int8
from autopilot.compress.students import student_spec
from autopilot.export import check_parity, export_onnx
from autopilot.models import build_model, count_params, save_model
from autopilot.predict import predict
from autopilot.rundir import read_json, write_json
from autopilot.data.stats import arrays, data_info
from autopilot.config import RunConfig
from autopilot.runner import create_run
from autopilot.train import train

HP = {"epochs": 12, "lr": 3e-3, "batch_size": 64, "aug_strength": 0.0}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Training here with 2 OpenMP threads while another job holds the second
    # core made steps ~10x slower; one thread keeps the file's time steady.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spec(info, **kw):
    return {"family": "mlp", "input_shape": info["input_shape"], "n_classes": info["n_classes"],
            "mean": info["mean"], "std": info["std"], "width": 64, "depth": 2, "residual": False,
            "batch_norm": True, "dropout": 0.0, **kw}


def _quiet_console():
    return Console(file=io.StringIO(), width=160)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A real run directory (run.json, splits) on digits whose final model is
    a small MLP trained here instead of by a search, to keep the test fast."""
    root = tmp_path_factory.mktemp("runs")
    config = RunConfig(data="digits", trials=1, pruner="none", workers=1, device="cpu")
    rd, ds, splits = create_run(config, runs_dir=root, name="d", overwrite=False, doctor=False)
    data, info = arrays(ds, splits), data_info(ds, splits)
    torch.manual_seed(0)
    spec = _spec(info)
    model = build_model(spec)
    train(model, data["train"], data["val"], HP, kind=info["kind"], device="cpu")
    model.eval()
    save_model(rd.model_dir, model, spec)
    export_onnx(model, info["input_shape"], rd.model_dir / "model.onnx")
    write_json(rd.model_dir / "card.json", {"kind": info["kind"], "family": "mlp", "params": count_params(model),
                                            "hyperparameters": {"training": HP}})
    return rd, data, info, model, spec


def _candidate(name, path, data, source_model, *, baseline=False, method="fp32"):
    """A candidate dict measured exactly as the stage measures one."""
    rec = {"name": name, "method": method, "baseline": baseline, "params": count_params(source_model)}
    rec.update(measure.evaluate_file(path, data, measure.torch_logits(source_model, data["test"][0]), "fp32"))
    return rec


@pytest.fixture(scope="module")
def slower_candidates(digits_run, tmp_path_factory):
    """Real, measured candidates that are all slower and bigger than the
    baseline: a much wider MLP, and that MLP quantised (dynamic int8)."""
    rd, data, info, model, spec = digits_run
    tmp = tmp_path_factory.mktemp("slow")
    torch.manual_seed(1)
    wide = build_model(_spec(info, width=512, depth=4))
    train(wide, data["train"], data["val"], {**HP, "epochs": 4}, kind=info["kind"], device="cpu")
    wide.eval()
    export_onnx(wide, info["input_shape"], tmp / "wide.onnx")
    quantize_dynamic_int8(tmp / "wide.onnx", tmp / "wide-int8d.onnx")
    cands = [_candidate("fp32", rd.model_dir / "model.onnx", data, model, baseline=True),
             _candidate("wide", tmp / "wide.onnx", data, wide),
             _candidate("wide-int8d", tmp / "wide-int8d.onnx", data, wide, method="int8-dynamic")]
    lat = measure.measure_latency({"fp32": rd.model_dir / "model.onnx", "wide": tmp / "wide.onnx",
                                   "wide-int8d": tmp / "wide-int8d.onnx"}, data["test"][0], budget_s=2.0)
    for c in cands:
        c.update(lat[c["name"]])
    return cands


def test_choose_keeps_baseline_when_every_candidate_is_slower(slower_candidates):
    base, wide, wide_q = slower_candidates
    # The premise, as measured: both are slower and bigger than the baseline.
    for c in (wide, wide_q):
        assert c["latency_ms"]["1"]["p50"] > base["latency_ms"]["1"]["p50"]
        assert c["latency_ms"]["64"]["p50"] > base["latency_ms"]["64"]["p50"]
        assert c["file_bytes"] > base["file_bytes"]
        assert c["parity"]["passed"]
    for target in ("latency", "size", "throughput"):
        chosen, reason = choose(slower_candidates, target, 0.005)
        assert chosen is base, (target, reason)
        assert reason.startswith("kept the baseline") and "wide" in reason
    # Even with no accuracy limit at all, slower never ships.
    assert choose(slower_candidates, "latency", 1.0)[0] is base


def test_choose_rules_on_measured_candidates(slower_candidates):
    # The wide MLP's real measurements as the baseline (its ~0.1 ms batch-1
    # latency keeps the rules below clear of the 10 us floor), variants of it
    # as candidates.
    base = {**copy.deepcopy(slower_candidates[1]), "name": "fp32", "baseline": True}

    def variant(name, speedup, drop, parity=True, src=base):
        c = copy.deepcopy(src)
        c.update(name=name, baseline=False, val_acc=src["val_acc"] - drop)
        c["latency_ms"]["1"]["p50"] = src["latency_ms"]["1"]["p50"] / speedup
        c["parity"] = {**c["parity"], "passed": parity}
        return c

    fast_but_worse = variant("fast-but-worse", 3.0, 0.006)
    fast_no_parity = variant("fast-no-parity", 3.0, 0.0, parity=False)
    barely_faster = variant("barely-faster", 1.03, 0.0)  # inside the 5 % noise margin
    good = variant("good", 2.0, 0.004)
    better_same_speed = variant("same-speed-better-acc", 2.0, 0.001)
    cands = [base, fast_but_worse, fast_no_parity, barely_faster, good]
    chosen, reason = choose(cands, "latency", 0.005)
    assert chosen["name"] == "good" and "2.00x faster" in reason
    # Ties on the target go to the higher validation accuracy.
    assert choose(cands + [better_same_speed], "latency", 0.005)[0]["name"] == "same-speed-better-acc"
    # A stricter limit rejects "good" (0.4 points lost) and keeps the baseline.
    assert choose(cands, "latency", 0.003)[0] is base
    assert choose([base, barely_faster], "latency", 0.005)[0] is base
    assert choose([base, barely_faster], "latency", 0.005, min_gain=0.0)[0]["name"] == "barely-faster"
    # On a 20 us model, 40 % faster is 8 us: noise, not a reason to ship.
    tiny = copy.deepcopy(base)
    tiny["latency_ms"]["1"]["p50"] = 0.020
    assert choose([tiny, variant("8us", 0.020 / 0.012, 0.0, src=tiny)], "latency", 0.005)[0] is tiny
    assert choose([tiny, variant("11us", 0.020 / 0.009, 0.0, src=tiny)], "latency", 0.005)[0]["name"] == "11us"
    assert "good" in pareto_front(cands, "latency") and "fp32" not in pareto_front(cands, "latency")
    with pytest.raises(ValueError):
        choose(cands, "speed", 0.005)
    with pytest.raises(ValueError):
        choose(cands[1:], "latency", 0.005)  # no baseline


@pytest.mark.parametrize("target", ["latency", "size"])
def test_compress_run_end_to_end(digits_run, target):
    """latency: a ~20 us MLP, where nothing is clearly faster (the stage
    should see that quickly and keep the baseline); size: everything smaller
    qualifies, so the prune and distill ladders train for real."""
    rd, data, info, model, spec = digits_run
    budget = 20.0
    t = time.monotonic()
    res = compress_run(rd.path, budget_s=budget, target=target, data=data, console=_quiet_console())
    elapsed = time.monotonic() - t
    assert elapsed <= budget * 1.1 + 2, elapsed  # the stage keeps to its budget
    assert res == read_json(rd.path / "compress" / "results.json")
    names = [c["name"] for c in res["candidates"]]
    assert names[0] == "fp32" and res["candidates"][0]["baseline"]
    assert {"int8s", "int8d"} <= set(names)  # an MLP gets both quantisations
    assert any(p["step"].startswith(("prune", "distill")) for p in res["plan"])  # the ladders ran or said why not
    for c in res["candidates"]:
        assert (rd.path / c["path"]).exists(), c["path"]
        assert c["file_bytes"] == (rd.path / c["path"]).stat().st_size
        assert 0 <= c["val_acc"] <= 1 and 0 <= c["test_acc"] <= 1 and c["params"] > 0
        for b in ("1", "64"):
            lat = c["latency_ms"][b]
            assert 0 < lat["p50"] <= lat["p90"] and lat["n"] >= 3 * measure.CALLS_PER_ROUND[int(b)]
            assert c["throughput_per_s"][b] > 0
        assert c["parity"]["inputs"] == len(data["test"][0]) and "passed" in c["parity"]
        if c["method"] != "fp32":
            assert c["path"].startswith("compress/candidates/")
    assert res["measurement"]["threads"] == 1
    # The recorded choice is what the pure policy gives on the recorded numbers.
    chosen, reason = choose(res["candidates"], res["target"], res["max_drop"])
    assert chosen["name"] == res["chosen"] and reason == res["reason"]
    base = res["candidates"][0]
    shipped = rd.path / "compress" / "chosen.onnx"
    if chosen["baseline"]:
        assert not shipped.exists()
    else:
        assert shipped.read_bytes() == (rd.path / chosen["path"]).read_bytes()
        key = {"latency": lambda c: c["latency_ms"]["1"]["p50"], "size": lambda c: c["file_bytes"]}[target]
        assert key(chosen) < key(base)
        assert chosen["val_acc"] >= base["val_acc"] - 0.005 - 1e-9 and chosen["parity"]["passed"]
    if target == "size":
        assert not chosen["baseline"]  # int8 alone halves an MLP's file
        trained = [c for c in res["candidates"] if c["method"] in ("prune", "distill")]
        assert trained and all(c["train"]["epochs_run"] >= 1 for c in trained)
    # `autopilot predict` serves what was chosen.
    pred, _ = predict(rd.path, data["test"][0])
    assert abs(float((pred == data["test"][1]).mean()) - chosen["test_acc"]) < 1e-9


def test_distill_loss_matches_reference():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g) * 3
    y = torch.randint(0, 5, (8,), generator=g)
    T, a = 3.0, 0.7

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ps, pt = softmax(s.numpy() / T), softmax(t.numpy() / T)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(1).mean()
    ce = -np.log(softmax(s.numpy())[np.arange(8), y.numpy()]).mean()
    ref = a * T * T * kl + (1 - a) * ce
    assert float(distill_loss(s, t, y, T, a)) == pytest.approx(ref, rel=1e-5)
    # A student that equals its teacher pays only the hard-label term.
    assert float(distill_loss(t, t, y, T, 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_prune_quantize_and_distill_a_cnn(digits_run, tmp_path):
    _, data, info, _, _ = digits_run
    spec = {**_spec(info), "family": "cnn2d", "width": 16, "depth": 2, "kernel_size": 3, "pool": "max", "head": "gap"}
    torch.manual_seed(0)
    cnn = build_model(spec)
    train(cnn, data["train"], data["val"], {**HP, "epochs": 6}, kind=info["kind"], device="cpu")
    cnn.eval()
    Xte = data["test"][0]

    # Structured pruning removes channels for real and still exports exactly.
    pruned = prune_channels(cnn, spec["input_shape"], 0.5)
    assert count_params(pruned) < 0.4 * count_params(cnn)
    assert count_params(cnn) == count_params(build_model(spec))  # the source is untouched
    export_onnx(pruned, spec["input_shape"], tmp_path / "pruned.onnx")
    assert check_parity(pruned, tmp_path / "pruned.onnx", Xte)["passed"]

    # int8 static: smaller file, argmax parity with the fp32 PyTorch source.
    export_onnx(cnn, spec["input_shape"], tmp_path / "cnn.onnx")
    quantize_static_int8(tmp_path / "cnn.onnx", tmp_path / "cnn-int8.onnx", calibration_samples(data["train"][0], 256))
    rep = measure.evaluate_file(tmp_path / "cnn-int8.onnx", data, measure.torch_logits(cnn, Xte), "cnn")
    assert rep["parity"]["passed"], rep["parity"]
    assert rep["file_bytes"] < 0.5 * (tmp_path / "cnn.onnx").stat().st_size

    # A student of at most ~1/4 of the teacher's parameters, same family, learns from its logits.
    sspec = student_spec(spec, 1 / 4)
    assert sspec["family"] == "cnn2d" and count_params(build_model(sspec)) <= 1.05 * count_params(cnn) / 4
    torch.manual_seed(0)
    student = build_model(sspec)
    res = distill(cnn, student, data["train"], data["val"], {**HP, "epochs": 8}, kind=info["kind"], device="cpu")
    assert res.epochs_run == 8 and res.best_val_acc > 0.8


def test_default_budget():
    assert compress_budget_s(600) == 150
    assert compress_budget_s(120) == 60  # at least a minute
    assert compress_budget_s(None) == 120  # a --trials run has no budget to take a share of
