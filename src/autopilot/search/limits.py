"""Cost of a model as a hard limit and as an objective: parameters counted,
latency measured in ONNX Runtime (batch 1, one thread, this machine).

Every trial records `params_count` and `latency_ms` (user attributes), so
the accuracy-latency front can be drawn from any run. With --max-params or
--max-latency-ms, a configuration over a limit is rejected before it trains
(it costs an ONNX export and a few hundred batch-1 runs, not a training),
and Optuna's constrained TPE / NSGA-II learn from the excess, set as the
trial's constraints (Trial.set_constraint; <= 0 is feasible).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

LATENCY_WARMUP = 5
LATENCY_RUNS = 60  # batch-1 runs timed; the median is robust to a busy neighbour
LATENCY_MAX_S = 1.5  # a slow model stops being timed early: it is measured well enough
CONSTRAINT_KEYS = ("params", "latency")  # Trial.set_constraint keys, the order of `excess`


def onnx_latency_ms(model, input_shape: list[int] | tuple[int, ...]) -> float:
    """Median batch-1 latency of the model's ONNX export in ONNX Runtime on
    one thread, in milliseconds (the way compression and serving time it)."""
    from ..compress.measure import ort_session
    from ..export import export_onnx

    with tempfile.TemporaryDirectory(prefix="autopilot-latency-") as tmp:
        path = export_onnx(model, input_shape, Path(tmp) / "model.onnx")
        session = ort_session(path, threads=1)
        feed = session.get_inputs()[0].name
        x = np.random.default_rng(0).random((1, *input_shape), dtype=np.float32)
        for _ in range(LATENCY_WARMUP):
            session.run(None, {feed: x})
        times, start = [], time.perf_counter()
        for _ in range(LATENCY_RUNS):
            t0 = time.perf_counter()
            session.run(None, {feed: x})
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - start > LATENCY_MAX_S:
                break
    return 1000.0 * statistics.median(times)


def excess(params_count: int, latency_ms: float | None, max_params: int | None, max_latency_ms: float | None) -> list[float]:
    """Optuna's constraint values: how far over each limit (relative), <= 0 when within."""
    over_params = (params_count - max_params) / max_params if max_params else -1.0
    over_latency = (latency_ms - max_latency_ms) / max_latency_ms if max_latency_ms and latency_ms is not None else -1.0
    return [float(over_params), float(over_latency)]


def violation(params_count: int, latency_ms: float | None, max_params: int | None, max_latency_ms: float | None) -> str | None:
    """Why a configuration is over a limit, in one line; None when within."""
    if max_params and params_count > max_params:
        return f"{params_count:,} parameters > --max-params {max_params:,}"
    if max_latency_ms and latency_ms is not None and latency_ms > max_latency_ms:
        return f"batch-1 latency {latency_ms:.3f} ms > --max-latency-ms {max_latency_ms:g}"
    return None


