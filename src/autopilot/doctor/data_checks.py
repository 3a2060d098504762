"""Data checks: "become one with the data" before any model sees it.

Each check is a function (DataView) -> list[Finding]. They work on numpy
arrays split into parts ("train" plus held-out parts such as "val", "test"),
so they serve both autopilot's own Dataset and a user's arrays.

Exact duplicates and leaks are found by hashing rows (O(N), never pairwise);
near-duplicates by one matrix product of small normalised vectors, with the
number of rows capped so the cost is bounded whatever the data size.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..data.dataset import as_float
from ..data.profile import row_hashes
from .findings import CheckResult, Finding

# Thresholds in one visible place.
LEAK_ERROR_SHARE = 0.01  # leaked share of a held-out split above which a leak is an error
DUPLICATE_WARN_SHARE = 0.01
NEAR_DUP_COSINE = 0.995  # none of the built-in data sets has a cross-split pair above 0.995 (max 0.994)
NEAR_DUP_WARN_SHARE = 0.01
NEAR_DUP_SIDE = 16  # images are average-pooled to at most 16x16 per channel before comparing
NEAR_DUP_LEN = 256  # signals to at most 256 samples per channel
NEAR_DUP_MAX_FLOPS = 2e9  # ~0.2-0.5 s on one busy core; rows are subsampled beyond this
IMBALANCE_WARN = 10.0
IMBALANCE_INFO = 3.0
OUTLIER_Z = 6.0
OUTLIER_WARN_SHARE = 0.01
BLANK_WARN_SHARE = 0.01


@dataclass
class DataView:
    parts: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (X, y); "train" first
    kind: str  # image | signal | table | other
    n_classes: int | None = None
    feature_names: list[str] | None = None
    seed: int = 0
    deadline: float | None = None  # time.perf_counter() value; near-duplicates stops early past it
    _hashes: dict = field(default_factory=dict)

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.parts["train"]

    @property
    def held_out(self) -> list[str]:
        return [k for k in self.parts if k != "train"]

    def hashes(self, name: str) -> list[bytes]:
        if name not in self._hashes:
            X = self.parts[name][0]
            self._hashes[name] = row_hashes(X) if len(X) else []
        return self._hashes[name]


def _share(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


def check_labels(v: DataView) -> list[Finding]:
    bad: dict[str, int] = {}
    non_int = 0
    for name, (_, y) in v.parts.items():
        y = np.asarray(y)
        if y.size == 0:
            continue
        if not np.issubdtype(y.dtype, np.integer):
            frac = ~np.isfinite(y) | (np.round(y) != y)
            non_int += int(frac.sum())
        n_bad = int((y < 0).sum())
        if v.n_classes is not None:
            n_bad += int((y >= v.n_classes).sum())
        if n_bad:
            bad[name] = n_bad
    if not bad and not non_int:
        return []
    lo = min(float(np.min(y)) for _, y in v.parts.values() if len(y))
    hi = max(float(np.max(y)) for _, y in v.parts.values() if len(y))
    return [Finding(
        "labels-out-of-range", "error",
        {"out_of_range": bad, "non_integer": non_int, "min_label": lo, "max_label": hi, "n_classes": v.n_classes},
        f"labels must be integers in 0..{(v.n_classes or 0) - 1}; found labels from {lo:g} to {hi:g}",
        "map class names to 0..C-1 (e.g. np.unique(y, return_inverse=True)) and make the model output C logits",
    )]


def check_non_finite(v: DataView) -> list[Finding]:
    counts = {}
    for name, (X, _) in v.parts.items():
        if np.issubdtype(X.dtype, np.floating):
            n = int((~np.isfinite(X)).sum())
            if n:
                counts[name] = n
    if not counts:
        return []
    return [Finding(
        "non-finite-inputs", "error", {"non_finite_values": counts},
        f"{sum(counts.values())} NaN/inf value(s) in the inputs; one NaN makes the loss NaN",
        "impute or drop them before training (e.g. fill with the training median) and find where they come from",
    )]


def check_constant(v: DataView) -> list[Finding]:
    X, _ = v.train
    if len(X) == 0 or not _numbers(X):
        return []
    findings = []
    whole = {name: float(as_float(Xp.flat[:1])[0]) for name, (Xp, _) in v.parts.items() if _all_constant(Xp)}
    if whole:
        findings.append(Finding(
            "constant-inputs", "error", {"constant_splits": whole},
            f"every input in {', '.join(whole)} is the same value ({', '.join(f'{k}={c:g}' for k, c in whole.items())}): "
            "there is nothing to learn from",
            "check the loading code (wrong file, wrong column, a scaling that rounds everything to 0)",
        ))
        return findings
    if v.kind == "table":
        const = np.flatnonzero(np.nanmax(X, 0) == np.nanmin(X, 0))
        if len(const):
            names = v.feature_names or [f"feature {j}" for j in range(X.shape[1])]
            findings.append(Finding(
                "constant-inputs", "warn",
                {"constant_columns": [names[j] for j in const[:20]], "count": int(len(const)), "columns": int(X.shape[1])},
                f"{len(const)} of {X.shape[1]} columns are constant in train: they carry no information",
                "drop them (they only cost parameters); if they should vary, check how they were read",
            ))
        return findings
    if v.kind in ("image", "signal"):
        flat_c = X.reshape(X.shape[0], X.shape[1], -1)
        ch_const = np.flatnonzero((flat_c.max(axis=(0, 2)) == flat_c.min(axis=(0, 2))))
        if len(ch_const):
            findings.append(Finding(
                "constant-inputs", "warn", {"constant_channels": ch_const.tolist(), "channels": int(X.shape[1])},
                f"channel(s) {ch_const.tolist()} are constant over the whole training split",
                "drop the channel or check the loader (e.g. an alpha channel, or grey images stored as RGB with one empty plane)",
            ))
        flat = X.reshape(len(X), -1)
        blank = int((flat.max(1) == flat.min(1)).sum())
        if blank:
            share = _share(blank, len(X))
            findings.append(Finding(
                "constant-inputs", "warn" if share > BLANK_WARN_SHARE else "info",
                {"blank_examples": blank, "share": share},
                f"{blank} training example(s) ({share:.1%}) are blank (one constant value)",
                "look at a few of them; drop them if they are read errors, or keep them if 'blank' is a real class",
            ))
    return findings


def _numbers(X: np.ndarray) -> bool:
    """Float inputs, or uint8 pixels (autopilot's image data sets: pixel / 255)."""
    return np.issubdtype(X.dtype, np.floating) or X.dtype == np.uint8


def _all_constant(X: np.ndarray) -> bool:
    return X.size > 0 and _numbers(X) and bool(np.nanmin(X) == np.nanmax(X))


def check_duplicates(v: DataView) -> list[Finding]:
    if _all_constant(v.train[0]):
        return []  # every row is the same: constant-inputs already says so, louder
    h = v.hashes("train")
    n = len(h)
    extra = n - len(set(h))
    findings = []
    if extra:
        share = _share(extra, n)
        findings.append(Finding(
            "duplicates", "warn" if share > DUPLICATE_WARN_SHARE else "info",
            {"duplicates": extra, "train_examples": n, "share": share},
            f"{extra} training example(s) ({share:.1%}) are exact copies of another: they weigh double in the loss",
            "drop the copies (keep one of each) unless the repetition is intended over-sampling",
        ))
    # The same input under two labels is noise no model can fit.
    label_of: dict[bytes, int] = {}
    conflicts = set()
    for name in v.parts:
        for hh, label in zip(v.hashes(name), np.asarray(v.parts[name][1]).tolist()):
            if label_of.setdefault(hh, label) != label:
                conflicts.add(hh)
    if conflicts:
        findings.append(Finding(
            "conflicting-labels", "warn", {"inputs_with_several_labels": len(conflicts)},
            f"{len(conflicts)} input(s) appear with two or more different labels: at least one copy is mislabelled",
            "find them (hash the rows) and fix or drop the wrong labels",
        ))
    return findings


def check_leak(v: DataView) -> list[Finding]:
    if _all_constant(v.train[0]):
        return []
    train = set(v.hashes("train"))
    leaks, shares = {}, {}
    for name in v.held_out:
        n = sum(hh in train for hh in v.hashes(name))
        if n:
            leaks[name] = n
            shares[name] = _share(n, len(v.hashes(name)))
    if not leaks:
        return []
    worst = max(shares.values())
    return [Finding(
        "data-leak", "error" if worst > LEAK_ERROR_SHARE else "warn", {"leaked": leaks, "share": shares},
        "examples in " + ", ".join(f"{k} ({shares[k]:.1%})" for k in leaks)
        + " are exact copies of training examples: their scores overstate accuracy",
        "de-duplicate before splitting (hash the rows), then split again; for grouped data split by group",
    )]


def _small_vectors(X: np.ndarray, kind: str) -> np.ndarray:
    """Downsample, flatten, centre and L2-normalise each example (float32)."""
    import torch

    t = torch.from_numpy(np.nan_to_num(as_float(X), nan=0.0, posinf=0.0, neginf=0.0))
    if kind == "image" and max(t.shape[-2:]) > NEAR_DUP_SIDE:
        t = torch.nn.functional.adaptive_avg_pool2d(t, (min(NEAR_DUP_SIDE, t.shape[-2]), min(NEAR_DUP_SIDE, t.shape[-1])))
    elif kind == "signal" and t.shape[-1] > NEAR_DUP_LEN:
        t = torch.nn.functional.adaptive_avg_pool1d(t, NEAR_DUP_LEN)
    v = t.reshape(len(t), -1)
    # Centring makes this a correlation: two images that differ only in
    # brightness are still near-duplicates, and an all-zero image matches nothing.
    v = v - v.mean(1, keepdim=True)
    norm = v.norm(dim=1, keepdim=True)
    return (v / norm.clamp_min(1e-12)).numpy(), (norm.squeeze(1) > 1e-6).numpy()


def check_near_duplicates(v: DataView) -> list[Finding]:
    if v.kind not in ("image", "signal") or not v.held_out:
        return []
    import torch

    Xtr = v.train[0]
    rng = np.random.default_rng(v.seed)
    train_hashes = set(v.hashes("train"))
    dim = int(np.prod(_small_vectors(Xtr[:1], v.kind)[0].shape[1:]))
    n_eval = sum(len(v.parts[k][0]) for k in v.held_out)
    # Cap rows so that n_eval * n_train * dim stays under the flop budget.
    cap_train = int(max(1000, min(len(Xtr), NEAR_DUP_MAX_FLOPS / max(1, dim * max(1, n_eval)))))
    tr_idx = np.sort(rng.choice(len(Xtr), cap_train, replace=False)) if len(Xtr) > cap_train else np.arange(len(Xtr))
    cap_eval = int(max(200, NEAR_DUP_MAX_FLOPS / max(1, dim * len(tr_idx))))
    T, t_ok = _small_vectors(Xtr[tr_idx], v.kind)
    T = torch.from_numpy(T[t_ok])
    counts, shares, max_sim, partial = {}, {}, {}, False
    for name in v.held_out:
        Xe = v.parts[name][0]
        hashes = v.hashes(name)
        idx = np.arange(len(Xe))
        # Exact copies are data-leak's business; leave them out here.
        idx = np.array([i for i in idx if hashes[i] not in train_hashes], dtype=np.int64)
        if len(idx) > cap_eval:
            idx = np.sort(rng.choice(idx, cap_eval, replace=False))
            partial = True
        if len(idx) == 0 or len(T) == 0:
            continue
        E, e_ok = _small_vectors(Xe[idx], v.kind)
        E = torch.from_numpy(E[e_ok])
        best = []
        for s in range(0, len(E), 1024):  # chunks keep the similarity matrix small
            if v.deadline is not None and time.perf_counter() > v.deadline:
                partial = True
                break
            best.append((E[s : s + 1024] @ T.T).max(1).values)
        if not best:
            continue
        best = torch.cat(best)
        n = int((best > NEAR_DUP_COSINE).sum())
        max_sim[name] = round(float(best.max()), 4)
        if n:
            counts[name] = n
            shares[name] = _share(n, len(best))
    if not counts:
        return []
    worst = max(shares.values())
    return [Finding(
        "near-duplicates", "warn" if worst > NEAR_DUP_WARN_SHARE else "info",
        {"near_duplicates": counts, "share": shares, "max_cosine": max_sim, "threshold": NEAR_DUP_COSINE,
         "sampled": partial or len(tr_idx) < len(Xtr)},
        "examples in " + ", ".join(f"{k} ({shares[k]:.1%})" for k in counts)
        + f" are near-copies (cosine > {NEAR_DUP_COSINE}) of training examples: accuracy on them is optimistic",
        "look at the pairs; if they are the same object (burst photos, augmented copies), split by group or de-duplicate",
    )]


def check_imbalance(v: DataView) -> list[Finding]:
    y = np.asarray(v.train[1])
    if y.size == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        return []
    counts = np.bincount(y, minlength=v.n_classes or 0)
    present = counts[counts > 0]
    missing = np.flatnonzero(counts == 0).tolist() if v.n_classes else []
    ratio = float(present.max() / present.min()) if len(present) else 0.0
    if ratio <= IMBALANCE_INFO and not missing:
        return []
    severity = "warn" if ratio > IMBALANCE_WARN or missing else "info"
    why = f"the largest class has {ratio:.1f}× the examples of the smallest"
    if missing:
        why += f"; class(es) {missing[:10]} have no training example"
    return [Finding(
        "class-imbalance", severity,
        {"ratio": round(ratio, 2), "class_counts": counts.tolist(), "missing_classes": missing},
        why,
        "judge by balanced accuracy or per-class recall, not accuracy; set the final bias to the log class prior "
        "(autopilot.doctor.init_final_bias); consider class weights in the loss or a balanced sampler",
    )]


def check_outliers(v: DataView) -> list[Finding]:
    """Robust z-scores, (x - median) / (1.4826 MAD): a cluster of absurd values
    inflates the mean and std enough to hide itself, the median and MAD do not.
    Only continuous columns (>= 10 distinct values): in a 0/1 or small
    categorical column a rare value is not an outlier."""
    if v.kind != "table":
        return []
    X, _ = v.train
    if len(X) < 10:
        return []
    sample = X[: min(len(X), 5000)]
    with np.errstate(invalid="ignore"):
        med = np.nanmedian(sample, 0)
        scale = 1.4826 * np.nanmedian(np.abs(sample - med), 0)
        std = np.nanstd(sample, 0)
    scale = np.where(scale > 1e-12, scale, std)  # MAD is 0 when over half the values are equal
    distinct = np.array([len(np.unique(sample[:2000, j])) for j in range(X.shape[1])])
    ok = (scale > 1e-12) & (distinct >= 10)
    if not ok.any():
        return []
    rows, total, worst_cols = 0, 0, {}
    names = v.feature_names or [f"feature {j}" for j in range(X.shape[1])]
    for name, (Xp, _) in v.parts.items():
        if not len(Xp):
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.abs((Xp[:, ok] - med[ok]) / scale[ok])
        extreme = np.nan_to_num(z, nan=0.0) > OUTLIER_Z
        rows += int(extreme.any(1).sum())
        total += len(Xp)
        for j, c in zip(np.flatnonzero(ok), extreme.sum(0)):
            if c:
                worst_cols[names[j]] = worst_cols.get(names[j], 0) + int(c)
    if not rows:
        return []
    share = _share(rows, total)
    top = dict(sorted(worst_cols.items(), key=lambda kv: -kv[1])[:10])
    return [Finding(
        "outliers", "warn" if share > OUTLIER_WARN_SHARE else "info",
        {"rows": rows, "share": share, "z": OUTLIER_Z, "columns": top},
        f"{rows} row(s) ({share:.1%}) have a value more than {OUTLIER_Z:g} robust standard deviations from the "
        "training median",
        "look at those rows: fix unit or entry errors; for heavy-tailed columns use a log or quantile transform",
    )]


# Order matters: label and NaN problems first, as they can confuse the others.
DATA_CHECKS = {
    "labels-out-of-range": check_labels,
    "non-finite-inputs": check_non_finite,
    "constant-inputs": check_constant,
    "duplicates": check_duplicates,
    "data-leak": check_leak,
    "near-duplicates": check_near_duplicates,
    "class-imbalance": check_imbalance,
    "outliers": check_outliers,
}


def run_data_checks(view: DataView, only=None) -> tuple[list[Finding], list[CheckResult]]:
    findings: list[Finding] = []
    results: list[CheckResult] = []
    for name, fn in DATA_CHECKS.items():
        if only is not None and name not in only:
            continue
        t0 = time.perf_counter()
        try:
            found = fn(view)
        except Exception as e:  # a check must never take the whole doctor down
            found = [Finding("probe-failed", "warn", {"check": name, "error": f"{type(e).__name__}: {e}"},
                             f"the {name} check raised {type(e).__name__}", "report this with the data's shape and dtype")]
        findings += found
        results.append(CheckResult(name, "found" if found else "ok", time.perf_counter() - t0))
    return findings, results
