"""`autopilot worker`: join a running study from another machine, without
Ray. The same Objective and budget rules as a local worker process: trials
until the run's --trials are finished or the driver's deadline (which the
driver publishes in the study) has passed.

The study lives in a database (PostgreSQL for many machines) with
heartbeats: if this worker dies, its running trial is failed after the
grace period and queued once more, instead of staying RUNNING forever.
The worker reads the run directory (settings and splits) and writes its
trials' files into it, so the driver can ship a model a worker trained:
give workers the runs folder on a shared filesystem. Ray
(`--executor ray`) needs nothing shared.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from ..config import RunError
from ..rundir import RunDir
from .storage import DEADLINE_ATTR, is_database_url, published_deadline


WAIT_FOR_DRIVER_S = 600.0  # a worker started before the driver waits this long for its search to begin


def join_study(run_path: str | Path, storage: str | None = None, console=None) -> None:
    """Run trials of the run at `run_path` until its budget is spent."""
    import time

    import torch

    from ..rundata import load_run_data
    from .study import Objective, open_study
    from .workers import FINISHED, _monotonic_deadline, optimize

    run = RunDir(run_path)
    if not run.run_json.exists():
        raise RunError(f"no run directory {str(run.path)!r}: a worker reads the run's settings and splits from it "
                       f"(share the runs folder, or use --executor ray, which needs nothing shared)")
    config, _ds, data, info = load_run_data(run)
    url = storage or config.storage
    if not is_database_url(url):
        raise RunError(f"run {run.name!r} keeps its study in a journal file; a worker needs a database storage: "
                       f"start the run with --storage postgresql://... and pass the same URL here")
    config = config.model_copy(update={"storage": url})
    torch.set_num_threads(max(1, int(config.cpus_per_trial)))
    # A seed of its own: workers must not draw the same configurations.
    seed = config.seed + 1000 * (1 + (hash((socket.gethostname(), os.getpid())) % 100_000))
    study = open_study(run, config, info, sampler_seed=seed)
    waited = time.monotonic()
    while DEADLINE_ATTR not in study.user_attrs:  # the driver has not started its search yet
        if time.monotonic() - waited > WAIT_FOR_DRIVER_S:
            raise RunError(f"the driver of run {run.name!r} did not start its search within {WAIT_FOR_DRIVER_S:.0f} s")
        time.sleep(2)
    deadline_wall = published_deadline(study)
    objective = Objective(run, data, info, config, deadline=_monotonic_deadline(deadline_wall),
                          worker=f"{socket.gethostname()}:{os.getpid()}")
    if console is not None:
        console.print(f"worker joined run {run.name} ({len(study.get_trials(deepcopy=False, states=FINISHED))} "
                      f"trials finished so far)", highlight=False)
    optimize(study, objective, deadline_wall, config.trials)
