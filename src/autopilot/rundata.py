"""Rebuild exactly the data a run was created with, from its run directory.

Used by resume, worker processes, compression, the drift reference and
retraining; refuses when the data has changed since the run was made.
"""
from __future__ import annotations

from .config import RunError
from .data import load
from .data.split import load_splits
from .data.stats import arrays, data_info
from .rundir import RunDir
from .schemas.run import RunInfo, read_run


def search_info(ds, splits: dict, run_info: RunInfo) -> dict:
    """Facts about the data the search and the final stage need, with what
    the doctor measured at creation (augmentations that change labels)."""
    return {**data_info(ds, splits), "augment_exclude": list(run_info.augment_exclude)}


def load_run_data(run: RunDir):
    """(RunConfig, dataset, {"train"|"val"|"test": (X, y)}, data_info)."""
    info = read_run(run.path)
    config = info.config
    ds = load(config.data, label=config.label, skip_bad=config.skip_bad, layout=config.layout)
    if ds.fingerprint() != info.data.fingerprint:
        raise RunError(
            f"data {config.data!r} changed since run {run.name!r} was created "
            f"(fingerprint {ds.fingerprint()} != {info.data.fingerprint})"
        )
    splits = load_splits(run.splits)
    return config, ds, arrays(ds, splits), search_info(ds, splits, info)
