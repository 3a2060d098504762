"""A real finished run, made fast: the run directory is created by the
runner, one trial of a small configuration is trained by the search's own
objective, and the model directory is written by the real final stage
(autopilot.final.finalize), so model/card.json is exactly what a run writes.

Only the trial's parameters differ from `autopilot run` (whose first trial
on digits is a CNN trained for 30 epochs: minutes on a loaded 2-core box).
"""
from __future__ import annotations

import io
import time
from pathlib import Path

from rich.console import Console

from autopilot.config import RunConfig
from autopilot.data.stats import arrays, data_info
from autopilot.final import finalize
from autopilot.rundir import RunDir, write_json
from autopilot.runner import create_run
from autopilot.schemas.run import update_run
from autopilot.search.study import Objective, open_study, summarize
from autopilot.search.workers import optimize

# A small MLP that reaches ~95 % on digits in a couple of seconds.
SMALL_MLP = {"family": "mlp", "mlp_width": 64, "mlp_depth": 2, "residual": False, "dropout": 0.0,
             "optimizer": "adamw", "lr_adamw": 3e-3, "weight_decay": 5e-4, "schedule": "onecycle",
             "batch_size": 64, "label_smoothing": 0.0, "epochs": 10, "aug_strength": 0.0}


def quiet_console() -> Console:
    return Console(file=io.StringIO(), width=160)


def finished_run(runs_dir: Path, name: str = "d", *, data: str = "digits", params: dict | None = None,
                 force: bool = False, console: Console | None = None, **config) -> tuple[RunDir, object, dict, dict]:
    """(run, dataset, arrays, info) of a run whose final stage has run."""
    console = console or quiet_console()
    started = time.time()
    # cv 0: the trial's own weights ship, as the tests built on this expect
    # (tests/test_finalists.py covers the cross-validated finalists).
    cfg = RunConfig(**{"data": data, "trials": 1, "pruner": "none", "workers": 1, "device": "cpu", "cv": 0, **config})
    rd, ds, splits = create_run(cfg, runs_dir=Path(runs_dir), name=name, overwrite=True, doctor=False)
    data_arrays, info = arrays(ds, splits), data_info(ds, splits)
    study = open_study(rd, cfg, info)
    study.enqueue_trial(params or SMALL_MLP)
    optimize(study, Objective(rd, data_arrays, info, cfg, deadline=time.monotonic() + 600), time.time() + 600, 1)
    write_json(rd.search_json, summarize(study, started, cfg, run=rd))
    finalize(rd, study, ds, data_arrays, info, cfg, started=started, console=console, force=force)
    update_run(rd.path, status="done", elapsed_s=time.time() - started)
    return rd, ds, data_arrays, info
