"""Compression: candidates (ONNX fp32, int8 static/dynamic, pruned,
distilled, and pruned/distilled then int8), measured side by side in ONNX
Runtime, one shipped by a policy that never ships something worse.

    from autopilot.compress import compress_run, choose
    results = compress_run("runs/mnist5k-001", target="latency", max_drop=0.005)
    results["chosen"], results["reason"]

Modules: measure (one way of measuring), quantize, prune, students, distill,
policy (choose: a pure function), table (the terminal view), stage (the plan).
"""
from .policy import TARGETS, choose, pareto_front
from .stage import compress_budget_s, compress_run

__all__ = ["TARGETS", "choose", "compress_budget_s", "compress_run", "pareto_front"]
