"""spec.json of version 1 (model/, trials/<n>/, compress/candidates/<c>/): the
template networks (family, width, depth, ...). Version-2 specs, per-stage
components, are typed by autopilot.models.components (ConvNetSpec, MLPSpec),
which the builder itself validates with."""
from __future__ import annotations

from typing import Literal

from .base import Part


class TemplateSpec(Part):
    family: Literal["cnn2d", "cnn1d", "mlp"]
    input_shape: list[int]
    n_classes: int
    mean: list[float]
    std: list[float]
    width: int
    depth: int
    residual: bool = False
    batch_norm: bool = True
    dropout: float = 0.0
    kernel_size: int | None = None  # convolutional families
    pool: Literal["max", "avg"] | None = None
    head: Literal["gap", "flatten"] | None = None
    tta: Literal["hflip"] | None = None  # test-time flip averaging (models/tta.py)


class TreesSpec(Part):
    """spec.json of a model fitted by scikit-learn (trials/<n>/, model/):
    gradient-boosted trees, or a linear model alone or averaged with trees
    (models/linear.py): what was fitted and what it became. The model
    itself is model.onnx beside it."""
    family: Literal["gbt", "linear"]
    task: Literal["classification", "regression"]
    input_shape: list[int]  # [n_features]
    n_outputs: int  # ONNX output width: one logit per class (2 for binary), 1 for regression
    params: dict[str, float | int | str | None]  # HistGradientBoosting's parameters as fitted
    seed: int
    n_iter: int  # boosting rounds kept by early stopping
    n_trees: int
    n_leaves: int
    n_coefficients: int = 0  # linear family: weights and biases of its linear model
    trained_on: Literal["train", "train+validation"] = "train"  # the final model is refitted on both with --cv
