"""One function per report section: Run -> markup.

Each section reads only what it needs, says in words what is missing, and is
called through `render()` in __init__, which turns any unexpected exception into
a visible "could not render" box instead of a crashed report.
"""
from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone

import numpy as np

from . import plots
from .markup import bar, duration, e, fmt, kv, note, pct, plot, section, table
from .load import EXPECTED, Run, as_dict, as_list, get, num

MAX_CM_CLASSES = 30  # above this a heat map is unreadable: show the worst classes instead
TOP_TRIALS = 10
WORST_CLASSES = 15


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


def best_trial(run: Run) -> int | None:
    for b in (get(run.search, "best_trial"), get(run.card, "best_trial")):
        if isinstance(b, int) and not isinstance(b, bool):
            return b
    done = [t for t in trials(run) if t.get("state") == "COMPLETE" and num(t.get("value")) is not None]
    return max(done, key=lambda t: t["value"])["number"] if done else None


def trials(run: Run) -> list[dict]:
    return [t for t in as_list(get(run.search, "trials"))
            if isinstance(t, dict) and isinstance(t.get("number"), int)]


def safe_plot(fn, *args) -> str:
    """A plot that fails (odd values, a matplotlib corner case) costs the plot, not the section."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow/layout warnings from odd values: the plot shows it
            return plot(fn(*args))
    except Exception as exc:  # noqa: BLE001
        return note(f"The plot could not be drawn: <code>{e(type(exc).__name__)}: {e(exc)}</code>", "warn")


def _num_cell(x, digits: int = 4) -> str:
    x = num(x)
    return "—" if x is None else f"{x:.{digits}f}"


def _iso(epoch) -> str | None:
    t = num(epoch)
    if t is None:
        return None
    try:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return None


def _missing_box(what: str, files: list[str], run: Run) -> str:
    """A note that a section cannot be drawn, naming the file(s) and why."""
    absent = [f for f in files if f in run.missing]
    bad = [p for p in run.problems if any(p.startswith(f) for f in files)]
    parts = [f"<code>{e(f)}</code> is missing" for f in absent] + [e(p) for p in bad]
    why = "; ".join(parts) or "the data needed is not in the run directory"
    return note(f"<b>{e(what)}</b>: not available — {why}.", "warn")


# ---- header -----------------------------------------------------------------

def header(run: Run) -> str:
    r, card = as_dict(run.run), run.card
    name = r.get("name") or run.dir.name
    status = str(r.get("status") or "unknown")
    data = get(r, "data", "name") or get(r, "config", "data")
    sub = []
    if data is not None:
        sub.append(f"data <b>{e(data)}</b>")
    if r.get("created"):
        sub.append(f"created {e(r['created'])}")
    if r.get("seed") is not None:
        sub.append(f"seed {fmt(r['seed'])}")
    kpis = []
    if card is not None and num(card.get("test_accuracy")) is not None:
        se = num(card.get("test_accuracy_se"))
        pm = f'<span class="pm"> ± {pct(se)}</span>' if se is not None else ""
        cm = confusion_matrix(run)
        n = int(cm.sum()) if cm is not None else num(get(run.profile, "splits", "test", "size"))
        detail = []
        if se is not None:
            detail.append(f"95 % CI {pct(card['test_accuracy'] - 1.96 * se)} – {pct(card['test_accuracy'] + 1.96 * se)}")
        if n:
            detail.append(f"n = {int(n):,} test examples")
        kpis.append(_kpi("test accuracy", pct(card["test_accuracy"]) + pm, " · ".join(detail), hero=True))
    else:
        kpis.append(_kpi("test accuracy", '<span class="muted">no model</span>',
                         "model/card.json is missing" if "model/card.json" in run.missing
                         else "model/card.json has no test accuracy", hero=True))
    if card is not None:
        if num(card.get("val_accuracy")) is not None:
            kpis.append(_kpi("validation accuracy", pct(card["val_accuracy"])))
        if num(card.get("params")) is not None:
            kpis.append(_kpi("parameters", fmt(int(card["params"])), e(card.get("family") or "")))
    ts = trials(run)
    if ts:
        done = sum(t.get("state") == "COMPLETE" for t in ts)
        kpis.append(_kpi("trials", fmt(len(ts)), f"{done} completed"))
    elapsed = num(get(run.search, "elapsed_s")) or num(get(card, "elapsed_s"))
    if elapsed is not None:
        budget = num(get(r, "config", "budget_s"))
        kpis.append(_kpi("search time", duration(elapsed), f"budget {duration(budget)}" if budget else ""))
    return (f'<header><div><h1>{e(name)}</h1><span class="badge {e(status)}">{e(status)}</span></div>'
            f'<div class="sub">{" · ".join(sub)}</div><div class="kpis">{"".join(kpis)}</div></header>'
            + completeness(run))


def _kpi(label: str, value: str, detail: str = "", hero: bool = False) -> str:
    d = f'<div class="detail">{detail}</div>' if detail else ""
    return f'<div class="kpi{" hero" if hero else ""}"><div class="label">{e(label)}</div><div class="value">{value}</div>{d}</div>'


def completeness(run: Run) -> str:
    status = str(get(run.run, "status", default=""))
    lead = {
        "running": "This run is still in progress: the report is a snapshot of what exists now.",
        "failed": "This run failed: the report shows what was written before it stopped.",
    }.get(status, "This run is incomplete: the report shows what exists." if run.missing or run.problems else "")
    if not (run.missing or run.problems):
        return note(e(lead)) if lead else ""
    items = [f"<li><code>{e(f)}</code> missing — not shown: {e(EXPECTED.get(f, f))}</li>" for f in run.missing]
    items += [f"<li>{e(p)}</li>" for p in run.problems]
    return note(f"<b>{e(lead)}</b><ul>{''.join(items)}</ul>", "warn")


# ---- data -------------------------------------------------------------------

def data(run: Run) -> str:
    d, prof = as_dict(get(run.run, "data")), run.profile
    if not d and prof is None:
        return section("data", "Data", _missing_box("Data summary", ["run.json", "data/profile.json"], run))
    out = []
    if d:
        shape = as_list(d.get("input_shape"))
        facts = [("name", fmt(d.get("name"))), ("kind", fmt(d.get("kind"))), ("source", fmt(d.get("source"))),
                 ("examples", fmt(d.get("examples"))),
                 ("input shape", e(" × ".join(map(str, shape))) if shape else fmt(None)),
                 ("classes", fmt(len(as_list(d.get("classes")))))]
        if d.get("skipped_files"):
            facts.append(("skipped files", f'<span class="warn-text">{fmt(d["skipped_files"])}</span>'))
        feats = as_list(d.get("feature_names"))
        if feats:
            shown = ", ".join(map(str, feats[:20])) + (f", … ({len(feats)} in all)" if len(feats) > 20 else "")
            facts.append(("features", e(shown)))
        out.append(kv(facts))
    counts = [num(c) for c in as_list(d.get("class_counts"))]
    if not counts or None in counts:
        counts = [num(c) for c in as_list(get(prof, "splits", "train", "class_counts"))]
    if counts and None not in counts:
        names = class_names(run, len(counts))
        out.append(safe_plot(plots.class_counts, names, counts))
        if len(counts) > 60:
            order = np.argsort(counts)
            out.append(f'<p class="muted">Smallest class: {e(names[order[0]])} ({fmt(int(counts[order[0]]))}); '
                       f'largest: {e(names[order[-1]])} ({fmt(int(counts[order[-1]]))}).</p>')
    if prof is None:
        out.append(_missing_box("Split sizes and data checks", ["data/profile.json"], run))
    else:
        out.append(_splits(run, prof))
        out.append(_checks(prof))
    return section("data", "Data", "".join(out))


def _splits(run: Run, prof: dict) -> str:
    splits = as_dict(prof.get("splits"))
    if not splits:
        return ""
    order = [s for s in ("train", "val", "test") if s in splits] + [s for s in splits if s not in ("train", "val", "test")]
    total = sum(num(get(splits, s, "size")) or 0 for s in order)
    n_cls = max((len(as_list(get(splits, s, "class_counts"))) for s in order), default=0)
    per_class = 0 < n_cls <= 10
    names = class_names(run, n_cls) if per_class else []
    headers = ["split", "size", "share"] + (names if per_class else ["smallest class", "largest class"])
    rows = []
    for s in order:
        size = num(get(splits, s, "size"))
        cc = [num(c) for c in as_list(get(splits, s, "class_counts"))]
        row = [e(s), fmt(int(size)) if size is not None else fmt(None), pct(size / total) if size and total else "—"]
        if per_class:
            row += [fmt(int(c)) if c is not None else "—" for c in cc] + ["—"] * (n_cls - len(cc))
        else:
            ok = [c for c in cc if c is not None]
            row += [fmt(int(min(ok))), fmt(int(max(ok)))] if ok else ["—", "—"]
        rows.append(row)
    return "<h3>Splits</h3>" + table(headers, rows, numeric=set(range(1, len(headers))))


def _checks(prof: dict) -> str:
    known = {"splits", "imbalance_ratio", "duplicates_in_train", "leaks"}
    facts = []
    ir = num(prof.get("imbalance_ratio"))
    if ir is not None:
        cls = ' class="warn-text"' if ir >= 3 else ""
        facts.append(("imbalance ratio (largest / smallest class)", f"<span{cls}>{ir:.2f}</span>"))
    dup = prof.get("duplicates_in_train")
    if dup is not None:
        facts.append(("duplicates in train", _count_flag(dup)))
    for split, n in as_dict(prof.get("leaks")).items():
        facts.append((f"{split} examples also in train (leaks)", _count_flag(n, bad=True)))
    # Anything else the profiler wrote: scalars as they are, one level of dict flattened.
    other = []
    for k, v in prof.items():
        if k in known:
            continue
        if v is None or isinstance(v, (str, int, float, bool)):
            other.append((k.replace("_", " "), fmt(v)))
        elif isinstance(v, dict) and v and all(x is None or isinstance(x, (str, int, float, bool)) for x in v.values()):
            other += [(f"{k.replace('_', ' ')}: {k2}", fmt(x)) for k2, x in v.items()]
    body = kv(facts + other) if facts or other else ""
    return "<h3>Checks</h3>" + body if body else ""


def _count_flag(n, bad: bool = False) -> str:
    x = num(n)
    if x is None:
        return fmt(n)
    if x == 0:
        return '<span class="ok-text">0</span>'
    return f'<span class="{"bad-text" if bad else "warn-text"}">{fmt(int(x))}</span>'


# ---- doctor -----------------------------------------------------------------

_SEV = {"critical": "error", "error": "error", "high": "error", "fail": "error",
        "warning": "warning", "warn": "warning", "medium": "warning",
        "info": "info", "low": "info", "note": "info"}
_SEV_ORDER = {"error": 0, "warning": 1, "info": 2}


def doctor(run: Run) -> str:
    if run.doctor is None:
        return ""  # no doctor run (yet): nothing to say
    findings = [f for f in as_list(run.doctor.get("findings")) if isinstance(f, dict)]
    if not findings:
        return section("doctor", "Doctor", note("The doctor ran and found nothing to report.", "info"))
    findings.sort(key=lambda f: _SEV_ORDER.get(_SEV.get(str(f.get("severity", "")).lower(), ""), 3))
    rows = []
    for f in findings:
        sev = str(f.get("severity", "?"))
        rows.append([f'<span class="sev {_SEV.get(sev.lower(), "")}">{e(sev)}</span>', f"<code>{e(f.get('id', ''))}</code>",
                     fmt(f.get("evidence")), fmt(f.get("why")), fmt(f.get("suggestion"))])
    return section("doctor", "Doctor", table(["severity", "finding", "evidence", "why", "suggestion"], rows))


# ---- search -----------------------------------------------------------------

def search(run: Run) -> str:
    s = run.search
    if s is None:
        return section("search", "Search", _missing_box("The search summary", ["search.json"], run))
    ts = trials(run)
    best = best_trial(run)
    states: dict[str, int] = {}
    for t in ts:
        states[str(t.get("state"))] = states.get(str(t.get("state")), 0) + 1
    badges = " ".join(f'<span class="badge {e(k)}">{e(k.lower())} {v}</span>' for k, v in sorted(states.items()))
    facts = [("sampler", fmt(s.get("sampler") or get(run.run, "config", "sampler"))),
             ("pruner", fmt(s.get("pruner") or get(run.run, "config", "pruner"))),
             ("started", e(_iso(s.get("started_at")) or "—")), ("elapsed", duration(s.get("elapsed_s"))),
             ("best trial", fmt(best)), ("trials", badges or fmt(0))]
    out = [kv(facts)]
    if not ts:
        out.append(note("No trials recorded yet.", "warn"))
        return section("search", "Search", "".join(out))
    out.append(_progress_plot(ts))
    out.append(_top_trials(ts, best))
    failed = [t for t in ts if t.get("state") == "FAIL"]
    if failed:
        rows = [[fmt(t["number"]), duration(t.get("duration_s")), _error(t.get("error"))] for t in failed]
        out.append(f"<h3>Failed trials ({len(failed)})</h3>" + table(["trial", "duration", "error"], rows, {0, 1}))
    return section("search", "Search", "".join(out))


def _error(err) -> str:
    if not err:
        return '<span class="muted">no error recorded</span>'
    s = str(err)
    first = s.strip().splitlines()[-1] if s.strip() else s  # a traceback's last line names the error
    if len(first) > 200:
        first = first[:199] + "…"
    if s.strip() == first:
        return f"<code>{e(first)}</code>"
    return f"<details><summary><code>{e(first)}</code></summary><pre>{e(s[:5000])}</pre></details>"


def _progress_plot(ts: list[dict]) -> str:
    complete = [t for t in ts if t.get("state") == "COMPLETE" and num(t.get("value")) is not None]
    pruned = [t for t in ts if t.get("state") == "PRUNED"]
    timed = all(num(t.get("finished_s")) is not None for t in complete + pruned)
    key = (lambda t: num(t.get("finished_s"))) if timed else (lambda t: t["number"])
    if not complete and not pruned:
        return note("No completed or pruned trial yet: nothing to plot.", "info")
    fig = safe_plot(plots.best_so_far, [(key(t), num(t["value"]), t["number"]) for t in complete],
                    [(key(t), num(t.get("value"))) for t in pruned],
                    "seconds since search start" if timed else "trial number")
    extra = "" if timed else note("Some trials have no finish time: plotted against trial number instead.", "info")
    return fig + extra


def _trial_rank(t: dict) -> tuple:
    """The order the search itself uses: accuracy, then lower validation
    loss, then the earlier trial (so rank 1 is the best trial)."""
    loss = num(t.get("val_loss"))
    return (-t["value"], loss if loss is not None else float("inf"), num(t.get("number")) or 0)


def _top_trials(ts: list[dict], best: int | None) -> str:
    done = sorted((t for t in ts if t.get("state") == "COMPLETE" and num(t.get("value")) is not None),
                  key=_trial_rank)[:TOP_TRIALS]
    if not done:
        return note("No trial has completed yet.", "warn")
    keys: list[str] = []
    for t in done:
        keys += [k for k in as_dict(t.get("params")) if k not in keys]
    wide = len(keys) <= 8  # one column per parameter while it still fits
    headers = ["rank", "trial", "val accuracy", "epochs", "duration"] + (keys if wide else ["parameters"])
    rows = []
    for i, t in enumerate(done):
        p = as_dict(t.get("params"))
        row = [str(i + 1), fmt(t["number"]), _num_cell(t["value"]), fmt(t.get("epochs")), duration(t.get("duration_s"))]
        if wide:
            row += [fmt(p.get(k)) for k in keys]
        else:
            row.append("<br>".join(f"{e(k)} = {fmt(v)}" for k, v in p.items()))
        rows.append(row)
    return (f"<h3>Top {len(done)} trials</h3>"
            + table(headers, rows, {0, 1, 2, 3, 4}, ["best" if t["number"] == best else "" for t in done]))


# ---- learning curves ----------------------------------------------------------

def curves(run: Run) -> str:
    best = best_trial(run)
    if best is None:
        return section("curves", "Learning curves",
                       note("No best trial is known yet (search.json and model/card.json name none).", "warn"))
    rows, problem = run.metrics(best)
    title = f"Learning curves — trial {best}"
    if not rows:
        return section("curves", title, note(e(problem or f"trials/{best}/metrics.jsonl has no rows") + ".", "warn"))
    last = rows[-1]
    vals = [(num(r.get("val_acc")), r.get("epoch")) for r in rows if num(r.get("val_acc")) is not None]
    facts = [("epochs", fmt(len(rows))),
             ("final train loss / accuracy", f"{_num_cell(last.get('train_loss'))} / {pct(last.get('train_acc'))}"),
             ("final val loss / accuracy", f"{_num_cell(last.get('val_loss'))} / {pct(last.get('val_acc'))}")]
    if vals:
        v, ep = max(vals, key=lambda x: x[0])
        facts.append(("best val accuracy", f"{pct(v)} at epoch {fmt(ep)}"))
    lrs = [num(r.get("lr")) for r in rows if num(r.get("lr")) is not None]
    if lrs:
        facts.append(("learning rate", f"{fmt(lrs[0])} → {fmt(lrs[-1])}"))
    total = sum(num(r.get("time_s")) or 0 for r in rows)
    if total:
        facts.append(("training time", duration(total)))
    out = [safe_plot(plots.learning_curves, rows), kv(facts)]
    if problem:
        out.append(note(e(problem) + ".", "warn"))
    return section("curves", title, "".join(out))


# ---- confusion matrix, test metrics ------------------------------------------------

def confusion(run: Run) -> str:
    if run.card is None:
        return section("confusion", "Confusion matrix", _missing_box("The confusion matrix", ["model/card.json"], run))
    cm = confusion_matrix(run)
    if cm is None:
        return section("confusion", "Confusion matrix",
                       note("model/card.json has no usable confusion matrix (a square list of counts).", "warn"))
    names = class_names(run, len(cm))
    out = []
    if len(names) != len(as_list(get(run.run, "data", "classes"))):
        out.append(note("Class names do not match the matrix size: classes are shown by index.", "warn"))
    if len(cm) <= MAX_CM_CLASSES:
        out.append(safe_plot(plots.confusion, cm, names))
        out.append('<p class="muted">Rows are the true class, columns the prediction; colour is the share '
                   "of the true class, the number is the count.</p>")
    else:
        out.append(f'<p class="muted">{len(cm)} classes are too many for a readable heat map; '
                   f"the {WORST_CLASSES} classes with the lowest test accuracy:</p>")
        out.append(worst_classes(names, cm))
    return section("confusion", "Confusion matrix", "".join(out))


def worst_classes(names: list[str], cm: np.ndarray) -> str:
    support = cm.sum(axis=1)
    acc = np.divide(np.diag(cm), support, out=np.zeros(len(cm)), where=support > 0)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows = []
    for i in np.argsort(acc, kind="stable")[:WORST_CLASSES]:
        j = int(off[i].argmax())
        confused = f"{e(names[j])} ({fmt(int(off[i, j]))})" if off[i, j] else '<span class="muted">—</span>'
        rows.append([e(names[i]), fmt(int(support[i])), bar(acc[i]) + pct(acc[i]), confused])
    return table(["class", "test examples", "accuracy", "most often predicted as"], rows, {1})


def metrics(run: Run) -> str:
    card = run.card
    if card is None:
        return section("metrics", "Test metrics", _missing_box("Test metrics", ["model/card.json"], run))
    acc, se = num(card.get("test_accuracy")), num(card.get("test_accuracy_se"))
    cm = confusion_matrix(run)
    facts = [("test accuracy", f"<b>{pct(acc, 2)}</b>" + (f" ± {pct(se, 2)} (standard error)" if se is not None else ""))]
    if acc is not None and se is not None:
        facts.append(("95 % interval", f"{pct(acc - 1.96 * se, 2)} – {pct(acc + 1.96 * se, 2)}"))
    if cm is not None:
        facts.append(("test examples", fmt(int(cm.sum()))))
    val = num(card.get("val_accuracy"))
    if val is not None:
        gap = f" (validation − test = {100 * (val - acc):+.2f} points)" if acc is not None else ""
        facts.append(("validation accuracy", pct(val, 2) + gap))
    parity = as_dict(card.get("onnx_parity"))
    if parity:
        agree = num(parity.get("argmax_agree"))
        cls = "ok-text" if agree == 1.0 else "warn-text"
        facts.append(("ONNX vs PyTorch", f"max |Δ| {fmt(parity.get('max_abs_diff'))}, "
                                          f'argmax agreement <span class="{cls}">{pct(agree, 2)}</span>'))
    out = [kv(facts)]
    per = [num(x) for x in as_list(card.get("per_class_accuracy"))]
    if per and None not in per:
        names = class_names(run, len(per))
        support = cm.sum(axis=1) if cm is not None and len(cm) == len(per) else None
        if len(per) <= MAX_CM_CLASSES:
            rows = [[e(n), fmt(int(support[i])) if support is not None else "—", bar(a) + pct(a)]
                    for i, (n, a) in enumerate(zip(names, per))]
            out.append("<h3>Per-class accuracy</h3>" + table(["class", "test examples", "accuracy"], rows, {1}))
        else:
            out.append(f"<h3>Per-class accuracy</h3><p>{len(per)} classes: lowest {pct(min(per))}, "
                       f"median {pct(float(np.median(per)))}, highest {pct(max(per))}.</p>")
            if cm is None:  # the confusion section could not list the worst classes
                order = np.argsort(per, kind="stable")[:WORST_CLASSES]
                rows = [[e(names[i]), bar(per[i]) + pct(per[i])] for i in order]
                out.append(table(["class", "accuracy"], rows))
    return section("metrics", "Test metrics", "".join(out))


# ---- model ------------------------------------------------------------------

def model(run: Run) -> str:
    card, spec = run.card, run.spec
    out = []
    if card is not None:
        out.append(kv([("family", fmt(card.get("family"))), ("parameters", fmt(card.get("params"))),
                       ("best trial", fmt(card.get("best_trial"))), ("seed", fmt(card.get("seed")))]))
    hp = as_dict(get(card, "hyperparameters"))
    src = "model/card.json"
    if not hp:  # fall back to the best trial's parameters from the search
        b = best_trial(run)
        hp = next((as_dict(t.get("params")) for t in trials(run) if t["number"] == b), {})
        src = f"search.json, trial {b}"
    if hp:
        rows = [[e(k), fmt(v)] for k, v in hp.items()]
        out.append(f'<h3>Hyper-parameters <span class="muted">({e(src)})</span></h3>' + table(["name", "value"], rows))
    if spec is not None:
        out.append(f"<h3>Spec</h3><pre>{e(json.dumps(spec, indent=2, ensure_ascii=False))}</pre>")
    else:
        out.append(_missing_box("The model spec", ["model/spec.json"], run))
    if card is None and not hp:
        out.insert(0, _missing_box("The final model", ["model/card.json"], run))
    return section("model", "Model", "".join(out))


# ---- footer -----------------------------------------------------------------

def compression(run: Run) -> str:
    """Every candidate measured the same way, and which one ships and why."""
    res = run.compress
    if res is None:
        return ""  # compression not run (--no-compress, or not yet)
    cands = [c for c in as_list(res.get("candidates")) if isinstance(c, dict)]
    chosen = res.get("chosen")
    rows, classes = [], []
    for c in cands:
        lat = as_dict(c.get("latency_ms"))
        thr = as_dict(c.get("throughput_per_s"))
        size = num(c.get("file_bytes"))
        mark = " ✓" if c.get("name") == chosen else (" (baseline)" if c.get("baseline") else "")
        rows.append([f"<code>{e(c.get('name', ''))}</code>{e(mark)}", e(c.get("method", "")), _num_cell(c.get("val_acc")),
                     _num_cell(c.get("test_acc")), fmt(f"{size / 1024:.0f} KiB") if size is not None else "—",
                     fmt(c.get("params")), _num_cell(num(get(lat, "1", "p50")), 3), _num_cell(num(get(lat, "64", "p50")), 2),
                     fmt(f"{num(thr.get('64')):.0f}") if num(thr.get("64")) is not None else "—",
                     "yes" if c.get("pareto") else ""])
        classes.append("best" if c.get("name") == chosen else "")
    body = kv([("shipped", f"<code>{e(chosen)}</code>"), ("why", e(res.get("reason", ""))),
               ("target", e(res.get("target", ""))), ("time", duration(num(res.get("elapsed_s"))))])
    body += table(["candidate", "method", "val acc", "test acc", "file", "params", "p50 batch 1 (ms)",
                   "p50 batch 64 (ms)", "items/s (batch 64)", "Pareto"], rows, numeric={2, 3, 4, 5, 6, 7, 8},
                  row_classes=classes)
    return section("compress", "Compression", body)


def footer(run: Run) -> str:
    r, card = as_dict(run.run), as_dict(run.card)
    rv, cv = as_dict(r.get("versions")), as_dict(card.get("versions"))
    if r.get("autopilot_version"):
        rv = {"autopilot": r["autopilot_version"], **rv}
    keys = list(rv) + [k for k in cv if k not in rv]
    out = []
    if keys:
        headers = ["component", "run"] + (["model card"] if cv else [])
        rows = [[e(k), fmt(rv.get(k))] + ([fmt(cv.get(k))] if cv else []) for k in keys]
        out.append(table(headers, rows))
    fp, cfp = get(r, "data", "fingerprint"), card.get("data_fingerprint")
    fps = [f"data fingerprint <code>{e(fp)}</code>"] if fp else []
    if cfp and fp and cfp != fp:
        fps.append(f'<span class="bad-text">model card was trained on a different fingerprint: <code>{e(cfp)}</code></span>')
    elif cfp and not fp:
        fps.append(f"model data fingerprint <code>{e(cfp)}</code>")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fps.append(f"report generated {now}")
    out.append("<p>" + " · ".join(fps) + "</p>")
    return "".join(out)
