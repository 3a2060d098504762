"""The chosen members as one module: each member's logits / its temperature
-> softmax -> weighted mean -> log. Exported by export.export_onnx it is one ONNX graph
that predict and serve load like any model; its output is a valid set of
logits (the softmax of log-probabilities gives the probabilities back)."""
from __future__ import annotations

import torch
from torch import nn


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module], weights: list[float], temperatures: list[float] | None = None):
        super().__init__()
        temperatures = temperatures or [1.0] * len(members)
        if not members or not len(members) == len(weights) == len(temperatures):
            raise ValueError(f"{len(members)} members, {len(weights)} weights, {len(temperatures)} temperatures")
        self.members = nn.ModuleList(members)
        w = torch.tensor(weights, dtype=torch.float32)
        self.register_buffer("weights", w / w.sum())
        self.register_buffer("temperatures", torch.tensor(temperatures, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = sum(w * torch.softmax(m(x) / t, dim=1)
                for m, w, t in zip(self.members, self.weights, self.temperatures))
        return torch.log(p.clamp_min(1e-30))
