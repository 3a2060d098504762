"""One way of measuring every candidate: accuracy, size, parity, latency.

Latency is what the policy ships on, and this machine is shared, so:
  - every session runs with ONE intra-op thread (and one inter-op thread):
    the numbers then say what one core of a server gets, and another job
    on the second core disturbs them least;
  - all candidates are timed together at the end, in interleaved rounds
    whose order rotates, so a burst of load elsewhere hits every candidate
    alike instead of making whichever ran at that moment look slow;
  - each call is timed on its own and we keep medians (p50) and p90.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.dataset import as_float

THREADS = 1
BATCHES = (1, 64)
PARITY_MIN_AGREE = 0.995  # share of test inputs whose argmax must agree with the PyTorch source
CALLS_PER_ROUND = {1: 20, 64: 3}  # batch-1 calls are ~100x cheaper, so take more of them
MIN_ROUNDS, MAX_ROUNDS = 3, 40


def ort_session(path: str | Path, threads: int = THREADS):
    """An ONNX Runtime session with all graph optimisations (constant folding,
    conv+BN fusion, QDQ fusion into int8 kernels, NCHWc layouts)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # int8 graphs warn about every unfused node otherwise
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_logits(path: str | Path, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
    sess = ort_session(path, threads=THREADS)
    name = sess.get_inputs()[0].name
    out = [sess.run(None, {name: as_float(X[i : i + batch_size])})[0]
           for i in range(0, len(X), batch_size)]
    return np.concatenate(out)


def torch_logits(model, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
    import torch

    model = model.eval().cpu()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(as_float(X[i : i + batch_size])))
                          for i in range(0, len(X), batch_size)]).numpy()


def parity(reference: np.ndarray, got: np.ndarray, against: str) -> dict:
    """Argmax agreement with the PyTorch fp32 source. For int8 files the
    logits differ by design, so the bar is agreement, not max abs diff
    (which is recorded for information)."""
    agree = float((reference.argmax(1) == got.argmax(1)).mean()) if len(got) else 1.0
    return {"inputs": int(len(got)), "against": against, "argmax_agree": agree,
            "max_abs_diff": float(np.abs(reference - got).max()) if len(got) else 0.0,
            "min_agree": PARITY_MIN_AGREE, "passed": bool(agree >= PARITY_MIN_AGREE)}


def correct(path: str | Path, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example correctness of an ONNX file in ONNX Runtime (bools)."""
    return onnx_logits(path, X).argmax(1) == y


def evaluate_file(path: str | Path, data: dict, reference_test_logits: np.ndarray | None, against: str,
                  baseline_val_correct: np.ndarray | None = None) -> dict:
    """Validation and test accuracy of an ONNX file in ONNX Runtime, its size,
    its parity against the PyTorch model it came from (on test inputs), and,
    given the baseline's per-example validation correctness, the paired
    counts against it (`val_paired`: b = this file, a = the baseline), which
    is all the policy needs to bound the drop; the arrays are not kept."""
    from ..stats import paired

    Xva, yva = data["val"]
    Xte, yte = data["test"]
    val = onnx_logits(path, Xva)
    test = onnx_logits(path, Xte)
    val_ok = val.argmax(1) == yva
    out = {"file_bytes": Path(path).stat().st_size,
           "val_acc": float(val_ok.mean()),
           "test_acc": float((test.argmax(1) == yte).mean())}
    if reference_test_logits is not None:
        out["parity"] = parity(reference_test_logits, test, against)
    if baseline_val_correct is not None:
        out["val_paired"] = paired(baseline_val_correct, val_ok).to_dict()
    return out


def _percentiles(times_s: list[float]) -> dict:
    a = np.asarray(times_s) * 1e3
    return {"p50": float(np.median(a)), "p90": float(np.percentile(a, 90)), "n": int(len(a))}


def batch_inputs(X: np.ndarray, batches: tuple[int, ...] = BATCHES) -> dict[int, np.ndarray]:
    """The same inputs for everyone: the first b test examples (a tiny test
    set is tiled up to the batch size)."""
    out = {}
    for b in batches:
        reps = -(-b // max(1, len(X)))
        out[b] = as_float(np.concatenate([X] * reps)[:b])
    return out


def time_interleaved(runners: dict[str, Callable[[np.ndarray], object]], X: np.ndarray, *, budget_s: float = 10.0,
                     batches: tuple[int, ...] = BATCHES) -> dict[str, dict]:
    """Latency of every runner (a function of one input batch) on the same
    inputs, interleaved round by round with the order rotating.

    Returns {name: {"latency_ms": {"1": {p50, p90, n}, "64": {...}},
                    "throughput_per_s": {"1": ..., "64": ...}}}.
    At least MIN_ROUNDS rounds run even past `budget_s`, so that every
    number is a median of something.
    """
    inputs = batch_inputs(X, batches)
    for fn in runners.values():  # warm-up: first calls allocate and pick kernels
        for b in batches:
            for _ in range(3):
                fn(inputs[b])
    times: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batches} for n in runners}
    names = list(runners)
    t_end = time.perf_counter() + budget_s
    for r in range(MAX_ROUNDS):
        if r >= MIN_ROUNDS and time.perf_counter() > t_end:
            break
        k = r % len(names)
        for name in names[k:] + names[:k]:  # rotate who goes first
            fn = runners[name]
            for b in batches:
                x = inputs[b]
                for _ in range(CALLS_PER_ROUND.get(b, 3)):
                    t = time.perf_counter()
                    fn(x)
                    times[name][b].append(time.perf_counter() - t)
    out = {}
    for name in names:
        lat = {str(b): _percentiles(times[name][b]) for b in batches}
        out[name] = {"latency_ms": lat,
                     "throughput_per_s": {str(b): 1e3 * b / lat[str(b)]["p50"] for b in batches}}
    return out


def onnx_runner(path: str | Path, threads: int = THREADS) -> Callable[[np.ndarray], object]:
    sess = ort_session(path, threads)
    feed = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {feed: x})


def measure_latency(paths: dict[str, str | Path], X: np.ndarray, *, budget_s: float = 10.0,
                    batches: tuple[int, ...] = BATCHES, threads: int = THREADS) -> dict[str, dict]:
    """time_interleaved over ONNX Runtime sessions of the given files."""
    return time_interleaved({n: onnx_runner(p, threads) for n, p in paths.items()}, X, budget_s=budget_s,
                            batches=batches)


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
