"""Study storage that survives its workers: a database URL (PostgreSQL for
many machines) opened with Optuna's heartbeat and retry callback.

Every running trial writes a heartbeat; a trial whose heartbeat is older than
the grace period belonged to a worker that died. Optuna then fails it (the
next time any process starts a trial, or when `settle` sweeps) and
RetryHeartbeatStaleTrialCallback queues the same configuration once more. Completed
trials are never touched, so none is lost or repeated.
"""
from __future__ import annotations

import time

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ..config import RunError

HEARTBEAT_INTERVAL_S = 5  # seconds between a running trial's heartbeats: one small UPDATE, cheap for any database
GRACE_PERIOD_S = 20  # no heartbeat for this long: its worker is dead (4 missed beats, not one slow write)
MAX_RETRY = 1  # a dead worker's trial runs once more; a configuration that kills workers twice is dropped
DEADLINE_ATTR = "deadline_wall"  # study user attribute: the driver's search deadline, read by `autopilot worker`

POSTGRES_HINT = "PostgreSQL storage needs a driver: pip install 'autopilot[postgres]'"


def is_database_url(url: str | None) -> bool:
    """Optuna reads every storage URL as a database (SQLAlchemy) URL."""
    return bool(url) and "://" in url


def study_name(run_name: str, url: str | None) -> str | None:
    """One database holds the studies of many runs: each is named after its
    run. None: the run's own journal file, where the study keeps its old
    name (optuna-dashboard opens it as before)."""
    return run_name if is_database_url(url) else None


def database_storage(url: str) -> RDBStorage:
    """RDBStorage with heartbeats and one retry of a dead worker's trial."""
    kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}  # drop connections the server closed

    def open_storage() -> RDBStorage:
        return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_INTERVAL_S,
                          grace_period=GRACE_PERIOD_S,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))

    try:
        try:
            return open_storage()
        except Exception as e:
            # Processes that open a fresh database at once race to create
            # Optuna's tables; the loser finds them made a moment later.
            if type(e).__name__ not in ("IntegrityError", "ProgrammingError"):
                raise
            time.sleep(1.0)
            return open_storage()
    except ModuleNotFoundError as e:
        if url.startswith("postgresql"):
            raise RunError(f"{POSTGRES_HINT} ({e.name} is missing)") from None
        raise RunError(f"storage {url.split('://')[0]!r} needs a driver that is not installed: {e.name}") from None
    except Exception as e:  # unreachable server, bad credentials, bad URL: one line, no traceback
        raise RunError(f"cannot open storage {_without_password(url)}: {type(e).__name__}: {_first_line(e)}") from None


def publish_deadline(study: optuna.Study, deadline_wall: float | None) -> None:
    """Workers on other machines stop at the driver's deadline."""
    study.set_user_attr(DEADLINE_ATTR, deadline_wall if deadline_wall not in (None, float("inf")) else None)


def published_deadline(study: optuna.Study) -> float:
    value = study.user_attrs.get(DEADLINE_ATTR)
    return float("inf") if value is None else float(value)


def settle(study: optuna.Study, *, max_wait_s: float | None = None, poll_s: float = 1.0) -> int:
    """After the driver's own trials: fail the trials of dead workers (their
    heartbeat went stale) so none is left RUNNING, and wait a little for
    live workers' last trials. Returns how many trials are still running
    (alive, heartbeating) when it gives up waiting."""
    if max_wait_s is None:
        max_wait_s = 2 * GRACE_PERIOD_S + HEARTBEAT_INTERVAL_S  # a trial that died just now goes stale in this time
    end = time.monotonic() + max_wait_s
    while True:
        optuna.storages.fail_stale_trials(study)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running or time.monotonic() >= end:
            return len(running)
        time.sleep(poll_s)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def _without_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
