"""The search space and samplers, without training: every sampled
configuration must build a model that runs on the data's shape."""
import optuna
import pytest
import torch

from autopilot.models import build_model
from autopilot.config import RunError, parse_duration, search_reserve
from autopilot.search import space
from autopilot.search.study import (INTERRUPTED, PROGRESS_STEPS, make_pruner, make_sampler, open_study,
                                    progress_step, recover_interrupted, requeue_interrupted, summarize)
from optuna.trial import TrialState

INFOS = {
    "image": {"kind": "image", "input_shape": [1, 28, 28], "n_classes": 10, "mean": [0.1], "std": [0.3]},
    "small-image": {"kind": "image", "input_shape": [3, 8, 8], "n_classes": 4, "mean": [0.5] * 3, "std": [0.2] * 3},
    "signal": {"kind": "signal", "input_shape": [1, 40], "n_classes": 10, "mean": [0.0], "std": [1.0]},
    "table": {"kind": "table", "input_shape": [7], "n_classes": 3, "mean": [0.0] * 7, "std": [1.0] * 7},
}


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "gp"])
@pytest.mark.parametrize("data", list(INFOS))
def test_every_sampled_config_builds_and_runs(sampler, data):
    info = INFOS[data]
    study = optuna.create_study(direction="maximize", sampler=make_sampler(sampler, 0, info))
    study.enqueue_trial(space.default_params(info)) if sampler != "grid" else None
    for i in range(6):
        trial = study.ask()
        params = space.suggest_grid(trial, info) if sampler == "grid" else space.suggest(trial, info)
        if params["family"] == "gbt":  # boosted trees build through models/trees.py (tests/test_trees.py)
            from autopilot.models.trees import make_estimator
            from autopilot.search.trees_space import to_params

            make_estimator(to_params(params), task="classification", seed=0)
            study.tell(trial, float(i) / 10)
            continue
        if params["family"] == "linear":  # scikit-learn's linear models (tests/test_linear.py)
            assert 1e-3 <= params["lin_C"] <= 1e2 and params["lin_trees_share"] in (0.0, 0.25, 0.5, 0.75)
            study.tell(trial, float(i) / 10)
            continue
        spec, hp = space.to_config(params, info)
        assert spec["family"] in space.families_for(info["kind"])
        model = build_model(spec).eval()
        out = model(torch.zeros(2, *info["input_shape"]))
        assert out.shape == (2, info["n_classes"])
        assert hp["epochs"] > 0 and hp["lr"] > 0
        study.tell(trial, float(i) / 10)


def test_grid_covers_its_space_without_repeats():
    info = INFOS["signal"]
    grid = space.grid_space(info)
    size = 1
    for values in grid.values():
        size *= len(values)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("grid", 0, info))
    seen = set()

    def objective(trial):
        seen.add(tuple(sorted(space.suggest_grid(trial, info).items())))
        return 0.5

    study.optimize(objective, n_trials=2 * size)  # the grid sampler stops the study when it is exhausted
    assert len(seen) == size == len(study.trials)


def test_default_first_trial_is_cheap_on_large_images():
    spec, hp = space.to_config(space.default_params(INFOS["image"]), INFOS["image"])
    assert spec["stem"]["width"] <= 16 and spec["stages"][0]["width"] <= 16 and hp["epochs"] <= 20


@pytest.mark.parametrize("name", ["hyperband", "median", "none"])
def test_pruners(name):
    assert isinstance(make_pruner(name), optuna.pruners.BasePruner)


def test_unknown_sampler_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("annealing", 0, INFOS["table"])


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("2m", 120), ("1.5h", 5400), ("300", 300), (45, 45)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5m", "0", "nan"])
def test_bad_duration(text):
    with pytest.raises(RunError):
        parse_duration(text)


def test_reserve_leaves_most_of_the_budget_to_the_search():
    assert search_reserve(120) == 8
    assert search_reserve(600) == 36
    assert search_reserve(7200) == 60


@pytest.mark.parametrize("planned", space.EPOCHS)
def test_steps_measure_progress_through_the_schedule(planned):
    """Every schedule ends at the same step, steps are distinct, and all
    lengths of the space meet at 20 %, 40 %, ... (where the median pruner
    compares them); the former unit was the epoch count."""
    steps = [progress_step(e, planned) for e in range(1, planned + 1)]
    assert steps[-1] == PROGRESS_STEPS and len(set(steps)) == planned and steps == sorted(steps)
    assert {PROGRESS_STEPS * k // 5 for k in range(1, 6)} <= set(steps)
    assert [progress_step(e, planned, "epoch") for e in (1, 3)] == [1, 3]


def test_unknown_progress_unit_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown progress unit 'percent'"):
        make_pruner("hyperband", "percent")


def test_interrupted_trials_are_failed_and_queued_again_once(tmp_path):
    """What a killed process leaves RUNNING is failed through Optuna's public
    API, said so in search.json, and queued again once on resume."""
    from autopilot.config import RunConfig
    from autopilot.rundir import RunDir
    from autopilot.schemas.search import SearchFile

    info = INFOS["table"]
    rd = RunDir(tmp_path / "r")
    config = RunConfig(data="x.npz", pruner="none")
    study = open_study(rd, config, info)
    done = study.ask()
    study.tell(done, 0.5)
    left_running = [study.ask(), study.ask()]
    for t in left_running:
        space.suggest(t, info)

    study = open_study(rd, config, info)  # as a resumed run opens it
    assert recover_interrupted(study) == 2
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert requeue_interrupted(study) == 2
    assert requeue_interrupted(study) == 0  # once each
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["retry_of"] for t in waiting] == [1, 2]
    rerun = [study.ask() for _ in waiting]  # the next trials asked for are the interrupted ones, same parameters
    assert [space.suggest(t, info) for t in rerun] == [t.params for t in left_running]
    summary = SearchFile.model_validate(summarize(study, 0.0, config, run=rd))
    assert [t.error for t in summary.trials[:3]] == [None, INTERRUPTED, INTERRUPTED]
    assert summary.best_trial == 0 and summary.selection is None  # no weights in trials/0: nothing to ship
