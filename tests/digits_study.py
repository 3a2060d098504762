"""A real study on digits in a fresh run directory, for tests that drive the
search objective directly (no run, no doctor): the data, the facts about it,
the run's config and its opened study."""
from __future__ import annotations

import time

import torch

from autopilot.config import RunConfig
from autopilot.data import load, split
from autopilot.data.stats import arrays, data_info
from autopilot.rundir import RunDir
from autopilot.search.study import Objective, open_study
from autopilot.search.workers import optimize


def digits_study(tmp_path, **config):
    # One torch thread: on a busy machine two threads wait on each other.
    torch.set_num_threads(1)
    ds = load("digits")
    splits = split(ds.y, seed=0)
    data, info = arrays(ds, splits), data_info(ds, splits)
    cfg = RunConfig(**{"data": "digits", "pruner": "none", "device": "cpu", **config})
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    return rd, data, info, cfg, open_study(rd, cfg, info)


def run_trials(rd, data, info, cfg, study, n: int, seconds: float = 300) -> None:
    """n trials in this process, through the search's own objective and loop."""
    optimize(study, Objective(rd, data, info, cfg, deadline=time.monotonic() + seconds), time.time() + seconds, n)
