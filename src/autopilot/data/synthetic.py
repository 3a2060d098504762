"""Small colour "photos" made on the spot, for tests and benchmarks.

Each image shows one shape on a textured background, at a random place,
size, colour and lighting. The classes are chosen so that a mirror image
keeps its class (every shape is left-right symmetric) while turning the
image upside down does not (a triangle pointing up becomes one pointing
down): the data a doctor's label check should keep flips on and refuse
large rotations for. Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ["circle", "square", "triangle-up", "triangle-down", "ring", "cross", "bar-h", "bar-v", "diamond",
           "arch"]


def _shape_mask(name: str, yy: np.ndarray, xx: np.ndarray, r: float) -> np.ndarray:
    ax, ay = np.abs(xx), np.abs(yy)
    if name == "circle":
        return xx**2 + yy**2 <= r**2
    if name == "square":
        return (ax <= 0.8 * r) & (ay <= 0.8 * r)
    if name == "triangle-up":
        return (yy <= 0.8 * r) & (yy >= -0.8 * r) & (ax <= (yy + 0.8 * r) * 0.6)
    if name == "triangle-down":
        return (yy <= 0.8 * r) & (yy >= -0.8 * r) & (ax <= (0.8 * r - yy) * 0.6)
    if name == "ring":
        d = xx**2 + yy**2
        return (d <= r**2) & (d >= (0.55 * r) ** 2)
    if name == "cross":
        return ((ax <= 0.25 * r) & (ay <= r)) | ((ay <= 0.25 * r) & (ax <= r))
    if name == "bar-h":
        return (ax <= r) & (ay <= 0.3 * r)
    if name == "bar-v":
        return (ax <= 0.3 * r) & (ay <= r)
    if name == "diamond":
        return ax + ay <= r
    if name == "arch":  # an upper half ring: upside down it is a cup
        d = xx**2 + yy**2
        return (d <= r**2) & (d >= (0.55 * r) ** 2) & (yy <= 0.1 * r)
    raise ValueError(name)


def make_shapes(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 (n, size, size, 3), labels int64 (n,), class names)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    rng.shuffle(y)
    X = np.empty((n, size, size, 3), dtype=np.uint8)
    grid = np.arange(size, dtype=np.float32)
    for i in range(n):
        # background: a colour gradient plus noise, so colour alone says nothing
        base = rng.uniform(0, 1, 3)
        tilt = rng.uniform(-0.4, 0.4, 3)
        bg = base + tilt * (grid[:, None, None] / size - 0.5) + rng.normal(0, 0.06, (size, size, 3))
        r = rng.uniform(0.22, 0.38) * size
        cx = rng.uniform(r, size - r) if size > 2 * r else size / 2
        cy = rng.uniform(r, size - r) if size > 2 * r else size / 2
        mask = _shape_mask(CLASSES[y[i]], grid[:, None] - cy, grid[None, :] - cx, r)
        colour = (base + rng.uniform(0.35, 0.65, 3)) % 1.0  # far enough from the background
        img = np.where(mask[..., None], colour + rng.normal(0, 0.04, (size, size, 3)), bg)
        img = img * rng.uniform(0.7, 1.2)  # lighting
        X[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return X, y.astype(np.int64), list(CLASSES)


def write_folder(path: str | Path, n: int, size: int = 32, seed: int = 0) -> Path:
    """An image folder (one sub-folder of PNGs per class), as users bring them."""
    from PIL import Image

    path = Path(path)
    X, y, classes = make_shapes(n, size, seed)
    for c in classes:
        (path / c).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(X, y)):
        Image.fromarray(img).save(path / classes[label] / f"{i:06d}.png")
    return path
