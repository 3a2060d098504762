"""The promotion rule, stated once (README "autopilot retrain" says the same):

A challenger is promoted only when both hold, each at level `alpha`
(default 0.05), on the same examples for both models (paired):

  1. better on the new held-out data: exact one-sided McNemar test
     (binomial test on the discordant examples), H1 "the challenger is
     more accurate"; passes when p < alpha.
  2. not worse on the run's original test split, by more than `tolerance`
     points (default 1.0): exact non-inferiority test on the discordant
     examples, H0 "the challenger is at least `tolerance` points less
     accurate"; passes when p < alpha, which is the same as the one-sided
     (1 - alpha) upper confidence bound on the drop (stats.drop_upper_bound)
     lying below `tolerance`.

Both must pass (an intersection-union test: the overall level is alpha, no
correction needed). With fewer than min_holdout(alpha) held-out new examples
even a challenger right on every one where the champion is wrong cannot reach
p < alpha, so the retrain refuses to start instead of deciding by chance.

numpy and scipy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..stats import Paired, binomtest, drop_upper_bound, mcnemar_p, paired

DEFAULT_ALPHA = 0.05
DEFAULT_TOLERANCE = 1.0  # points of accuracy on the original test split

RULE = ("promote only if (1) on the new held-out data a one-sided exact McNemar test (H1: challenger more accurate) "
        "gives p < alpha, and (2) on the original test split an exact non-inferiority test (H0: challenger at least "
        "`tolerance` points less accurate) gives p < alpha, i.e. the one-sided (1 - alpha) upper bound on the "
        "accuracy drop is below `tolerance`; both tests are paired, on the same examples for both models")


def min_holdout(alpha: float) -> int:
    """The fewest held-out examples with which a perfect result (every
    example discordant in the challenger's favour, p = 0.5**n) can reach
    p < alpha."""
    return max(1, math.floor(math.log2(1 / alpha)) + 1)


def noninferiority_p(p: Paired, margin: float) -> float:
    """Exact p-value of H0 "A's accuracy minus B's >= margin" (a fraction),
    conditional on the d discordant examples: the drop is d * (2q - 1) / n
    where q is the share of them A wins, so H0 is q >= q0 = (1 + n*margin/d) / 2,
    tested with a one-sided binomial test on A's wins. It rejects exactly
    when stats.drop_upper_bound (the Clopper-Pearson bound) is below margin."""
    d = p.a_only + p.b_only
    if d == 0:
        return 0.0 if margin > 0 else 1.0
    q0 = (1 + p.n * margin / d) / 2
    if q0 > 1:  # a drop of margin or more needs more discordant examples than there are
        return 0.0
    if q0 == 1:
        return 1.0 if p.a_only == d else 0.0
    return float(binomtest(p.a_only, d, q0, alternative="less").pvalue)


@dataclass(frozen=True)
class Judgement:
    """One paired comparison, champion (A) against challenger (B)."""
    test: str
    counts: Paired
    champion_accuracy: float
    challenger_accuracy: float
    p_value: float
    passed: bool
    drop_upper_bound: float | None = None  # points; non-inferiority only
    tolerance: float | None = None  # points; non-inferiority only

    def to_dict(self) -> dict:
        return {"test": self.test, "examples": self.counts.n, "challenger_only": self.counts.b_only,
                "champion_only": self.counts.a_only, "champion_accuracy": self.champion_accuracy,
                "challenger_accuracy": self.challenger_accuracy, "p_value": self.p_value, "passed": self.passed,
                "drop_upper_bound": self.drop_upper_bound, "tolerance": self.tolerance}


def _acc(correct: np.ndarray) -> float:
    return float(np.mean(correct)) if len(correct) else 0.0


def better_on_new(champion_correct, challenger_correct, alpha: float = DEFAULT_ALPHA) -> Judgement:
    c = paired(champion_correct, challenger_correct)
    p = mcnemar_p(c, "greater")
    return Judgement("exact McNemar, one-sided, H1: challenger more accurate", c, _acc(champion_correct),
                     _acc(challenger_correct), p, p < alpha)


def not_worse_on_original(champion_correct, challenger_correct, alpha: float = DEFAULT_ALPHA,
                          tolerance: float = DEFAULT_TOLERANCE) -> Judgement:
    """`tolerance` in points of accuracy."""
    c = paired(champion_correct, challenger_correct)
    p = noninferiority_p(c, tolerance / 100)
    bound = 100 * drop_upper_bound(c, 1 - alpha)
    return Judgement(f"exact non-inferiority on the discordant examples, H0: challenger >= {tolerance:g} points "
                     "less accurate", c, _acc(champion_correct), _acc(challenger_correct), p, p < alpha,
                     drop_upper_bound=bound, tolerance=tolerance)


def decide(new: Judgement, original: Judgement, alpha: float = DEFAULT_ALPHA) -> tuple[bool, str]:
    """Promote only if both tests pass; the reason names each figure."""
    level = f"{100 * (1 - alpha):g} %"
    orig = (f"on the original test split ({original.counts.n} examples) the challenger may be up to "
            f"{original.drop_upper_bound:.2f} points worse ({level} upper bound; tolerance {original.tolerance:g}), "
            f"non-inferiority p = {original.p_value:.3g}")
    new_ = (f"on the {new.counts.n} held-out new examples the challenger alone is right on {new.counts.b_only}, "
            f"the champion alone on {new.counts.a_only} ({new.challenger_accuracy:.4f} vs {new.champion_accuracy:.4f}), "
            f"McNemar p = {new.p_value:.3g}")
    if not new.passed:
        return False, f"not shown better on the new data (p >= {alpha:g}): {new_}"
    if not original.passed:
        return False, f"not shown within {original.tolerance:g} points on the original test split (p >= {alpha:g}): {orig}"
    return True, f"better on the new data and not worse on the original test split, both p < {alpha:g}: {new_}; {orig}"
