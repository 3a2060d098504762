"""Helpers that apply a doctor's suggestion to a model."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def last_linear(model: nn.Module) -> nn.Linear | None:
    """The last nn.Linear in registration order: in almost every classifier, the head."""
    found = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            found = m
    return found


@torch.no_grad()
def init_final_bias(model: nn.Module, class_counts, *, scale_weight: float | None = None) -> nn.Linear:
    """Set the classifier head's bias to log(class prior), so that at
    initialisation the model predicts the class frequencies and the loss
    starts at the entropy of the labels instead of above ln(C).

    `class_counts`: counts per class (e.g. np.bincount(y_train, minlength=C)).
    `scale_weight`: optionally multiply the head's weights (e.g. 0.1) so the
    input-dependent part of the initial logits is small too.
    Returns the layer it changed; raises if there is no fitting nn.Linear.
    """
    layer = last_linear(model)
    counts = np.asarray(class_counts, dtype=np.float64)
    if layer is None:
        raise ValueError("no nn.Linear in the model: set the final layer's bias by hand")
    if layer.bias is None:
        raise ValueError("the last nn.Linear has no bias (bias=False)")
    if layer.out_features != len(counts):
        raise ValueError(f"the last nn.Linear has {layer.out_features} outputs but {len(counts)} class counts were given")
    prior = (counts + 1e-3) / (counts + 1e-3).sum()  # a tiny pseudo-count keeps empty classes finite
    log_prior = np.log(prior)
    layer.bias.copy_(torch.as_tensor(log_prior - log_prior.mean(), dtype=layer.bias.dtype))
    if scale_weight is not None:
        layer.weight.mul_(scale_weight)
    return layer
