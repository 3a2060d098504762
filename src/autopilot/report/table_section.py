"""The report's "Table columns" section for a CSV run: each column's
inferred type, whether the model uses it and how it is encoded, what was
dropped and why (ID-like, free text, constant, nil permutation importance),
and the preprocessing choices the feature study scored on validation."""
from __future__ import annotations

from .load import Run, as_dict, as_list, get, num


def _encoding(step: dict) -> str:
    t = step.get("type")
    if t == "category":
        enc = step.get("encoding")
        n = len(as_list(step.get("values")))
        return f"{'one-hot' if enc == 'onehot' else 'target encoding'} of {n} value(s)"
    scales = [get(s, "kind") for s in as_list(step.get("scale"))]
    parts = f" ({', '.join(as_list(step.get('parts')))})" if t == "datetime" else ""
    how = f"{scales[0]} scaling" if scales else "0/1"
    return how + parts + (", missing indicator" if step.get("indicator") else "")


def table_columns(run: Run) -> dict | None:
    table, pre = run.table, run.preprocess
    if table is None:
        return None
    steps = {s.get("name"): s for s in as_list(get(pre, "columns")) if isinstance(s, dict)}
    dropped = {d.get("name"): d.get("reason") for d in as_list(get(pre, "dropped")) if isinstance(d, dict)}
    rows = []
    for c in as_list(table.get("columns")):
        c = as_dict(c)
        name = c.get("name")
        rows.append({"name": name, "type": c.get("type"), "missing": c.get("missing"), "distinct": c.get("distinct"),
                     "used": name in steps, "how": _encoding(steps[name]) if name in steps else dropped.get(name) or c.get("reason")})
    candidates = [{"choices": ", ".join(f"{k} {v}" for k, v in as_dict(cand.get("choices")).items() if k != "select"),
                   "score": num(cand.get("val_score"))} for cand in as_list(get(pre, "study", "candidates"))]
    chosen = as_dict(get(pre, "choices"))
    return {"task": table.get("task"), "task_reason": table.get("task_reason"), "label": table.get("label"),
            "rows": rows, "features": len(as_list(get(pre, "features"))), "candidates": candidates,
            "metric": get(pre, "study", "metric"), "proxy": get(pre, "study", "proxy"),
            "chosen": ", ".join(f"{k} {v}" for k, v in chosen.items())}
