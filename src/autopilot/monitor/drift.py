"""Drift statistics of a window against the training reference, and the
monitored metrics that alert rules compare.

Per input feature two tests, because each alone misleads:
  PSI (population stability index) over the training deciles: an effect
      size, but noisy on sparse bins and small windows;
  KS (two-sample Kolmogorov-Smirnov) against the training CDF (kept as 100
      quantiles): a significance test, but with large windows it flags
      shifts too small to matter.
A feature counts as drifted when KS rejects (p < ks_alpha) AND PSI >= psi,
and dataset drift is the share of drifted features (as Evidently does).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import kstwo

from .window import Window

EPS = 1e-4

# Every metric a rule may name, with what it means; the server exports each
# as the gauge autopilot_<name>.
METRICS = {
    "input_drift_share": "share of input features drifted (KS p < ks_alpha and PSI >= psi) against the training data",
    "input_drift_psi_max": "largest per-feature PSI",
    "prediction_drift_psi": "PSI of the predicted-class distribution against predictions on the validation split",
    "mean_confidence": "mean top-class probability",
    "accuracy": "accuracy on predictions that received a feedback label",
    "latency_p50_ms": "median server-side latency, milliseconds",
    "latency_p99_ms": "99th percentile server-side latency, milliseconds",
    "error_rate": "share of responses that were 5xx",
    "client_error_rate": "share of responses that were 4xx",
    "window_size": "predictions in the evaluation window",
}


def psi(ref_props: np.ndarray, counts: np.ndarray) -> float:
    """Population stability index. The live counts are smoothed with half a
    count per bin so an empty bin in a small window does not read as infinite drift."""
    ref = np.maximum(np.asarray(ref_props, dtype=float), EPS)
    live = (np.asarray(counts, dtype=float) + 0.5) / (counts.sum() + 0.5 * len(counts))
    return float(np.sum((live - ref) * np.log(live / ref)))


def ks_statistic(quantiles: np.ndarray, values: np.ndarray) -> float:
    """sup |F_live - F_ref|, F_ref the step CDF of the reference quantiles.
    Both are right-continuous steps, so the supremum is at one of their jumps."""
    q = np.asarray(quantiles, dtype=float)
    v = np.sort(np.asarray(values, dtype=float))
    pts = np.concatenate([q, v])
    f_ref = np.searchsorted(q, pts, side="right") / len(q)
    f_live = np.searchsorted(v, pts, side="right") / len(v)
    return float(np.abs(f_ref - f_live).max())


def ks_pvalue(d, n: int, m: int):
    """Two-sample KS p-value of statistic(s) `d` between samples of sizes n
    and m, the way scipy.stats.ks_2samp(method="asymp") computes it: the
    one-sample distribution `kstwo` at the effective size n*m/(n+m).
    ks_2samp itself needs both samples; the reference keeps 100 quantiles.
    Vectorised: one call for all features."""
    d = np.asarray(d, dtype=float)
    if n <= 0 or m <= 0:
        return np.ones_like(d) if d.ndim else 1.0
    p = np.clip(kstwo.sf(d, round(n * m / (n + m))), 0.0, 1.0)
    return p if d.ndim else float(p)


def feature_drift(reference: dict, F: np.ndarray, *, ks_alpha: float, psi_min: float) -> dict:
    fr = reference["features"]
    m = int(fr.get("n", 1000))
    k = min(F.shape[1], len(fr["quantiles"]))
    psis, ds = [], []
    for j in range(k):
        col = F[:, j]
        edges = np.asarray(fr["edges"][j], dtype=float)
        counts = np.bincount(np.searchsorted(edges, col, side="left"), minlength=len(edges) + 1)
        psis.append(psi(fr["proportions"][j], counts))
        ds.append(ks_statistic(fr["quantiles"][j], col))
    ps = ks_pvalue(np.asarray(ds), len(F), m).tolist() if k else []
    return {"psi": psis, "ks": ds, "p": ps,
            "drifted": [bool(pv < ks_alpha and pj >= psi_min) for pv, pj in zip(ps, psis)]}


def compute_metrics(w: Window, reference: dict | None, *, min_samples: int = 200, min_labels: int = 30,
                    ks_alpha: float = 0.01, psi_min: float = 0.1) -> tuple[dict, dict]:
    """(metrics, details). A metric is None when the window holds too few
    samples to tell; rules never fire on None."""
    m: dict = {k: None for k in METRICS}
    details: dict = {}
    m["window_size"] = w.n
    if w.n >= min_samples:
        m["mean_confidence"] = float(w.confidence.mean())
        m["latency_p50_ms"] = float(np.percentile(w.latency_ms, 50))
        m["latency_p99_ms"] = float(np.percentile(w.latency_ms, 99))
        if reference is not None:
            fd = feature_drift(reference, w.features, ks_alpha=ks_alpha, psi_min=psi_min)
            names = reference["features"]["names"]
            m["input_drift_share"] = float(np.mean(fd["drifted"])) if fd["drifted"] else 0.0
            m["input_drift_psi_max"] = float(max(fd["psi"])) if fd["psi"] else 0.0
            details["features"] = [{"name": n, "psi": round(a, 4), "ks": round(b, 4), "p": float(f"{c:.3g}"), "drifted": d}
                                   for n, a, b, c, d in zip(names, fd["psi"], fd["ks"], fd["p"], fd["drifted"])]
            edges = reference["predictions"].get("value_edges")
            if edges is not None:  # regression: the predicted value (logged as the confidence) against its quantiles
                ref_props = np.asarray(reference["predictions"]["value_proportions"], dtype=float)
                counts = np.bincount(np.searchsorted(np.asarray(edges), w.confidence, side="left"),
                                     minlength=len(ref_props))[: len(ref_props)]
                m["prediction_drift_psi"] = psi(ref_props, counts)
                details["value_proportions"] = (counts / max(1, counts.sum())).round(4).tolist()
            else:
                ref_props = np.asarray(reference["predictions"]["class_proportions"], dtype=float)
                counts = np.bincount(w.classes, minlength=len(ref_props))[: len(ref_props)]
                m["prediction_drift_psi"] = psi(ref_props, counts)
                details["class_proportions"] = (counts / max(1, counts.sum())).round(4).tolist()
    if len(w.statuses) >= min_samples:
        m["error_rate"] = float(np.mean(w.statuses >= 500))
        m["client_error_rate"] = float(np.mean((w.statuses >= 400) & (w.statuses < 500)))
    if len(w.labels) >= min_labels:
        m["accuracy"] = float(np.mean(w.pred_labelled == w.labels))
    details["labelled"] = int(len(w.labels))
    details["responses"] = int(len(w.statuses))
    return m, details
