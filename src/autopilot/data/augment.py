"""Whole-batch augmentation on the tensor's own device, one `strength` knob.

The search tunes a single number in [0, 1] instead of a dozen magnitudes; each
kind maps it to transforms that keep the label true. Randomness comes from
torch's global RNG, so torch.manual_seed(...) makes a run repeatable.
"""
from __future__ import annotations

from typing import Callable

import torch

Augment = Callable[[torch.Tensor], torch.Tensor]


def _image_augment(s: float, input_shape: tuple) -> Augment:
    import kornia.augmentation as K  # imported here: ~2 s, and only images need it

    h, w = input_shape[-2:]
    # Rotating an 8x8 digit by 15 degrees moves too many of its few pixels;
    # small images get a gentler range.
    degrees = (15.0 if min(h, w) >= 16 else 8.0) * s
    # No flips: digits and letters are not mirror symmetric.
    affine = K.RandomAffine(
        degrees=degrees, translate=(0.12 * s, 0.12 * s), scale=(1 - 0.12 * s, 1 + 0.12 * s), p=1.0
    )

    def augment(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return affine(x)

    return augment


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


def make_augment(kind: str, strength: float, input_shape: tuple) -> Augment | None:
    """A function (B, C, ...) -> same shape, or None when there is nothing to do
    (strength 0, or tables, where no transform is known to keep labels true)."""
    s = float(strength)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if s == 0.0 or kind == "table":
        return None
    if kind == "image":
        return _image_augment(s, tuple(input_shape))
    if kind == "signal":
        return _signal_augment(s, tuple(input_shape))
    raise ValueError(f"unknown kind {kind!r}")
