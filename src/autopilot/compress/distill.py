"""Knowledge distillation: train a small student on a trained teacher's logits.

Loss (Hinton et al. 2015):
    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
  + (1 - alpha) * cross_entropy(student, labels)
The temperature T > 1 softens both distributions so the student learns the
teacher's "dark knowledge" (which wrong classes look alike); T^2 keeps the
soft term's gradients on the same scale as the hard term's when T changes.

The teacher scores the *augmented* batch the student sees (in eval mode, no
gradient): consistent teaching on augmented views is what lets a small
student match its teacher ("function matching", Beyer et al. 2022), and it
costs one teacher forward pass per step.

The loop is train.train's (same optimiser, lr schedule with warm-up,
clipping, augmentation, deadline) so the two can be compared; the loss
differs, and the student keeps its last epoch's weights, as the finalists'
retraining does, not the best epoch's on the data passed as validation.
That data is a sample of the student's own training rows
(data.gate.check_split), where a warm-started student is at 100 % from its
first epoch, so the "best" epoch was whichever had the lowest hard-label
loss, a loss distillation does not minimise: the fusion stage's students
kept epoch 2, 5, 6, 1 and 1 of their 15-30 on five of six mnist1d and
mnist5k runs (bench/results/fusion-20261202T102556Z.json). Replayed on six
kept runs with the same teacher and epochs, the two rules' students were
within one test example of each other on every run (bench/README.md,
fusion.py): the end of the schedule is kept because it is the schedule's
end, not because it scored better.
"""
from __future__ import annotations


import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..train import DEFAULTS, TrainResult, resolve_device, train

TEMPERATURE = 4.0
ALPHA = 0.9  # weight of the soft (teacher) term


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 temperature: float = TEMPERATURE, alpha: float = ALPHA) -> torch.Tensor:
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    hard = F.cross_entropy(student_logits, targets)
    return alpha * soft + (1.0 - alpha) * hard


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train_data: tuple[np.ndarray, np.ndarray],
    val_data: tuple[np.ndarray, np.ndarray],
    hparams: dict | None = None,
    *,
    kind: str = "table",
    temperature: float = TEMPERATURE,
    alpha: float = ALPHA,
    seed: int = 0,
    device: str | torch.device = "auto",
    deadline: float | None = None,
) -> TrainResult:
    """Train `student` in place against `teacher`; returns train.TrainResult
    with the last epoch's weights loaded (the best epoch's on `val_data` when
    the deadline cut the schedule). Every epoch runs (no early stop)."""
    device = resolve_device(device) if isinstance(device, str) else device
    teacher = teacher.to(device).eval()

    last: dict = {}

    def loss(student_logits, inputs, targets):
        if last.get("inputs") is not inputs:  # a mixed batch (mixup/CutMix) asks twice, once per label set
            with torch.no_grad():
                last["inputs"], last["logits"] = inputs, teacher(inputs)
        return distill_loss(student_logits, last["logits"], targets, temperature, alpha)

    hp = {**DEFAULTS, **(hparams or {})}
    hp["patience"] = int(hp["epochs"])  # never reached: distillation runs its planned epochs
    result = train(student, train_data, val_data, hp, kind=kind, seed=seed, device=device, deadline=deadline,
                   batch_loss=loss, keep="last")
    student.eval()
    return result
