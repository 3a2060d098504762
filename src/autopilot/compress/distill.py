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

The loop mirrors train.train (same optimiser, lr schedule with warm-up,
clipping, augmentation, best-on-validation weights, deadline) so the two
can be compared; only the loss differs.
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.augment import make_augment
from ..train import (DEFAULTS, EpochMetrics, TrainingDiverged, TrainResult, evaluate, lr_factor, make_optimizer,
                     resolve_device, seed_everything)

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
    with the student's best-validation-accuracy weights loaded."""
    hp = {**DEFAULTS, **(hparams or {})}
    device = resolve_device(device) if isinstance(device, str) else device
    seed_everything(seed)
    Xtr = torch.as_tensor(train_data[0], dtype=torch.float32, device=device)
    ytr = torch.as_tensor(train_data[1], dtype=torch.long, device=device)
    Xva = torch.as_tensor(val_data[0], dtype=torch.float32, device=device)
    yva = torch.as_tensor(val_data[1], dtype=torch.long, device=device)
    teacher = teacher.to(device).eval()
    student.to(device)
    opt = make_optimizer(student, hp)
    base_lrs = [g["lr"] for g in opt.param_groups]
    augment = make_augment(kind, float(hp["aug_strength"]), tuple(Xtr.shape[1:]))
    gen = torch.Generator(device="cpu").manual_seed(seed)

    bs = int(min(hp["batch_size"], len(Xtr)))
    steps_per_epoch = max(1, len(Xtr) // bs)
    epochs = int(hp["epochs"])
    total = steps_per_epoch * epochs
    result = TrainResult(best_val_acc=-1.0, best_val_loss=math.inf, best_epoch=0, epochs_run=0)
    best_state = None
    step = 0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        student.train()
        perm = torch.randperm(len(Xtr), generator=gen).to(device)
        loss_sum, correct, seen, out_of_time = 0.0, 0, 0, False
        for b in range(steps_per_epoch):
            if deadline is not None and time.monotonic() > deadline:
                out_of_time = True
                break
            idx = perm[b * bs : (b + 1) * bs]
            xb, yb = Xtr[idx], ytr[idx]
            if augment is not None:
                xb = augment(xb)
            with torch.no_grad():
                t_logits = teacher(xb)
            factor = lr_factor(step, total, hp)
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * factor
            logits = student(xb)
            loss = distill_loss(logits, t_logits, yb, temperature, alpha)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"distillation loss became {loss.item()} at epoch {epoch}, step {b + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if hp["clip_norm"] and hp["clip_norm"] > 0:
                nn.utils.clip_grad_norm_(student.parameters(), float(hp["clip_norm"]))
            opt.step()
            step += 1
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
        if seen == 0:
            result.stopped = "deadline"
            break
        val_loss, val_acc = evaluate(student, Xva, yva)
        result.history.append(EpochMetrics(epoch, loss_sum / seen, correct / seen, val_loss, val_acc,
                                           base_lrs[0] * factor, time.perf_counter() - t0))
        result.epochs_run = epoch
        if val_acc > result.best_val_acc or (val_acc == result.best_val_acc and val_loss < result.best_val_loss):
            result.best_val_acc, result.best_val_loss, result.best_epoch = val_acc, val_loss, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in student.state_dict().items()})
        if out_of_time:
            result.stopped = "deadline"
            break
    result.state_dict = best_state
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    return result
