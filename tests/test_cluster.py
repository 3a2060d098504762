"""Beyond one machine, with the real components: a local Ray cluster (a head
and two worker nodes, `ray start --num-cpus 1`) and a throwaway PostgreSQL
server, both started and stopped by the fixtures below.

The cluster tests are marked `cluster` and `slow`: `make test-quick` skips
them, `make test` and CI run them. The install checks at the end are quick.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from .cluster import BIN, NetNamespace, Postgres, RayCluster, netns_available, pg_bin
from .conftest import ROOT, run_cli

cluster = [pytest.mark.cluster, pytest.mark.slow]


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def load_study(storage, name: str = "autopilot"):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


def journal(run: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = str(run / "study" / "journal.log")
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def snapshot_complete(study) -> dict:
    from optuna.trial import TrialState

    return {t.number: (t.value, t.params, dict(t.intermediate_values)) for t in study.get_trials()
            if t.state == TrialState.COMPLETE}


def wait_for(what, predicate, proc: subprocess.Popen, timeout: float, poll: float = 0.3):
    """Poll until predicate() returns something truthy; fail if the process ends first."""
    end = time.time() + timeout
    while time.time() < end:
        found = predicate()
        if found:
            return found
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the driver ended before {what}: rc={proc.returncode}\n{out[-2000:]}\n{err[-4000:]}")
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}")


# ---------------------------------------------------------------- Ray


@pytest.fixture
def ray_cluster(tmp_path):
    if not _has("ray"):
        pytest.skip("Ray is not installed (pip install -r requirements-cluster.txt)")
    if not netns_available():
        pytest.skip("needs root and `ip netns` to keep the cluster on a loopback-only network")
    with NetNamespace() as ns:
        c = RayCluster(tmp_path / "ray", ns)
        try:
            yield c.start(2, cpus=1)
        finally:
            c.stop()


@pytest.mark.cluster
@pytest.mark.slow
def test_a_dead_ray_node_loses_no_trial(ray_cluster, tmp_path):
    """Kill one worker node in the middle of a trial: the run completes, the
    interrupted trial runs again, and every trial completed before the kill
    is still in the study, unchanged; trial files came back to the driver."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    node_of = ray_cluster.node_ids()
    assert len(node_of) == 2
    runs = tmp_path / "runs"
    driver = subprocess.Popen(
        ray_cluster.netns.cmd(sys.executable, "-m", "autopilot", "run", "digits", "--executor", "ray",
                              "--ray-address", ray_cluster.address, "--trials", "4", "--max-params", "20000",
                              "--pruner", "none", "--cv", "0", "--no-fusion", "--no-doctor", "--no-compress", "--quiet",
                              "--name", "r", "--runs-dir", runs),
        env=ray_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run = runs / "r"

        def victim():
            if not (run / "study" / "journal.log").exists():
                return None
            study = load_study(journal(run))
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                if t.user_attrs.get("ray_node") in node_of and t.intermediate_values:
                    return study, t
            return None

        study, t = wait_for("a trial reporting from a worker node", victim, driver, timeout=400)
        before = snapshot_complete(study)
        ray_cluster.kill_node(node_of[t.user_attrs["ray_node"]])
        out, err = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, err[-4000:]
    assert (run / "model" / "model.onnx").exists()

    study = load_study(journal(run))
    trials = {x.number: x for x in study.get_trials()}
    killed = trials[t.number]
    assert killed.state == TrialState.FAIL and killed.user_attrs["error"].startswith("lost:")
    retries = [x for x in trials.values() if RetryHeartbeatStaleTrialCallback.retried_trial_number(x) == t.number]
    assert len(retries) == 1, "the interrupted trial is queued again exactly once"
    retry = retries[0]
    assert retry.params == killed.params and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.user_attrs.get("error") is None
    after = snapshot_complete(study)
    assert {n: after.get(n) for n in before} == before, "a trial completed before the kill changed"
    assert not [x for x in trials.values() if x.state == TrialState.RUNNING]
    finished = [x for x in trials.values() if x.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 4
    for x in finished:  # the files of every trial came back from its node
        tdir = run / "trials" / str(x.number)
        assert (tdir / "metrics.jsonl").read_text().count("\n") == len(x.intermediate_values) or x.state != TrialState.COMPLETE
        assert (tdir / "config.json").exists() and (tdir / "doctor.json").exists()
        if x.state == TrialState.COMPLETE:
            assert (tdir / "weights.safetensors").stat().st_size > 0
            assert (tdir / "spec.json").exists() and (tdir / "hparams.json").exists()
    assert len({x.user_attrs["ray_node"] for x in finished}) >= 1


@pytest.mark.cluster
@pytest.mark.slow
def test_a_budgeted_ray_search_trains_its_finalists(ray_cluster, tmp_path):
    """Under --budget the Ray driver does what a local worker does after
    each trial: the plan's finalists are queued, trained on the cluster
    and shipped, and no exploration trial starts after them. The plan's
    finalist slots are the cluster's (two nodes of one CPU), not the
    driver's --workers."""
    from optuna.trial import TrialState

    from autopilot.rundir import WEIGHTS_FILE, RunDir
    from autopilot.search import budget

    runs = tmp_path / "runs"
    res = subprocess.run(
        ray_cluster.netns.cmd(sys.executable, "-m", "autopilot", "run", "digits", "--executor", "ray",
                              "--ray-address", ray_cluster.address, "--budget", "50s", "--workers", "1", "--cv", "0",
                              "--no-fusion", "--no-doctor", "--no-compress", "--quiet", "--name", "b", "--runs-dir", runs),
        env=ray_cluster.env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    study = load_study(journal(runs / "b"))
    assert budget.load_plan(study).workers == 2
    trials = study.get_trials()
    finals = [t for t in trials if t.user_attrs.get("final")]
    assert finals, [(t.number, t.state, t.user_attrs) for t in trials]
    seen = [(t.number, t.state.name, t.user_attrs.get("ray_node"), t.user_attrs.get("rejected"),
             t.user_attrs.get("stopped"), t.user_attrs.get("epochs"), t.user_attrs.get("error")) for t in finals]
    assert all(t.user_attrs.get("ray_node") for t in finals), seen

    def trained(t) -> bool:
        """Completed, or cut by the run's deadline after at least one epoch
        with its weights written: on a loaded 2-core machine the last epoch
        of a 50 s run's finalist can overrun its slot (a fresh-clone CI run
        saw this); its trial is pruned, with "stopped" = "deadline"."""
        cut = (t.user_attrs.get("stopped") == "deadline" and t.user_attrs.get("epochs", 0) >= 1
               and (RunDir(runs / "b").trial_dir(t.number) / WEIGHTS_FILE).exists())
        return t.state == TrialState.COMPLETE or (t.state == TrialState.PRUNED and cut)

    assert any(trained(t) for t in finals), seen
    # A finalist that the budget no longer fits is refused with its reason
    # (a loaded machine can leave too little time for the second one).
    assert all(trained(t) or t.user_attrs.get("rejected") for t in finals), seen
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    first_final = min(t.datetime_start for t in finals)
    late = [t.number for t in trials if not t.user_attrs.get("final") and t.datetime_start > first_final]
    assert not late, f"exploration trials {late} started after the finalists"
    shipped = json.loads((runs / "b" / "search.json").read_text())["best_trial"]
    # A completed finalist ships; else the best completed trial, which comes
    # before one cut by the deadline (search.select.best_trial).
    completed = {t.number for t in trials if t.state == TrialState.COMPLETE}
    final_numbers = {t.number for t in finals}
    assert shipped in (final_numbers & completed or completed or final_numbers), seen


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def postgres():
    if not _has("psycopg"):
        pytest.skip("no PostgreSQL driver (pip install -r requirements-cluster.txt)")
    if not (pg_bin("initdb") and pg_bin("pg_ctl")):
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    pg = Postgres().start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.mark.cluster
@pytest.mark.slow
# A trial count, not a budget: what the test proves (a killed worker's trial is
# failed and queued again, nothing left RUNNING) must not depend on how much CPU
# the three trial processes get, so it runs beside other tests. Small networks
# (--max-params) keep each trial short.
def test_workers_on_postgres_leave_no_trial_running(postgres, tmp_path):
    """The driver and two `autopilot worker`s share a study in PostgreSQL;
    one worker is killed with SIGKILL in the middle of a trial. Its trial is
    failed once its heartbeat goes stale and queued again; nothing is left
    RUNNING; trials completed before the kill are unchanged."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    from autopilot.search.storage import GRACE_PERIOD_S

    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "autopilot"]
    driver = subprocess.Popen([*cmd, "run", "digits", "--storage", postgres.url, "--workers", "1", "--trials", "6",
                               "--max-params", "20000", "--pruner", "none", "--no-doctor", "--no-compress", "--cv", "0", "--no-fusion", "--quiet",
                               "--name", "pg",
                               "--runs-dir", runs], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = []
    try:
        # The workers need the run directory the driver creates first.
        wait_for("the run directory", lambda: (runs / "pg" / "run.json").exists(), driver, timeout=120)
        workers = [subprocess.Popen([*cmd, "worker", "--storage", postgres.url, "--name", "pg", "--runs-dir", runs],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(2)]
        by_pid = {w.pid: w for w in workers}

        def victim():
            # Whichever worker reports first: with six trials, one of the
            # two may get none while the driver and the other take them all.
            try:
                study = load_study(postgres.url, "pg")
            except Exception:  # the driver has not created its study yet
                return None
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                pid = t.user_attrs.get("worker", "").rpartition(":")[2]
                if pid.isdigit() and int(pid) in by_pid and t.intermediate_values:
                    return study, t, by_pid[int(pid)]
            return None

        study, t, killed = wait_for("a trial reporting from a worker", victim, driver, timeout=200)
        before = snapshot_complete(study)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        out, err = driver.communicate(timeout=600)
        assert driver.returncode == 0, err[-4000:]
        for w in workers:
            if w is not killed:
                w.wait(timeout=GRACE_PERIOD_S * 3 + 120)
                assert w.returncode == 0, w.stderr.read()[-3000:]
    finally:
        for p in [driver, *workers]:
            if p.poll() is None:
                p.kill()
                p.wait()

    study = load_study(postgres.url, "pg")
    trials = {x.number: x for x in study.get_trials()}
    assert not [x.number for x in trials.values() if x.state == TrialState.RUNNING], "a trial was left RUNNING"
    assert trials[t.number].state == TrialState.FAIL
    retries = [x for x in trials.values() if RetryHeartbeatStaleTrialCallback.retried_trial_number(x) == t.number]
    assert len(retries) == 1 and retries[0].params == trials[t.number].params
    after = snapshot_complete(study)
    assert {n: after.get(n) for n in before} == before
    ran_on = {x.user_attrs.get("worker", "driver") for x in trials.values()
              if x.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert "driver" in ran_on and len(ran_on) >= 2, f"trials ran on {ran_on}"
    assert (runs / "pg" / "model" / "model.onnx").exists()


@pytest.mark.cluster
def test_unreachable_database_is_one_clear_line(tmp_path):
    from .cluster import free_port

    if not _has("psycopg"):
        pytest.skip("no PostgreSQL driver")
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    r = run_cli("run", "digits", "--storage", url, "--trials", "1", "--no-doctor", "--runs-dir", tmp_path, timeout=300)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    line = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert line and "cannot open storage" in line[0] and "127.0.0.1" in line[0]


def test_worker_without_run_directory_says_what_to_do(tmp_path):
    r = run_cli("worker", "--storage", "postgresql://u@127.0.0.1:1/x", "--name", "nope", "--runs-dir", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no run directory" in r.stderr and "--executor ray" in r.stderr


# ---------------------------------------------------------------- installs


def test_default_install_and_demo_pull_in_neither_ray_nor_a_postgres_driver():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = lambda reqs: {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}  # noqa: E731
    default = names(pyproject["project"]["dependencies"])
    pinned = names(l for l in (ROOT / "requirements.txt").read_text().splitlines() if l and not l.startswith("#"))
    for heavy in ("ray", "psycopg", "psycopg-binary", "psycopg2", "psycopg2-binary"):
        assert heavy not in default and heavy not in pinned
    extras = pyproject["project"]["optional-dependencies"]
    assert "ray" in names(extras["ray"]) and "psycopg" in names(extras["postgres"])
    cluster_pins = (ROOT / "requirements-cluster.txt").read_text()
    assert re.search(r"^ray==", cluster_pins, re.M) and re.search(r"^psycopg\[binary\]==", cluster_pins, re.M)
    # `make demo` installs only requirements.txt: the cluster pins come with the test target alone.
    make = subprocess.run(["make", "-n", "-B", "demo"], cwd=ROOT, capture_output=True, text=True)
    assert make.returncode == 0 and "requirements.txt" in make.stdout
    assert "requirements-cluster" not in make.stdout


def test_a_local_run_imports_neither_ray_nor_a_postgres_driver(tmp_path):
    code = ("import sys, autopilot.cli, autopilot.runner, autopilot.search.driver\n"
            "from autopilot.search.study import make_storage\n"
            "from autopilot.rundir import RunDir\n"
            f"make_storage(RunDir({str(tmp_path / 'r')!r}))\n"
            "print(sorted(m for m in ('ray', 'psycopg', 'psycopg2') if m in sys.modules))")
    out = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
