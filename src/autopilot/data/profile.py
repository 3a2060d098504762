"""A JSON-serialisable summary of a data set and its splits, for doctor and report.

Duplicates and leaks are exact: rows are hashed byte for byte (blake2b), so
this is O(N) and never compares rows pairwise.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .dataset import Dataset, as_float
from .stats import CHUNK_ROWS, PIXEL_LEVELS, counts_mean_std, pixel_counts

# Per-feature stats are listed for at most this many table columns, so the
# profile stays small for wide tables.
MAX_FEATURES = 100


def row_hashes(x: np.ndarray) -> list[bytes]:
    """Hashes of each row's float32 bytes (uint8 pixels hash as their float
    values), converted a chunk at a time."""
    out = []
    for i in range(0, len(x), CHUNK_ROWS):
        chunk = as_float(x[i:i + CHUNK_ROWS])
        flat = chunk.reshape(len(chunk), -1)
        out += [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in flat]
    return out


def _stats(a: np.ndarray) -> dict[str, float]:
    a = a.astype(np.float64)
    return {"min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()), "std": float(a.std())}


def _pixel_stats(counts: np.ndarray) -> dict[str, float]:
    """_stats of one channel of uint8 pixels, from its histogram (float scale)."""
    present = np.flatnonzero(counts)
    mean, std = counts_mean_std(counts)
    return {"min": float(PIXEL_LEVELS[present[0]]), "max": float(PIXEL_LEVELS[present[-1]]),
            "mean": float(mean), "std": float(std)}


def profile(ds: Dataset, splits: dict[str, np.ndarray]) -> dict:
    hashes = row_hashes(ds.X)
    out: dict = {
        "name": ds.name,
        "kind": ds.kind,
        "examples": len(ds),
        "input_shape": list(ds.input_shape),
        "classes": list(ds.classes),
        "fingerprint": ds.fingerprint(),
        "splits": {},
    }
    regression = ds.task == "regression"  # no classes to count: the target's statistics per split instead
    counts_all = np.zeros(0, np.int64) if regression else np.bincount(ds.y, minlength=ds.n_classes)
    for name, idx in splits.items():
        counts = [] if regression else np.bincount(ds.y[idx], minlength=ds.n_classes)
        out["splits"][name] = {
            "examples": int(len(idx)),
            "class_counts": {c: int(n) for c, n in zip(ds.classes, counts)},
        }
        if regression and len(idx):
            out["splits"][name]["target"] = _stats(ds.y[idx])
    present = counts_all[counts_all > 0]
    out["imbalance_ratio"] = float(present.max() / present.min()) if len(present) else None

    train = splits.get("train", np.zeros(0, np.int64))
    train_set = {hashes[i] for i in train}
    out["train_duplicates"] = int(len(train) - len(train_set))  # rows beyond the first copy
    out["leaks"] = {
        name: int(sum(hashes[i] in train_set for i in idx)) for name, idx in splits.items() if name != "train"
    }
    # The same input under two different labels: noise no model can fit.
    label_of: dict[bytes, int] = {}
    conflicts = set()
    for h, label in zip(hashes, ds.y.tolist()):
        if label_of.setdefault(h, label) != label:
            conflicts.add(h)
    out["conflicting_duplicates"] = len(conflicts)

    if ds.kind == "table":
        names = ds.feature_names or [f"feature {j}" for j in range(ds.X.shape[1])]
        out["features"] = [{"name": n, **_stats(ds.X[:, j])} for j, n in enumerate(names[:MAX_FEATURES])]
        out["features_truncated"] = len(names) > MAX_FEATURES
    elif ds.X.dtype == np.uint8:  # images held as pixels: no float copy
        out["channels"] = [_pixel_stats(c) for c in pixel_counts(ds.X)]
    else:  # images and signals: one summary per channel
        out["channels"] = [_stats(ds.X[:, c]) for c in range(ds.X.shape[1])]
    return out
