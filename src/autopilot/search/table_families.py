"""Which model families a table's search chooses among, and how their
trials are scored.

Small CSV tables (at most SMALL_TABLE_ROWS training + validation rows):
boosted trees and linear models only, every trial scored by CV_FOLDS-fold
cross-validation on train+validation, on the same folds. Why: a validation
split of a few dozen rows ranks by luck (diabetes, 442 rows: a network
chosen for its 0.63 validation R² scored 0.51 on test, below the linear
model it beat on validation), and a network's score is the best of its
epochs on that split, an optimistic pick that cross-validated trees cannot
be compared with (customers in bench/tables.py, 1500 rows: a network chosen
for 72.0 % on a validation split of 225 rows scored 66.2 % on test, where
logistic regression scored 76.9 %). Larger CSV tables: networks too, every family scored on
the validation split. An NPZ's arrays (homogeneous features such as pixels,
where networks do well): networks and boosted trees, as before the linear
family existed.
"""
from __future__ import annotations

from ..models import linear, trees
from . import linear_space, trees_space

SMALL_TABLE_ROWS = 3000
CV_FOLDS = 5
# A search of estimators only stops once this many trials in a row have not
# raised the best cross-validated score by STALL_MIN_GAIN: later trials gain
# less than the CV's noise (customers, 2m: the best at trial 6 was raised by
# 0.08 points at trial 33, nothing after), and bench/tables.py runs 15 of them.
STALL_TRIALS = 30
STALL_MIN_GAIN = 1e-4


def is_csv(info: dict) -> bool:
    return info.get("kind") == "table" and "csv_rows" in info


def is_small(info: dict) -> bool:
    return is_csv(info) and info["csv_rows"] <= SMALL_TABLE_ROWS


def estimators_only(info: dict) -> bool:
    """No network in the search (a small CSV table): every trial is fitted on
    all the training rows and cross-validated, so the budget plan's rungs
    and finalists, the finalists' cross-validation, compression and fusion
    (all for networks) have nothing to do; the search gets their time."""
    return info.get("kind") == "table" and "mlp" not in families(info)


def families(info: dict) -> list[str]:
    if not is_csv(info):  # an NPZ's arrays: networks, and trees as the bar
        return ["mlp", trees.FAMILY]
    return [trees.FAMILY, linear.FAMILY] if is_small(info) else ["mlp", trees.FAMILY, linear.FAMILY]


def first_trials(info: dict) -> list[dict]:
    """Seconds each, queued first on any table: the bar the search must clear."""
    first = [trees_space.default_params()]
    if linear.FAMILY in families(info):
        first += linear_space.default_params(info.get("task", "classification"))
    return first


def suggest(trial, family: str, info: dict) -> dict:
    return trees_space.suggest(trial) if family == trees.FAMILY else linear_space.suggest(trial, info)


def to_params(params: dict) -> dict:
    """A trial's parameters -> its estimator module's parameters."""
    return (trees_space.to_params if params["family"] == trees.FAMILY else linear_space.to_params)(params)


def stop_when_stalled(study, trial) -> None:
    """An Optuna callback for estimators-only searches (STALL_TRIALS)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if len(done) <= STALL_TRIALS:
        return
    best_before = max(t.value for t in done[:-STALL_TRIALS])
    if max(t.value for t in done[-STALL_TRIALS:]) < best_before + STALL_MIN_GAIN:
        study.stop()
