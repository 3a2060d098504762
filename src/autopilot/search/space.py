"""The search space: architecture components, optimiser, regularisation,
augmentation.

The architecture is searched component by component (NASNet's idea): for
images and signals a stem, then 2-4 stages, each with its own operation,
blocks, width, skip connection and squeeze-and-excitation; downsampling,
activation, normalisation and head are global choices. Tables get MLPs with
per-layer widths and residual connections. Sampled networks are version-2
specs (models/components.py).

A trial's parameters are a flat dict (what Optuna stores), named by family
and stage (`cnn2d_s1_op`, `mlp_l2_width`), so that distributions never clash
across families and a stored trial rebuilds without Optuna: `to_config`
turns them, with facts about the data, into a model spec and training
hyper-parameters. Parameters of the former template space (`cnn2d_width`,
`cnn2d_depth`, ...) still rebuild their version-1 spec, so older runs resume.
"""
from __future__ import annotations

import optuna

from ..models.components import HEADS, from_template
from ..models.ops import ACTIVATIONS, OPERATIONS
from ..train import DEFAULTS
from . import augment_space

# Choices a user may want to read at a glance. The widths of the templates'
# known-good first trials (16/32/64, 32/64/128) are among them, so their
# component twins are points of this space.
STEM_WIDTHS = {"cnn2d": [8, 16, 24, 32, 48], "cnn1d": [16, 32, 48, 64]}
STAGE_WIDTHS = {"cnn2d": [16, 24, 32, 48, 64, 96, 128], "cnn1d": [32, 48, 64, 96, 128, 192]}
STEM_KERNELS = [3, 5]
MAX_BLOCKS = 3
MLP_WIDTHS = [64, 128, 256, 512]
MAX_MLP_LAYERS = 4
DOWNSAMPLING = ["stride", "max", "avg"]
NORMS = ["batch", "group"]  # "none" builds, but trains worse everywhere we tried; not worth trials
BATCH_SIZES = [32, 64, 128]
EPOCHS = [10, 20, 30, 45]  # the longest schedule a trial may plan; a time budget may shorten it (budget.py)
# Run budget seconds per million training pixels (rows x height x width) from
# which the first image network is twice as wide (32/64/128, not 16/32/64;
# `wide_first_network`). Why this value: the wide network cost about 1.9 s
# per million pixels per epoch on one core of this machine, and a search's
# final phase gets about a quarter of the budget, so at 150 s it can give the
# wide network the 20 epochs the first trial plans.
WIDE_FIRST_S_PER_MPIXEL = 150.0

# The former template space, kept to rebuild trials of older runs.
TEMPLATE_WIDTHS = {"cnn2d": [16, 32, 48, 64], "cnn1d": [32, 64, 96, 128], "mlp": [64, 128, 256, 512]}
TEMPLATE_KERNELS = {"cnn2d": [3, 5], "cnn1d": [3, 5, 7]}


def families_for(kind: str) -> list[str]:
    """Model families the search chooses among for a kind of data. A new
    network family is added here and in FAMILY_SPACES below; gbt (gradient-
    boosted trees) and linear (models/linear.py) sample and train through
    search/table_families.py, which also says which of these a table searches."""
    return {"image": ["cnn2d", "mlp"], "signal": ["cnn1d", "mlp"], "table": ["mlp", "gbt", "linear"]}[kind]


def searched_families(info: dict) -> list[str]:
    """The families this data set's search chooses among: a small table's leaves networks out."""
    if info["kind"] == "table":
        from .table_families import families

        return families(info)
    return families_for(info["kind"])


def min_depth(family: str, input_shape: list[int]) -> int:
    # One full-resolution stage on a 28x28 image costs as much as a deep
    # network and learns less: larger inputs need at least one downsampling.
    if family != "mlp" and min(input_shape[1:]) >= 16:
        return 2
    return 1


def max_depth(family: str, input_shape: list[int]) -> int:
    if family == "mlp":
        return MAX_MLP_LAYERS
    spatial = min(input_shape[1:])
    # Stages downsample by 2 while the map is >= 4 wide; one more stage after that is plenty.
    depth = 1
    while spatial >= 4 and depth < 4:
        spatial //= 2
        depth += 1
    return max(2, min(depth, 4))


# ---- the first trials: the templates' known-good points, as component specs ----

def _template_defaults(info: dict) -> tuple[dict, dict]:
    """Today's known-good template configuration per kind of data:
    (version-1 parameters, training parameters)."""
    kind, shape = info["kind"], info["input_shape"]
    common = {"optimizer": "adamw", "lr_adamw": 3e-3, "weight_decay": 5e-4, "schedule": "onecycle",
              "batch_size": 64, "label_smoothing": 0.1, "epochs": 30, "dropout": 0.1}
    if info.get("task") == "regression":
        common["loss"] = "mse"
    if kind == "image":
        # Narrow on large images: a 28x28 CNN of width 32 costs ~3-4x width 16
        # per epoch, and the first trial has to finish early in a short budget;
        # wide where the run's budget affords it on its pixels (wide_first_network).
        # Colour photos train this plain stack with crop+flip (augment_space).
        # Not yet a residual network: the same stages with skips (76k
        # parameters) learnt 32x32 shapes as well in 20 epochs (99.4 % test
        # against 98.9 %), but within the doctor's no-signal probe (26
        # batches of the 840 training images of the tests' PNG folder) it
        # scored 13.7 % against 9.6 % on zeroed inputs, and the pre-flight
        # stopped the run.
        width = 32 if min(shape[1:]) < 16 or wide_first_network(info) else 16
        v1 = {"family": "cnn2d", "cnn2d_width": width, "cnn2d_depth": min(3, max_depth("cnn2d", shape)),
              "cnn2d_kernel": 3, "residual": False, "pool": "max", "head": "gap"}
        epochs = 20 if min(shape[1:]) >= 16 else 30
        return v1, {**common, "epochs": epochs, **augment_space.default_params(info, epochs)}
    if kind == "signal":
        v1 = {"family": "cnn1d", "cnn1d_width": 32, "cnn1d_depth": 3, "cnn1d_kernel": 5, "residual": True,
              "pool": "max", "head": "flatten"}
        return v1, {**common, "lr_adamw": 5e-3, "epochs": 20, **augment_space.default_params(info, 20)}
    return {"family": "mlp", "mlp_width": 256, "mlp_depth": 2, "residual": False}, common


def wide_first_network(info: dict) -> bool:
    """Whether the run's budget affords the first image network at twice
    the width on this many training pixels (WIDE_FIRST_S_PER_MPIXEL).

    Measured on mnist5k (bench/seeds.py, splits 1-4 x 3 training seeds, 37
    epochs; split 0, the one `autopilot run` is judged on, was not looked
    at): 52 test errors in all at 32/64/128 (288,170 parameters) against 75
    at 16/32/64 (72,666), fewer on each of the four splits, for about 3x the
    time per epoch. Without a time budget (`--trials` only), or without the
    run's facts (the doctor's pre-flight model), the first network stays
    narrow, as before."""
    budget, rows = info.get("budget_s"), info.get("train_rows")
    if not budget or not rows:
        return False
    height, width = info["input_shape"][1:3]
    return budget / (rows * height * width / 1e6) >= WIDE_FIRST_S_PER_MPIXEL


def default_params(info: dict) -> dict:
    """A strong, cheap first trial per kind of data: the component twin
    (models.components.from_template) of the former template default, so
    the search starts from a known-good point and TPE improves on it."""
    v1, training = _template_defaults(info)
    twin = from_template(_template_spec(v1, info))
    return {**params_from_spec(twin), **training}


def first_params(info: dict) -> list[dict]:
    """The trials enqueued before the sampler takes over: the default, then
    a second known-good point of another shape (images: two stages with a
    flatten head, cheaper per epoch and strong on 28x28 grey images;
    signals: a light two-stage net; tables: a wider residual MLP)."""
    first = default_params(info)
    fam = first["family"]
    if fam == "cnn2d" and first.get("cnn2d_stages", 0) >= 3:
        second = {**first, "cnn2d_stages": 2, "cnn2d_head": "flatten"}
        for key in [k for k in second if k.startswith("cnn2d_s3_") or k.startswith("cnn2d_s4_")]:
            del second[key]
    elif fam == "cnn1d":
        # A light net: one conv-5 block with a skip per stage, 32 then 64
        # wide (~10x fewer parameters): many more epochs in a short budget.
        second = {**{k: v for k, v in first.items() if not k.startswith("cnn1d_s3_")}, "cnn1d_stages": 2,
                  "cnn1d_s1_blocks": 1, "cnn1d_s2_blocks": 1, "cnn1d_s1_width": 32, "cnn1d_s2_width": 64}
    else:
        second = {**first, "mlp_layers": 3, "mlp_l1_width": 512, "mlp_l2_width": 512, "mlp_l3_width": 512,
                  "mlp_l2_residual": True, "mlp_l3_residual": True}
    # The first network's augmentation variants follow in first_trials, when the budget holds them.
    return [first, second] if second != first else [first]


def params_from_spec(spec: dict) -> dict:
    """The flat parameters that `to_config` turns back into this version-2
    spec's architecture (the inverse of the architecture half of to_config)."""
    fam = spec["family"]
    p = {"family": fam, "activation": spec["activation"], "norm": spec["norm"], "dropout": float(spec.get("dropout", 0.0))}
    if fam == "mlp":
        p["mlp_layers"] = len(spec["layers"])
        for i, layer in enumerate(spec["layers"], 1):
            p[f"mlp_l{i}_width"] = int(layer["width"])
            if i > 1:  # the first layer changes the width from the input's: a residual there is a projection only
                p[f"mlp_l{i}_residual"] = bool(layer.get("residual", False))
        return p
    p.update({f"{fam}_stem_width": int(spec["stem"]["width"]), f"{fam}_stem_kernel": int(spec["stem"].get("kernel_size", 3)),
              f"{fam}_stages": len(spec["stages"]), f"{fam}_downsample": spec["downsample"], f"{fam}_head": spec["head"]})
    for i, st in enumerate(spec["stages"], 1):
        p.update({f"{fam}_s{i}_op": st["op"], f"{fam}_s{i}_blocks": int(st["blocks"]), f"{fam}_s{i}_width": int(st["width"]),
                  f"{fam}_s{i}_skip": bool(st["skip"]), f"{fam}_s{i}_se": bool(st.get("se", False))})
    return p


# ---- sampling ----

def _suggest_convnet(trial: optuna.Trial, fam: str, info: dict) -> dict:
    shape = info["input_shape"]
    p = {
        f"{fam}_stem_width": trial.suggest_categorical(f"{fam}_stem_width", STEM_WIDTHS[fam]),
        f"{fam}_stem_kernel": trial.suggest_categorical(f"{fam}_stem_kernel", STEM_KERNELS),
        f"{fam}_stages": trial.suggest_int(f"{fam}_stages", min_depth(fam, shape), max_depth(fam, shape)),
    }
    for i in range(1, p[f"{fam}_stages"] + 1):
        p[f"{fam}_s{i}_op"] = trial.suggest_categorical(f"{fam}_s{i}_op", list(OPERATIONS))
        p[f"{fam}_s{i}_blocks"] = trial.suggest_int(f"{fam}_s{i}_blocks", 1, MAX_BLOCKS)
        p[f"{fam}_s{i}_width"] = trial.suggest_categorical(f"{fam}_s{i}_width", STAGE_WIDTHS[fam])
        p[f"{fam}_s{i}_skip"] = trial.suggest_categorical(f"{fam}_s{i}_skip", [False, True])
        p[f"{fam}_s{i}_se"] = trial.suggest_categorical(f"{fam}_s{i}_se", [False, True])
    p[f"{fam}_downsample"] = trial.suggest_categorical(f"{fam}_downsample", DOWNSAMPLING)
    p[f"{fam}_head"] = trial.suggest_categorical(f"{fam}_head", list(HEADS))
    return p


def _suggest_mlp(trial: optuna.Trial, fam: str, info: dict) -> dict:
    p = {"mlp_layers": trial.suggest_int("mlp_layers", 1, MAX_MLP_LAYERS)}
    for i in range(1, p["mlp_layers"] + 1):
        p[f"mlp_l{i}_width"] = trial.suggest_categorical(f"mlp_l{i}_width", MLP_WIDTHS)
        if i > 1:
            p[f"mlp_l{i}_residual"] = trial.suggest_categorical(f"mlp_l{i}_residual", [False, True])
    return p


def _convnet_spec(p: dict, fam: str, common: dict) -> dict:
    stages = [{"op": p[f"{fam}_s{i}_op"], "blocks": int(p[f"{fam}_s{i}_blocks"]), "width": int(p[f"{fam}_s{i}_width"]),
               "skip": bool(p[f"{fam}_s{i}_skip"]), "se": bool(p.get(f"{fam}_s{i}_se", False))}
              for i in range(1, int(p[f"{fam}_stages"]) + 1)]
    return {**common, "stem": {"width": int(p[f"{fam}_stem_width"]), "kernel_size": int(p.get(f"{fam}_stem_kernel", 3))},
            "stages": stages, "downsample": p.get(f"{fam}_downsample", "max"), "head": p.get(f"{fam}_head", "gap")}


def _mlp_spec(p: dict, fam: str, common: dict) -> dict:
    layers = [{"width": int(p[f"mlp_l{i}_width"]), "residual": bool(p.get(f"mlp_l{i}_residual", False))}
              for i in range(1, int(p["mlp_layers"]) + 1)]
    return {**common, "layers": layers}


# family -> (sample its architecture parameters, build its spec from them).
# Another family (e.g. boosted trees for tables) registers here and in families_for.
FAMILY_SPACES = {"cnn2d": (_suggest_convnet, _convnet_spec), "cnn1d": (_suggest_convnet, _convnet_spec),
                 "mlp": (_suggest_mlp, _mlp_spec)}


def suggest(trial: optuna.Trial, info: dict) -> dict:
    """Sample one configuration, define-by-run: the family, its architecture
    components, then training and augmentation parameters. A trial enqueued
    with template-space parameters (an older run resumed or retrained) is
    drawn in that space, so its fixed values are the ones used."""
    if (fixed := enqueued_params(trial)) and "family" in fixed and is_template_params(fixed):
        return suggest_template(trial, info)
    p: dict = {}
    p["family"] = family = trial.suggest_categorical("family", searched_families(info))
    if family in ("gbt", "linear"):
        from .table_families import suggest as suggest_estimator

        return suggest_estimator(trial, family, info)
    p.update(FAMILY_SPACES[family][0](trial, family, info))
    p["activation"] = trial.suggest_categorical("activation", list(ACTIVATIONS))
    p["norm"] = trial.suggest_categorical("norm", NORMS)
    p["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    p.update(_suggest_training(trial, info))
    return p


def enqueued_params(trial: optuna.Trial) -> dict:
    """The parameters a trial was enqueued with (empty for a sampled one),
    read through the public FrozenTrial of the running trial."""
    for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.number == trial.number:
            return dict(t.system_attrs.get("fixed_params", {}))
    return {}


def _suggest_training(trial: optuna.Trial, info: dict) -> dict:
    p: dict = {}
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
    if info.get("task") == "regression":
        p["loss"] = trial.suggest_categorical("loss", ["mse", "huber"])
    p.update(augment_space.suggest(trial, info, epochs=p["epochs"]))
    return p


def grid_space(info: dict) -> dict[str, list]:
    """A small finite space for --sampler grid; parameters outside it keep
    their default value (see `default_params`): for networks, the first
    stage's operation and the stem width; for MLPs the first layer's width."""
    kind = info["kind"]
    d = default_params(info)
    fam = d["family"]
    if fam == "mlp":
        space = {"mlp_l1_width": [128, 256], "mlp_layers": [1, 2]}
    else:
        space = {f"{fam}_s1_op": ["conv3", "sepconv3"], f"{fam}_stem_width": sorted({d[f"{fam}_stem_width"], STEM_WIDTHS[fam][2]})}
    space["lr_adamw"] = [1e-3, 3e-3]
    if kind != "table":
        space["aug_strength"] = [0.0, 0.5]
    return space


def suggest_grid(trial: optuna.Trial, info: dict) -> dict:
    p = default_params(info)
    for name, values in grid_space(info).items():
        p[name] = trial.suggest_categorical(name, values)
    if p.get("mlp_layers") == 1:  # a one-layer MLP has no second layer to describe
        p = {k: v for k, v in p.items() if not k.startswith("mlp_l2_")}
    return p


def suggest_template(trial: optuna.Trial, info: dict) -> dict:
    """The former template space (family, first width, depth, one residual
    flag, kernel, pool, head), kept for `--space templates` and the
    benchmark that compares it with the component space."""
    shape = info["input_shape"]
    p: dict = {}
    p["family"] = family = trial.suggest_categorical("family", searched_families(info))
    if family in ("gbt", "linear"):
        from .table_families import suggest as suggest_estimator

        return suggest_estimator(trial, family, info)
    p[f"{family}_width"] = trial.suggest_categorical(f"{family}_width", TEMPLATE_WIDTHS[family])
    p[f"{family}_depth"] = trial.suggest_int(f"{family}_depth", min_depth(family, shape), max_depth(family, shape))
    p["residual"] = trial.suggest_categorical("residual", [False, True])
    if family != "mlp":
        p[f"{family}_kernel"] = trial.suggest_categorical(f"{family}_kernel", TEMPLATE_KERNELS[family])
        p["pool"] = trial.suggest_categorical("pool", ["max", "avg"])
        p["head"] = trial.suggest_categorical("head", ["gap", "flatten"])
    p["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    p.update(_suggest_training(trial, info))
    return p


def template_default_params(info: dict) -> dict:
    v1, training = _template_defaults(info)
    return {**v1, **training}


SPACES = ("components", "templates")


def sampler_of(space: str, grid: bool):
    """The function that samples a trial's parameters in `space`."""
    if grid:
        return suggest_grid
    return suggest_template if space == "templates" else suggest


def first_trials(space: str, info: dict, max_params: int | None = None, augment_variants: bool = False) -> list[dict]:
    """The known-good first trials of `space`, narrowed to fit max_params
    (one that cannot fit even at its narrowest is left out); with
    `augment_variants`, then the first network again with no augmentation and
    with the data kind's other known-good policy (augment_space.first_variants):
    the search measures both ends before TPE explores."""
    first = [template_default_params(info)] if space == "templates" else first_params(info)
    if max_params:
        first = [q for q in (fit_params(p, info, max_params) for p in first) if _n_params(q, info) <= max_params]
    if augment_variants and first:
        lead = first[0]
        first += [augment_space.with_augmentation(lead, a) for a in augment_space.first_variants(info, lead.get("epochs"))]
    return [p for i, p in enumerate(first) if p not in first[:i]]


def _n_params(params: dict, info: dict) -> int:
    from ..models import build_model, count_params

    return count_params(build_model(to_config(params, info)[0]))


def _width_keys(params: dict) -> list[tuple[str, list[int]]]:
    fam = params["family"]
    if is_template_params(params):
        return [(f"{fam}_width", TEMPLATE_WIDTHS[fam])]
    if fam == "mlp":
        return [(f"mlp_l{i}_width", MLP_WIDTHS) for i in range(1, int(params["mlp_layers"]) + 1)]
    return [(f"{fam}_stem_width", STEM_WIDTHS[fam])] + [(f"{fam}_s{i}_width", STAGE_WIDTHS[fam])
                                                         for i in range(1, int(params[f"{fam}_stages"]) + 1)]


def fit_params(params: dict, info: dict, max_params: int) -> dict:
    """The configuration with its widest width stepped down to the next
    choice of the space, again and again, until it has at most max_params
    parameters (the narrowest one when none fits): a known-good first trial
    of the shape the user's limit allows."""
    p = dict(params)
    while _n_params(p, info) > max_params:
        steps = [(p[k], k, choices) for k, choices in _width_keys(p) if choices.index(p[k]) > 0]
        if not steps:
            break
        _, key, choices = max(steps)
        p[key] = choices[choices.index(p[key]) - 1]
    return p


# ---- parameters -> (spec, training hyper-parameters) ----

def is_template_params(params: dict) -> bool:
    """Parameters of the former template space (runs made before the component space)."""
    return f"{params['family']}_width" in params


def to_config(params: dict, info: dict) -> tuple[dict, dict]:
    """Flat trial parameters -> (model spec, training hyper-parameters)."""
    family = params["family"]
    if is_template_params(params):
        spec = _template_spec(params, info)
    else:
        common = {"version": 2, "family": family, "input_shape": list(info["input_shape"]),
                  "n_classes": n_outputs(info), "mean": info["mean"], "std": info["std"],
                  "activation": params.get("activation", "relu"), "norm": params.get("norm", "batch"),
                  "dropout": float(params.get("dropout", 0.0))}
        spec = FAMILY_SPACES[family][1](params, family, common)
    spec.update(augment_space.spec_fields(params, info))
    return spec, training_hparams(params, info)


def training_hparams(params: dict, info: dict) -> dict:
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
    hp["patience"] = exploration_patience(hp["epochs"])
    if info.get("task") == "regression":
        hp.update(task="regression", loss=params.get("loss", "mse"))
    return hp


def exploration_patience(epochs: int) -> int:
    """Epochs without a better validation score after which a search trial
    stops: a third of its schedule, at least 5 (budget.patience: finalists
    never stop early)."""
    return max(5, int(epochs) // 3)


def n_outputs(info: dict) -> int:
    """A network's outputs: one logit per class, one value for regression."""
    return 1 if info.get("task") == "regression" else int(info["n_classes"])


def _template_spec(params: dict, info: dict) -> dict:
    """The version-1 spec of template-space parameters."""
    family = params["family"]
    spec = {
        "family": family,
        "input_shape": list(info["input_shape"]),
        "n_classes": n_outputs(info),
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
    return spec


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
