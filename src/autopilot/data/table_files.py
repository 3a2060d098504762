"""A table run's data/table.json and data/preprocess.json, and the
console view of what was inferred: each column's type, what is dropped and
why, the task, and the preprocessing the feature study chose."""
from __future__ import annotations

from pathlib import Path

from ..schemas import write
from ..schemas.table import PreprocessFile, TableFile
from .dataset import Dataset


def write_table_files(ds: Dataset, run_path: str | Path) -> None:
    t = ds.table
    write(TableFile(label=t.label, task=ds.task, task_reason=t.task_reason, rows=len(ds), columns=t.schema_dicts()),
          run_path)
    write(PreprocessFile.model_validate(ds.preprocess), run_path)


def table_lines(ds: Dataset) -> list[str]:
    """Plain lines: readable in a terminal and in a log file alike."""
    t, pre = ds.table, ds.preprocess
    lines = [f"task: {ds.task} ({t.task_reason}; --task to choose), label column {t.label!r}"]
    dropped = {d["name"]: d["reason"] for d in pre["dropped"]}
    for c in t.schema:
        missing = f", {c.missing} missing" if c.missing else ""
        state = f"dropped: {dropped[c.name]}" if c.name in dropped else "used"
        lines.append(f"  {c.name:<20} {c.type:<9} {c.distinct} distinct{missing}; {state}")
    ch = pre["choices"]
    lines.append(f"features: {len(pre['features'])} inputs; categories {ch['categories']}, scaling {ch['scaling']}"
                 + (f", {len(pre['study']['nil_importance'])} column(s) of nil importance dropped" if pre.get("study") else ""))
    return lines


def show_table(ds: Dataset, console) -> None:
    if console is None:
        return
    for line in table_lines(ds):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
