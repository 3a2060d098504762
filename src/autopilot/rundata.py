"""Rebuild exactly the data a run was created with, from its run directory.

Used by resume, worker processes, compression, the drift reference and
retraining; refuses when the data has changed since the run was made.
"""
from __future__ import annotations

from .config import RunError
from .data import load
from .data.split import load_splits
from .data.tables import prepare
from .data.stats import arrays, data_info
from .rundir import RunDir
from .schemas import read
from .schemas.run import RunInfo, read_run
from .schemas.table import PreprocessFile


def search_info(ds, splits: dict, run_info: RunInfo) -> dict:
    """Facts about the data the search and the final stage need, with what
    the doctor measured at creation (augmentations that change labels), the
    training rows and the run's time budget (what the first network's width
    depends on: search.space.wide_first_network)."""
    return {**data_info(ds, splits), "augment_exclude": list(run_info.augment_exclude),
            "train_rows": int(len(splits["train"])), "budget_s": run_info.config.budget_s}


def load_run_data(run: RunDir):
    """(RunConfig, dataset, {"train"|"val"|"test": (X, y)}, data_info)."""
    info = read_run(run.path)
    config = info.config
    ds = load(config.data, label=config.label, skip_bad=config.skip_bad, layout=config.layout, task=config.task)
    if ds.fingerprint() != info.data.fingerprint:
        raise RunError(
            f"data {config.data!r} changed since run {run.name!r} was created "
            f"(fingerprint {ds.fingerprint()} != {info.data.fingerprint})"
        )
    splits = load_splits(run.splits)
    if ds.table is not None:  # a CSV: the run's own fitted preprocessing, never a new one
        ds = prepare(ds, splits, read(PreprocessFile, run.path).model_dump(mode="json", exclude_none=True))
    return config, ds, arrays(ds, splits), search_info(ds, splits, info)
