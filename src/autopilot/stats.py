"""Paired comparisons of two models on the same examples.

Two models scored on one split are not independent samples: what matters is
where they disagree. Both tests here look only at the discordant examples
(one model right, the other wrong), which is what makes them exact and
honest on small splits. numpy and scipy only: the server may import this.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def binomtest(k: int, n: int, p: float = 0.5, alternative: str = "two-sided"):
    """scipy.stats.binomtest, imported when first called: scipy.stats takes
    about a second to import, and `autopilot --help` reaches this module
    (through the retrain command's defaults) without testing anything."""
    from scipy.stats import binomtest as scipy_binomtest

    return scipy_binomtest(k, n, p, alternative=alternative)


@dataclass(frozen=True)
class Paired:
    """Counts of a paired comparison of model B against model A."""
    n: int  # examples compared
    b_only: int  # B right, A wrong
    a_only: int  # A right, B wrong

    @property
    def diff(self) -> float:
        """Accuracy of B minus accuracy of A."""
        return (self.b_only - self.a_only) / self.n if self.n else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "diff": self.diff}


def paired(a_correct, b_correct) -> Paired:
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired comparison needs two 1-D arrays of one length, got {a.shape} and {b.shape}")
    return Paired(n=int(a.size), b_only=int((b & ~a).sum()), a_only=int((a & ~b).sum()))


def mcnemar_p(p: Paired, alternative: str = "greater") -> float:
    """Exact McNemar test (a binomial test on the discordant pairs).

    alternative="greater": H1 is "B is more accurate than A";
    "less": "B is less accurate"; "two-sided": "they differ".
    With no discordant pair there is no evidence either way: p = 1.
    """
    d = p.b_only + p.a_only
    if d == 0:
        return 1.0
    return float(binomtest(p.b_only, d, 0.5, alternative=alternative).pvalue)


def drop_upper_bound(p: Paired, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound on A's accuracy minus B's (how much
    B may lose), exact given the discordant count: among the d discordant
    examples A wins a share q, and the drop is d * (2q - 1) / n; the
    Clopper-Pearson bound on q bounds the drop."""
    d = p.b_only + p.a_only
    if p.n == 0:
        return 1.0
    if d == 0:
        return 0.0
    q_hi = binomtest(p.a_only, d, 0.5).proportion_ci(confidence_level=2 * confidence - 1, method="exact").high
    return d * (2 * q_hi - 1) / p.n


def drop_upper_bound_unconditional(p: Paired, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound on A's accuracy minus B's that also
    bounds how often the two disagree. drop_upper_bound takes the discordant
    count as given, so it never exceeds d / n: one example lost of 380 bounds
    the drop at 0.26 points, yet 380 examples cannot show that the rate of
    such losses is below a point (an mnist5k student chosen that way lost
    0.67 points on test). Here the share of A-only examples is at most its
    Clopper-Pearson upper bound and the share of B-only examples at least
    its lower bound, each at 1 - alpha/2 (so both hold with 1 - alpha); the
    drop is at most the difference. With no disagreement the bound is
    about 3.7 / n: a gate of n examples cannot vouch for less."""
    if p.n == 0:
        return 1.0
    # A two-sided interval at level 1 - alpha has alpha/2 in each tail; one tail of each is used.
    a_hi = binomtest(p.a_only, p.n).proportion_ci(confidence_level=confidence, method="exact").high
    b_lo = binomtest(p.b_only, p.n).proportion_ci(confidence_level=confidence, method="exact").low
    return a_hi - b_lo


@dataclass
class FoldGain:
    """A challenger's score minus a default's, fold by fold on the same folds."""
    mean: float
    se: float  # standard error of the mean of the per-fold differences
    folds: int

    def clear_by(self, n_se: float) -> bool:
        """Ahead by at least `n_se` standard errors (and ahead at all): the
        one-standard-error rule of cross-validated model selection (Breiman
        et al. 1984), with the default in place of the simplest model."""
        return self.mean > 0 and self.mean >= n_se * self.se


def fold_gain(challenger, default) -> FoldGain:
    """The paired difference of two models' per-fold scores (same folds, same order)."""
    d = np.asarray(challenger, dtype=float) - np.asarray(default, dtype=float)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("inf")
    return FoldGain(float(d.mean()), se, len(d))
