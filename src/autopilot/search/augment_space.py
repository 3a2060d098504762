"""The augmentation part of the search space.

Images search over the policies of data.policies (none, flips alone, affine,
crop+flip, TrivialAugment, RandAugment with its N and M), Cutout, mixup /
CutMix with their strength (on schedules of LONG_SCHEDULE_EPOCHS or more),
and test-time flip averaging; signals keep the one
`aug_strength` knob of data.augment. Tables have no label-preserving
transform, so nothing is searched for them.

The families the doctor measured to change labels on this data
(info["augment_exclude"]) are never used: the policies drop them
(aug_exclude in the hyper-parameters), and test-time flip averaging is not
offered when horizontal flips are excluded.

What is searched is info["augment_search"] (SEARCHES; "searched" unless
set): "affine" is autopilot's former space (the one affine knob) and "none"
turns augmentation off; bench/augment.py compares the three.

Three functions, each called with one line from search.space:
`suggest` (define-by-run, so conditional parameters exist only when their
policy is drawn), `default_params` (the first trial's choices) and
`to_hparams` / `spec_fields` (flat parameters -> training hyper-parameters
and the model spec's fields).
"""
from __future__ import annotations

import optuna

from ..data.policies import POLICIES

CUTOUT_SIZES = [0.0, 0.25, 0.5]  # side of the erased square / image side; 0.5 is DeVries & Taylor's CIFAR-10 value
MIXES = ["none", "mixup", "cutmix"]
MIX_ALPHA = (0.1, 1.0)  # Beta(alpha, alpha); 0.2 (mixup) and 1.0 (CutMix) are the papers' ImageNet/CIFAR values
RANDAUGMENT_N = (1, 3)
RANDAUGMENT_M = (0.1, 0.9)  # share of each operation's range: the paper's M=9..15 of 30 is 0.3-0.5
SEARCHES = ("searched", "affine", "none")
# Every parameter `suggest` may ask for: what a first-trial variant replaces.
PARAMS = ("aug_policy", "aug_strength", "randaugment_n", "randaugment_m", "cutout", "mix", "mix_alpha", "tta_hflip")
MIN_PHOTO_SIDE = 24  # colour images at least this wide get photo defaults (crop+flip)
# Cutout and mixup / CutMix are offered only to trials that train at least
# this many epochs. They regularise by making training harder, and the papers
# that show their gains train 200+ epochs; in bench/augment.py at 15 epochs
# every trial that drew one was the worst of its search (shapes 0.21-0.34 test
# accuracy against 0.81-0.94 without augmentation, fashion 0.64-0.73 against
# 0.75-0.79). A short schedule leaves them out rather than spend trials on them.
LONG_SCHEDULE_EPOCHS = 30


def heavy_allowed(epochs: int | None) -> bool:
    """Whether a trial of `epochs` may draw Cutout and mixing (None: not known, allowed)."""
    return epochs is None or int(epochs) >= LONG_SCHEDULE_EPOCHS


def _is_2d_image(info: dict) -> bool:
    return info["kind"] == "image" and len(info["input_shape"]) == 3


def is_colour_photo(info: dict) -> bool:
    """Colour images large enough for crop+flip and a residual network."""
    shape = info["input_shape"]
    return _is_2d_image(info) and shape[0] == 3 and min(shape[1:]) >= MIN_PHOTO_SIDE


def flip_allowed(info: dict) -> bool:
    return _is_2d_image(info) and "hflip" not in info.get("augment_exclude", [])


def policies(info: dict) -> list[str]:
    """The policies searched on this data: flips alone only where flips keep labels (else it is `none` again)."""
    return [p for p in POLICIES if p != "hflip" or flip_allowed(info)]


def _search(info: dict) -> str:
    search = info.get("augment_search", "searched")
    if search not in SEARCHES:
        raise ValueError(f"unknown augmentation search {search!r}; expected one of {', '.join(SEARCHES)}")
    return search


def suggest(trial: optuna.Trial, info: dict, epochs: int | None = None) -> dict:
    """Sample the augmentation of one trial (flat parameters) that trains
    `epochs` epochs: Cutout and mixing only on a long schedule (heavy_allowed)."""
    kind, search = info["kind"], _search(info)
    if kind == "table" or search == "none":
        return {}
    if kind != "image" or search == "affine":
        return {"aug_strength": trial.suggest_float("aug_strength", 0.0, 1.0)}
    p: dict = {"aug_policy": (policy := trial.suggest_categorical("aug_policy", policies(info)))}
    if policy == "affine":
        p["aug_strength"] = trial.suggest_float("aug_strength", 0.0, 1.0)
    elif policy == "randaugment":
        p["randaugment_n"] = trial.suggest_int("randaugment_n", *RANDAUGMENT_N)
        p["randaugment_m"] = trial.suggest_float("randaugment_m", *RANDAUGMENT_M)
    if heavy_allowed(epochs):
        p["cutout"] = trial.suggest_categorical("cutout", CUTOUT_SIZES)
        p["mix"] = mix = trial.suggest_categorical("mix", MIXES)
        if mix != "none":
            p["mix_alpha"] = trial.suggest_float("mix_alpha", *MIX_ALPHA)
    if flip_allowed(info):
        p["tta_hflip"] = trial.suggest_categorical("tta_hflip", [False, True])
    return p


def _no_heavy(epochs: int | None) -> dict:
    """Cutout and mixing off, where `suggest` asks for them (see heavy_allowed)."""
    return {"cutout": 0.0, "mix": "none"} if heavy_allowed(epochs) else {}


def default_params(info: dict, epochs: int | None = None) -> dict:
    """The first trial's augmentation: crop+flip on colour photos (the CIFAR
    standard), the measured affine knob at 0.5 elsewhere. Every parameter
    `suggest` would ask for on this path (a trial of `epochs` epochs) is
    given, and no other, so an enqueued first trial draws nothing at random
    and leaves no stray value."""
    kind, search = info["kind"], _search(info)
    if kind == "table" or search == "none":
        return {}
    if kind != "image" or search == "affine":
        return {"aug_strength": 0.5 if kind == "image" else 0.3}
    p: dict = ({"aug_policy": "cropflip"} if is_colour_photo(info) else {"aug_policy": "affine", "aug_strength": 0.5})
    p.update(_no_heavy(epochs))
    if flip_allowed(info):
        p["tta_hflip"] = False
    return p


def first_variants(info: dict, epochs: int | None = None) -> list[dict]:
    """The augmentation of known-good trials to run after the first (each
    on the first trial's network, see `with_augmentation`; `autopilot run`
    enqueues them when its budget holds them, search.space.first_trials, and
    so does bench/augment.py): no
    augmentation at all, the recipe's baseline, flips alone where flips keep
    labels (the lightest policy, the only one that cost no accuracy at 15 epochs), and
    the other known-good policy of the data kind (affine on photos, crop+flip
    on other images).
    On little data or a short budget augmentation can cost more than it
    gives (bench/augment.py: at 700 images and 8 epochs none won), and TPE's
    first draws are random (often RandAugment at a strong magnitude, or
    CutMix): the search should measure both ends before it explores."""
    if not _is_2d_image(info) or _search(info) != "searched":
        return []
    tail = {**_no_heavy(epochs), **({"tta_hflip": False} if flip_allowed(info) else {})}
    other = {"aug_policy": "affine", "aug_strength": 0.5} if is_colour_photo(info) else {"aug_policy": "cropflip"}
    flips = [{"aug_policy": "hflip", **tail}] if flip_allowed(info) else []
    return [{"aug_policy": "none", **tail}, *flips, {**other, **tail}]


def with_augmentation(params: dict, augmentation: dict) -> dict:
    """`params` with its augmentation replaced by `augmentation`: no
    parameter of the former policy is left behind (an enqueued parameter
    that is never asked for would be stored as a stray value)."""
    return {**{k: v for k, v in params.items() if k not in PARAMS}, **augmentation}


def to_hparams(params: dict, info: dict) -> dict:
    """Flat parameters -> the augmentation entries of the training
    hyper-parameters. A trial stored before policies were searched has only
    `aug_strength`, which meant the affine policy."""
    hp: dict = {"aug_exclude": list(info.get("augment_exclude", []))}  # what the doctor measured to change labels
    policy = params.get("aug_policy")
    if policy is None:
        hp["aug_strength"] = float(params.get("aug_strength", 0.0))
        return hp
    hp["aug_policy"] = policy
    if policy == "affine":
        hp["aug_strength"] = float(params.get("aug_strength", 0.5))
    elif policy == "randaugment":
        hp["aug_strength"] = float(params["randaugment_m"])
        hp["aug_ops"] = int(params["randaugment_n"])
    hp["cutout"] = float(params.get("cutout", 0.0))
    mix = params.get("mix", "none")
    if mix != "none":
        hp["mix"], hp["mix_alpha"] = mix, float(params["mix_alpha"])
    return hp


def spec_fields(params: dict, info: dict) -> dict:
    """Model spec fields the augmentation decides: test-time flip averaging
    lives in the spec, so every rebuild of the model (final training,
    compression candidates, students, the ONNX export) computes it too."""
    if params.get("tta_hflip") and flip_allowed(info):
        return {"tta": "hflip"}
    return {}
