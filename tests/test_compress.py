"""Compression: real training, real ONNX Runtime, real measurements.

The models are small (digits, trained here in seconds) so the whole file
runs in about a minute; the acceptance numbers on mnist5k / mnist1d come
from bench/compress.py on full runs.
"""
import copy
import time

import numpy as np
import pytest
import torch

from autopilot import run as autopilot_run
from autopilot.compress import (CONFIDENCE, choose, compress_budget_s, compress_run, drop_upper_points, measure,
                                pareto_front)
from autopilot.compress.distill import distill, distill_loss
from autopilot.compress.policy import MIN_GAIN, MIN_GAIN_MS
from autopilot.compress.prune import prune_channels
from autopilot.compress.quantize import calibration_samples, quantize_dynamic_int8, quantize_static_int8
from autopilot.compress.students import student_spec
from autopilot.config import RunError
from autopilot.export import check_parity, export_onnx
from autopilot.models import build_model, count_params, load_model
from autopilot.predict import predict
from autopilot.registry.versions import shipped_onnx
from autopilot.rundir import read_json
from autopilot.schemas import read
from autopilot.schemas.card import ModelCard
from autopilot.schemas.compress import CompressResults
from autopilot.train import as_inputs, evaluate, train

from .finished_run import finished_run, quiet_console

# With pytest-xdist (make test: --dist loadgroup) this file's tests stay on one
# worker, so its module-scoped real run is trained once.
pytestmark = pytest.mark.xdist_group("compress")

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


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A real run on digits, finished by the real final stage (model/ with
    its card), whose one trial is a small MLP to keep the file fast."""
    rd, ds, data, info = finished_run(tmp_path_factory.mktemp("runs"), "d")
    model, spec = load_model(rd.model_dir)
    return rd, data, info, model, spec


def _candidate(name, path, data, source_model, base_val_correct, *, baseline=False, method="fp32"):
    """A candidate dict measured exactly as the stage measures one."""
    rec = {"name": name, "method": method, "baseline": baseline, "params": count_params(source_model)}
    rec.update(measure.evaluate_file(path, data, measure.torch_logits(source_model, data["test"][0]), "fp32",
                                     base_val_correct))
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
    base_ok = measure.correct(rd.model_dir / "model.onnx", *data["val"])
    cands = [_candidate("fp32", rd.model_dir / "model.onnx", data, model, base_ok, baseline=True),
             _candidate("wide", tmp / "wide.onnx", data, wide, base_ok),
             _candidate("wide-int8d", tmp / "wide-int8d.onnx", data, wide, base_ok, method="int8-dynamic")]
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
        chosen, reason = choose(slower_candidates, target, 0.5)
        assert chosen is base, (target, reason)
        assert reason.startswith("kept the baseline") and "wide" in reason
    # Even with the loosest accuracy limit there is, slower never ships.
    assert choose(slower_candidates, "latency", 20)[0] is base


def test_choose_rules_on_measured_candidates(slower_candidates):
    # The wide MLP's real measurements as the baseline (its ~0.1 ms batch-1
    # latency keeps the rules below clear of the 10 us floor), variants of it
    # as candidates, each with its paired validation counts against it.
    base = {**copy.deepcopy(slower_candidates[1]), "name": "fp32", "baseline": True}
    n = base["val_paired"]["n"]
    base["val_paired"] = {"n": n, "b_only": 0, "a_only": 0, "diff": 0.0}
    assert n == 269  # digits' validation split; the counts below are examples of it

    def variant(name, speedup, lost=0, gained=0, parity=True, src=base):
        c = copy.deepcopy(src)
        c.update(name=name, baseline=False, val_acc=src["val_acc"] + (gained - lost) / n,
                 val_paired={"n": n, "b_only": gained, "a_only": lost, "diff": (gained - lost) / n})
        c["latency_ms"]["1"]["p50"] = src["latency_ms"]["1"]["p50"] / speedup
        c["parity"] = {**c["parity"], "passed": parity}
        return c

    fast_but_worse = variant("fast-but-worse", 3.0, lost=3)  # bound 3.22 points
    fast_no_parity = variant("fast-no-parity", 3.0, parity=False)
    barely_faster = variant("barely-faster", 1.03)  # inside the 5 % noise margin
    good = variant("good", 2.0, lost=1)  # bound 2.05 points: 269 examples cannot show a rarer loss
    # The same net loss of one example as "good", but out of 7 disagreements:
    # the evidence allows a larger drop.
    noisy = variant("noisy", 3.0, lost=4, gained=3)
    assert drop_upper_points(good) == pytest.approx(2.054, abs=1e-3)
    assert drop_upper_points(noisy) == pytest.approx(3.533, abs=1e-3)
    assert noisy["val_acc"] == pytest.approx(good["val_acc"])
    # Even a candidate that agrees everywhere is bounded at 1.36 points on
    # 269 examples: a half-point limit keeps the baseline, and says why.
    assert drop_upper_points(variant("same", 2.0)) == pytest.approx(1.362, abs=1e-3)
    cands = [base, fast_but_worse, fast_no_parity, barely_faster, good, noisy]
    chosen, reason = choose(cands, "latency", 0.5)
    assert chosen is base and "269 validation examples bound even a perfect match at 1.36 points" in reason
    assert "--max-drop 1.4 would accept one" in reason
    chosen, reason = choose(cands, "latency", 2.5)
    assert chosen["name"] == "good" and "2.00x faster" in reason
    assert f"{CONFIDENCE:.0%} upper bound 2.05" in reason and "within the 2.50-point limit" in reason
    assert "1 lost vs 0 gained of 269" in reason
    # A looser limit lets the faster, noisier candidate win (of the two
    # 3x-faster ones, the more accurate).
    assert choose(cands, "latency", 4.0)[0]["name"] == "noisy"
    # Ties on the target go to the higher validation accuracy.
    better_same_speed = variant("same-speed-better-acc", 2.0, gained=1)
    assert choose(cands + [better_same_speed], "latency", 2.5)[0]["name"] == "same-speed-better-acc"
    # A stricter limit than one example's worth rejects "good" and says why.
    chosen, reason = choose(cands, "latency", 2.0)
    assert chosen is base and reason.startswith("kept the baseline")
    assert "accuracy: fast-but-worse (bound 3.22), good (bound 2.05), noisy (bound 3.53)" in reason
    assert "parity: fast-no-parity" in reason and "perfect match" not in reason
    assert choose([base, barely_faster], "latency", 2.5)[0] is base
    assert choose([base, barely_faster], "latency", 2.5, min_gain=0.0)[0]["name"] == "barely-faster"
    # On a 20 us model, 40 % faster is 8 us: noise, not a reason to ship.
    tiny = copy.deepcopy(base)
    tiny["latency_ms"]["1"]["p50"] = 0.020
    assert choose([tiny, variant("8us", 0.020 / 0.012, src=tiny)], "latency", 2.5)[0] is tiny
    assert choose([tiny, variant("11us", 0.020 / 0.009, src=tiny)], "latency", 2.5)[0]["name"] == "11us"
    # The front is on the point estimates: "noisy" is faster at the same val acc as "good".
    assert pareto_front(cands, "latency") == {"noisy", "barely-faster"}
    with pytest.raises(ValueError):
        choose(cands, "speed", 0.5)
    with pytest.raises(ValueError):
        choose(cands[1:], "latency", 0.5)  # no baseline


def test_drop_limit_is_in_points_everywhere(digits_run, tmp_path, slower_candidates):
    """0.5 is half a point; 50 is not a wish but a typo, refused with one
    clear message before anything runs."""
    rd, *_ = digits_run
    for bad in (50, -1, float("nan")):
        with pytest.raises(RunError, match=r"max_drop must be in points of accuracy between 0 and 20"):
            compress_run(rd.path, max_drop=bad, budget_s=5)
        with pytest.raises(RunError, match="max_drop must be in points"):
            choose(slower_candidates, "latency", bad)
        with pytest.raises(RunError, match="max_drop"):
            autopilot_run("digits", max_drop=bad, runs_dir=tmp_path, trials=1)
    assert not list(tmp_path.iterdir())  # no half-made run
    assert not (rd.path / ".compress.tmp").exists()


def _expected_choice(cands: list[dict], target: str, max_drop: float) -> dict:
    """The documented rules (compress/policy.py), written out again on the
    recorded numbers: parity, the 95 % bound on the paired validation drop
    within max_drop points, >= 5 % (and for latency >= 10 us) better, then
    the best on the target, ties to higher validation accuracy."""
    cost = {"latency": lambda c: c["latency_ms"]["1"]["p50"], "size": lambda c: c["file_bytes"]}[target]
    base = next(c for c in cands if c["baseline"])
    ok = [c for c in cands if not c["baseline"] and c["parity"]["passed"]
          and c["drop_upper_points"] <= max_drop + 1e-9
          and cost(c) <= (1 - MIN_GAIN) * cost(base)
          and (target != "latency" or cost(base) - cost(c) >= MIN_GAIN_MS)]
    return min(ok, key=lambda c: (cost(c), -c["val_acc"], c["file_bytes"])) if ok else base


@pytest.mark.parametrize("target,max_drop", [("latency", 0.5), ("size", 3.0)])
def test_compress_run_end_to_end(digits_run, target, max_drop):
    """latency: a ~10 us MLP, where nothing can be 10 us faster (the stage
    sees that and keeps the baseline), and where 269 validation examples
    cannot vouch for half a point, so no trained candidate is tried; size,
    with a 3-point limit: int8 alone halves an MLP's file, and the prune and
    distill ladders train for real."""
    rd, data, info, model, spec = digits_run
    budget = 20.0
    t = time.monotonic()
    res = compress_run(rd.path, budget_s=budget, target=target, max_drop=max_drop, data=data, console=quiet_console())
    elapsed = time.monotonic() - t
    assert elapsed <= budget * 1.1 + 2, elapsed  # the stage keeps to its budget
    assert res == read_json(rd.path / "compress" / "results.json")
    results = read(CompressResults, rd.path)  # the writer's own schema
    assert results.max_drop == max_drop and results.confidence == 0.95  # points, as given
    names = [c["name"] for c in res["candidates"]]
    assert names[0] == "fp32" and res["candidates"][0]["baseline"]
    assert {"int8s", "int8d"} <= set(names)  # an MLP gets both quantisations
    assert any(p["step"].startswith(("prune", "distill")) for p in res["plan"])  # the ladders ran or said why not
    n_val = len(data["val"][1])
    for c in res["candidates"]:
        assert (rd.path / c["path"]).exists(), c["path"]
        assert c["file_bytes"] == (rd.path / c["path"]).stat().st_size
        assert 0 <= c["val_acc"] <= 1 and 0 <= c["test_acc"] <= 1 and c["params"] > 0
        for b in ("1", "64"):
            lat = c["latency_ms"][b]
            assert 0 < lat["p50"] <= lat["p90"] and lat["n"] >= 3 * measure.CALLS_PER_ROUND[int(b)]
            assert c["throughput_per_s"][b] > 0
        assert c["parity"]["inputs"] == len(data["test"][0]) and "passed" in c["parity"]
        # The paired counts add up to the accuracies, and the bound is at least the observed drop.
        vp = c["val_paired"]
        assert vp["n"] == n_val
        assert c["val_acc"] == pytest.approx(res["candidates"][0]["val_acc"] + (vp["b_only"] - vp["a_only"]) / n_val)
        assert c["drop_upper_points"] >= 100 * (vp["a_only"] - vp["b_only"]) / n_val - 1e-9
        if c["method"] != "fp32":
            assert c["path"].startswith("compress/candidates/")
    assert res["measurement"]["threads"] == 1
    # The documented decision, from the rules written out again on the recorded numbers.
    expected = _expected_choice(res["candidates"], target, max_drop)
    assert res["chosen"] == expected["name"], res["reason"]
    chosen, reason = choose(res["candidates"], res["target"], res["max_drop"])
    assert chosen["name"] == res["chosen"] and reason == res["reason"]
    assert "upper bound" in reason
    shipped = rd.path / "compress" / "chosen.onnx"
    if target == "latency":
        assert res["candidates"][0]["latency_ms"]["1"]["p50"] < 0.05  # the premise: a ~10 us model
        assert chosen["baseline"] and reason.startswith("kept the baseline") and not shipped.exists()
        skipped = [p for p in res["plan"] if p["step"] == "prune and distill"]
        assert skipped and skipped[0]["status"] == "skipped" and f"{n_val} validation examples bound" in skipped[0]["why"]
        assert not [c for c in res["candidates"] if c["method"] in ("prune", "distill")]
    else:
        assert not chosen["baseline"] and chosen["file_bytes"] < 0.6 * res["candidates"][0]["file_bytes"]
        assert shipped.read_bytes() == (rd.path / chosen["path"]).read_bytes()
        trained = [c for c in res["candidates"] if c["method"] in ("prune", "distill")]
        assert trained and all(c["train"]["epochs_run"] >= 1 for c in trained)
    # The card names what predict and serve load, with that file's own figures.
    card = read(ModelCard, rd.path)
    assert card.shipped.name == res["chosen"] and card.shipped.chosen_by == "compress"
    assert rd.path / card.shipped.file == shipped_onnx(rd.path)
    assert card.shipped.test_accuracy == chosen["test_acc"] and card.shipped.val_accuracy == chosen["val_acc"]
    assert card.shipped.latency_ms_batch1 == chosen["latency_ms"]["1"]["p50"]
    assert card.fp32.file == "model/model.onnx" and card.fp32.test_accuracy == res["candidates"][0]["test_acc"]
    pred, _ = predict(rd.path, data["test"][0])
    assert float((pred == data["test"][1]).mean()) == pytest.approx(card.shipped.test_accuracy, abs=1e-12)


@pytest.mark.slow
def test_a_component_spec_run_is_distilled(tmp_path):
    """A run whose model is a version-2 (component) spec: the distillation
    ladder names and trains its students (it once failed on every such run
    with KeyError 'width', a version-1 field)."""
    from tests.finished_run import SMALL_MLP

    v2 = {k: v for k, v in SMALL_MLP.items() if k not in ("mlp_width", "mlp_depth", "residual")}
    v2.update({"mlp_layers": 2, "mlp_l1_width": 64, "mlp_l2_width": 64, "mlp_l2_residual": False})
    rd, _, data, _ = finished_run(tmp_path, "v2", params=v2)
    assert load_model(rd.model_dir)[1]["version"] == 2
    res = compress_run(rd.path, budget_s=30.0, target="size", max_drop=3.0, data=data, console=quiet_console())
    assert not [p for p in res["plan"] if p["status"] == "failed"], res["plan"]
    students = [c for c in res["candidates"] if c["method"] == "distill"]
    assert students and all(c["name"].startswith("distill-d") for c in students), res["plan"]
    assert all(c["params"] < res["candidates"][0]["params"] for c in students)


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
    # It keeps its last epoch (its schedule's end), not the epoch its check data liked best.
    assert res.best_epoch == 8 and res.best_val_acc == res.history[-1].val_acc
    assert evaluate(student, as_inputs(data["val"][0]), torch.as_tensor(data["val"][1]))[1] == pytest.approx(
        res.history[-1].val_acc)
    with pytest.raises(ValueError, match="keep"):
        train(build_model(sspec), data["train"], data["val"], HP, kind=info["kind"], keep="first")


def test_a_student_keeps_its_last_epoch_not_the_best_on_its_check_data(digits_run):
    """With validation labels shuffled, the best validation epoch is an
    early one by chance; distill must still hand back the last epoch's
    weights, and train(keep="best") the best epoch's."""
    _, data, info, _, _ = digits_run
    noisy_val = (data["val"][0], np.random.default_rng(0).permutation(data["val"][1]))
    hp = {**HP, "epochs": 6}
    torch.manual_seed(0)
    teacher = build_model(_spec(info))
    train(teacher, data["train"], data["val"], hp, kind=info["kind"], device="cpu")
    runs = {}
    for keep in ("best", "last"):
        torch.manual_seed(1)
        model, seen = build_model(_spec(info)), []
        res = train(model, data["train"], noisy_val, hp, kind=info["kind"], seed=1, device="cpu", keep=keep,
                    on_epoch=lambda _m, mod: seen.append({k: v.clone() for k, v in mod.state_dict().items()}))
        runs[keep] = res, model, seen
    res, model, seen = runs["best"]
    assert res.best_epoch < 6  # the premise: the "best" epoch on shuffled labels is not the last
    assert all(torch.equal(v, seen[res.best_epoch - 1][k]) for k, v in model.state_dict().items())
    res, model, seen = runs["last"]
    assert res.best_epoch == 6 and all(torch.equal(v, seen[-1][k]) for k, v in model.state_dict().items())

    torch.manual_seed(1)
    student = build_model(_spec(info))
    res = distill(teacher, student, data["train"], noisy_val, hp, kind=info["kind"], seed=1, device="cpu")
    by_val = max(res.history, key=lambda m: (m.val_acc, -m.val_loss)).epoch
    assert by_val < 6 and res.best_epoch == 6  # the old rule would have handed back epoch `by_val`
    assert evaluate(student, as_inputs(noisy_val[0]), torch.as_tensor(noisy_val[1]))[1] == pytest.approx(
        res.history[-1].val_acc)


def test_default_budget():
    assert compress_budget_s(600) == 150
    assert compress_budget_s(120) == 60  # at least a minute
    assert compress_budget_s(None) == 120  # a --trials run has no budget to take a share of


def test_a_ladder_backs_off_only_when_a_milder_rung_could_pass():
    """Fashion-MNIST's case: prune 50 % may lose 2.53 points against a
    0.50 limit, and prune 30 % then lost 1.54: no retry from that far off.
    Close to the limit the ladder backs off; a rung that kept accuracy is
    followed by a harder one."""
    from autopilot.compress.stage import (BACKOFF_WITHIN, PRUNE_DOWN, PRUNE_UP, STUDENT_DOWN, next_rung)

    assert next_rung("prune", True, 0.2, 0.5)[:2] == (PRUNE_UP, True)
    assert next_rung("prune", False, 0.9, 0.5)[:2] == (PRUNE_DOWN, True)
    share, go, why = next_rung("prune", False, 2.53, 0.5)
    assert (share, go) == (PRUNE_DOWN, False) and "2.53" in why and f"{BACKOFF_WITHIN:g}x" in why
    assert next_rung("distill", False, 3.51, 0.5)[:2] == (STUDENT_DOWN, False)
    assert next_rung("distill", False, 3.51, 3.0)[:2] == (STUDENT_DOWN, True)  # a looser --max-drop
