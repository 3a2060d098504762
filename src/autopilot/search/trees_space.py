"""The gradient-boosted trees' share of the search space (tables only).

Their parameters carry the family's prefix, like the networks' conditional
parameters, so TPE models them apart. Ranges bracket HistGradientBoosting's
defaults (learning rate 0.1, 31 leaves, 20 examples a leaf), which are the
first trees trial: a strong, cheap start on any table.
"""
from __future__ import annotations

import optuna

from ..models.trees import FAMILY

PREFIX = f"{FAMILY}_"
MAX_ITER = [200, 500, 1000]  # a ceiling: early stopping on validation ends most fits well before it
MAX_DEPTH = [0, 3, 5, 8]  # 0: unlimited, the leaf count alone bounds a tree


def is_trees(params: dict) -> bool:
    return params.get("family") == FAMILY


def default_params() -> dict:
    return {"family": FAMILY, "gbt_learning_rate": 0.1, "gbt_max_leaf_nodes": 31, "gbt_max_depth": 0,
            "gbt_min_samples_leaf": 20, "gbt_l2_regularization": 1e-6, "gbt_max_features": 1.0,
            "gbt_max_iter": 1000}


def suggest(trial: optuna.Trial) -> dict:
    p = {"family": FAMILY}
    p["gbt_learning_rate"] = trial.suggest_float("gbt_learning_rate", 0.01, 0.3, log=True)
    p["gbt_max_leaf_nodes"] = trial.suggest_int("gbt_max_leaf_nodes", 4, 128, log=True)
    p["gbt_max_depth"] = trial.suggest_categorical("gbt_max_depth", MAX_DEPTH)
    p["gbt_min_samples_leaf"] = trial.suggest_int("gbt_min_samples_leaf", 2, 100, log=True)
    p["gbt_l2_regularization"] = trial.suggest_float("gbt_l2_regularization", 1e-6, 10.0, log=True)
    p["gbt_max_features"] = trial.suggest_float("gbt_max_features", 0.3, 1.0)
    p["gbt_max_iter"] = trial.suggest_categorical("gbt_max_iter", MAX_ITER)
    return p


def to_params(params: dict) -> dict:
    """Trial parameters -> models.trees.make_estimator's parameters."""
    return {k[len(PREFIX):]: v for k, v in params.items() if k.startswith(PREFIX)}
