"""The search space: architecture, optimiser, regularisation, augmentation.

A trial's parameters are a flat dict (what Optuna stores). `to_config` turns
them, with facts about the data, into a model spec and training hyper-
parameters, so a stored trial can always be rebuilt without Optuna.
"""
from __future__ import annotations

import optuna

from ..train import DEFAULTS
from . import augment_space

# Choices a user may want to read at a glance.
WIDTHS = {"cnn2d": [16, 32, 48, 64], "cnn1d": [32, 64, 96, 128], "mlp": [64, 128, 256, 512]}
KERNELS = {"cnn2d": [3, 5], "cnn1d": [3, 5, 7]}
BATCH_SIZES = [32, 64, 128]
EPOCHS = [10, 20, 30, 45]


def families_for(kind: str) -> list[str]:
    return {"image": ["cnn2d", "mlp"], "signal": ["cnn1d", "mlp"], "table": ["mlp", "gbt"]}[kind]  # gbt: search/trees_space.py


def min_depth(family: str, input_shape: list[int]) -> int:
    # One full-resolution stage on a 28x28 image costs as much as a deep
    # network and learns less: larger inputs need at least one downsampling.
    if family != "mlp" and min(input_shape[1:]) >= 16:
        return 2
    return 1


def max_depth(family: str, input_shape: list[int]) -> int:
    if family == "mlp":
        return 4
    spatial = min(input_shape[1:])
    # Stages downsample by 2 while the map is >= 4 wide; one more stage after that is plenty.
    depth = 1
    while spatial >= 4 and depth < 4:
        spatial //= 2
        depth += 1
    return max(2, min(depth, 4))


def default_params(info: dict) -> dict:
    """A strong, cheap first trial per kind of data: the search starts from a
    known-good point and TPE improves on it."""
    kind, shape = info["kind"], info["input_shape"]
    common = {"optimizer": "adamw", "lr_adamw": 3e-3, "weight_decay": 5e-4, "schedule": "onecycle",
              "batch_size": 64, "label_smoothing": 0.1, "epochs": 30, "dropout": 0.1}
    if kind == "image":
        # Narrow on large images: a 28x28 CNN of width 32 costs ~4x width 16
        # per epoch, and the first trial has to finish early in a short budget.
        # Colour photos start from a small residual network (with crop+flip,
        # augment_space): the CIFAR recipe's shape, which plain stacks trail.
        width = 16 if min(shape[1:]) >= 16 else 32
        return {**common, "family": "cnn2d", "cnn2d_width": width, "cnn2d_depth": min(3, max_depth("cnn2d", shape)),
                "cnn2d_kernel": 3, "residual": augment_space.is_colour_photo(info), "pool": "max", "head": "gap",
                "epochs": 20 if min(shape[1:]) >= 16 else 30, **augment_space.default_params(info)}
    if kind == "signal":
        return {**common, "family": "cnn1d", "cnn1d_width": 32, "cnn1d_depth": 3, "cnn1d_kernel": 5, "lr_adamw": 5e-3,
                "epochs": 20, "residual": True, "pool": "max", "head": "flatten", **augment_space.default_params(info)}
    return {**common, "family": "mlp", "mlp_width": 256, "mlp_depth": 2, "residual": False}


def suggest(trial: optuna.Trial, info: dict) -> dict:
    """Sample one configuration. Conditional parameters carry the family in
    their name so that their distributions never clash across families."""
    kind, shape = info["kind"], info["input_shape"]
    p: dict = {}
    p["family"] = family = trial.suggest_categorical("family", families_for(kind))
    if family == "gbt":
        from .trees_space import suggest as suggest_trees

        return suggest_trees(trial)
    p[f"{family}_width"] = trial.suggest_categorical(f"{family}_width", WIDTHS[family])
    p[f"{family}_depth"] = trial.suggest_int(f"{family}_depth", min_depth(family, shape), max_depth(family, shape))
    p["residual"] = trial.suggest_categorical("residual", [False, True])
    if family != "mlp":
        p[f"{family}_kernel"] = trial.suggest_categorical(f"{family}_kernel", KERNELS[family])
        p["pool"] = trial.suggest_categorical("pool", ["max", "avg"])
        p["head"] = trial.suggest_categorical("head", ["gap", "flatten"])
    p["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    p["optimizer"] = opt = trial.suggest_categorical("optimizer", ["adamw", "sgd"])
    if opt == "adamw":
        p["lr_adamw"] = trial.suggest_float("lr_adamw", 3e-4, 1e-2, log=True)
    else:
        p["lr_sgd"] = trial.suggest_float("lr_sgd", 1e-2, 0.3, log=True)
    p["weight_decay"] = trial.suggest_float("weight_decay", 1e-6, 5e-2, log=True)
    p["schedule"] = trial.suggest_categorical("schedule", ["onecycle", "cosine"])
    p["batch_size"] = trial.suggest_categorical("batch_size", BATCH_SIZES)
    p["label_smoothing"] = trial.suggest_float("label_smoothing", 0.0, 0.2)
    p["epochs"] = trial.suggest_categorical("epochs", EPOCHS)
    p.update(augment_space.suggest(trial, info))
    return p


def grid_space(info: dict) -> dict[str, list]:
    """A small finite space for --sampler grid; parameters outside it keep
    their default value (see `default_params`)."""
    kind = info["kind"]
    fam = families_for(kind)[0]
    space = {
        f"{fam}_width": WIDTHS[fam][1:3],
        f"{fam}_depth": sorted({1, 2, min(3, max_depth(fam, info["input_shape"]))}),
        "lr_adamw": [1e-3, 3e-3],
    }
    if kind != "table":
        space["aug_strength"] = [0.0, 0.5]
    return space


def suggest_grid(trial: optuna.Trial, info: dict) -> dict:
    p = default_params(info)
    for name, values in grid_space(info).items():
        p[name] = trial.suggest_categorical(name, values)
    return p


def to_config(params: dict, info: dict) -> tuple[dict, dict]:
    """Flat trial parameters -> (model spec, training hyper-parameters)."""
    family = params["family"]
    shape = list(info["input_shape"])
    spec = {
        "family": family,
        "input_shape": shape,
        "n_classes": int(info["n_classes"]),
        "mean": info["mean"],
        "std": info["std"],
        "width": int(params[f"{family}_width"]),
        "depth": int(params[f"{family}_depth"]),
        "residual": bool(params.get("residual", False)),
        "batch_norm": True,
        "dropout": float(params.get("dropout", 0.0)),
    }
    if family != "mlp":
        spec.update(kernel_size=int(params[f"{family}_kernel"]), pool=params.get("pool", "max"), head=params.get("head", "gap"))
    spec.update(augment_space.spec_fields(params, info))
    opt = params.get("optimizer", "adamw")
    hp = {
        "optimizer": opt,
        "lr": float(params.get(f"lr_{opt}", DEFAULTS["lr"])),
        "weight_decay": float(params.get("weight_decay", DEFAULTS["weight_decay"])),
        "schedule": params.get("schedule", DEFAULTS["schedule"]),
        "batch_size": int(params.get("batch_size", DEFAULTS["batch_size"])),
        "label_smoothing": float(params.get("label_smoothing", 0.0)),
        "epochs": int(params.get("epochs", DEFAULTS["epochs"])),
        **augment_space.to_hparams(params, info),
    }
    hp["patience"] = max(5, hp["epochs"] // 3)
    return spec, hp


def default_model(ds, splits: dict, seed: int = 0):
    """The search's first trial for this data, built: (model, training
    hyper-parameters). The doctor's pre-flight probes this model."""
    import torch

    from ..data.stats import data_info
    from ..models import build_model

    info = data_info(ds, splits)
    spec, hp = to_config(default_params(info), info)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
    return model, hp
