"""A built model, stage by stage: what each stage is, its output shape, its
parameters, and (measured) its share of the forward time.

Every model the builder makes, of either spec version, splits into parts
whose composition is the whole forward pass: the first part takes the raw
input (standardisation included), the last one returns the logits. The
report draws these rows; the search can read parameters per stage.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from .blocks import MAX_CHANNELS, ConvBNAct, ResidualLinear
from .components import ComponentMLP, ComponentNet
from .spec import build_model, spec_version

TIMING_REPEATS = 50
TIMING_WARMUP = 5


def model_parts(model: nn.Module, spec: dict) -> list[tuple[str, nn.Module]]:
    """(name, module) in forward order; running them one after another
    computes exactly model(x) (of the network inside a test-time wrapper)."""
    from .tta import unwrap

    model = unwrap(model)
    if isinstance(model, ComponentNet):
        return [("stem", nn.Sequential(model.standardize, model.stem)),
                *[(f"stage {i + 1}", s) for i, s in enumerate(model.stages)], ("head", model.head)]
    if isinstance(model, ComponentMLP):
        layers = list(model.layers)
        return [("layer 1", nn.Sequential(model.standardize, layers[0])),
                *[(f"layer {i + 2}", m) for i, m in enumerate(layers[1:])], ("head", model.head)]
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"not a model built from a spec: {type(model).__name__}")
    children = list(model.children())
    if spec["family"] == "mlp":
        # [Flatten, Standardize] or [Standardize, Flatten], then Linear-BN-ReLU-Dropout,
        # then depth-1 x (ResidualLinear or Linear-BN-ReLU-Dropout), then the classifier.
        parts, i = [("layer 1", nn.Sequential(*children[:6]))], 6
        while i < len(children) - 1:
            n = 1 if isinstance(children[i], ResidualLinear) else 4
            parts.append((f"layer {len(parts) + 1}", nn.Sequential(*children[i:i + n])))
            i += n
        return parts + [("head", children[-1])]
    # cnn: Standardize, then per stage ConvBNAct + (ConvBNAct | ResidualBlock) [+ pool], then the head.
    parts, i, start = [], 1, 0
    while i < len(children) and isinstance(children[i], ConvBNAct):
        end = i + 2
        if end < len(children) and isinstance(children[end], (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)):
            end += 1
        parts.append((f"stage {len(parts) + 1}", nn.Sequential(*children[start:end])))
        i = start = end
    return parts + [("head", nn.Sequential(*children[start:]))]


def _v1_rows(spec: dict) -> list[dict]:
    if spec["family"] == "mlp":
        first = {"op": "linear", "blocks": 1, "width": int(spec["width"]), "skip": False}
        rest = {"op": "linear", "blocks": 1, "width": int(spec["width"]), "skip": bool(spec.get("residual", False))}
        return [first] + [dict(rest) for _ in range(int(spec["depth"]) - 1)]
    k, residual = int(spec.get("kernel_size", 3)), bool(spec.get("residual", False))
    # A stage is a conv, then a second conv or a residual block of two: 2 or 3 convs.
    return [{"op": f"conv{k}", "blocks": 3 if residual else 2, "width": min(int(spec["width"]) * 2**i, MAX_CHANNELS),
             "skip": residual} for i in range(int(spec["depth"]))]


def _v2_rows(spec: dict) -> list[dict]:
    if spec["family"] == "mlp":
        return [{"op": "linear", "blocks": 1, "width": layer["width"], "skip": bool(layer.get("residual", False))}
                for layer in spec["layers"]]
    stem = {"op": f"conv{spec['stem'].get('kernel_size', 3)}", "blocks": 1, "width": spec["stem"]["width"], "skip": False}
    return [stem] + [{"op": s["op"], "blocks": s["blocks"], "width": s["width"], "skip": s["skip"], "se": s.get("se", False)}
                     for s in spec["stages"]]


def describe_model(spec: dict, model: nn.Module | None = None) -> list[dict]:
    """One row per part: name, op, blocks, width, skip, se, output_shape
    (without the batch axis), params. Builds the model when none is given;
    output shapes come from one forward pass of zeros in eval mode."""
    model = build_model(spec) if model is None else model
    parts = model_parts(model, spec)
    rows = _v2_rows(spec) if spec_version(spec) == 2 else _v1_rows(spec)
    head_op = "linear" if spec["family"] == "mlp" else f"{spec.get('head', 'gap')} + linear"
    rows = rows + [{"op": head_op, "blocks": 1, "width": int(spec["n_classes"]), "skip": False}]
    if len(rows) != len(parts):  # a bug here, not in the user's input
        raise AssertionError(f"{len(parts)} parts but {len(rows)} described rows")
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *spec["input_shape"])
    out = []
    with torch.no_grad():
        for (name, part), row in zip(parts, rows):
            x = part(x)
            out.append({"name": name, "se": False, **row, "output_shape": list(x.shape[1:]),
                        "params": sum(p.numel() for p in part.parameters())})
    model.train(was_training)
    return out


def time_parts(spec: dict, model: nn.Module | None = None, repeats: int = TIMING_REPEATS, seed: int = 0) -> list[dict]:
    """Median forward time of each part in PyTorch eager, batch 1, one
    thread: {"name", "ms", "share"}. The shares transfer to ONNX Runtime
    roughly, the absolute times do not (ORT fuses and is 2-3x faster)."""
    model = build_model(spec) if model is None else model
    parts = model_parts(model, spec)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    was_training = model.training
    model.eval()
    x0 = torch.randn(1, *spec["input_shape"], generator=torch.Generator().manual_seed(seed))
    times: list[list[float]] = [[] for _ in parts]
    try:
        with torch.no_grad():
            for r in range(TIMING_WARMUP + repeats):
                x = x0
                for j, (_, part) in enumerate(parts):
                    t = time.perf_counter()
                    x = part(x)
                    if r >= TIMING_WARMUP:
                        times[j].append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
    ms = [1000 * statistics.median(t) for t in times]
    total = sum(ms) or 1.0
    return [{"name": name, "ms": m, "share": m / total} for (name, _), m in zip(parts, ms)]
