"""Drive the study to its budget: enqueue the first trial, recover an
interrupted study, run trials here or in workers, show progress."""
from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from ..config import RunConfig
from ..rundir import RunDir, write_json
from ..schemas.run import read_run, update_run
from . import space
from .budget import MIN_SLOT_S, SearchPlan, save_plan
from .progress import Progress
from .select import DEFAULT_NETWORK
from .study import Objective, open_study, recover_interrupted, requeue_interrupted, summarize
from .workers import optimize, run_workers
from .storage import is_database_url, publish_deadline, settle
from .table_families import estimators_only


def single_worker_threads() -> int:
    """Torch threads for trials run one at a time in this process: every core,
    unless the machine is already busy. Then threads wait on each other: a
    digits epoch took 9.8 s on two threads against 1.0 s on one, at a load
    average of 4 on 2 cores."""
    import os

    cores = os.cpu_count() or 1
    return 1 if os.getloadavg()[0] >= cores else cores


def trees_floor(rd: RunDir, config: RunConfig, study: optuna.Study, data: dict, info: dict) -> None:
    """The boosted trees' and linear models' defaults (the first enqueued
    trials of a table) run first, here, whatever the deadline: they take seconds and are the
    floor a table run ships, even when loading, the feature study and the
    doctor have used the search's share of a short budget on a busy machine."""
    import torch

    from .table_families import first_trials

    torch.set_num_threads(single_worker_threads())
    n = len(first_trials(info))
    floor = Objective(rd, data, info, config, deadline=float("inf"))
    study.optimize(floor, n_trials=min(n, config.trials) if config.trials else n, catch=(Exception,), gc_after_trial=False)


def queues_augment_variants(deadline_wall: float | None, trials: int | None, workers: int,
                            now: float | None = None) -> bool:
    """Whether the first network is queued again with its augmentation
    variants (search.space.first_trials): yes, unless a time budget is so
    short that rung 0 is at its floor. In a 90 s run on 1200 photos they took
    the rung promotions' slots (test accuracy 0.40 against 0.67). With
    --trials N they are queued within the N."""
    if deadline_wall is None or trials:
        return True
    now = time.time() if now is None else now
    return SearchPlan.make(now, deadline_wall, workers).first_slot_s > MIN_SLOT_S


def search(rd: RunDir, config: RunConfig, data: dict, info: dict, *, deadline_wall: float | None, resume: bool,
           quiet: bool, console) -> optuna.Study:
    n_before = 0
    study = open_study(rd, config, info)
    existing = study.get_trials(deepcopy=False)
    if existing:
        n_before = len(existing)
        recover_interrupted(study)
        retried = requeue_interrupted(study)
        done = sum(t.state == TrialState.COMPLETE for t in existing)
        console.print(f"resuming study: {done} completed trial(s) kept"
                      + (f", {retried} interrupted trial(s) queued again" if retried else ""), highlight=False)
    elif config.sampler != "grid":
        if info["kind"] == "table":  # boosted trees' and linear models' defaults: the bar on any table, in seconds
            from .table_families import first_trials as table_first_trials

            for params in table_first_trials(info)[:config.trials or None]:
                study.enqueue_trial(params)
        variants = queues_augment_variants(deadline_wall, config.trials, config.workers)
        first = space.first_trials(config.space, info, config.max_params, augment_variants=variants)  # known-good points first
        first = [p for p in first if p.get("family") in space.searched_families(info)]  # small tables: no networks
        queued = len(study.get_trials(deepcopy=False))
        for i, params in enumerate(first[:max(0, config.trials - queued)] if config.trials else first):  # --trials N: no more than N
            # The lead is the default network; its rungs and finalist inherit the mark (budget.next_jobs).
            study.enqueue_trial(params, user_attrs={DEFAULT_NETWORK: True} if i == 0 else None)
    # A new sampler seed per invocation: a resumed random search must not
    # replay the draws it already made.
    sampler_seed = config.seed + 7919 * n_before
    study = open_study(rd, config, info, sampler_seed=sampler_seed)

    started_at = read_run(rd.path).search_started_at or time.time()
    update_run(rd.path, search_started_at=started_at)
    if deadline_wall is None:
        deadline_wall = float("inf")
    n_trials = config.trials
    # A time budget is planned (budget.py): rung slots, then the finalists.
    # Without one, or with --trials N (N trials asked for, not rungs and
    # finalists), each trial trains its own epochs on all the data.
    # Estimators only (a small table): every trial is already fitted on all the data; no rungs, no finalists.
    timed = deadline_wall != float("inf") and not n_trials and not estimators_only(info)
    plan = SearchPlan.make(time.time(), deadline_wall, config.workers) if timed else None
    save_plan(study, plan)

    def load_trials():
        return study.get_trials(deepcopy=False)

    progress = Progress(load_trials, None if deadline_wall == float("inf") else deadline_wall, quiet=quiet, console=console)
    try:
        with progress:
            if is_database_url(config.storage):
                publish_deadline(study, deadline_wall)  # `autopilot worker`s elsewhere stop with the driver
            if not existing and info["kind"] == "table":
                trees_floor(rd, config, study, data, info)
            if config.executor == "ray":
                from .ray_executor import run_ray  # Ray is an optional extra

                run_ray(rd, config, study, data, info, deadline_wall=deadline_wall, n_trials=n_trials)
            else:
                import torch

                def trials_here(threads: int) -> None:
                    torch.set_num_threads(threads)
                    deadline_mono = time.monotonic() + min(deadline_wall - time.time(), 10**9)
                    objective = Objective(rd, data, info, config, deadline=deadline_mono)
                    optimize(study, objective, deadline_wall, n_trials)

                if config.workers > 1:  # this process trains too, while the other workers start
                    run_workers(rd, config.workers, deadline_wall, n_trials, sampler_seed, here=trials_here)
                else:
                    trials_here(single_worker_threads())
            if is_database_url(config.storage):
                settle(study)  # a dead worker's trial is failed (and queued again), never left RUNNING
    finally:
        write_json(rd.search_json, summarize(study, started_at, config, run=rd, y_val=data["val"][1]))
    return study
