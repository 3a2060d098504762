"""The operations of the component (version 2) networks, for 1-D and 2-D inputs.

One block = one operation, an optional squeeze-and-excitation, and an
optional skip connection. Every piece here maps onto plain ONNX operators
(Conv with groups/dilation, BatchNormalization, InstanceNormalization for
group norm, GlobalAveragePool, Sigmoid, Erf for GELU), so every network the
search can assemble exports and runs in ONNX Runtime.
"""
from __future__ import annotations

import torch
from torch import nn

# name -> what the block computes. Kernel sizes are in the name because the
# search chooses among these as one categorical; MBConv's number is its
# expansion (MobileNetV2's "MBConv6"), always with a 3-wide depthwise kernel.
OPERATIONS = {
    "conv3": "conv 3",
    "conv5": "conv 5",
    "sepconv3": "depthwise-separable conv 3",
    "sepconv5": "depthwise-separable conv 5",
    "dilconv3": "dilated conv 3 (dilation 2)",
    "mbconv_e3": "inverted bottleneck, expansion 3",
    "mbconv_e6": "inverted bottleneck, expansion 6",
}
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
# Group norm exports at opset 17 as InstanceNormalization + Mul/Add and keeps
# parity; it does not fold into the conv like batch norm does, so it costs
# latency at inference. "none" puts the bias back into the convs.
NORMS = ("batch", "group", "none")
MAX_GROUPS = 8
SE_REDUCTION = 4


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def normalization(kind: str, dims: int, c: int) -> nn.Module:
    """dims 0 = features (N, C) of an MLP; 1 or 2 = signals or images."""
    if kind == "batch":
        return nn.BatchNorm2d(c) if dims == 2 else nn.BatchNorm1d(c)
    if kind == "group":
        if dims == 0:
            # Features have no spatial axes: a group of one feature would
            # normalise a single value to zero. One group = layer norm.
            return nn.GroupNorm(1, c)
        # The most groups (up to 8) that divide the channels with at least
        # two channels each: widths are free integers, GroupNorm needs an
        # exact division, and one-channel groups would be instance norm.
        groups = max([g for g in range(1, MAX_GROUPS + 1) if c % g == 0 and c // g >= 2] or [1])
        return nn.GroupNorm(groups, c)
    return nn.Identity()


def conv_nd(dims: int, c_in: int, c_out: int, k: int = 1, stride: int = 1, dilation: int = 1,
            groups: int = 1, bias: bool = False) -> nn.Module:
    cls = nn.Conv1d if dims == 1 else nn.Conv2d
    # "Same" padding for odd kernels; with stride 2 every operation (and the
    # 1x1 shortcut) yields ceil(size / 2), so branches always add up.
    return cls(c_in, c_out, k, stride=stride, padding=dilation * (k // 2), dilation=dilation, groups=groups, bias=bias)


class SqueezeExcite(nn.Module):
    """Channel gates from globally pooled features (Hu et al.)."""

    def __init__(self, dims: int, c: int, act: str):
        super().__init__()
        squeezed = max(1, c // SE_REDUCTION)
        self.pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        self.reduce = conv_nd(dims, c, squeezed, bias=True)
        self.act = activation(act)
        self.expand = conv_nd(dims, squeezed, c, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.expand(self.act(self.reduce(self.pool(x)))))


def _body(op: str, dims: int, c_in: int, c_out: int, stride: int, se: bool, act: str, norm: str) -> list[nn.Module]:
    bias = norm == "none"
    n = lambda c: normalization(norm, dims, c)  # noqa: E731
    if op in ("conv3", "conv5"):
        layers = [conv_nd(dims, c_in, c_out, int(op[-1]), stride, bias=bias), n(c_out)]
    elif op == "dilconv3":
        layers = [conv_nd(dims, c_in, c_out, 3, stride, dilation=2, bias=bias), n(c_out)]
    elif op in ("sepconv3", "sepconv5"):
        k = int(op[-1])
        layers = [conv_nd(dims, c_in, c_in, k, stride, groups=c_in, bias=bias), n(c_in), activation(act),
                  conv_nd(dims, c_in, c_out, bias=bias), n(c_out)]
    elif op in ("mbconv_e3", "mbconv_e6"):
        hidden = c_in * int(op[-1])
        layers = [conv_nd(dims, c_in, hidden, bias=bias), n(hidden), activation(act),
                  conv_nd(dims, hidden, hidden, 3, stride, groups=hidden, bias=bias), n(hidden), activation(act)]
        if se:  # EfficientNet's place for it: on the expanded depthwise output
            layers.append(SqueezeExcite(dims, hidden, act))
        # Linear bottleneck: no activation after the projection (MobileNetV2).
        return layers + [conv_nd(dims, hidden, c_out, bias=bias), n(c_out)]
    else:
        raise ValueError(f"unknown operation {op!r}; expected one of {', '.join(OPERATIONS)}")
    if se:  # SE-ResNet's place for it: on the branch, before the skip add
        layers.append(SqueezeExcite(dims, c_out, act))
    return layers


class Block(nn.Module):
    """One operation with an optional skip connection.

    The skip is the identity when shapes match and a strided 1x1 conv + norm
    (ResNet's projection shortcut) when the block changes width or
    resolution, so "skip on" means the same thing for every block of a stage.
    """

    def __init__(self, op: str, dims: int, c_in: int, c_out: int, stride: int, skip: bool, se: bool, act: str, norm: str):
        super().__init__()
        self.body = nn.Sequential(*_body(op, dims, c_in, c_out, stride, se, act, norm))
        self.shortcut: nn.Module | None = None
        if skip:
            same = stride == 1 and c_in == c_out
            self.shortcut = nn.Identity() if same else nn.Sequential(
                conv_nd(dims, c_in, c_out, 1, stride, bias=norm == "none"), normalization(norm, dims, c_out))
            # The branch keeps its default init (torchvision's ResNet default,
            # zero_init_residual=False). Zeroing its last norm made every block
            # start as its shortcut: a net of one-conv blocks then starts as
            # the stem plus 1x1 projections, too small a receptive field to
            # see a shape, and on 32x32 photos it learnt nothing in the
            # doctor's probes and reached 63 % validation accuracy in 20
            # epochs where the same net without the zeroing reached 100 %.
            # Our stacks (at most 12 blocks, normalised) need no zeroing.
        # MBConv ends linear (its output is a bottleneck); the others end
        # with the activation, after the add as in ResNet.
        self.act = nn.Identity() if op.startswith("mbconv") else activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.act(y)


class DenseLayer(nn.Module):
    """Linear -> norm -> activation -> dropout, with an optional residual
    connection (projected by a bias-free linear map when the width changes)."""

    def __init__(self, c_in: int, c_out: int, residual: bool, act: str, norm: str, dropout: float):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(c_in, c_out), normalization(norm, 0, c_out), activation(act), nn.Dropout(dropout))
        self.shortcut: nn.Module | None = None
        if residual:
            self.shortcut = nn.Identity() if c_in == c_out else nn.Linear(c_in, c_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y if self.shortcut is None else y + self.shortcut(x)
