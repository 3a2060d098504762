"""Plots as inline SVG strings or base64 PNG.

Figures are built with `matplotlib.figure.Figure` directly, never pyplot: no
global figure state, no GUI backend (Agg renders the PNGs), so it runs headless
and never changes the backend of a process that imported us. Text stays text in
the SVG (svg.fonttype "none"): smaller files and selectable labels. Views with
many lines (parallel coordinates) are PNG: an SVG of hundreds of paths is heavy.
"""
from __future__ import annotations

import base64
import io
import itertools
import math
import re

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

TRAIN, VAL, BEST, PRUNED = "#f97316", "#2563eb", "#16a34a", "#9ca3af"

_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "autopilot",  # deterministic ids: the same run gives the same report
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.edgecolor": "#6b7280",
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
}

_fig_ids = itertools.count()


def label(s, width: int = 24) -> str:
    """Text safe for a matplotlib label: no mathtext ($), bounded length."""
    s = str(s)
    if len(s) > width:  # cut the middle: names often differ only at the end ("class_10", "class_11")
        head = (width - 1) // 2
        s = s[:head] + "…" + s[len(s) - (width - 1 - head):]
    return s.replace("$", r"\$")


def to_svg(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg",
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue().decode("utf-8")
    # Inline SVG needs neither the XML prolog nor the DOCTYPE (whose DTD URL would be
    # an external reference), nor the RDF metadata block.
    svg = re.sub(r"<\?xml.*?\?>", "", svg, flags=re.S)
    svg = re.sub(r"<!DOCTYPE.*?>", "", svg, flags=re.S)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return _unique_ids(svg.strip(), f"f{next(_fig_ids)}-")


def to_png(fig: Figure, dpi: int = 110) -> str:
    """The figure as base64 PNG, for a data: URI (the report stays one file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _unique_ids(svg: str, prefix: str) -> str:
    """Prefix every id (and reference to it): several SVGs share one HTML id space."""
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    if not ids:
        return svg

    def sub(m):
        return m.group(1) + (prefix + m.group(2) if m.group(2) in ids else m.group(2)) + m.group(3)

    svg = re.sub(r'(\bid=")([^"]+)(")', sub, svg)
    svg = re.sub(r'(url\(#)([^)]+)(\))', sub, svg)
    svg = re.sub(r'(href="#)([^"]+)(")', sub, svg)
    return svg


def class_counts(classes: list, counts: list) -> str:
    n = len(counts)
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(min(10, max(4, 0.35 * n + 2)), 2.8), layout="constrained")
        ax = fig.add_subplot()
        x = np.arange(n)
        bars = ax.bar(x, counts, color=VAL, width=0.75)
        if n <= 20:
            ax.bar_label(bars, fmt="%d", fontsize=7, padding=2, color="#374151")
        ax.grid(axis="x", visible=False)
        ax.set_ylabel("examples")
        ax.set_title("Examples per class")
        if n <= 60:
            ax.set_xticks(x, [label(c, 16) for c in classes],
                          rotation=0 if n <= 10 and max(len(str(c)) for c in classes) <= 8 else 90)
        else:  # too many to label: the table below names the extremes
            ax.set_xlabel(f"{n} classes")
            ax.set_xticks([])
        ax.set_xlim(-0.6, n - 0.4)
        return to_svg(fig)


def best_so_far(complete: list[tuple[float, float, int]], pruned: list[tuple[float, float | None]],
                x_label: str) -> str:
    """complete: (time, value, number); pruned: (time, value or None)."""
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(8, 3.4), layout="constrained")
        ax = fig.add_subplot()
        handles = []
        if complete:
            complete = sorted(complete)
            t = np.array([c[0] for c in complete])
            v = np.array([c[1] for c in complete])
            best = np.maximum.accumulate(v)
            ax.scatter(t, v, s=18, color=VAL, alpha=0.7, zorder=3)
            handles.append(Line2D([], [], marker="o", ls="", color=VAL, label="completed trial"))
            # Extend the step to the last event so the final best stays visible.
            t_end = max([t[-1]] + [p[0] for p in pruned])
            ax.step(np.append(t, t_end), np.append(best, best[-1]), where="post", color=BEST, lw=2, zorder=4)
            handles.append(Line2D([], [], color=BEST, lw=2, label="best so far"))
            i = int(np.argmax(v))
            right = t[i] > (t[0] + t_end) / 2
            ax.annotate(f"#{complete[i][2]}: {v[i]:.4f}", (t[i], v[i]), xytext=(-6 if right else 6, 5),
                        textcoords="offset points", fontsize=8, color=BEST, ha="right" if right else "left")
        with_v = [p for p in pruned if p[1] is not None]
        without_v = [p for p in pruned if p[1] is None]
        if with_v:
            ax.scatter([p[0] for p in with_v], [p[1] for p in with_v], marker="x", s=22, color=PRUNED, zorder=2)
        if without_v:
            # No value to place them by: mark them along the bottom edge.
            ax.scatter([p[0] for p in without_v], [0.02] * len(without_v), marker="x", s=22, color=PRUNED,
                       transform=ax.get_xaxis_transform(), clip_on=False, zorder=2)
        if pruned:
            handles.append(Line2D([], [], marker="x", ls="", color=PRUNED, label="pruned trial"))
        ax.set_xlabel(x_label)
        ax.set_ylabel("validation accuracy")
        ax.set_title("Search progress")
        if handles:
            ax.legend(handles=handles, loc="lower right", frameon=False, fontsize=8)
        return to_svg(fig)


def learning_curves(rows: list[dict]) -> str:
    def series(key):
        pts = [(r["epoch"], r[key]) for r in rows
               if _finite(r.get("epoch")) and _finite(r.get(key))]
        return [p[0] for p in pts], [p[1] for p in pts]

    with mpl.rc_context(_RC):
        fig = Figure(figsize=(9, 3.2), layout="constrained")
        for j, (what, title) in enumerate([("loss", "Loss"), ("acc", "Accuracy")]):
            ax = fig.add_subplot(1, 2, j + 1)
            for split, color in (("train", TRAIN), ("val", VAL)):
                x, y = series(f"{split}_{what}")
                if x:
                    ax.plot(x, y, color=color, lw=1.8, marker="o" if len(x) < 30 else None, ms=3,
                            label="train" if split == "train" else "validation")
            if what == "acc":
                x, y = series("val_acc")
                if y:
                    i = int(np.argmax(y))
                    ax.axvline(x[i], color=BEST, ls="--", lw=1)
                    # In the legend, not on the plot: an annotation would sit on the curves.
                    ax.plot([x[i]], [y[i]], marker="*", ms=10, ls="", color=BEST,
                            label=f"best val {y[i]:.4f} (epoch {x[i]})")
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            if ax.lines:
                ax.legend(frameon=False, fontsize=8, loc="best")
        return to_svg(fig)


def confusion(cm: np.ndarray, classes: list) -> str:
    """Colour is the row-normalised rate (recall), so a rare class is as visible as a
    common one; the number printed is the raw count."""
    n = len(cm)
    rows = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    size = min(10, max(3.5, 0.38 * n + 2))
    fs = 9 if n <= 10 else 7 if n <= 20 else 5.5
    with mpl.rc_context({**_RC, "axes.grid": False}):
        fig = Figure(figsize=(size + 1, size), layout="constrained")
        ax = fig.add_subplot()
        im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                if cm[i, j] or i == j:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=fs,
                            color="white" if rate[i, j] > 0.55 else "#111827")
        names = [label(c, 14) for c in classes]
        ax.set_xticks(range(n), names, rotation=90 if n > 6 or max(map(len, names)) > 6 else 0)
        ax.set_yticks(range(n), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("Confusion matrix (test)")
        for s in ax.spines.values():
            s.set_visible(False)
        cb = fig.colorbar(im, ax=ax, shrink=0.8)
        cb.set_label("share of true class")
        return to_svg(fig)


def residuals(points: list) -> str:
    """A regression model on the test split: residual (true - predicted)
    against the prediction; a pattern around the zero line is error the
    model left on the table (a bias, a missed curve, a spread that grows)."""
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    y, pred = p[:, 0], p[:, 1]
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(6.4, 3.6), layout="constrained")
        ax = fig.add_subplot()
        ax.axhline(0.0, color="#6b7280", lw=1)
        ax.scatter(pred, y - pred, s=9, alpha=0.6, color="#2563eb", edgecolors="none")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true − predicted")
        ax.set_title(f"Residuals (test, {len(p)} examples)")
        return to_svg(fig)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def importances(imp: dict[str, float]) -> str:
    """Optuna's parameter-importance view: one horizontal bar per parameter, largest on top."""
    names, vals = list(imp)[::-1], list(imp.values())[::-1]
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(6.5, max(1.8, 0.24 * len(names) + 0.9)), layout="constrained")  # a title and an axis label need room even with one bar
        ax = fig.add_subplot()
        bars = ax.barh(range(len(names)), vals, color=VAL, height=0.7)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], fontsize=7, padding=2, color="#374151")
        ax.set_yticks(range(len(names)), [label(n, 28) for n in names])
        ax.grid(axis="y", visible=False)
        ax.set_xlim(0, max(vals + [0.01]) * 1.15)
        ax.set_xlabel("importance (fANOVA, share of the variance of validation accuracy)")
        ax.set_title("Parameter importance")
        return to_png(fig, dpi=100)


def parallel_coordinates(axes: list, lines: list[tuple[int, float, list[float]]], best: int | None) -> str:
    """Optuna's parallel-coordinate view: each completed trial is a line through
    its validation accuracy (first axis) and its parameters, coloured by accuracy.
    axes: report.study.Axis; lines: (number, value, positions in [0, 1])."""
    from matplotlib import cm
    from matplotlib.colors import Normalize

    values = [v for _, v, _ in lines]
    lo, hi = min(values), max(values)
    norm = Normalize(lo, hi if hi > lo else lo + 1e-9)
    cmap = mpl.colormaps["viridis"]
    n = len(axes) + 1
    with mpl.rc_context({**_RC, "axes.grid": False}):
        fig = Figure(figsize=(min(10.0, max(6.5, 1.1 * n + 1.5)), 4.0), layout="constrained")
        ax = fig.add_subplot()
        for number, value, pos in sorted(lines, key=lambda x: x[1]):  # best drawn last, on top
            y = [norm(value) if hi > lo else 0.5] + pos
            is_best = number == best
            ax.plot(range(n), y, color=BEST if is_best else cmap(norm(value)), lw=2.6 if is_best else 1.2,
                    alpha=1.0 if is_best else 0.75, zorder=3 if is_best else 2, marker="o", ms=2.5)
        for i in range(n):
            ax.axvline(i, color="#6b7280", lw=0.8, zorder=1)
        _axis_ticks(ax, 0, "linear", lo, hi, [])
        for i, a in enumerate(axes, start=1):
            _axis_ticks(ax, i, a.kind, a.low, a.high, a.choices)
        ax.set_xticks(range(n), ["val accuracy"] + [label(a.name, 16) for a in axes],
                      rotation=20 if n > 6 else 0, ha="right" if n > 6 else "center")
        ax.set_yticks([])
        ax.set_xlim(-0.15, n - 0.6)
        ax.set_ylim(-0.06, 1.06)
        for s in ax.spines.values():
            s.set_visible(False)
        cb = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.85, pad=0.01)
        cb.set_label("validation accuracy")
        title = "Parallel coordinates (completed trials"
        ax.set_title(title + (f"; best #{best} in green)" if best is not None else ")"))
        return to_png(fig, dpi=100)


def _axis_ticks(ax, x: float, kind: str, low: float, high: float, choices: list) -> None:
    """Labels along one vertical axis: the choices, or low / middle / high."""
    if kind == "categorical":
        k = len(choices)
        ticks = [((j / (k - 1)) if k > 1 else 0.5, str(c)) for j, c in enumerate(choices)]
    elif kind == "log" and low > 0 and high > 0:
        mid = 10 ** ((math.log10(low) + math.log10(high)) / 2)
        ticks = [(0.0, low), (0.5, mid), (1.0, high)]
    else:
        ticks = [(0.0, low), (0.5, (low + high) / 2), (1.0, high)] if high > low else [(0.5, low)]
    for y, v in ticks:
        text = v if isinstance(v, str) else f"{v:.3g}"
        ax.text(x + 0.04, y, label(text, 12), fontsize=8, va="center", ha="left", color="#374151", zorder=4,
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
