"""Greedy ensemble selection with replacement (Caruana et al., 2004), the
method auto-sklearn and AutoGluon ship.

Start from the best model (sorted initialisation), then for a fixed number
of rounds add whichever model, counted once more, most improves the
ensemble's validation score; a model may be added many times, so the counts
become the weights. Validation data only: the test split is not seen here.

The score is the validation negative log-likelihood, accuracy breaking ties.
Accuracy alone moves in steps of one example: on a 750-example mnist1d
validation split it gave two thirds of the weight to a trial with 65 %
accuracy because that flipped one example, and the ensemble lost half a
point on test to the best single model; the likelihood sees how sure every
prediction is, and gave that trial 4 %. The sorted initialisation takes the
best two, so there is always a blend to measure beside the single model;
when the second one hurts, the rounds that follow dilute it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import softmax

ROUNDS = 25  # enough for weights in steps of ~4 %; more overfits small validation sets
INIT = 2  # sorted initialisation: the best two (by validation nll), so the first round already blends


@dataclass
class Selection:
    members: list[str]  # names of the models with a non-zero weight, best first
    weights: list[float]  # same order, summing to 1
    val_accuracy: float
    val_nll: float
    history: list[tuple[float, float]]  # (accuracy, nll) after each addition


def score(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, negative log-likelihood) on the validation labels."""
    acc = float((probs.argmax(1) == y).mean())
    nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
    return acc, nll


def _key(s: tuple[float, float]) -> tuple[float, float]:
    """Larger is better: lower nll first, then higher accuracy."""
    return (-s[1], s[0])


def _better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return _key(a) > _key(b)


def _additions(probs: np.ndarray, y: np.ndarray, order: list[int], init: int, rounds: int):
    """Counts per model and the score after each addition."""
    counts = np.zeros(len(probs), dtype=np.int64)
    for i in order[: max(1, min(init, len(probs)))]:
        counts[i] += 1
    total = probs[counts > 0].sum(0)
    history = [score(total / counts.sum(), y)]
    for _ in range(rounds):
        k = counts.sum()
        best_i, best_s = 0, None
        for i in range(len(probs)):
            s = score((total + probs[i]) / (k + 1), y)
            if best_s is None or _better(s, best_s):
                best_i, best_s = i, s
        counts[best_i] += 1
        total = total + probs[best_i]
        history.append(best_s)
    return counts, history


def greedy_ensemble(val_logits: dict[str, np.ndarray], y_val: np.ndarray, *, rounds: int = ROUNDS,
                    init: int = INIT) -> Selection:
    """Choose members and weights from each model's validation logits."""
    if not val_logits:
        raise ValueError("no models to choose an ensemble from")
    names = list(val_logits)
    y = np.asarray(y_val)
    probs = np.stack([softmax(np.asarray(val_logits[n], dtype=np.float64), axis=1) for n in names])
    if probs.shape[1] != len(y):
        raise ValueError(f"validation predictions have {probs.shape[1]} rows, labels {len(y)}")
    singles = [score(p, y) for p in probs]
    order = sorted(range(len(names)), key=lambda i: _key(singles[i]), reverse=True)
    counts, history = _additions(probs, y, order, init, rounds)
    # Additions past the best score only add noise: stop at the best point
    # (selection is deterministic, so replaying to it gives its counts).
    best = max(range(len(history)), key=lambda r: (*_key(history[r]), -r))
    if best < len(history) - 1:
        counts, _ = _additions(probs, y, order, init, best)
    weights = counts / counts.sum()
    keep = [int(i) for i in np.argsort(-weights, kind="stable") if weights[i] > 0]
    final = score((weights[:, None, None] * probs).sum(0), y)
    return Selection([names[i] for i in keep], [float(weights[i]) for i in keep], final[0], final[1], history)


def ensemble_log_probs(val_logits: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """log of the weighted mean of the members' softmax: what the ONNX graph outputs."""
    p = sum(w * softmax(np.asarray(z, dtype=np.float64), axis=1) for z, w in zip(val_logits, weights))
    return np.log(np.clip(p, 1e-30, None))
