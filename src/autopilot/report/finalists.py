"""Report sections on how the shipped network was chosen and what it is:
the cross-validated finalists (card.json's `cv`), the network stage by stage
(models.describe on model/spec.json), and accuracy against cost over the
search's completed trials with the final model's trial marked.

Builders return plain values; finalists.html.j2 and architecture.html.j2
turn them into HTML. The only markup handed over is the plot's SVG.
"""
from __future__ import annotations

import math

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from . import plots
from .load import Run, as_dict, as_list, get, num
from .sections import best_trial, completed, missing, safe_plot

FRONT = "#dc2626"
LATENCY_ATTR = "latency_ms"  # the search records each trial's ONNX Runtime batch-1 latency under this name


# ---- finalists ----------------------------------------------------------------

def finalists(run: Run) -> dict | None:
    """The finalists' fold accuracies, means and spreads, the winner and why;
    None when the run did not cross-validate (--cv 0, or an older run)."""
    cv = as_dict(get(run.card, "cv"))
    if not cv:
        return None
    rows = []
    for f in as_list(cv.get("finalists")):
        f = as_dict(f)
        folds = [num(a) for a in as_list(f.get("fold_accuracies"))]
        rows.append({"trial": f.get("trial"), "search_val": num(f.get("search_val_accuracy")),
                     "folds": [a for a in folds if a is not None], "mean": num(f.get("mean")), "std": num(f.get("std")),
                     "params": f.get("params"), "fold_epochs": f.get("fold_epochs"), "planned": f.get("planned_epochs"),
                     "finished": bool(f.get("finished")), "won": bool(f.get("won"))})
    return {"folds": cv.get("folds"), "examples": cv.get("examples"), "asked": cv.get("finalists_asked"),
            "rows": rows, "max_folds": max((len(r["folds"]) for r in rows), default=0),
            "winner": cv.get("winner"), "search_best": cv.get("search_best"), "reason": cv.get("reason"),
            "retrained": bool(cv.get("retrained")), "retrain_epochs": cv.get("retrain_epochs"),
            "retrain_warm_start": bool(cv.get("retrain_warm_start")),
            "held_out": cv.get("validation_held_out"), "share": num(cv.get("fold_share")),
            "reserved": num(cv.get("reserved_s")), "elapsed": num(cv.get("elapsed_s")),
            "notes": [str(n) for n in as_list(cv.get("notes"))]}


# ---- architecture and cost -------------------------------------------------------

def architecture(run: Run) -> dict:
    """The final network stage by stage, and accuracy against cost."""
    ship = as_dict(get(run.card, "shipped"))
    ctx = {"missing": None, "rows": None, "total_params": None, "total_ms": None, "error": None,
           "pareto": None, "pareto_note": None,
           # compression or fusion may ship another file than this network's export
           "shipped_other": ship.get("name") if ship.get("name") not in (None, "fp32") else None,
           "shipped_by": ship.get("chosen_by")}
    spec = run.spec
    if not isinstance(spec, dict):
        ctx["missing"] = missing("The network's stages", ["model/spec.json"], run)
    else:
        try:
            ctx["rows"], ctx["total_params"], ctx["total_ms"] = stages(spec)
        except Exception as exc:  # noqa: BLE001 - a spec this version cannot build costs the table, not the plot
            ctx["error"] = f"{type(exc).__name__}: {exc}"
    ctx["pareto"], ctx["pareto_note"] = _pareto(run)
    return ctx


def stages(spec: dict) -> tuple[list[dict], int, float]:
    """(rows, parameters, forward ms): one row per part of the network, from
    models.describe (works for template and component specs)."""
    from ..models.describe import describe_model, time_parts
    from ..models.spec import build_model

    model = build_model(spec)
    rows = describe_model(spec, model)
    times = time_parts(spec, model)
    total = sum(r["params"] for r in rows) or 1
    out = []
    for r, t in zip(rows, times):
        shape = [int(s) for s in r["output_shape"]]
        out.append({"name": r["name"], "op": r["op"], "blocks": r["blocks"], "width": r["width"],
                    "skip": bool(r.get("skip")), "se": bool(r.get("se")),
                    "shape": " × ".join(str(s) for s in shape), "resolution": " × ".join(str(s) for s in shape[1:]),
                    "params": r["params"], "params_share": r["params"] / total, "ms": t["ms"], "share": t["share"]})
    return out, sum(r["params"] for r in rows), sum(t["ms"] for t in times)


def _pareto(run: Run) -> tuple[dict | None, str | None]:
    done = completed(run)
    if len(done) < 2:
        return None, f"{len(done)} completed trial(s): accuracy against cost needs at least 2."
    latency = trial_latencies(run, done)
    if sum(v is not None for v in latency.values()) >= 2:
        cost, axis = latency, "ONNX Runtime latency, batch 1 (ms)"
        note = None
    else:
        cost = {t["number"]: num(t.get("params_count")) for t in done}
        axis = "parameters"
        note = "The search recorded no latency per trial: cost is the number of parameters."
    pts = [(cost[t["number"]], num(t["value"]), t["number"]) for t in done
           if cost.get(t["number"]) is not None and cost[t["number"]] > 0]
    if len(pts) < 2:
        return None, "Fewer than two completed trials have a recorded cost: no accuracy-against-cost view."
    chosen = best_trial(run)
    front = pareto_front(pts)
    if chosen is not None and all(p[2] != chosen for p in pts):
        note = ((note + " ") if note else "") + f"The final model's trial {chosen} has no recorded cost and is not drawn."
    on_front = chosen in {p[2] for p in front}
    where = f"The final model (trial {chosen}) is {'on' if on_front else 'off'} the front of the search's validation accuracies"
    where += ("; it was chosen on cross-validation folds, not on this axis." if as_list(get(run.card, "cv", "finalists"))
              else ".")
    return safe_plot(pareto_plot, pts, front, chosen, axis), ((note + " ") if note else "") + where


def trial_latencies(run: Run, done: list[dict]) -> dict[int, float | None]:
    """Each completed trial's latency: search.json's field when the search
    wrote one, else the trial's user attribute in the Optuna study."""
    out = {t["number"]: num(t.get(LATENCY_ATTR)) for t in done}
    if all(v is None for v in out.values()):
        try:
            from .study import load_study

            study, _ = load_study(run.dir, get(run.run, "config", "storage"))
            if study is not None:
                attrs = {t.number: num(t.user_attrs.get(LATENCY_ATTR)) for t in study.get_trials(deepcopy=False)}
                out = {n: attrs.get(n) for n in out}
        except Exception:  # noqa: BLE001 - no study, no latencies: the view falls back to parameters
            pass
    return out


def pareto_front(pts: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The trials no other trial beats on both cost (lower) and accuracy
    (higher), cheapest first."""
    front, best = [], -math.inf
    for p in sorted(pts, key=lambda p: (p[0], -p[1], p[2])):
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


def pareto_plot(pts: list[tuple[float, float, int]], front: list[tuple[float, float, int]], chosen: int | None,
                x_label: str) -> str:
    with mpl.rc_context(plots._RC):
        fig = Figure(figsize=(7, 3.6), layout="constrained")
        ax = fig.add_subplot()
        x = np.array([p[0] for p in pts])
        y = np.array([p[1] for p in pts])
        ax.scatter(x, y, s=18, color=plots.VAL, alpha=0.7, zorder=3)
        fx = [p[0] for p in front]
        fy = [p[1] for p in front]
        ax.step(fx, fy, where="post", color=FRONT, lw=1.5, zorder=2)
        handles = [Line2D([], [], marker="o", ls="", color=plots.VAL, label="completed trial"),
                   Line2D([], [], color=FRONT, lw=1.5, label="Pareto front")]
        mine = [p for p in pts if p[2] == chosen]
        if mine:
            cx, cy, _ = mine[0]
            ax.scatter([cx], [cy], marker="*", s=180, color=plots.BEST, edgecolor="black", linewidth=0.6, zorder=5)
            ax.annotate(f"final: #{chosen}", (cx, cy), xytext=(6, -12), textcoords="offset points", fontsize=8,
                        color=plots.BEST)
            handles.append(Line2D([], [], marker="*", ls="", markersize=11, color=plots.BEST, label="final model"))
        if x.min() > 0 and x.max() / x.min() > 20:
            ax.set_xscale("log")
        ax.set_xlabel(plots.label(x_label, 48))
        ax.set_ylabel("validation accuracy")
        ax.set_title("Accuracy against cost")
        ax.legend(handles=handles, loc="best", frameon=False, fontsize=8)
        return plots.to_svg(fig)
