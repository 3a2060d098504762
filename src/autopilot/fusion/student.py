"""A student distilled from the ensemble: the best single model's own
architecture, started from its weights, taught by the ensemble.

Why this student: the point of distilling here is the ensemble's accuracy at
the single model's serving cost, so the student has the single model's
architecture (batch-1 latency ~1x, where a same-accuracy bigger one would
not help), and it starts from the single model's trained weights, so a short
slice of a small budget moves it toward the ensemble instead of training
from scratch ("born-again" distillation, Furlanello et al. 2018, from a warm
start). The loss and loop are compress.distill's (Hinton's soft targets on
the augmented views the student sees, train.train's optimiser and schedule).
"""
from __future__ import annotations

import copy
import time

import torch

from ..compress.distill import distill
from ..data.gate import check_split
from ..train import timed_epoch_seconds

LR_SCALE = 0.2  # of the search's peak lr: a warm start needs less than training from scratch (on one mnist1d run 0.1-0.5 all kept the single model's accuracy; one digits-table run at 0.5 lost 1.5 points)
MAX_EPOCHS = 30
MIN_EPOCHS = 1


def distil_student(teacher, single, spec: dict, hp: dict, data: dict, *, kind: str, seed: int, slice_s: float,
                   device: str = "cpu") -> tuple[torch.nn.Module, dict] | None:
    """(student, training info), or None when not even MIN_EPOCHS fit the slice."""
    t0 = time.monotonic()
    student = copy.deepcopy(single).cpu()
    hp = {**hp, "lr": float(hp["lr"]) * LR_SCALE, "schedule": "cosine", "warmup_frac": 0.05,
          "label_smoothing": 0.0}  # soft targets carry the teacher's smoothing already
    epoch_s = timed_epoch_seconds(student, data, hp, kind, teacher=teacher)
    epochs = min(MAX_EPOCHS, int((slice_s - (time.monotonic() - t0)) // max(epoch_s, 1e-3)))
    if epochs < MIN_EPOCHS:
        return None
    hp = {**hp, "epochs": epochs, "patience": epochs + 1}
    t_train = time.monotonic()
    res = distill(teacher, student, data["train"], check_split(data), hp, kind=kind, seed=seed, device=device,
                  deadline=t0 + 1.5 * slice_s)
    student = student.cpu().eval()
    info = {"epochs": epochs, "epochs_run": res.epochs_run, "best_epoch": res.best_epoch, "stopped": res.stopped,
            "torch_val_acc": res.best_val_acc, "train_s": round(time.monotonic() - t_train, 1),
            "slice_s": round(slice_s, 1), "lr": hp["lr"], "schedule": hp["schedule"]}
    return student, info
