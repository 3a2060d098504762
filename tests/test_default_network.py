"""search.select.prefer_default_network: a budgeted search's top finalist
ships only when it is significantly more accurate, example by example on
the validation split, than the default network's finalist; and the
finalists stage retrains whichever the selection chose."""
from __future__ import annotations

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from autopilot.finalists.plan import finalist_trials
from autopilot.models import build_model, save_model
from autopilot.rundir import RunDir
from autopilot.search import select, space
from autopilot.search.study import save_val_logits

N_VAL, CLASSES, PLAN = 750, 10, 1234.5
INFO = {"kind": "table", "input_shape": [4], "n_classes": CLASSES, "mean": [0.0] * 4, "std": [1.0] * 4}


def _labels() -> np.ndarray:
    return np.arange(N_VAL) % CLASSES


def _finalist(rd: RunDir, number: int, wrong: set[int], *, default: bool = False, plan: float = PLAN,
              final: bool = True) -> optuna.trial.FrozenTrial:
    """A completed final-phase trial whose stored validation logits (written
    by the search's own writer) are right everywhere but on `wrong`."""
    y = _labels()
    predicted = y.copy()
    for i in wrong:
        predicted[i] = (y[i] + 1) % CLASSES
    logits = np.eye(CLASSES, dtype=np.float32)[predicted] * 5.0
    rd.trial_dir(number).mkdir(parents=True, exist_ok=True)
    save_val_logits(rd.trial_dir(number), logits)
    spec, _ = space.to_config(space.default_params(INFO), INFO)
    save_model(rd.trial_dir(number), build_model(spec), spec)  # the weights best_trial and the finalists stage look for
    attrs = {"final": final, "plan": plan, "val_loss": 0.05}
    if default:
        attrs[select.DEFAULT_NETWORK] = True
    t = create_trial(state=TrialState.COMPLETE, value=1 - len(wrong) / N_VAL, params={"x": 0.5},
                     distributions={"x": FloatDistribution(0, 1)}, user_attrs=attrs)
    t.number = number
    return t


def test_a_finalist_one_example_ahead_of_the_default_network_does_not_ship(tmp_path):
    rd, y = RunDir(tmp_path), _labels()
    # The default wrong on 4 examples, the top finalist on 3: right on 3 the default missed, wrong on 2 it got.
    default = _finalist(rd, 20, {1, 2, 3, 4}, default=True)
    top = _finalist(rd, 21, {4, 50, 60})
    chosen, why = select.prefer_default_network(top, [default, top], rd, y)
    assert chosen is default
    assert "finalist 21" in why and "finalist 20" in why and "right on 3" in why and "wrong on 2" in why
    assert select.rank_trial(top) > select.rank_trial(default)


def test_the_selection_and_the_finalists_stage_take_the_default_network(tmp_path):
    rd, y = RunDir(tmp_path), _labels()
    study = optuna.create_study(direction="maximize")  # numbers its trials 0, 1, 2 as added
    rung = _finalist(rd, 0, set(range(30)), final=False)  # an exploration trial of a third configuration
    rung.params = {"x": 0.1}
    default = _finalist(rd, 1, {1, 2, 3, 4}, default=True)
    default.params = {"x": 0.2}
    top = _finalist(rd, 2, {4, 50, 60})
    study.add_trials([rung, default, top])
    sel = select.best_trial(study, rd, y)
    assert sel.trial.number == 1 and "finalist 2" in sel.why
    # without the labels (a caller that cannot compare), the ranking alone decides
    assert select.best_trial(study, rd).trial.number == 2
    # the finalists stage puts the selection first (its plan may retrain the first alone), the rest in rank order
    assert [t.number for t in finalist_trials(study, rd, 3)] == [2, 1, 0]
    assert [t.number for t in finalist_trials(study, rd, 3, first=1)] == [1, 2, 0]
    assert [t.number for t in finalist_trials(study, rd, 1, first=0)] == [0]


def test_a_finalist_significantly_ahead_of_the_default_network_ships(tmp_path):
    rd, y = RunDir(tmp_path), _labels()
    default = _finalist(rd, 20, set(range(10)), default=True)
    top = _finalist(rd, 21, {500})  # right on 10 the default missed, wrong on 1: McNemar p = 0.006
    assert select.prefer_default_network(top, [default, top], rd, y) == (top, None)


def test_only_finalists_of_one_final_phase_are_weighed(tmp_path):
    rd, y = RunDir(tmp_path), _labels()
    top = _finalist(rd, 21, {4, 50, 60})
    # the default network's trial of an exploration rung, or of an earlier plan (a resumed search): no comparison
    rung = _finalist(rd, 3, {1, 2, 3, 4}, default=True, final=False)
    earlier = _finalist(rd, 10, {1, 2, 3, 4}, default=True, plan=PLAN - 600)
    assert select.prefer_default_network(top, [rung, earlier, top], rd, y) == (top, None)
    # the default network on top: nothing to weigh
    default = _finalist(rd, 20, {1}, default=True)
    assert select.prefer_default_network(default, [default, top], rd, y) == (default, None)
    # a regression label compares nothing
    assert select.prefer_default_network(top, [_finalist(rd, 22, {1, 2, 3, 4}, default=True), top], rd,
                                         y.astype(np.float32)) == (top, None)
    # a finalist that kept no logits for every validation example: the ranking stands
    (rd.trial_dir(21) / "val_logits.npy").unlink()
    assert select.prefer_default_network(top, [_finalist(rd, 23, {1, 2, 3, 4}, default=True), top], rd, y) == (top, None)
