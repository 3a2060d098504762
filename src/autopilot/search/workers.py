"""Running trials: in this process, or in N worker processes on one machine
that share the study storage. Each worker rebuilds the data from the run
directory (nothing is pickled to disk) and gets cores/N torch threads."""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Callable

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from ..rundir import RunDir
from .budget import after_trial
from .study import Objective, open_study
from .table_families import estimators_only, stop_when_stalled

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Counting running trials too stops a worker from starting one more than asked.
COUNTED = FINISHED + (TrialState.RUNNING,)


def optimize(study: optuna.Study, objective: Objective, deadline_wall: float, n_trials: int | None) -> None:
    """Trials of `objective` until `n_trials` are finished or the deadline (wall clock) has passed."""
    callbacks = [MaxTrialsCallback(n_trials, states=COUNTED)] if n_trials else []
    callbacks.append(after_trial)  # promotions and finalists of a budget plan
    if estimators_only(objective.info):
        callbacks.append(stop_when_stalled)
    if n_trials and len(study.get_trials(deepcopy=False, states=FINISHED)) >= n_trials:
        return
    timeout = max(0.0, deadline_wall - time.time())
    if timeout <= 0:
        return
    study.optimize(objective, timeout=timeout, callbacks=callbacks, catch=(Exception,), gc_after_trial=False)


def worker_main(run_path: str, deadline_wall: float, n_trials: int | None, threads: int, sampler_seed: int) -> None:
    import torch

    from ..rundata import load_run_data  # late import: workers start from a clean interpreter

    torch.set_num_threads(threads)
    _exit_with_parent()
    run = RunDir(run_path)
    config, _ds, data, info = load_run_data(run)
    study = open_study(run, config, info, sampler_seed=sampler_seed)
    objective = Objective(run, data, info, config, deadline=_monotonic_deadline(deadline_wall))
    try:
        optimize(study, objective, deadline_wall, n_trials)
    except KeyboardInterrupt:
        pass


def _exit_with_parent() -> None:
    """A worker whose parent was killed (kill -9) stops too instead of
    training on unseen; its running trial is recovered on --resume."""
    import threading

    parent = os.getppid()

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _monotonic_deadline(deadline_wall: float) -> float:
    return time.monotonic() + (deadline_wall - time.time())


def run_workers(run: RunDir, n_workers: int, deadline_wall: float, n_trials: int | None, base_seed: int,
                here: Callable[[int], None] | None = None) -> list[int]:
    """Run trials in `n_workers` processes and wait for them; returns exit codes.

    With `here`, this process is one of the n: `here(threads)` runs trials
    in it while n - 1 spawned workers start. A spawned worker needs seconds
    to start (import torch, rebuild the data), more on a busy machine, which
    a short budget cannot spare; this process has the data already."""
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    spawned = n_workers - 1 if here is not None else n_workers
    procs = [
        ctx.Process(target=worker_main, args=(str(run.path), deadline_wall, n_trials, threads, base_seed + 1000 * (i + 1)), daemon=False)
        for i in range(spawned)
    ]
    for p in procs:
        p.start()
    try:
        if here is not None:
            here(threads)
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        raise
    return [p.exitcode for p in procs]
