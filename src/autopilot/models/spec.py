"""Model spec (plain JSON) -> nn.Module, and saving/loading without pickle.

A spec is everything needed to rebuild the architecture; model/spec.json of a
run holds one. Its "version" field says which format it is in; a spec
without one is version 1, and both versions load.

Version 1, the fixed templates (the CNN doubles its width each stage):

    {"family": "cnn2d" | "cnn1d" | "mlp",
     "input_shape": [C, H, W] | [C, L] | [F],
     "n_classes": int,
     "mean": [...], "std": [...],     # per channel (cnn) or per feature (mlp)
     "width": int,                    # channels of the first stage / hidden units
     "depth": int,                    # stages (cnn) / hidden layers (mlp)
     "residual": bool, "batch_norm": bool, "dropout": float,
     "kernel_size": int,              # cnn only
     "pool": "max" | "avg",           # cnn downsampling between stages
     "head": "gap" | "flatten"}       # cnn: global average pool or flatten

Version 2, networks assembled from components (components.py, ops.py):

    {"version": 2,
     "family": "cnn2d" | "cnn1d",     # images [C, H, W] | signals [C, L]
     "input_shape": [...], "n_classes": int,
     "mean": [...], "std": [...],     # per channel
     "stem": {"width": int, "kernel_size": 3 | 5},          # kernel_size defaults to 3
     "stages": [                      # one or more; each may change the width
        {"op": "conv3" | "conv5" | "sepconv3" | "sepconv5" | "dilconv3" | "mbconv_e3" | "mbconv_e6",
         "blocks": int,               # blocks of this op in the stage (>= 1)
         "width": int,                # output channels of every block of the stage
         "skip": bool,                # skip connection around every block
         "se": bool},                 # squeeze-and-excitation; defaults to false
        ...],
     "downsample": "stride" | "max" | "avg",   # halves the resolution before stages 2.. (while >= 4 wide)
     "activation": "relu" | "gelu" | "silu",
     "norm": "batch" | "group" | "none",
     "head": "gap" | "flatten",
     "dropout": float}                # before the classifier; defaults to 0

    {"version": 2, "family": "mlp",
     "input_shape": [F] (or [C, ...], flattened), "n_classes": int,
     "mean": [...], "std": [...],     # per feature, or per channel of a [C, ...] input
     "layers": [{"width": int, "residual": bool}, ...],   # hidden layers; residual defaults to false
     "activation": "relu" | "gelu" | "silu",
     "norm": "batch" | "group" | "none",   # "group" is one group here: layer norm
     "dropout": float}                # after every hidden layer

Either version may carry "tta": "hflip": the network then averages its
logits over the image and its mirror image in eval mode (tta.py).

Inputs are standardised inside the model with the spec's mean/std, so the
exported ONNX file takes raw inputs. Unknown fields in a version-2 spec are
refused with a message naming them.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from ..rundir import SPEC_FILE, WEIGHTS_FILE, write_json
from .blocks import MAX_CHANNELS, ConvBNAct, ResidualBlock, ResidualLinear, Standardize
from .components import SPEC_VERSION, SpecError, build_component_model

FAMILIES = ("mlp", "cnn1d", "cnn2d")


def family_dims(family: str) -> int:
    return {"cnn1d": 1, "cnn2d": 2}[family]


def spec_version(spec: dict) -> int:
    """1 for the templates (written before specs carried a version), else the field."""
    return spec.get("version", 1)


def build_model(spec: dict) -> nn.Module:
    if spec.get("tta"):  # test-time flip averaging around the network (tta.py), either version
        from .tta import with_tta

        return with_tta(build_model({k: v for k, v in spec.items() if k != "tta"}), spec["tta"])
    version = spec_version(spec)
    if version == SPEC_VERSION:
        return build_component_model(spec)
    if version != 1:
        raise SpecError(f"model spec: version {version!r} is not known here; this autopilot reads versions 1 and {SPEC_VERSION}")
    family = spec.get("family")
    if family == "mlp":
        return _build_mlp(spec)
    if family in ("cnn1d", "cnn2d"):
        return _build_cnn(spec)
    raise SpecError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")


def _build_mlp(spec: dict) -> nn.Module:
    n_in = 1
    for d in spec["input_shape"]:
        n_in *= int(d)
    mean, std = spec["mean"], spec["std"]
    width, depth = int(spec["width"]), int(spec["depth"])
    bn, p = bool(spec.get("batch_norm", True)), float(spec.get("dropout", 0.0))
    if len(mean) == n_in:  # per-feature statistics (tables)
        layers: list[nn.Module] = [nn.Flatten(), Standardize(mean, std, 0)]
    else:  # per-channel statistics (images or signals fed to an MLP)
        layers = [Standardize(mean, std, len(spec["input_shape"]) - 1), nn.Flatten()]
    layers += [nn.Linear(n_in, width), nn.BatchNorm1d(width) if bn else nn.Identity(), nn.ReLU(), nn.Dropout(p)]
    for _ in range(depth - 1):
        if spec.get("residual", False):
            layers.append(ResidualLinear(width, bn, p))
        else:
            layers += [nn.Linear(width, width), nn.BatchNorm1d(width) if bn else nn.Identity(), nn.ReLU(), nn.Dropout(p)]
    layers.append(nn.Linear(width, int(spec["n_classes"])))
    return nn.Sequential(*layers)


def _build_cnn(spec: dict) -> nn.Module:
    dims = family_dims(spec["family"])
    shape = [int(d) for d in spec["input_shape"]]
    c_in, spatial = shape[0], shape[1:]
    width, depth, k = int(spec["width"]), int(spec["depth"]), int(spec.get("kernel_size", 3))
    bn, p = bool(spec.get("batch_norm", True)), float(spec.get("dropout", 0.0))
    pool_cls = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d, ("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d}[
        (spec.get("pool", "max"), dims)
    ]
    layers: list[nn.Module] = [Standardize(spec["mean"], spec["std"], dims)]
    c = c_in
    for stage in range(depth):
        c_out = min(width * 2**stage, MAX_CHANNELS)
        layers.append(ConvBNAct(dims, c, c_out, k, bn))
        if spec.get("residual", False):
            layers.append(ResidualBlock(dims, c_out, k, bn))
        else:
            layers.append(ConvBNAct(dims, c_out, c_out, k, bn))
        c = c_out
        # Halve the resolution between stages while there is room; tiny
        # inputs (8x8 digits) simply stop downsampling.
        if stage < depth - 1 and min(spatial) >= 4:
            layers.append(pool_cls(2))
            spatial = [s // 2 for s in spatial]
    if spec.get("head", "gap") == "gap":
        pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        layers += [pool, nn.Flatten()]
        n_feat = c
    else:
        layers.append(nn.Flatten())
        n_feat = c
        for s in spatial:
            n_feat *= s
    layers += [nn.Dropout(p), nn.Linear(n_feat, int(spec["n_classes"]))]
    return nn.Sequential(*layers)


def scale_widths(spec: dict, factor: float, multiple: int = 4) -> dict:
    """The same architecture with every width times `factor`, rounded to a
    multiple of `multiple` (at least `multiple`): the way to a smaller or
    larger model of either spec version (students, cost limits)."""
    def scaled(width: int) -> int:
        return max(multiple, multiple * round(width * factor / multiple))

    if spec_version(spec) == 1:
        return {**spec, "width": scaled(int(spec["width"]))}
    if spec["family"] == "mlp":
        return {**spec, "layers": [{**layer, "width": scaled(layer["width"])} for layer in spec["layers"]]}
    return {**spec, "stem": {**spec["stem"], "width": scaled(spec["stem"]["width"])},
            "stages": [{**stage, "width": scaled(stage["width"])} for stage in spec["stages"]]}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(directory: str | Path, model: nn.Module, spec: dict) -> None:
    """spec.json + weights.safetensors; no pickle anywhere."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(directory / WEIGHTS_FILE)
    write_json(directory / SPEC_FILE, spec)


def load_model(directory: str | Path) -> tuple[nn.Module, dict]:
    directory = Path(directory)
    spec = json.loads((directory / SPEC_FILE).read_text())
    model = build_model(spec)
    try:
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    except RuntimeError as e:
        # torch names every mismatched key over many lines; the first one says enough.
        lines = str(e).splitlines()
        detail = lines[1].strip() if len(lines) > 1 else str(e)
        raise SpecError(f"{directory / WEIGHTS_FILE} does not fit {directory / SPEC_FILE}: {detail}") from None
    model.eval()
    return model, spec
