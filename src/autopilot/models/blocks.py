"""Building blocks shared by the model families."""
from __future__ import annotations

import torch
from torch import nn

# The template CNN doubles its width each stage up to this many channels.
MAX_CHANNELS = 256


class Standardize(nn.Module):
    """(x - mean) / std with statistics fixed at build time.

    Living inside the model means the exported ONNX file takes raw inputs, so
    prediction and serving never need to know the training statistics.
    """

    def __init__(self, mean: list[float], std: list[float], n_dims: int):
        super().__init__()
        shape = (1, len(mean)) + (1,) * n_dims
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv(dims: int, c_in: int, c_out: int, k: int, bias: bool) -> nn.Module:
    cls = nn.Conv1d if dims == 1 else nn.Conv2d
    return cls(c_in, c_out, k, padding=k // 2, bias=bias)


def norm(dims: int, c: int, batch_norm: bool) -> nn.Module:
    if not batch_norm:
        return nn.Identity()
    return nn.BatchNorm1d(c) if dims == 1 else nn.BatchNorm2d(c)


class ConvBNAct(nn.Sequential):
    def __init__(self, dims: int, c_in: int, c_out: int, k: int, batch_norm: bool):
        # A conv followed by batch norm needs no bias: BN's shift replaces it.
        super().__init__(conv(dims, c_in, c_out, k, bias=not batch_norm), norm(dims, c_out, batch_norm), nn.ReLU())


class ResidualBlock(nn.Module):
    """x + F(x) with F = conv-bn-relu-conv-bn; the last BN starts at zero so
    the block begins as the identity, which keeps deep stacks trainable."""

    def __init__(self, dims: int, c: int, k: int, batch_norm: bool):
        super().__init__()
        self.body = nn.Sequential(
            ConvBNAct(dims, c, c, k, batch_norm),
            conv(dims, c, c, k, bias=not batch_norm),
            norm(dims, c, batch_norm),
        )
        last = self.body[-1]
        if isinstance(last, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.zeros_(last.weight)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class ResidualLinear(nn.Module):
    def __init__(self, width: int, batch_norm: bool, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(width, width),
            nn.BatchNorm1d(width) if batch_norm else nn.Identity(),
            nn.ReLU(),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
