"""Where loaded data is memoised on disk, and how it is written safely.

$AUTOPILOT_CACHE, else ~/.cache/autopilot. Built-in data sets go at its top
level, decoded image folders under images/. Every file is an .npz written with
numpy (no pickle); deleting the folder only costs the time to rebuild it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """$AUTOPILOT_CACHE, else ~/.cache/autopilot."""
    return Path(os.environ.get("AUTOPILOT_CACHE") or Path.home() / ".cache" / "autopilot")


def read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):  # missing or corrupt: the caller rebuilds
        return None


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Write beside the target then rename, so a reader (another trial process)
    never sees a half-written file. False when the cache is not writable
    (read-only home etc.): the cache is an optimisation only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return False
    return True
