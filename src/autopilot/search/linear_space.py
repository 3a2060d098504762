"""The linear family's share of the search space (tables only): the
regularisation of a logistic or ridge regression, its hinges per feature, and the share of boosted
trees (at their defaults) averaged with it (models/linear.py). Parameters
carry the family's prefix, like the other families' conditional ones."""
from __future__ import annotations

import optuna

from ..models.linear import FAMILY

PREFIX = "lin_"
TREES_SHARES = [0.0, 0.25, 0.5, 0.75]  # 0: the linear model alone; 1 would be the gbt family's first trial
KNOTS = [0, 3, 5]  # hinges per feature with many values (models/linear.py); 0: straight lines


def _strength(task: str) -> tuple[str, float, float, float]:
    """(parameter, low, high, default): ridge's alpha, or logistic regression's C (inverse strength)."""
    return ("lin_alpha", 1e-3, 1e3, 1.0) if task == "regression" else ("lin_C", 1e-3, 1e2, 1.0)


def default_params(task: str) -> list[dict]:
    """First trials: scikit-learn's default strength, alone and half-and-half
    with trees, and alone with 3 hinges a feature."""
    name, _, _, default = _strength(task)
    return [{"family": FAMILY, name: default, "lin_trees_share": share, "lin_knots": knots}
            for share, knots in ((0.0, 0), (0.5, 0), (0.0, 3))]


def suggest(trial: optuna.Trial, info: dict) -> dict:
    name, low, high, _ = _strength(info.get("task", "classification"))
    return {"family": FAMILY, name: trial.suggest_float(name, low, high, log=True),
            "lin_trees_share": trial.suggest_categorical("lin_trees_share", TREES_SHARES),
            "lin_knots": trial.suggest_categorical("lin_knots", KNOTS)}


def to_params(params: dict) -> dict:
    """Trial parameters -> models.linear's parameters."""
    return {k[len(PREFIX):]: v for k, v in params.items() if k.startswith(PREFIX)}
