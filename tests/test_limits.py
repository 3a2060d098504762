"""--max-params and --max-latency-ms: hard limits, checked before training,
and the shipped model within them by an independent ONNX Runtime timing."""
import json
import statistics
import time

import numpy as np
import onnxruntime as ort
import pytest
from optuna.trial import TrialState

from autopilot.models import build_model, count_params
from autopilot.search import limits, space
from tests.conftest import run_cli
from tests.digits_study import digits_study, run_trials

INFO = {"kind": "image", "input_shape": [1, 28, 28], "n_classes": 10, "mean": [0.1], "std": [0.3]}


def test_first_trials_are_narrowed_to_fit_the_parameter_limit():
    wide = space.first_params(INFO)
    assert all(space._n_params(p, INFO) > 20000 for p in wide)
    fitted = space.first_trials("components", INFO, max_params=20000)
    assert fitted and all(space._n_params(p, INFO) <= 20000 for p in fitted)
    # same architecture shape, narrower: each fitted point keeps the stage count
    # of the known-good point it came from (one that cannot fit is left out)
    assert fitted[0]["cnn2d_stages"] == wide[0]["cnn2d_stages"]
    assert all(any(q["cnn2d_stages"] == p["cnn2d_stages"] and q["aug_policy"] == p["aug_policy"] for q in wide)
               for p in fitted)


def test_latency_is_measured_in_onnx_runtime():
    small = build_model(space.to_config(space.fit_params(space.default_params(INFO), INFO, 5000), INFO)[0])
    large = build_model(space.to_config({**space.default_params(INFO), "cnn2d_s3_width": 128, "cnn2d_s3_blocks": 3},
                                        INFO)[0])
    a, b = limits.onnx_latency_ms(small, INFO["input_shape"]), limits.onnx_latency_ms(large, INFO["input_shape"])
    assert 0 < a < b


def test_configurations_over_the_limits_are_rejected_before_training(tmp_path):
    rd, data, info, config, study = digits_study(tmp_path, max_params=20000)
    big = {**space.default_params(info), "epochs": 10}
    study.enqueue_trial(big)
    study.enqueue_trial(space.fit_params(big, info, 20000))
    run_trials(rd, data, info, config, study, 2)
    rejected, trained = study.get_trials()
    assert rejected.state == TrialState.PRUNED and "max-params 20,000" in rejected.user_attrs["rejected"]
    assert rejected.constraints["params"] > 0 and not (rd.trial_dir(0) / "weights.safetensors").exists()
    assert trained.state == TrialState.COMPLETE and trained.user_attrs["params_count"] <= 20000
    assert trained.user_attrs["latency_ms"] > 0 and trained.constraints["params"] <= 0


def _ort_latency_ms(path, shape, runs=200):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    x = np.zeros((1, *shape), dtype=np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(10):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


@pytest.mark.slow
def test_the_shipped_model_respects_both_limits(tmp_path):
    max_ms = 0.5
    res = run_cli("run", "digits", "--trials", "3", "--max-params", "20000", "--max-latency-ms", max_ms, "--no-doctor",
                  "--cv", "0", "--no-compress", "--workers", "1", "--runs-dir", tmp_path, "--name", "lim", "--quiet")
    assert res.returncode == 0, res.stderr
    card = json.loads((tmp_path / "lim" / "model" / "card.json").read_text())
    assert card["params"] <= 20000
    model = build_model(json.loads((tmp_path / "lim" / "model" / "spec.json").read_text()))
    assert count_params(model) == card["params"]
    assert _ort_latency_ms(tmp_path / "lim" / "model" / "model.onnx", card["input_shape"]) <= max_ms


@pytest.mark.slow
def test_pareto_objective_searches_accuracy_and_latency(tmp_path):
    """--objective pareto: a two-objective study (accuracy up, latency down),
    trials return both, and the selection ships the fastest model within
    PARETO_TOLERANCE of the most accurate."""
    from autopilot.search.select import PARETO_TOLERANCE, best_trial

    rd, data, info, config, study = digits_study(tmp_path, objective="pareto")
    assert len(study.directions) == 2
    base = {**space.fit_params(space.default_params(info), info, 20000), "epochs": 10}
    study.enqueue_trial(base)
    study.enqueue_trial({**base, "cnn2d_s1_width": 64, "cnn2d_s2_width": 128, "cnn2d_stem_width": 48})
    run_trials(rd, data, info, config, study, 2)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2 and all(len(t.values) == 2 and t.values[1] == t.user_attrs["latency_ms"] for t in done)
    chosen = best_trial(study, rd).trial
    top = max(t.values[0] for t in done)
    assert chosen.values[0] >= top - PARETO_TOLERANCE
    assert all(t.values[1] >= chosen.values[1] for t in done if t.values[0] >= top - PARETO_TOLERANCE)
