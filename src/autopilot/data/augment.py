"""Augmentation on the tensor's own device, per example, by kind of data.

Images use a policy (data.policies: none, affine, cropflip, trivial,
randaugment, optional Cutout) from which the doctor has removed the
transforms that change labels on this data; signals a shift, scale and
noise whose range is one `strength` knob. Either may add mixup or CutMix
(`make_mix`), which pairs examples and so also mixes their labels' losses
(train.py). Randomness comes from torch's global RNG, so torch.manual_seed(...) makes a run repeatable.
"""
from __future__ import annotations

from typing import Callable

import torch

Augment = Callable[[torch.Tensor], torch.Tensor]


def _signal_augment(s: float, input_shape: tuple) -> Augment:
    length = int(input_shape[-1])
    max_shift = round(0.1 * s * length)

    def augment(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            b, c, n = x.shape
            std = x.std(correction=0)  # measured before scaling: noise relative to the data
            if max_shift > 0:
                # Shift each example by up to max_shift positions; the edge value
                # fills the gap (not wrap-around, which would glue end to start).
                shifts = torch.randint(-max_shift, max_shift + 1, (b,), device=x.device)
                left = x[..., :1].expand(b, c, max_shift)
                right = x[..., -1:].expand(b, c, max_shift)
                padded = torch.cat([left, x, right], dim=-1)
                idx = torch.arange(n, device=x.device)[None, :] + max_shift - shifts[:, None]
                x = padded.gather(-1, idx[:, None, :].expand(b, c, n))
            scale = 1 + 0.2 * s * (2 * torch.rand(b, 1, 1, device=x.device, dtype=x.dtype) - 1)
            return x * scale + torch.randn_like(x) * (0.05 * s * std)

    return augment


def make_augment(kind: str, strength: float, input_shape: tuple, *, policy: str = "affine", n_ops: int = 2,
                 cutout: float = 0.0, elastic: float = 0.0, exclude: tuple[str, ...] = ()) -> Augment | None:
    """A function (B, C, ...) -> same shape, or None when there is nothing to do
    (no policy, or tables, where no transform is known to keep labels true).
    `policy`, `n_ops`, `cutout`, `elastic` and `exclude` apply to images (data.policies)."""
    s = float(strength)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if kind == "table":
        return None
    if kind == "image":
        from .policies import image_policy  # kornia: ~2 s to import, and only images need it

        if policy == "affine" and s == 0.0:
            policy = "none"
        return image_policy(policy, strength=s, n_ops=n_ops, cutout=cutout, elastic=elastic, exclude=exclude,
                            channels=int(input_shape[0]))
    if kind == "signal":
        return _signal_augment(s, tuple(input_shape)) if s > 0 else None
    raise ValueError(f"unknown kind {kind!r}")


def augment_from_hparams(kind: str, hp: dict, input_shape: tuple) -> Augment | None:
    """The augmentation a trial's training hyper-parameters describe; a trial
    stored before policies existed (only `aug_strength`) gets the affine policy."""
    return make_augment(kind, float(hp.get("aug_strength", 0.0)), input_shape,
                        policy=hp.get("aug_policy", "affine"), n_ops=int(hp.get("aug_ops", 2)),
                        cutout=float(hp.get("cutout", 0.0)), elastic=float(hp.get("elastic", 0.0)), exclude=tuple(hp.get("aug_exclude", ())))


Mix = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, float]]
MIXES = ("none", "mixup", "cutmix")


def make_mix(mix: str, alpha: float) -> Mix | None:
    """mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) over a batch:
    (x, y) -> (mixed x, the partner labels, lam), with the share lam of
    the first labels drawn from Beta(alpha, alpha) once per batch (the
    papers' form). The loss is lam * loss(y) + (1 - lam) * loss(partner):
    with label smoothing that is exactly the smoothed soft target mixed."""
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix!r}; expected one of {', '.join(MIXES)}")
    if mix == "none":
        return None
    if not alpha > 0:
        raise ValueError(f"mix_alpha must be > 0, got {alpha}")
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))

    def mixing(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        with torch.no_grad():
            lam = float(beta.sample())
            perm = torch.randperm(len(x), device=x.device)
            if mix == "mixup":
                return lam * x + (1 - lam) * x[perm], y[perm], lam
            # CutMix: a box of area share 1 - lam from the partner, over the
            # last one (signals) or two (images) axes; lam then is the share
            # actually kept, as the box is clipped at the border.
            sides = x.shape[2:]
            cut = (1 - lam) ** (1 / len(sides))
            lo, hi, kept = [], [], 1.0
            for n in sides:
                size = round(n * cut)
                centre = int(torch.randint(n, (1,)))
                a, b = max(0, centre - size // 2), min(n, centre + size - size // 2)
                lo.append(a)
                hi.append(b)
                kept *= (b - a) / n
            box = (slice(None), slice(None), *(slice(a, b) for a, b in zip(lo, hi)))
            out = x.clone()
            out[box] = x[perm][box]
            return out, y[perm], 1.0 - kept

    return mixing


def mix_from_hparams(kind: str, hp: dict) -> Mix | None:
    """The mixing a trial's hyper-parameters describe (none for tables)."""
    if kind == "table":
        return None
    return make_mix(hp.get("mix") or "none", float(hp.get("mix_alpha") or 1.0))
