"""The chosen members as one module: each member's logits -> softmax ->
weighted mean -> log. Exported by export.export_onnx it is one ONNX graph
that predict and serve load like any model; its output is a valid set of
logits (the softmax of log-probabilities gives the probabilities back)."""
from __future__ import annotations

import torch
from torch import nn


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module], weights: list[float]):
        super().__init__()
        if len(members) != len(weights) or not members:
            raise ValueError(f"{len(members)} members and {len(weights)} weights")
        self.members = nn.ModuleList(members)
        w = torch.tensor(weights, dtype=torch.float32)
        self.register_buffer("weights", w / w.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = sum(w * torch.softmax(m(x), dim=1) for m, w in zip(self.members, self.weights))
        return torch.log(p.clamp_min(1e-30))
