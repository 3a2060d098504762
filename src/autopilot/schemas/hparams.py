"""trials/<n>/hparams.json (and the `training` part of a card): the training
hyper-parameters a trial was trained with. Every key is optional because
train.DEFAULTS fills what a trial leaves out; unknown keys are refused so a
misspelt option cannot pass silently."""
from __future__ import annotations

from typing import Literal

from .base import Part

TRIAL_HPARAMS = "trials/{number}/hparams.json"


class TrainingHparams(Part):
    optimizer: Literal["adamw", "sgd"] | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    schedule: Literal["onecycle", "cosine"] | None = None
    warmup_frac: float | None = None
    epochs: int | None = None
    batch_size: int | None = None
    label_smoothing: float | None = None
    clip_norm: float | None = None
    aug_strength: float | None = None
    aug_policy: Literal["none", "hflip", "affine", "cropflip", "trivial", "randaugment"] | None = None
    aug_ops: int | None = None
    cutout: float | None = None
    elastic: float | None = None  # strength of an elastic distortion after the policy (data.policies), 0..1
    mix: Literal["none", "mixup", "cutmix"] | None = None  # mixing pairs of training examples (data.augment)
    mix_alpha: float | None = None  # Beta(alpha, alpha) of the mixing share
    aug_exclude: list[Literal["hflip", "vflip", "rotate"]] | None = None
    patience: int | None = None
    task: Literal["classification", "regression"] | None = None
    loss: Literal["mse", "huber"] | None = None  # regression only
