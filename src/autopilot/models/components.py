"""Version-2 specs: networks assembled from per-stage components.

The format is documented at the top of spec.py. Here: its validation (one
clear line naming the field on a bad spec) and the two builders, one for
images/signals (stem, stages, head) and one for tables (per-layer MLP).
The builder accepts any sensible value; the ranges the search explores
(2-4 stages, 1-3 blocks, ...) are the search space's business.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator
from torch import nn

from ..config import describe_error
from .blocks import MAX_CHANNELS, Standardize
from .ops import ACTIVATIONS, NORMS, OPERATIONS, Block, DenseLayer, activation, conv_nd, normalization

SPEC_VERSION = 2
DOWNSAMPLING = ("stride", "max", "avg")
HEADS = ("gap", "flatten")
# Halve the resolution before a stage only while the input to it is at least
# this wide: tiny inputs (8x8 digits) simply stop downsampling, as in v1.
MIN_SIZE_TO_DOWNSAMPLE = 4


class SpecError(ValueError):
    """A model spec that cannot be built; the message names the field."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Stem(_Part):
    width: PositiveInt
    kernel_size: Literal[3, 5] = 3


class Stage(_Part):
    op: Literal[tuple(OPERATIONS)]
    blocks: PositiveInt
    width: PositiveInt
    skip: bool
    se: bool = False


class Layer(_Part):
    width: PositiveInt
    residual: bool = False


class _Common(_Part):
    version: Literal[2]
    input_shape: list[PositiveInt] = Field(min_length=1)
    n_classes: PositiveInt
    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)
    activation: Literal[tuple(ACTIVATIONS)]
    norm: Literal[NORMS]
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    tta: Literal["hflip"] | None = None  # test-time flip averaging, built by spec.build_model (tta.py)

    @model_validator(mode="after")
    def _statistics_match_input(self):
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self


class ConvNetSpec(_Common):
    family: Literal["cnn1d", "cnn2d"]
    stem: Stem
    stages: list[Stage] = Field(min_length=1)
    downsample: Literal[DOWNSAMPLING]
    head: Literal[HEADS]

    @model_validator(mode="after")
    def _shape_matches_family(self):
        dims = 1 if self.family == "cnn1d" else 2
        if len(self.input_shape) != dims + 1:
            raise ValueError(f"{self.family} needs input_shape [C{', L' if dims == 1 else ', H, W'}], got {self.input_shape}")
        if len(self.mean) != self.input_shape[0]:
            raise ValueError(f"mean/std need one value per channel ({self.input_shape[0]}), got {len(self.mean)}")
        return self


class MLPSpec(_Common):
    family: Literal["mlp"]
    layers: list[Layer] = Field(min_length=1)


def validate_spec(spec: dict) -> ConvNetSpec | MLPSpec:
    """The typed version-2 spec, or SpecError naming the first bad field."""
    family = spec.get("family")
    if family not in ("cnn1d", "cnn2d", "mlp"):
        raise SpecError(f"model spec: family: {family!r} is not one of cnn1d, cnn2d, mlp")
    model = MLPSpec if family == "mlp" else ConvNetSpec
    try:
        return model.model_validate(spec)
    except ValidationError as e:
        raise SpecError(f"model spec: {describe_error(e)}") from None


class ComponentNet(nn.Module):
    """standardize -> stem -> stages -> head. Kept as named parts (not one
    Sequential) so the report can describe and time each stage."""

    def __init__(self, standardize: nn.Module, stem: nn.Module, stages: list[nn.Module], head: nn.Module):
        super().__init__()
        self.standardize, self.stem, self.stages, self.head = standardize, stem, nn.ModuleList(stages), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.standardize(x))
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def build_convnet(spec: dict) -> ComponentNet:
    s = validate_spec(spec)
    assert isinstance(s, ConvNetSpec)
    dims = 1 if s.family == "cnn1d" else 2
    c, spatial = s.input_shape[0], list(s.input_shape[1:])
    stem = nn.Sequential(conv_nd(dims, c, s.stem.width, s.stem.kernel_size, bias=s.norm == "none"),
                         normalization(s.norm, dims, s.stem.width), activation(s.activation))
    c = s.stem.width
    stages = []
    for i, st in enumerate(s.stages):
        layers: list[nn.Module] = []
        stride = 1
        if i > 0 and min(spatial) >= MIN_SIZE_TO_DOWNSAMPLE:
            if s.downsample == "stride":
                stride, spatial = 2, [(n + 1) // 2 for n in spatial]  # the first block strides
            else:
                pool = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d,
                        ("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d}[(s.downsample, dims)]
                layers.append(pool(2))
                spatial = [n // 2 for n in spatial]
        for b in range(st.blocks):
            layers.append(Block(st.op, dims, c, st.width, stride if b == 0 else 1, st.skip, st.se, s.activation, s.norm))
            c = st.width
        stages.append(nn.Sequential(*layers))
    if s.head == "gap":
        head: list[nn.Module] = [nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        n_feat = c
    else:
        head, n_feat = [nn.Flatten()], c
        for n in spatial:
            n_feat *= n
    head += [nn.Dropout(s.dropout), nn.Linear(n_feat, s.n_classes)]
    return ComponentNet(Standardize(s.mean, s.std, dims), stem, stages, nn.Sequential(*head))


class ComponentMLP(nn.Module):
    """standardize (+ flatten) -> dense layers -> linear classifier."""

    def __init__(self, standardize: nn.Module, layers: list[nn.Module], head: nn.Module):
        super().__init__()
        self.standardize, self.layers, self.head = standardize, nn.ModuleList(layers), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.standardize(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def build_mlp(spec: dict) -> ComponentMLP:
    s = validate_spec(spec)
    assert isinstance(s, MLPSpec)
    n_in = 1
    for d in s.input_shape:
        n_in *= d
    if len(s.mean) == n_in:  # per-feature statistics (tables)
        standardize = nn.Sequential(nn.Flatten(), Standardize(s.mean, s.std, 0))
    elif len(s.mean) == s.input_shape[0] and len(s.input_shape) > 1:  # per channel (images, signals)
        standardize = nn.Sequential(Standardize(s.mean, s.std, len(s.input_shape) - 1), nn.Flatten())
    else:
        raise SpecError(f"model spec: mean: {len(s.mean)} values fit neither the {n_in} features nor the channels of "
                        f"input_shape {s.input_shape}")
    layers, c = [], n_in
    for layer in s.layers:
        layers.append(DenseLayer(c, layer.width, layer.residual, s.activation, s.norm, s.dropout))
        c = layer.width
    return ComponentMLP(standardize, layers, nn.Linear(c, s.n_classes))


def build_component_model(spec: dict) -> nn.Module:
    return build_mlp(spec) if spec.get("family") == "mlp" else build_convnet(spec)


def from_template(spec: dict) -> dict:
    """The version-2 spec of a version-1 template, so a search in the
    component space can start from the templates' known-good points.

    Exact (same layers, same parameter count) for MLPs and for CNNs without
    the residual flag: the template's first conv becomes the stem, pools sit
    where the template put them. A residual template stage (conv, then a
    two-conv residual block) becomes three conv blocks with skips.
    """
    common = {"version": SPEC_VERSION, "family": spec["family"], "input_shape": list(spec["input_shape"]),
              "n_classes": int(spec["n_classes"]), "mean": list(spec["mean"]), "std": list(spec["std"]),
              "activation": "relu", "norm": "batch" if spec.get("batch_norm", True) else "none",
              "dropout": float(spec.get("dropout", 0.0)), **({"tta": spec["tta"]} if spec.get("tta") else {})}
    width, depth, residual = int(spec["width"]), int(spec["depth"]), bool(spec.get("residual", False))
    if spec["family"] == "mlp":
        return {**common, "layers": [{"width": width, "residual": residual and i > 0} for i in range(depth)]}
    op = f"conv{int(spec.get('kernel_size', 3))}"
    if op not in OPERATIONS:
        raise SpecError(f"model spec: kernel_size {spec.get('kernel_size')} has no component operation")
    stages = [{"op": op, "blocks": (3 if residual else 2) - (i == 0), "width": min(width * 2**i, MAX_CHANNELS),
               "skip": residual} for i in range(depth)]
    return {**common, "stem": {"width": width, "kernel_size": int(spec.get("kernel_size", 3))}, "stages": stages,
            "downsample": spec.get("pool", "max"), "head": spec.get("head", "gap")}
