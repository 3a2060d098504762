import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    # Built-in data sets are generated once per test session, not per test.
    os.environ.setdefault("AUTOPILOT_CACHE", str(tmp_path_factory.mktemp("cache")))


def run_cli(*args, cwd=None, timeout=600, env=None):
    """The real command in a subprocess, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "autopilot", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)
