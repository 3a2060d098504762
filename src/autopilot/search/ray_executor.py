"""Trials as Ray tasks on a cluster; the study stays with the driver.

Ray Tune's OptunaSearch runs one trial at a time (an open bug), so this uses
Ray Core tasks and keeps Optuna's own storage as the source of truth:

- the driver asks the study for a trial and suggests its configuration
  there, with the one sampler of the run (TPE sees every finished trial);
- the task trains it on a worker node with the run's Objective, reporting
  to the same study through Optuna's gRPC storage proxy, which the driver
  serves from its own storage (journal file or database), so a pruner
  compares trials exactly as it does locally and worker nodes need no
  database driver or access;
- the data reach the workers once through Ray's object store (train and
  validation splits only; the test split never leaves the driver), so
  worker machines need neither the data files nor a shared filesystem;
- the task returns the trial's files (metrics, weights, spec, doctor
  findings, ...) and the driver writes them to trials/<n>/ before it tells
  the study the result, as a local trial would have left them;
- a task whose node or worker process died is failed in the study and the
  same configuration is queued once more with Optuna's
  RetryHeartbeatStaleTrialCallback. Completed trials are never touched.

Ray schedules the tasks onto nodes; the driver only keeps as many in flight
as the cluster has room for (cluster CPUs / cpus_per_trial), the way
study.optimize(n_jobs=...) would on one machine. Under a time budget the
driver does what each local worker does after a trial (budget.after_trial):
it queues the plan's promotions and, when their phase is due, the
finalists, and starts no exploration trial once the finalists are out.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ..config import RunConfig, RunError
from ..rundir import RunDir
from . import budget, space
from .storage import MAX_RETRY

RAY_HINT = "the Ray executor needs Ray: pip install 'autopilot[ray]'"
LOST = "lost: the Ray node or worker running it died"  # user attr "error" of such a trial
LATE_S = 120.0  # a task still out this long after the deadline is given up (its node hangs)
WAIT_S = 1.0  # how often the driver looks at finished tasks and the clock


def lost(t) -> bool:
    return t.state == TrialState.FAIL and str(t.user_attrs.get("error", "")).startswith("lost:")


def counted(trials) -> int:
    """Finished trials that use up the --trials budget: a trial lost with its
    node does not (its retry runs instead)."""
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and not lost(t) for t in trials)


def run_ray(rd: RunDir, config: RunConfig, study: optuna.Study, data: dict, info: dict, *, deadline_wall: float,
            n_trials: int | None) -> None:
    try:
        import ray
    except ImportError:
        raise RunError(RAY_HINT) from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=config.ray_address, logging_level="ERROR", log_to_driver=False)
        except ConnectionError as e:
            raise RunError(f"cannot reach the Ray cluster at {config.ray_address or 'RAY_ADDRESS'}: {e}") from None
    proxy = _StorageProxy(rd, config, host=ray.util.get_node_ip_address())
    try:
        _drive(ray, rd, config, study, data, info, proxy, deadline_wall, n_trials)
    finally:
        proxy.stop()
        if started_here:
            ray.shutdown()


class _StorageProxy:
    """Optuna's gRPC storage proxy over this run's storage, on the driver's
    node address (the one Ray uses, so the workers can reach it)."""

    def __init__(self, rd: RunDir, config: RunConfig, host: str):
        from optuna.storages._grpc.server import make_server  # run_grpc_proxy_server, but stoppable

        from .study import make_storage

        self.host = host
        self.port = _free_port(host)
        self.server = make_server(make_storage(rd, config.storage), host, self.port)
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=2).wait()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _capacity(ray, config: RunConfig) -> int:
    """Trials the cluster can run at once; follows nodes joining and leaving."""
    res = ray.cluster_resources()
    n = int(res.get("CPU", 0) // config.cpus_per_trial)
    if config.gpus_per_trial:
        n = min(n, int(res.get("GPU", 0) // config.gpus_per_trial))
    return max(1, n)


def _drive(ray, rd, config, study, data, info, proxy, deadline_wall, n_trials) -> None:
    task = ray.remote(run_trial_task).options(num_cpus=config.cpus_per_trial, num_gpus=config.gpus_per_trial,
                                              max_retries=0)  # a retry is a new Optuna trial, recorded as such
    data_ref = ray.put({"train": data["train"], "val": data["val"]})
    settings = {"host": proxy.host, "port": proxy.port, "study": study.study_name, "config": config.model_dump(),
                "info": info, "deadline_wall": deadline_wall}
    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    capacity, checked_capacity = _capacity(ray, config), time.time()
    plan = budget.load_plan(study)  # a time budget's rungs and finalists (None: each trial as sampled)
    if plan is not None:
        _warm_up(ray, config, capacity, deadline_wall)
        # The plan's windows are laid over the time left once the workers are
        # warm, with one finalist per trial slot: the cluster's slots, not
        # this machine's worker count.
        plan = budget.SearchPlan.make(time.time(), plan.deadline_wall, capacity)
        budget.save_plan(study, plan)

    def room_for_more() -> bool:
        # Once the plan's finalists are all handed out, no exploration trial
        # starts: it could not ship ahead of them (workers.optimize's after_trial).
        trials = study.get_trials(deepcopy=False)
        if plan is not None and budget.finals_taken(trials, plan):
            return False
        return n_trials is None or counted(trials) + len(in_flight) < n_trials

    in_flight: dict = {}  # ObjectRef -> optuna.Trial
    while True:
        now = time.time()
        if now - checked_capacity > 10:
            capacity, checked_capacity = _capacity(ray, config), now
        room = now < deadline_wall and room_for_more()
        while room and len(in_flight) < capacity:
            trial = study.ask()  # an enqueued promotion or finalist first, else the sampler's draw
            if not _suggest(trial, config, info, study):
                continue
            ref = task.remote(settings, trial.number, trial._trial_id, data_ref)
            in_flight[ref] = trial
            room = room_for_more()
        if not in_flight:
            return
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=WAIT_S)
        for ref in done:
            _finish(ray, rd, study, in_flight.pop(ref), ref, retry)
            if plan is not None:
                budget.enqueue_next(study)  # promotions, then the finalists when their phase is due
        if time.time() > deadline_wall + LATE_S:
            for ref, trial in in_flight.items():
                ray.cancel(ref, force=True)
                trial.set_user_attr("error", f"no answer from its Ray task {LATE_S:.0f} s after the deadline")
                study.tell(trial, state=TrialState.FAIL)
            return


def _suggest(trial: optuna.Trial, config: RunConfig, info: dict, study: optuna.Study) -> bool:
    """The whole configuration is drawn here, by the run's one sampler; the
    task only reads it back."""
    try:
        space.sampler_of(config.space, config.sampler == "grid")(trial, info)
        return True
    except Exception as e:
        trial.set_user_attr("error", f"bad configuration: {type(e).__name__}: {e}")
        study.tell(trial, state=TrialState.FAIL)
        return False


WARM_UP_SHARE = 0.25  # of the time to the deadline, at most, spent warming the workers


def _warm_up(ray, config: RunConfig, capacity: int, deadline_wall: float) -> None:
    """A fresh Ray worker process spends seconds importing torch and the
    trainer before its first trial, time that trial's slot did not plan
    for: under a short budget the first rung overran into the finalists'
    phase, and the finalists were refused for lack of time. One task per
    trial slot imports them first; Ray reuses those worker processes for
    the trials."""
    warm = ray.remote(_import_trainer).options(num_cpus=config.cpus_per_trial, num_gpus=config.gpus_per_trial,
                                               max_retries=0)
    refs = [warm.remote() for _ in range(capacity)]
    # A worker still importing after that goes on; its first trial waits for it.
    ray.wait(refs, num_returns=len(refs), timeout=max(0.0, WARM_UP_SHARE * (deadline_wall - time.time())))


def _import_trainer() -> None:
    import torch  # noqa: F401

    from . import study  # noqa: F401  (the Objective, the trainer, the models)


def _finish(ray, rd: RunDir, study: optuna.Study, trial: optuna.Trial, ref, retry) -> None:
    try:
        result = ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # our task code itself failed: recorded, not retried
        trial.set_user_attr("error", f"Ray task failed: {str(e).strip().splitlines()[-1][:300]}")
        study.tell(trial, state=TrialState.FAIL)
        return
    except (ray.exceptions.RayError, OSError) as e:  # node died, worker crashed, object lost
        trial.set_user_attr("error", f"{LOST} ({type(e).__name__})")
        study.tell(trial, state=TrialState.FAIL)
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        retry(study, frozen)
        return
    tdir = rd.trial_dir(trial.number)
    for rel, content in result["files"].items():
        path = tdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if result["state"] == "complete":
        study.tell(trial, result["value"])
    else:
        study.tell(trial, state=TrialState.PRUNED if result["state"] == "pruned" else TrialState.FAIL)


def run_trial_task(settings: dict, number: int, trial_id: int, data: dict) -> dict:
    """On a worker node: train one trial with the run's Objective in a
    scratch run directory, report through the driver's storage proxy, and
    return the state, the value and the trial's files."""
    import ray
    import torch
    from optuna.storages import GrpcStorageProxy

    from .study import Objective, make_pruner

    config = RunConfig.model_validate(settings["config"])
    torch.set_num_threads(max(1, int(config.cpus_per_trial)))
    storage = GrpcStorageProxy(host=settings["host"], port=settings["port"])
    # The sampler is never asked here: the driver drew every parameter.
    study = optuna.load_study(study_name=settings["study"], storage=storage,
                              sampler=optuna.samplers.RandomSampler(), pruner=make_pruner(config.pruner))
    trial = optuna.Trial(study, trial_id)
    if trial.user_attrs.get("error"):  # a retry carries its lost original's attributes
        trial.set_user_attr("error", None)
    trial.set_user_attr("ray_node", ray.get_runtime_context().get_node_id())
    scratch = Path(tempfile.mkdtemp(prefix="autopilot-trial-"))
    try:
        run = RunDir(scratch)
        deadline = time.monotonic() + min(settings["deadline_wall"] - time.time(), 10**9)
        objective = Objective(run, data, settings["info"], config, deadline=deadline)
        try:
            state, value = "complete", float(objective(trial))
        except optuna.TrialPruned:
            state, value = "pruned", None
        except Exception:  # Objective recorded the error on the trial
            state, value = "fail", None
        tdir = run.trial_dir(number)
        files = {str(p.relative_to(tdir)): p.read_bytes() for p in sorted(tdir.rglob("*")) if p.is_file()}
        return {"state": state, "value": value, "files": files, "node": os.uname().nodename}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        storage.close()
