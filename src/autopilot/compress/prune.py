"""Structured channel pruning with torch-pruning.

Structured (whole channels / hidden units removed) rather than unstructured
(weights set to zero) because only the former makes a dense CPU kernel do
less work: a 50 %-sparse conv runs exactly as fast as a dense one.

torch-pruning traces the model once to find which layers must lose the same
channels together (conv -> BN -> next conv; both sides of a residual add),
scores each such group by the L2 norm of its weights, and removes the
weakest `ratio` of channels in every prunable layer. The classifier's output
layer is left alone (its outputs are the classes). Accuracy drops sharply
right after pruning, so the caller fine-tunes.

Channel counts are rounded to multiples of 8 (4 for narrow layers): ORT's
CPU convolutions work on blocks of 8 channels, and a 30 % prune of 16
channels to 11 ran no faster than the unpruned model here (0.189 vs 0.185 ms)
while rounding to 8 made it 2.1x faster.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def _output_layer(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear output layer to keep")
    return linears[-1]


def prune_channels(model: nn.Module, input_shape: list[int] | tuple[int, ...], ratio: float) -> nn.Module:
    """A pruned copy of `model` with about `ratio` of the channels (hidden
    units) of every prunable layer removed; parameters fall roughly by
    1 - (1 - ratio)^2."""
    import torch_pruning as tp

    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    pruned = copy.deepcopy(model).cpu().eval()
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))] or \
        [m.out_features for m in pruned.modules() if isinstance(m, nn.Linear)][:-1] or [8]
    round_to = 8 if min(widths) * (1 - ratio) >= 8 else 4
    example = torch.zeros(2, *input_shape)  # batch 2: BatchNorm1d refuses batch 1 in train mode
    pruner = tp.pruner.MetaPruner(
        pruned, example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[_output_layer(pruned)],
        round_to=round_to,
    )
    pruner.step()
    return pruned
