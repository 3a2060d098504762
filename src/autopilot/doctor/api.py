"""The three entry points: `doctor` (any nn.Module + data), `doctor_data`
(data checks alone) and `doctor_dataset` (what `autopilot run` calls).

Time: the checks share one budget. Each probe gets a slice of what is left,
in proportion to its weight among the probes still to run, so time a fast
probe does not use flows to the later ones; a probe that would get too
little is reported as "skipped", never silently dropped.
"""
from __future__ import annotations

import contextlib
import copy
import random
import time
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..data.dataset import as_float
from .augment_check import CHECK as AUGMENT_CHECK
from .augment_check import check_augmentations
from .data_checks import DATA_CHECKS, DataView, run_data_checks
from .table_checks import TABLE_CHECKS, raw_row_hashes, run_table_checks
from .findings import CheckResult, DoctorReport, Finding
from .inputs import kind_of, to_tensors
from .probes import (
    Outcome,
    ProbeContext,
    Skip,
    probe_batch_mixing,
    probe_eval_nondeterministic,
    probe_loss_at_init,
    probe_lr_range,
    probe_no_signal,
    probe_outputs_vs_loss,
    probe_overfit,
    probe_reproducible,
)

# (check name, probe, weight in the time budget, minimum seconds worth starting with).
# Cheap forward-only probes first; the lr range test last, as the one that
# can best live with being shortened.
PROBES: list[tuple[str, Callable, float, float]] = [
    ("eval-nondeterministic", probe_eval_nondeterministic, 0.02, 0.0),
    ("probabilities-into-loss", probe_outputs_vs_loss, 0.02, 0.0),
    ("loss-at-init", probe_loss_at_init, 0.03, 0.0),
    ("batch-mixing", probe_batch_mixing, 0.03, 0.0),
    ("not-reproducible", probe_reproducible, 0.05, 0.0),
    ("cannot-overfit", probe_overfit, 0.25, 0.5),
    ("no-signal", probe_no_signal, 0.30, 0.5),
    ("lr-range", probe_lr_range, 0.30, 0.5),
]
CHECK_NAMES = list(DATA_CHECKS) + list(TABLE_CHECKS) + [AUGMENT_CHECK] + [p[0] for p in PROBES]
AUGMENT_SHARE = 0.35  # of the pre-flight budget: a quick model must learn the classes first
# Probes that feed labels to the loss: pointless (and crashing) with labels out of range.
_NEEDS_LABELS = {"loss-at-init", "not-reproducible", "cannot-overfit", "no-signal", "lr-range"}
DATA_SAMPLE = 20000  # examples per split read for the data checks (torch Datasets are sampled beyond)
PROBE_SAMPLE = 4096  # training examples the probes draw their batches from
# A regression target has no classes: these data checks and every set-up
# probe (loss at init against ln C, one batch overfitted to 100 % accuracy,
# ...) are about classifiers, and are reported as skipped.
CLASS_CHECKS = ("labels-out-of-range", "class-imbalance")
REGRESSION_NOTE = "a check of class labels or of a classifier's logits; the label is a regression target"
DATA_SHARE = 0.15  # share of the budget the data checks may use (near-duplicates stops early past it)


@contextlib.contextmanager
def _quiet_rng_and_threads(threads: int = 1):
    """Probes reseed torch/numpy/random and use one thread (stable timing on a
    busy machine); the caller's RNG streams and thread count are restored."""
    prev_threads = torch.get_num_threads()
    np_state, py_state = np.random.get_state(), random.getstate()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(prev_threads)
        np.random.set_state(np_state)
        random.setstate(py_state)


def _selected(checks: Iterable[str] | None) -> set[str] | None:
    if checks is None:
        return None
    chosen = set(checks)
    unknown = chosen - set(CHECK_NAMES)
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)}; known: {', '.join(CHECK_NAMES)}")
    return chosen


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def run_probes(ctx: ProbeContext, deadline: float, only: set[str] | None = None,
               skip_reasons: dict[str, str] | None = None) -> tuple[list[Finding], list[CheckResult]]:
    findings: list[Finding] = []
    results: list[CheckResult] = []
    todo = [p for p in PROBES if only is None or p[0] in only]
    for k, (name, fn, weight, min_s) in enumerate(todo):
        t0 = time.perf_counter()
        left = deadline - t0
        box = left * weight / sum(w for _, _, w, _ in todo[k:])
        reason = (skip_reasons or {}).get(name)
        if reason is None and (left <= 0 or box < min_s):
            reason = f"out of time ({max(0.0, left):.1f} s left of the budget)"
        if reason:
            results.append(CheckResult(name, "skipped", 0.0, reason))
            continue
        try:
            with torch.enable_grad():
                out = fn(ctx, t0 + box)
        except Skip as s:
            out = Outcome(status="skipped", note=str(s))
        except Exception as e:  # the user's model may do anything; report it, run the other probes
            out = Outcome([Finding(
                "probe-failed", "warn", {"check": name, "error": f"{type(e).__name__}: {e}"[:500]},
                f"the {name} check could not run the model: {type(e).__name__}: {str(e)[:200]}",
                "the same error will probably stop training; fix it, or report a doctor bug if training works")],
                status="skipped", note=f"{type(e).__name__}")
        findings += out.findings
        status = out.status or ("found" if out.findings else "ok")
        results.append(CheckResult(name, status, time.perf_counter() - t0, out.note))
    return findings, results


def doctor(
    model: nn.Module,
    train,
    *,
    val=None,
    test=None,
    loss_fn: Callable | None = None,
    budget_s: float = 30.0,
    seed: int = 0,
    lr: float | None = None,
    optimizer: str | Callable = "adamw",
    checks: Iterable[str] | None = None,
    kind: str | None = None,
) -> DoctorReport:
    """Check data and training set-up for a classifier, the way the recipe says.

    model      any nn.Module mapping a batch of inputs to (N, C) class scores; it
               is never modified (every probe works on a copy.deepcopy).
    train, val, test
               a pair (X, y) of arrays/tensors, or a Dataset of (x, y) pairs.
    loss_fn    default nn.CrossEntropyLoss(); NLLLoss is understood too.
    budget_s   wall-clock budget for all checks; probes out of time are "skipped".
    lr, optimizer
               the learning rate and optimiser ("adamw", "adam", "sgd" or a
               callable(params, lr)) you plan to train with: the lr range test
               uses that optimiser and, given `lr`, says if it is too high or low.
    checks     names of the checks to run (default all; see CHECK_NAMES).
    kind       image | signal | table, when the number of dimensions misleads.
    """
    t_start = time.perf_counter()
    deadline = t_start + budget_s
    only = _selected(checks)
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    device = _model_device(model)
    report = DoctorReport()
    with _quiet_rng_and_threads():
        parts = {"train": to_tensors(train, max_n=DATA_SAMPLE, seed=seed)}
        for name, data in (("val", val), ("test", test)):
            if data is not None:
                parts[name] = to_tensors(data, max_n=DATA_SAMPLE, seed=seed)
        X, y, _ = parts["train"]
        kind = kind or kind_of(X)

        # How many classes: what the model outputs (the labels may be wrong).
        forward_error = None
        try:
            with torch.no_grad():
                out = copy.deepcopy(model).eval()(X[:2].to(device))
            n_classes = int(out.shape[1]) if out.ndim == 2 else None
        except Exception as e:  # report it like any other finding; the data checks still run
            forward_error, n_classes = f"{type(e).__name__}: {e}"[:500], None
            report.findings.append(Finding(
                "probe-failed", "error", {"check": "forward", "error": forward_error,
                                          "input_shape": list(X.shape[1:]), "input_dtype": str(X.dtype)},
                f"the model fails on a batch of 2 training inputs: {forward_error[:200]}",
                "make forward() accept a batch shaped like the data (N, ...) and dtype float32"))

        if only is None or only & set(DATA_CHECKS):
            view = DataView({k: (v[0].detach().cpu().numpy(), v[1].detach().cpu().numpy()) for k, v in parts.items()},
                            kind, n_classes,
                            seed=seed, deadline=t_start + DATA_SHARE * budget_s)
            f, r = run_data_checks(view, only)
            report.findings += f
            report.checks += r

        _probe(report, model, X, y, n_classes, loss_fn, seed, lr, optimizer, deadline, only, device,
               no_model=forward_error)
    report.elapsed_s = time.perf_counter() - t_start
    return report


def _probe(report, model, X, y, n_classes, loss_fn, seed, lr, optimizer, deadline, only, device,
           no_model: str | None = None) -> None:
    if only is not None and not only & {p[0] for p in PROBES}:
        return
    skip: dict[str, str] = {}
    if no_model:
        skip = {p[0]: "the model's forward pass fails (see probe-failed)" for p in PROBES}
    elif n_classes is None:
        skip = {p[0]: "the model's output is not (N, C) class scores" for p in PROBES}
    elif bool(((y < 0) | (y >= n_classes)).any()) or y.is_floating_point():
        skip = {name: "labels out of range (see labels-out-of-range)" for name in _NEEDS_LABELS}
    if len(X) > PROBE_SAMPLE:
        idx = torch.from_numpy(_probe_sample(len(X), seed))
        X, y = X[idx], y[idx]
    if X.is_floating_point():
        X = torch.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)  # non-finite inputs are reported by the data checks
    ctx = ProbeContext(model, X.to(device), y.long().to(device), n_classes or 2, loss_fn, seed=seed, lr=lr,
                       optimizer=optimizer)
    f, r = run_probes(ctx, deadline, only, skip)
    report.findings += f
    report.checks += r


def _probe_sample(n: int, seed: int) -> np.ndarray:
    """Which of n training examples the probes use when there are more than PROBE_SAMPLE."""
    return np.sort(np.random.default_rng(seed).choice(n, PROBE_SAMPLE, replace=False))


def _ds_parts(ds, splits: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not splits:
        return {"train": (ds.X, ds.y)}
    parts = {"train": (ds.X[splits["train"]], ds.y[splits["train"]])}
    for name, idx in splits.items():
        if name != "train":
            parts[name] = (ds.X[idx], ds.y[idx])
    return parts


def doctor_data(ds, splits: dict, *, seed: int = 0, budget_s: float = 10.0) -> list[Finding]:
    """The data checks alone on an autopilot Dataset and its split indices
    ({"train": idx, "val": idx, "test": idx}); returns the findings."""
    return _doctor_data(ds, splits, seed=seed, budget_s=budget_s)[0]


def _doctor_data(ds, splits, *, seed, budget_s, only=None):
    view = DataView(_ds_parts(ds, splits), ds.kind, ds.n_classes, feature_names=ds.feature_names, seed=seed,
                    deadline=time.perf_counter() + budget_s)
    if getattr(ds, "table", None) is not None and splits:  # a CSV: duplicates are of whole raw rows
        view._hashes.update(raw_row_hashes(ds, splits))
    return run_data_checks(view, only)


def doctor_dataset(
    ds,
    splits: dict,
    *,
    model: nn.Module,
    hparams: dict | None = None,
    budget_s: float = 20.0,
    seed: int = 0,
    checks: Iterable[str] | None = None,
) -> DoctorReport:
    """Pre-flight for `autopilot run`: the data checks on the whole data set
    and splits, on images the label check of augmentations, then the set-up
    probes on `model` (the run passes the search's first trial,
    `search.space.default_model`) with the learning rate and optimiser of
    `hparams`."""
    t_start = time.perf_counter()
    only = _selected(checks)
    hparams = hparams or {}
    report = DoctorReport()
    if ds.task == "regression":  # no classes: the class checks and the classifier probes do not apply
        report.checks += [CheckResult(name, "skipped", 0.0, note=REGRESSION_NOTE)
                          for name in [*CLASS_CHECKS, *(p[0] for p in PROBES)] if only is None or name in only]
        only = (set(CHECK_NAMES) if only is None else only) - set(CLASS_CHECKS) - {p[0] for p in PROBES}
    with _quiet_rng_and_threads():
        if only is None or only & set(DATA_CHECKS):
            f, r = _doctor_data(ds, splits, seed=seed, budget_s=DATA_SHARE * budget_s, only=only)
            report.findings += f
            report.checks += r
        if only is None or only & set(TABLE_CHECKS):  # CSV tables: their raw columns
            f, r = run_table_checks(ds, splits)
            report.findings += f
            report.checks += r
        tr = splits["train"] if splits else np.arange(len(ds))
        if ds.kind == "image" and splits and "val" in splits and (only is None or AUGMENT_CHECK in only):
            f, r = check_augmentations(hparams, (ds.X[tr], ds.y[tr]), (ds.X[splits["val"]], ds.y[splits["val"]]),
                                       ds.n_classes, budget_s=AUGMENT_SHARE * budget_s, seed=seed)
            report.findings += f
            report.checks.append(r)
        if len(tr) > PROBE_SAMPLE:  # _probe's own sample, drawn here so only it becomes float
            tr = tr[_probe_sample(len(tr), seed)]
        X = torch.from_numpy(as_float(ds.X[tr]))
        y = torch.from_numpy(np.ascontiguousarray(ds.y[tr], dtype=np.int64))
        _probe(report, model, X, y, ds.n_classes, nn.CrossEntropyLoss(), seed, hparams.get("lr"),
               hparams.get("optimizer", "adamw"), t_start + budget_s, only, _model_device(model))
    report.elapsed_s = time.perf_counter() - t_start
    return report
