import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    _keep_xdist_groups(config, items)
    # A test that reads the budgeted run checks what the run did within its
    # wall-clock budget, so the run must have had the machine to itself:
    # `make test` runs the `budget` tests after the others, in one process.
    for item in items:
        if "budget_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.budget)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=_long_first)


def _keep_xdist_groups(config, items) -> None:
    """--dist loadgroup reads a test's group from an "@group" suffix that
    pytest-xdist 3.8 appends to item._nodeid; pytest 9.2 keeps the id in
    item._id, so the suffix was lost and every group was spread over both
    workers, each training the group's module-scoped runs again (pytest-xdist
    issue 1386). Append it where pytest 9.2 reads it, as xdist names it."""
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # a pytest before 9.2: xdist's own suffix works
        return
    for item in items:
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)


def _long_first(item) -> int:
    """Longest work first across pytest-xdist workers (`make test` passes
    --no-loadscope-reorder so the workers take it in this order): a long
    test handed out last keeps one worker busy while the other idles. Every
    worker sorts the same collection alike (a stable sort: file order within
    a rank), so xdist's check that they collected the same tests holds.
    0: a file's group (its module-scoped runs, trained once on one worker);
    1: the other slow tests (a real search, a cluster); 2: the rest."""
    if item.get_closest_marker("xdist_group"):
        return 0
    return 1 if item.get_closest_marker("slow") or item.get_closest_marker("cluster") else 2


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    # Built-in data sets are generated once per test session, not per test.
    os.environ.setdefault("AUTOPILOT_CACHE", str(tmp_path_factory.mktemp("cache")))


def run_cli(*args, cwd=None, timeout=600, env=None):
    """The real command in a subprocess, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "autopilot", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def digits_table(path: Path, rows: int = 600) -> Path:
    """`rows` of scikit-learn's digits as a table in an NPZ: a search on it
    trains MLPs and boosted trees in a second or a few each, for tests of
    what a run does with its trials rather than how well it learns images."""
    import numpy as np
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    keep = np.random.default_rng(0).permutation(len(y))[:rows]
    np.savez(path, X=(X[keep] / 16).astype(np.float32), y=y[keep])
    return path


def session_root(tmp_path_factory) -> Path:
    """The folder one test session shares: its base temp folder, or with
    pytest-xdist (-n N) the parent that every worker's base temp shares, so
    a run built for the session is built once, not once per worker."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name: str, build) -> Path:
    """build(folder) runs once per test session, whichever worker asks first;
    the others wait on the lock and read what it built. A build that failed
    leaves no marker, so the next test to ask tries again (and shows why)."""
    root = session_root(tmp_path_factory)
    folder, marker = root / name, root / f"{name}.built"
    with FileLock(str(root / f"{name}.lock")):
        if not marker.exists():
            build(folder)
            marker.touch()
    return folder


# The budgeted acceptance run, `autopilot run digits --budget 60s` with every
# default stage (doctor, search, cross-validated finalists, fusion, final,
# compression, report). Tests that only read a finished budgeted run share it:
# the budget, the deadline's cut trials and every JSON file's schema.
BUDGET_RUN_S = 60


@pytest.fixture(scope="session")
def budget_run(tmp_path_factory) -> tuple[Path, dict]:
    """(run directory, {"returncode", "stdout", "stderr", "wall_s", "startup_s"} of the command)."""

    def build(folder: Path) -> None:
        # What starting the interpreter and importing costs before the run's
        # clock starts, measured at the machine's present load.
        started = time.time()
        subprocess.run([sys.executable, "-c", "import torch, autopilot.cli, autopilot.runner"], check=True, timeout=300)
        startup_s = time.time() - started
        started = time.time()
        res = run_cli("run", "digits", "--budget", f"{BUDGET_RUN_S}s", "--runs-dir", folder, "--name", "s", "--quiet")
        result = {"returncode": res.returncode, "stdout": res.stdout, "stderr": res.stderr,
                  "wall_s": time.time() - started, "startup_s": startup_s}
        # Beside the run directory, not in it: every JSON file inside must be one the run writes.
        (folder / "command.json").write_text(json.dumps(result))

    folder = built_once(tmp_path_factory, "budget-run", build)
    return folder / "s", json.loads((folder / "command.json").read_text())
