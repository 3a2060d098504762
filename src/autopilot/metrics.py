"""Scores of a model's outputs against labels, for both tasks, with their
uncertainty. numpy and scipy only: the server and the monitor may import it.

Classification: accuracy (binomial standard error) and log loss from logits.
Regression: RMSE, MAE and R², each with a bootstrap standard error (seeded,
so a run reports the same figure twice). The search maximises `score`:
accuracy for classification, R² on validation for regression.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import log_softmax

TASKS = ("classification", "regression")
BOOTSTRAP_RESAMPLES = 200  # enough for a standard error to two significant digits
BOOTSTRAP_SEED = 0


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return task


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(1) == np.asarray(y)).mean()) if len(y) else float("nan")


def binomial_se(acc: float, n: int) -> float | None:
    return math.sqrt(acc * (1 - acc) / n) if n else None


def log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    if not len(y):
        return float("nan")
    lp = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return float(-lp[np.arange(len(y)), np.asarray(y, dtype=np.int64)].mean())


def _regression(pred: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    err = pred - y
    rmse = float(np.sqrt(np.mean(err ** 2)))
    mae = float(np.mean(np.abs(err)))
    var = float(np.var(y))
    r2 = 1.0 - float(np.mean(err ** 2)) / var if var > 0 else float("nan")
    return rmse, mae, r2


def regression_metrics(pred: np.ndarray, y: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """RMSE, MAE and R² with bootstrap standard errors ({name}_se).
    `pred` may be (N,) or (N, 1), the shape of a regression model's output."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(pred) != len(y):
        raise ValueError(f"{len(pred)} predictions for {len(y)} labels")
    n = len(y)
    if n == 0:
        return {"rmse": None, "mae": None, "r2": None, "rmse_se": None, "mae_se": None, "r2_se": None, "examples": 0}
    rmse, mae, r2 = _regression(pred, y)
    out = {"rmse": rmse, "mae": mae, "r2": r2, "examples": n}
    if n > 1 and resamples:
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        idx = rng.integers(0, n, size=(resamples, n))
        draws = np.array([_regression(pred[i], y[i]) for i in idx])
        ses = np.nanstd(draws, axis=0, ddof=1)
        out.update(rmse_se=float(ses[0]), mae_se=float(ses[1]), r2_se=float(ses[2]))
    else:
        out.update(rmse_se=None, mae_se=None, r2_se=None)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def score(task: str, outputs: np.ndarray, y: np.ndarray) -> float:
    """The figure the search maximises: accuracy, or R² for regression."""
    if check_task(task) == "regression":
        pred = np.asarray(outputs, dtype=np.float64).reshape(-1)
        return _regression(pred, np.asarray(y, dtype=np.float64))[2]
    return accuracy(outputs, y)


def loss(task: str, outputs: np.ndarray, y: np.ndarray) -> float:
    """Lower is better, the tie-breaker between equal scores: log loss, or MSE for regression."""
    if check_task(task) == "regression":
        return float(np.mean((np.asarray(outputs, dtype=np.float64).reshape(-1) - np.asarray(y, dtype=np.float64)) ** 2))
    return log_loss(outputs, y)
