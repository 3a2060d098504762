"""Compression: candidates (ONNX fp32, int8 static/dynamic, pruned,
distilled, and pruned/distilled then int8), measured side by side in ONNX
Runtime, one shipped by a policy that never ships something worse.

    from autopilot.compress import compress_run, choose
    results = compress_run("runs/mnist5k-001", target="latency", max_drop=0.5)  # points
    results["chosen"], results["reason"]

Modules: measure (one way of measuring), quantize, prune, students, distill,
policy (choose: a pure function), table (the terminal view), stage (the plan).
"""
from ..config import compress_budget_s
from .policy import CONFIDENCE, TARGETS, choose, drop_upper_points, keeps_accuracy, pareto_front
from .stage import compress_run

__all__ = ["CONFIDENCE", "TARGETS", "choose", "compress_budget_s", "compress_run", "drop_upper_points",
           "keeps_accuracy", "pareto_front"]
