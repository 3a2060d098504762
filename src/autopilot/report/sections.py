"""One function per report section: Run -> the values its template shows.

Builders return plain data (numbers, strings, lists) and never markup; the
templates in templates/ turn it into HTML with autoescape on. The only markup a
builder hands over is a plot's SVG (wrapped in `Markup`), which matplotlib
wrote and escaped itself. A builder returns None when its section has nothing
to say (e.g. no doctor run); `write_report` turns any exception into a visible
"could not be rendered" box instead of a crashed report.
"""
from __future__ import annotations

import json
import math
import warnings
from datetime import datetime, timezone

import numpy as np
from markupsafe import Markup

from ..rundir import WEIGHTS_FILE
from . import plots
from .load import EXPECTED, Run, as_dict, as_list, get, num

MAX_CM_CLASSES = 30  # above this a heat map is unreadable: show the worst classes instead
WORST_CLASSES = 15
PARAM_COLUMNS = 4  # parameters shown as columns of the trial table; the rest collapse
Z95 = 1.96


# ---- shared look-ups --------------------------------------------------------

def class_names(run: Run, n: int | None = None) -> list[str]:
    """Class names from run.json; indices when absent or of the wrong length."""
    names = [str(c) for c in as_list(get(run.run, "data", "classes"))]
    if n is not None and len(names) != n:
        return [str(i) for i in range(n)]
    return names


def confusion_matrix(run: Run) -> np.ndarray | None:
    cm = get(run.card, "confusion_matrix")
    if not isinstance(cm, list) or not cm or not all(isinstance(r, list) and len(r) == len(cm) for r in cm):
        return None
    if not all(num(x) is not None and 0 <= x < 2**53 for r in cm for x in r):
        return None
    return np.array(cm, dtype=float).round().astype(np.int64)


def trials(run: Run) -> list[dict]:
    return [t for t in as_list(get(run.search, "trials"))
            if isinstance(t, dict) and isinstance(t.get("number"), int) and not isinstance(t.get("number"), bool)]


def completed(run: Run) -> list[dict]:
    return [t for t in trials(run) if t.get("state") == "COMPLETE" and num(t.get("value")) is not None]


def best_trial(run: Run) -> int | None:
    """The trial the final model comes from: the card's, else the search's
    selection (which may be a trial cut by the deadline when none completed),
    else its best completed trial."""
    for b in (get(run.card, "best_trial"), get(run.search, "selection", "trial"), get(run.search, "best_trial")):
        if isinstance(b, int) and not isinstance(b, bool):
            return b
    done = completed(run)
    return min(done, key=trial_rank)["number"] if done else None


def trial_rank(t: dict) -> tuple:
    """The order the search itself uses: accuracy, then lower validation
    loss, then the earlier trial (so the first is the best trial)."""
    loss = num(t.get("val_loss"))
    return (-num(t.get("value")), loss if loss is not None else math.inf, t["number"])


def selection_warning(run: Run) -> str | None:
    """When the final model comes from a trial that did not complete, say so:
    its accuracy is that of a shortened training."""
    sel = as_dict(get(run.card, "selection")) or as_dict(get(run.search, "selection"))
    how = sel.get("how")
    if isinstance(how, str) and how and how != "complete":
        return f"No trial completed: the final model comes from trial {sel.get('trial')}, {how}."
    return None


def selection_why(run: Run) -> str | None:
    """Why a known-good first trial ships over the search's top-ranked one (search/select.py), when it does."""
    sel = as_dict(get(run.card, "selection")) or as_dict(get(run.search, "selection"))
    why = sel.get("why")
    return why if isinstance(why, str) and why else None


def test_examples(run: Run) -> int | None:
    n = num(get(run.card, "test_examples"))
    if n is None:
        cm = confusion_matrix(run)
        n = int(cm.sum()) if cm is not None else num(get(run.profile, "splits", "test", "size"))
    return int(n) if n else None


def binomial_se(acc, n) -> float | None:
    acc, n = num(acc), num(n)
    return math.sqrt(acc * (1 - acc) / n) if acc is not None and n else None


def shipped(run: Run) -> dict | None:
    """The model that predict and serve use, with where its figures come from.

    model/card.json's `shipped` entry is the truth. Older runs lack it: then the
    candidate compression chose (compress/results.json), else the fp32 model, and
    the label says which."""
    card = as_dict(run.card)
    n = test_examples(run)
    ship = as_dict(card.get("shipped"))
    res = as_dict(run.compress)
    chosen = next((c for c in as_list(res.get("candidates"))
                   if isinstance(c, dict) and c.get("name") == res.get("chosen")), None)
    cand = as_dict(chosen)
    if ship and num(ship.get("test_accuracy")) is not None:
        out = {"name": ship.get("name"), "file": ship.get("file"), "test": num(ship["test_accuracy"]),
               "se": num(ship.get("test_accuracy_se")), "val": num(ship.get("val_accuracy")),
               "latency_ms": num(ship.get("latency_ms_batch1")), "source": "card.json: shipped",
               "fallback": None}
        if out["latency_ms"] is None:
            out["latency_ms"] = num(get(cand, "latency_ms", "1", "p50")) if cand.get("name") == out["name"] else None
    elif num(cand.get("test_acc")) is not None:
        out = {"name": cand.get("name"), "file": res.get("chosen_path") or cand.get("path"), "test": num(cand["test_acc"]),
               "se": None, "val": num(cand.get("val_acc")), "latency_ms": num(get(cand, "latency_ms", "1", "p50")),
               "source": "compress/results.json",
               "fallback": "model/card.json has no \"shipped\" entry: figures of the candidate compression chose"}
    elif num(card.get("test_accuracy")) is not None:
        out = {"name": "fp32", "file": "model/model.onnx", "test": num(card["test_accuracy"]),
               "se": num(card.get("test_accuracy_se")), "val": num(card.get("val_accuracy")), "latency_ms": None,
               "source": "model/card.json",
               "fallback": "fp32 model: model/card.json has no \"shipped\" entry and no compression result"}
    else:
        return None
    if out["se"] is None:
        out["se"] = binomial_se(out["test"], n)
    out["n"] = n
    # The file on disk is what ships; the card's figure for it otherwise.
    out["bytes"] = _file_bytes(run, out["file"])
    if out["bytes"] is None:
        out["bytes"] = num(ship.get("file_bytes")) if ship else None
    if out["bytes"] is None and cand.get("name") == out["name"]:
        out["bytes"] = num(cand.get("file_bytes"))
    out["reason"] = ship.get("reason") if ship else None
    out["is_fp32"] = out["name"] in ("fp32", None) or out["file"] == "model/model.onnx"
    fp32 = fp32_figures(run)
    out["fp32_test"] = fp32[0]["test"] if fp32 else None
    return out


def fp32_figures(run: Run) -> list[dict]:
    """The fp32 model's test figures: model/model.onnx as ONNX Runtime runs it
    (card.json's `fp32`, measured beside the shipped file) first, then the
    PyTorch model before export (the card's top level)."""
    card = as_dict(run.card)
    n = test_examples(run)
    out = []
    onnx = as_dict(card.get("fp32"))
    if num(onnx.get("test_accuracy")) is not None:
        acc = num(onnx["test_accuracy"])
        out.append({"label": "fp32 ONNX", "file": onnx.get("file") or "model/model.onnx", "test": acc,
                    "se": num(onnx.get("test_accuracy_se")) or binomial_se(acc, n), "val": num(onnx.get("val_accuracy")),
                    "bytes": num(onnx.get("file_bytes")), "latency_ms": num(onnx.get("latency_ms_batch1")),
                    "source": "card.json: fp32"})
    acc = num(card.get("test_accuracy"))
    if acc is not None:
        se = num(card.get("test_accuracy_se"))
        out.append({"label": "fp32 PyTorch", "file": f"model/{WEIGHTS_FILE}", "test": acc,
                    "se": se if se is not None else binomial_se(acc, n), "val": num(card.get("val_accuracy")),
                    "bytes": None, "latency_ms": None, "source": "card.json: PyTorch, before export"})
    return out


def _file_bytes(run: Run, rel) -> float | None:
    if not isinstance(rel, str) or not rel:
        return None
    try:
        return float((run.dir / rel).stat().st_size)
    except OSError:
        return None


def safe_plot(fn, *args) -> dict:
    """{"svg"|"png": ..., "error": ...}: a plot that fails (odd values, a matplotlib
    corner case) costs the plot, not the section."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow/layout warnings from odd values: the plot shows it
            out = fn(*args)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"svg": Markup(out)} if out.lstrip().startswith("<svg") else {"png": out}


def missing(what: str, files: list[str], run: Run) -> dict:
    """Why a section cannot be drawn, naming the file(s)."""
    absent = [f for f in files if f in run.missing]
    bad = [p for p in run.problems if any(p.startswith(f) for f in files)]
    return {"what": what, "absent": absent, "problems": bad}


# ---- header -----------------------------------------------------------------

def header(run: Run) -> dict:
    r, card = as_dict(run.run), run.card
    ts = trials(run)
    status = str(get(run.run, "status", default="unknown"))
    lead = {
        "running": "This run is still in progress: the report is a snapshot of what exists now.",
        "failed": "This run failed: the report shows what was written before it stopped.",
    }.get(status, "This run is incomplete: the report shows what exists." if run.missing or run.problems else "")
    return {
        "name": r.get("name") or run.dir.name, "status": status,
        "data": get(r, "data", "name") or get(r, "config", "data"), "created": r.get("created"), "seed": r.get("seed"),
        "ship": shipped(run), "selection_warning": selection_warning(run), "card_missing": "model/card.json" in run.missing,
        "params": num(get(card, "params")), "family": get(card, "family"),
        "trials": len(ts), "completed": len(completed(run)),
        "elapsed": num(get(run.search, "elapsed_s")) or num(get(card, "elapsed_s")),
        "budget": num(get(r, "config", "budget_s")),
        "lead": lead, "missing": [(f, EXPECTED.get(f, f)) for f in run.missing], "problems": run.problems,
    }


# ---- data -------------------------------------------------------------------

def data(run: Run) -> dict:
    d, prof = as_dict(get(run.run, "data")), run.profile
    if not d and prof is None:
        return {"missing": missing("Data summary", ["run.json", "data/profile.json"], run)}
    ctx = {"missing": None, "facts": None, "counts_plot": None, "extremes": None, "profile_missing": None,
           "splits": None, "checks": []}
    if d:
        shape = as_list(d.get("input_shape"))
        feats = [str(f) for f in as_list(d.get("feature_names"))]
        ctx["facts"] = {"name": d.get("name"), "kind": d.get("kind"), "source": d.get("source"),
                        "examples": d.get("examples"), "shape": " × ".join(map(str, shape)) if shape else None,
                        "classes": len(as_list(d.get("classes"))), "skipped": d.get("skipped_files"),
                        "features": (", ".join(feats[:20]) + (f", … ({len(feats)} in all)" if len(feats) > 20 else ""))
                        if feats else None}
    counts = [num(c) for c in as_list(d.get("class_counts"))]
    if not counts or None in counts:
        counts = [num(c) for c in as_list(get(prof, "splits", "train", "class_counts"))]
    if counts and None not in counts:
        names = class_names(run, len(counts))
        ctx["counts_plot"] = safe_plot(plots.class_counts, names, counts)
        if len(counts) > 60:
            order = np.argsort(counts)
            ctx["extremes"] = [(names[order[0]], int(counts[order[0]])), (names[order[-1]], int(counts[order[-1]]))]
    if prof is None:
        ctx["profile_missing"] = missing("Split sizes and data checks", ["data/profile.json"], run)
    else:
        ctx["splits"] = _splits(run, prof)
        ctx["checks"] = _checks(prof)
    return ctx


def _splits(run: Run, prof: dict) -> dict | None:
    splits = as_dict(prof.get("splits"))
    if not splits:
        return None
    order = [s for s in ("train", "val", "test") if s in splits] + [s for s in splits if s not in ("train", "val", "test")]
    total = sum(num(get(splits, s, "size")) or 0 for s in order)
    n_cls = max((len(as_list(get(splits, s, "class_counts"))) for s in order), default=0)
    per_class = 0 < n_cls <= 10
    rows = []
    for s in order:
        size = num(get(splits, s, "size"))
        cc = [num(c) for c in as_list(get(splits, s, "class_counts"))]
        if per_class:
            cells = [int(c) if c is not None else None for c in cc] + [None] * (n_cls - len(cc))
        else:
            ok = [c for c in cc if c is not None]
            cells = [int(min(ok)), int(max(ok))] if ok else [None, None]
        rows.append({"name": s, "size": int(size) if size is not None else None,
                     "share": size / total if size and total else None, "cells": cells})
    return {"columns": class_names(run, n_cls) if per_class else ["smallest class", "largest class"], "rows": rows}


def _checks(prof: dict) -> list[dict]:
    """(label, value, flag) with flag "ok", "warn" or "bad" for counts that should be 0."""
    def count(label, n, bad=False):
        x = num(n)
        flag = None if x is None else "ok" if x == 0 else "bad" if bad else "warn"
        return {"label": label, "value": int(x) if x is not None else n, "flag": flag}

    known = {"splits", "imbalance_ratio", "duplicates_in_train", "leaks"}
    out = []
    ir = num(prof.get("imbalance_ratio"))
    if ir is not None:
        out.append({"label": "imbalance ratio (largest / smallest class)", "value": f"{ir:.2f}",
                    "flag": "warn" if ir >= 3 else None})
    if prof.get("duplicates_in_train") is not None:
        out.append(count("duplicates in train", prof["duplicates_in_train"]))
    for split, n in as_dict(prof.get("leaks")).items():
        out.append(count(f"{split} examples also in train (leaks)", n, bad=True))
    # Anything else the profiler wrote: scalars as they are, one level of dict flattened.
    for k, v in prof.items():
        if k in known:
            continue
        if v is None or isinstance(v, (str, int, float, bool)):
            out.append({"label": k.replace("_", " "), "value": v, "flag": None})
        elif isinstance(v, dict) and v and all(x is None or isinstance(x, (str, int, float, bool)) for x in v.values()):
            out += [{"label": f"{k.replace('_', ' ')}: {k2}", "value": x, "flag": None} for k2, x in v.items()]
    return out


# ---- doctor -----------------------------------------------------------------

_SEV = {"critical": "error", "error": "error", "high": "error", "fail": "error",
        "warning": "warning", "warn": "warning", "medium": "warning",
        "info": "info", "low": "info", "note": "info"}
_SEV_ORDER = {"error": 0, "warning": 1, "info": 2}


def doctor(run: Run) -> dict | None:
    if run.doctor is None:
        return None  # no doctor run (yet): nothing to say
    findings = [f for f in as_list(run.doctor.get("findings")) if isinstance(f, dict)]
    findings.sort(key=lambda f: _SEV_ORDER.get(_SEV.get(str(f.get("severity", "")).lower(), ""), 3))
    return {"findings": [{"severity": str(f.get("severity", "?")), "level": _SEV.get(str(f.get("severity", "")).lower(), ""),
                          "id": f.get("id", ""), "evidence": f.get("evidence"), "why": f.get("why"),
                          "suggestion": f.get("suggestion")} for f in findings]}


# ---- search -----------------------------------------------------------------

def search(run: Run) -> dict:
    s = run.search
    if s is None:
        return {"missing": missing("The search summary", ["search.json"], run)}
    ts = trials(run)
    best = best_trial(run)
    states: dict[str, int] = {}
    for t in ts:
        states[str(t.get("state"))] = states.get(str(t.get("state")), 0) + 1
    ctx = {"missing": None, "sampler": s.get("sampler") or get(run.run, "config", "sampler"),
           "pruner": s.get("pruner") or get(run.run, "config", "pruner"), "started": s.get("started_at"),
           "elapsed": s.get("elapsed_s"), "best": best, "states": sorted(states.items()), "n": len(ts),
           "progress": None, "progress_note": None, "importance": None, "parallel": None, "study_note": None,
           "table": None, "failed": [], "cut_but_complete": [],
           "selection_warning": selection_warning(run), "selection_why": selection_why(run), "importance_n": None}
    if not ts:
        return ctx
    ctx["progress"], ctx["progress_note"] = _progress_plot(ts)
    view, ctx["study_note"] = _study_view(run)
    if view is not None and view.importances:
        ctx["importance"] = safe_plot(plots.importances, view.importances)
        ctx["importance_n"] = view.completed
    if view is not None and view.axes and len(view.lines) >= 2:
        ctx["parallel"] = safe_plot(plots.parallel_coordinates, view.axes, view.lines, best)
    ctx["table"] = _trial_table(ts, best, list(view.importances) if view is not None else [])
    # Older runs stored trials cut by the deadline as complete: say so, they are not results.
    ctx["cut_but_complete"] = [t["number"] for t in ts if t.get("state") == "COMPLETE" and t.get("stopped") == "deadline"]
    ctx["failed"] = [{"number": t["number"], "duration": t.get("duration_s"), **_error(t.get("error"))}
                     for t in ts if t.get("state") == "FAIL"]
    return ctx


def _study_view(run: Run):
    """(StudyView or None, a note on what is not shown and why)."""
    from .study import load_study, study_view

    try:
        study, why = load_study(run.dir, get(run.run, "config", "storage"))
        if study is None:
            return None, f"Parameter importance and parallel coordinates need the Optuna study: {why}."
        view = study_view(study)
    except Exception as exc:  # noqa: BLE001 - an unreadable study costs these two views only
        return None, f"The Optuna study could not be read ({type(exc).__name__}: {exc}): no importance view."
    return view, (f"Parameter importance: {view.importance_note}" if view.importance_note else None)


def _progress_plot(ts: list[dict]):
    complete = [t for t in ts if t.get("state") == "COMPLETE" and num(t.get("value")) is not None]
    pruned = [t for t in ts if t.get("state") == "PRUNED"]
    if not complete and not pruned:
        return None, "No completed or pruned trial yet: nothing to plot."
    timed = all(num(t.get("finished_s")) is not None for t in complete + pruned)
    key = (lambda t: num(t.get("finished_s"))) if timed else (lambda t: t["number"])
    fig = safe_plot(plots.best_so_far, [(key(t), num(t["value"]), t["number"]) for t in complete],
                    [(key(t), num(t.get("value"))) for t in pruned],
                    "seconds since search start" if timed else "trial number")
    return fig, None if timed else "Some trials have no finish time: plotted against trial number instead."


def _trial_table(ts: list[dict], best: int | None, important: list[str]) -> dict:
    """One row per trial: completed ones in the search's own ranking, then the
    others by number. The most important parameters are columns; the rest
    collapse into one cell."""
    seen: dict[str, int] = {}
    for t in ts:
        for k in as_dict(t.get("params")):
            seen[k] = seen.get(k, 0) + 1
    cols = [k for k in important if k in seen][:PARAM_COLUMNS]
    if not cols:  # no importances: the parameters most trials have
        cols = sorted(seen, key=lambda k: -seen[k])[:PARAM_COLUMNS]
    done = sorted((t for t in ts if t.get("state") == "COMPLETE" and num(t.get("value")) is not None), key=trial_rank)
    ranked = {id(t) for t in done}
    rest = sorted((t for t in ts if id(t) not in ranked), key=lambda t: t["number"])
    rows = []
    for i, t in enumerate(done + rest):
        p = as_dict(t.get("params"))
        rows.append({"rank": i + 1 if i < len(done) else None, "number": t["number"], "state": str(t.get("state")),
                     "value": num(t.get("value")), "epochs": t.get("epochs"), "planned": t.get("planned_epochs"), "stopped": t.get("stopped"),
                     "duration": t.get("duration_s"), "best": t["number"] == best,
                     "cols": [p.get(k) for k in cols], "more": [(k, v) for k, v in p.items() if k not in cols]})
    return {"columns": cols, "rows": rows, "by_importance": bool(important)}


def _error(err) -> dict:
    if not err:
        return {"first": None, "full": None}
    s = str(err)
    first = s.strip().splitlines()[-1] if s.strip() else s  # a traceback's last line names the error
    if len(first) > 200:
        first = first[:199] + "…"
    return {"first": first, "full": s[:5000] if s.strip() != first else None}


# ---- learning curves ----------------------------------------------------------

def curves(run: Run) -> dict:
    best = best_trial(run)
    if best is None:
        return {"best": None}
    rows, problem = run.metrics(best)
    ctx = {"best": best, "problem": problem, "plot": None, "facts": None}
    if not rows:
        ctx["problem"] = problem or f"trials/{best}/metrics.jsonl has no rows"
        return ctx
    last = rows[-1]
    vals = [(num(r.get("val_acc")), r.get("epoch")) for r in rows if num(r.get("val_acc")) is not None]
    lrs = [num(r.get("lr")) for r in rows if num(r.get("lr")) is not None]
    ctx["plot"] = safe_plot(plots.learning_curves, rows)
    ctx["facts"] = {"epochs": len(rows), "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
                    "val_loss": last.get("val_loss"), "val_acc": last.get("val_acc"),
                    "best_val": max(vals, key=lambda x: x[0]) if vals else None,
                    "lr": (lrs[0], lrs[-1]) if lrs else None,
                    "time": sum(num(r.get("time_s")) or 0 for r in rows) or None}
    return ctx


# ---- confusion matrix, test metrics ------------------------------------------------

def confusion(run: Run) -> dict:
    if run.card is None:
        return {"missing": missing("The confusion matrix", ["model/card.json"], run)}
    cm = confusion_matrix(run)
    ctx = {"missing": None, "unusable": cm is None, "names_mismatch": False, "plot": None, "worst": None, "n": 0,
           "residuals": None, "regression": None}
    if get(run.card, "task") == "regression":  # no classes: the residual plot and the error figures instead
        reg = get(run.card, "regression") or {}
        ctx.update(unusable=False, regression=reg.get("test"),
                   residuals=safe_plot(plots.residuals, reg["test_points"]) if reg.get("test_points") else None)
        return ctx
    if cm is None:
        return ctx
    names = class_names(run, len(cm))
    ctx["n"] = len(cm)
    ctx["names_mismatch"] = len(names) != len(as_list(get(run.run, "data", "classes")))
    if len(cm) <= MAX_CM_CLASSES:
        ctx["plot"] = safe_plot(plots.confusion, cm, names)
    else:
        ctx["worst"] = worst_classes(names, cm)
    return ctx


def worst_classes(names: list[str], cm: np.ndarray) -> list[dict]:
    support = cm.sum(axis=1)
    acc = np.divide(np.diag(cm), support, out=np.zeros(len(cm)), where=support > 0)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    out = []
    for i in np.argsort(acc, kind="stable")[:WORST_CLASSES]:
        j = int(off[i].argmax())
        out.append({"name": names[i], "support": int(support[i]), "acc": float(acc[i]),
                    "confused": (names[j], int(off[i, j])) if off[i, j] else None})
    return out


def metrics(run: Run) -> dict:
    card = run.card
    if card is None:
        return {"missing": missing("Test metrics", ["model/card.json"], run)}
    acc = num(card.get("test_accuracy"))
    se = num(card.get("test_accuracy_se"))
    if se is None:
        se = binomial_se(acc, test_examples(run))
    val = num(card.get("val_accuracy"))
    parity = as_dict(card.get("onnx_parity"))
    cm = confusion_matrix(run)
    ship = shipped(run)
    rows = []
    if ship and not ship["is_fp32"]:
        rows.append({"label": f"shipped: {ship['name']}", "file": ship["file"], "test": ship["test"], "se": ship["se"],
                     "val": ship["val"], "bytes": ship["bytes"], "latency_ms": ship["latency_ms"],
                     "source": ship["source"], "shipped": True})
    for i, r in enumerate(fp32_figures(run)):
        rows.append({**r, "shipped": i == 0 and bool(ship) and ship["is_fp32"]})
    ctx = {"missing": None, "ship": ship, "rows": rows, "acc": acc, "se": se, "n": test_examples(run), "val": val,
           "gap": val - acc if val is not None and acc is not None else None,
           "parity": {"max_abs_diff": parity.get("max_abs_diff"), "agree": num(parity.get("argmax_agree")),
                      "passed": parity.get("passed")} if parity else None,
           "per_class": None, "per_class_summary": None, "per_class_worst": None}
    per = [num(x) for x in as_list(card.get("per_class_accuracy"))]
    if per and None not in per:
        names = class_names(run, len(per))
        support = cm.sum(axis=1) if cm is not None and len(cm) == len(per) else None
        if len(per) <= MAX_CM_CLASSES:
            ctx["per_class"] = [{"name": n, "support": int(support[i]) if support is not None else None, "acc": a}
                                for i, (n, a) in enumerate(zip(names, per))]
        else:
            ctx["per_class_summary"] = {"n": len(per), "min": min(per), "median": float(np.median(per)), "max": max(per)}
            if cm is None:  # the confusion section could not list the worst classes
                ctx["per_class_worst"] = [{"name": names[i], "acc": per[i]}
                                          for i in np.argsort(per, kind="stable")[:WORST_CLASSES]]
    return ctx


# ---- model ------------------------------------------------------------------

def model(run: Run) -> dict:
    card, spec = run.card, run.spec
    hp = as_dict(get(card, "hyperparameters"))
    if isinstance(hp.get("params"), dict):  # {"params": search parameters, "training": resolved settings}
        hp = hp["params"]
    src = "model/card.json"
    if not hp:  # fall back to the best trial's parameters from the search
        b = best_trial(run)
        hp = next((as_dict(t.get("params")) for t in trials(run) if t["number"] == b), {})
        src = f"search.json, trial {b}"
    return {"card": None if card is None else {"family": card.get("family"), "params": card.get("params"),
                                                 "best_trial": card.get("best_trial"), "seed": card.get("seed")},
            "card_missing": missing("The final model", ["model/card.json"], run) if card is None and not hp else None,
            "hp": list(hp.items()), "hp_source": src,
            "spec": json.dumps(spec, indent=2, ensure_ascii=False) if spec is not None else None,
            "spec_missing": missing("The model spec", ["model/spec.json"], run) if spec is None else None}


# ---- compression ------------------------------------------------------------

def compression(run: Run) -> dict | None:
    """Every candidate measured the same way, and which one ships and why."""
    res = run.compress
    if res is None:
        return None  # compression not run (--no-compress, or not yet)
    rows = []
    for c in as_list(res.get("candidates")):
        if not isinstance(c, dict):
            continue
        rows.append({"name": c.get("name", ""), "method": c.get("method", ""), "chosen": c.get("name") == res.get("chosen"),
                     "baseline": bool(c.get("baseline")), "val": c.get("val_acc"), "test": c.get("test_acc"),
                     "bytes": c.get("file_bytes"), "params": c.get("params"),
                     "p50_1": num(get(c, "latency_ms", "1", "p50")), "p50_64": num(get(c, "latency_ms", "64", "p50")),
                     "thr_64": num(get(c, "throughput_per_s", "64")), "pareto": bool(c.get("pareto"))})
    return {"chosen": res.get("chosen"), "reason": res.get("reason", ""), "target": res.get("target", ""),
            "elapsed": num(res.get("elapsed_s")), "rows": rows}


# ---- fusion -----------------------------------------------------------------

def fusion(run: Run) -> dict | None:
    """The best single model, the ensemble and its student side by side, and
    what ships among them and why (fusion/results.json)."""
    res = run.fusion
    if res is None:
        return None  # the stage did not run (--no-fusion, one trial, or not yet)
    single = next((c for c in as_list(res.get("candidates")) if isinstance(c, dict) and c.get("name") == "single"), {})
    base = num(get(single, "latency_ms", "1", "p50"))
    rows = []
    for c in as_list(res.get("candidates")):
        if not isinstance(c, dict):
            continue
        p50 = num(get(c, "latency_ms", "1", "p50"))
        rows.append({"name": c.get("name", ""), "method": c.get("method", ""), "chosen": c.get("name") == res.get("chosen"),
                     "file": c.get("file", ""), "val": c.get("val_acc"), "test": c.get("test_acc"),
                     "bytes": c.get("file_bytes"), "params": c.get("params"), "p50_1": p50,
                     "vs_single": p50 / base if p50 is not None and base else None,
                     "parity": get(c, "parity", "passed"), "members": ", ".join(map(str, as_list(c.get("members"))))})
    sel = as_dict(res.get("selection"))
    members = [(get(m, "trial"), num(get(m, "weight")), get(m, "models") or 1) for m in as_list(sel.get("members"))]
    return {"chosen": res.get("chosen"), "reason": res.get("reason", ""), "ship": res.get("ship", ""),
            "elapsed": num(res.get("elapsed_s")), "rows": rows, "members": members,
            "sel_val": num(sel.get("val_accuracy")), "pool": len(as_list(res.get("pool"))),
            "plan": [p for p in as_list(res.get("plan")) if isinstance(p, dict)],
            "bags": sel.get("pool") == "bags", "selected_on": sel.get("selected_on"), "judged_on": res.get("judged_on")}


# ---- footer -----------------------------------------------------------------

def footer(run: Run) -> dict:
    r, card = as_dict(run.run), as_dict(run.card)
    rv, cv = dict(as_dict(r.get("versions"))), as_dict(card.get("versions"))
    if r.get("autopilot_version"):
        rv = {"autopilot": r["autopilot_version"], **rv}
    keys = list(rv) + [k for k in cv if k not in rv]
    fp, cfp = get(r, "data", "fingerprint"), card.get("data_fingerprint")
    return {"versions": [(k, rv.get(k), cv.get(k)) for k in keys], "card_versions": bool(cv),
            "fingerprint": fp, "card_fingerprint": cfp, "fingerprint_differs": bool(cfp and fp and cfp != fp),
            "checked": run.checked, "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
