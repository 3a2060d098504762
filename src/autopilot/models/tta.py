"""Test-time augmentation that is part of the model.

A spec with "tta": "hflip" builds its network wrapped in `FlipAverage`: in
eval mode the logits are the mean of the network's logits on the image and
on its left-right mirror image; in training mode it is the network alone.
Because it is part of the module, everything that evaluates or exports the
model computes it: validation during the search (so the search judges the
option on its merit), the final test, compression candidates and students
(rebuilt from the same spec), and the ONNX file that predict and serve run.
"""
from __future__ import annotations

import torch
from torch import nn

TTA_MODES = ("hflip",)


class FlipAverage(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.net(x)
        # Mean of the logits (not of the probabilities): the output stays
        # logits, so the ONNX file's contract ("logits") does not change.
        return (self.net(x) + self.net(x.flip(-1))) / 2


def with_tta(net: nn.Module, mode: str) -> nn.Module:
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {mode!r}; expected one of {', '.join(TTA_MODES)}")
    return FlipAverage(net)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside any test-time wrapper."""
    return model.net if isinstance(model, FlipAverage) else model
