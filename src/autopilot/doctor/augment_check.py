"""Which augmentations keep labels true on this data set: measured, not assumed.

A mirrored 2 is not a 2 and an upside-down 6 is a 9, but a mirrored cat is a
cat. Whether a transform keeps labels is a property of the data, so the
doctor measures it: a narrow plain CNN of its own is trained briefly on the
clean training split, then scored on the validation split as it is and with
every image transformed. A family whose transform costs more than
max(5 points, a quarter of the model's margin over chance) changes what the
images show, and is excluded from the augmentation search.

Only transforms that can change a label are checked (data.policies.FAMILIES:
mirror images and large rotations); small shifts, rotations and colour
changes cannot, by continuity.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..data.dataset import as_float
from ..data.policies import FAMILIES, family_transform
from ..data.stats import channel_mean_std
from ..models import build_model
from ..train import train
from .findings import CheckResult, Finding

CHECK = "augmentation-changes-labels"
MIN_DROP = 0.05  # accuracy lost under a transform that is always too much to call harmless
MARGIN_SHARE = 0.25  # ... or this share of what the model knows beyond chance
TRAIN_SAMPLE = 2500  # training images: enough for a model that knows the classes, few enough for PROBE_EPOCHS
PROBE_EPOCHS = 8  # of the quick model, when its time allows (the budget cuts them on a slow machine)
VAL_SAMPLE = 1500
MIN_MARGIN = 0.2  # a quick model less than this above chance cannot tell us anything
# The check measures the data, so it needs a model that learns the classes in
# seconds whatever the data, not the search's first trial (whose size varies
# with the data: a residual one learnt nothing in this budget on 32x32 photos).
PROBE_WIDTH = 16


def probe_model(X: np.ndarray, n_classes: int, seed: int) -> nn.Module:
    """A narrow plain CNN (a version-1 template) standardised on X."""
    c, h, w = X.shape[1:]
    mean, std = channel_mean_std(X)
    spec = {"family": "cnn2d", "input_shape": [c, h, w], "n_classes": int(n_classes),
            "mean": mean.tolist(), "std": std.tolist(),
            "width": PROBE_WIDTH, "depth": 3 if min(h, w) >= 16 else 2, "residual": False, "batch_norm": True,
            "dropout": 0.0, "kernel_size": 3, "pool": "max", "head": "gap"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec)


def _accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        pred = torch.cat([model(X[i:i + 512]).argmax(1) for i in range(0, len(X), 512)])
    return float((pred == y).float().mean())


def threshold(clean_acc: float, n_classes: int) -> float:
    return max(MIN_DROP, MARGIN_SHARE * (clean_acc - 1.0 / n_classes))


def check_augmentations(hparams: dict, train_data, val_data, n_classes: int, *,
                        budget_s: float = 8.0, seed: int = 0,
                        epochs: int = PROBE_EPOCHS) -> tuple[list[Finding], CheckResult]:
    """Measure each family's accuracy drop; returns the findings (one per
    family that changes labels, with its drop) and the check's result.
    The quick model trains `epochs` epochs or until `budget_s` runs out,
    whichever comes first (a test that gives it the time it needs gets the
    same verdict on a busy machine as on an idle one)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    Xtr, ytr = train_data
    Xv, yv = val_data
    if len(Xtr) > TRAIN_SAMPLE:
        idx = rng.choice(len(Xtr), TRAIN_SAMPLE, replace=False)
        Xtr, ytr = Xtr[idx], ytr[idx]
    if len(Xv) > VAL_SAMPLE:
        idx = rng.choice(len(Xv), VAL_SAMPLE, replace=False)
        Xv, yv = Xv[idx], yv[idx]
    model = probe_model(Xtr, n_classes, seed)
    # No augmentation while learning: the model must know only what the clean data shows.
    hp = {**hparams, "aug_strength": 0.0, "aug_policy": "none", "cutout": 0.0, "elastic": 0.0, "mix": "none", "epochs": epochs, "patience": 99}
    result = train(model, (Xtr, ytr), (Xv, yv), hp, kind="image", seed=seed, device="cpu",
                   deadline=time.monotonic() + budget_s)
    if result.state_dict is None:
        return [], CheckResult(CHECK, "skipped", time.perf_counter() - t0, "no epoch finished in its time")
    model.load_state_dict(result.state_dict)
    model.eval()
    X = torch.from_numpy(as_float(Xv))
    y = torch.as_tensor(yv, dtype=torch.int64)
    clean = _accuracy(model, X, y)
    if clean - 1.0 / n_classes < MIN_MARGIN:
        return [], CheckResult(CHECK, "skipped", time.perf_counter() - t0,
                               f"the quick model reached only {clean:.2f} validation accuracy")
    limit = threshold(clean, n_classes)
    drops = {f: clean - _accuracy(model, family_transform(f, X), y) for f in FAMILIES}
    findings = [
        Finding(CHECK, "info",
                {"family": f, "drop_points": round(100 * d, 2), "clean_accuracy": round(clean, 4),
                 "transformed_accuracy": round(clean - d, 4), "limit_points": round(100 * limit, 2),
                 "examples": int(len(y))},
                f"{_WHAT[f]} costs a model trained on the clean images {100 * d:.1f} points of validation "
                f"accuracy (limit {100 * limit:.1f}): on this data it changes what an image shows",
                f"excluded from the augmentation search ({_EFFECT[f]}); nothing to do unless the classes "
                f"really are symmetric this way")
        for f, d in drops.items() if d > limit
    ]
    note = ", ".join(f"{f} {100 * d:+.1f}" for f, d in drops.items()) + f" points drop (limit {100 * limit:.1f})"
    return findings, CheckResult(CHECK, "found" if findings else "ok", time.perf_counter() - t0, note)


_WHAT = {"hflip": "a horizontal mirror image", "vflip": "a vertical mirror image",
         "rotate": "turning the image upside down"}
_EFFECT = {"hflip": "no horizontal flips", "vflip": "no vertical flips",
           "rotate": "rotations stay within +-30 degrees"}


def excluded_in(doctor_json: dict | None, kind: str) -> list[str]:
    """The families to leave out of augmentation, from a written doctor.json.
    Unmeasured is not harmless: when the check did not run (no doctor, too
    little time, a model that learnt nothing quickly), every family that can
    change labels is left out."""
    if kind != "image":
        return []
    ran = doctor_json is not None and any(c["id"] == CHECK and c["status"] in ("ok", "found")
                                          for c in doctor_json.get("checks", []))
    if not ran:
        return list(FAMILIES)
    return sorted({f["evidence"]["family"] for f in doctor_json.get("findings", []) if f["id"] == CHECK})
