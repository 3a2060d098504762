"""Cross-validated finalists: real searches on digits, the winner chosen by
the rule the card states, the retrained model shipped, --cv 0 as before,
and a budget that the stage plans within."""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from optuna.trial import TrialState
from safetensors.numpy import load_file

from autopilot.config import RunConfig
from autopilot.data.stats import arrays, data_info
from autopilot.final import finalize
from autopilot.finalists.plan import (TIE, Candidate, cheapest_option_probed_s, cheapest_option_s, make_plan,
                                      pick_winner, reserve_too_small, retrain_seconds, retraining_to_run,
                                      undertrained_winner, with_epochs)
from autopilot.runner import create_run
from autopilot.schemas import read
from autopilot.schemas.card import Finalist, ModelCard
from autopilot.search.select import rank_trial
from autopilot.report import write_report
from autopilot.rundir import write_json
from autopilot.search.study import Objective, open_study, summarize
from autopilot.search.workers import optimize

from .conftest import run_cli
from .finished_run import SMALL_MLP, quiet_console

# Three small MLPs of different sizes: seconds each on digits, and unequal
# enough that the search ranks them.
CONFIGS = [{**SMALL_MLP, "mlp_width": w} for w in (64, 128, 256)]  # widths of the space, 10 epochs
CONFIGS.append(CONFIGS[-1])  # one configuration trained twice (as successive halving does): one finalist


@pytest.fixture(autouse=True)
def one_thread():
    # As the search runs trials in one process on a busy machine: two threads
    # waiting on each other made these tests ten times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def searched(tmp_path, name: str, **config):
    """A real run directory after a real search of CONFIGS (no time limit)."""
    cfg = RunConfig(data="digits", trials=len(CONFIGS), pruner="none", workers=1, device="cpu", **config)
    rd, ds, splits = create_run(cfg, runs_dir=tmp_path, name=name, overwrite=True, doctor=False)
    data, info = arrays(ds, splits), data_info(ds, splits)
    study = open_study(rd, cfg, info)
    for params in CONFIGS:
        study.enqueue_trial(params)
    optimize(study, Objective(rd, data, info, cfg, deadline=time.monotonic() + 600), time.time() + 600, len(CONFIGS))
    write_json(rd.search_json, summarize(study, time.time(), cfg, run=rd))
    return rd, ds, data, info, cfg, study


def ranked(study, distinct: bool = False) -> list[int]:
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    out, seen = [], []
    for t in sorted(done, key=rank_trial, reverse=True):
        if not (distinct and t.params in seen):
            out.append(t.number)
            seen.append(t.params)
    return out


def test_cross_validated_winner_follows_the_rule_and_ships_retrained(tmp_path):
    rd, ds, data, info, cfg, study = searched(tmp_path, "cv", cv=2, finalists=2)
    console = quiet_console()
    card = finalize(rd, study, ds, data, info, cfg, started=time.time(), console=console)
    cv = card.cv
    assert cv is not None and cv.folds == 2 and cv.finalists_asked == 2
    # train + validation, less the gate slice kept for compression and fusion (data/gate.py)
    assert cv.gate_examples and cv.examples == len(data["train"][1]) + len(data["val"][1]) - cv.gate_examples
    # The finalists are the search's best two configurations, best first.
    assert [f.trial for f in cv.finalists] == ranked(study, distinct=True)[:2]
    for f in cv.finalists:
        assert f.finished and len(f.fold_accuracies) == 2 and all(0.5 < a <= 1 for a in f.fold_accuracies)
        assert f.mean == pytest.approx(np.mean(f.fold_accuracies))
        assert f.std == pytest.approx(np.std(f.fold_accuracies, ddof=1))
        assert f.fold_epochs == f.planned_epochs == 10  # no time limit: full schedules
    # The winner: best mean, a tie (within TIE) to the fewer parameters.
    top = max(f.mean for f in cv.finalists)
    tied = [f for f in cv.finalists if top - f.mean <= TIE]
    expected = min(tied, key=lambda f: (f.params, cv.finalists.index(f)))
    assert [f.trial for f in cv.finalists if f.won] == [expected.trial] == [cv.winner]
    assert card.best_trial == card.selection.trial == cv.winner and cv.search_best == ranked(study)[0]
    assert card.params == expected.params
    # The retrained model ships: its weights are not the search trial's, and
    # the card says the validation split is no longer held out.
    assert cv.retrained and cv.retrain_epochs == 10 and not cv.validation_held_out
    assert cv.retrain_warm_start is False  # the search ran its whole schedule: the retraining starts over
    shipped = load_file(str(rd.model_dir / "weights.safetensors"))
    searched_w = load_file(str(rd.trial_dir(cv.winner) / "weights.safetensors"))
    assert shipped.keys() == searched_w.keys()
    assert any(not np.array_equal(shipped[k], searched_w[k]) for k in shipped)
    assert any("validation split is part of the shipped model's training data" in n for n in cv.notes)
    assert card.hyperparameters.training["epochs"] == 10
    assert card.onnx_parity.passed and card.test_accuracy > 0.85
    assert read(ModelCard, rd.path).cv == cv  # what was written validates and reads back
    out = console.file.getvalue()
    assert "cross-validating 2 finalist(s)" in out and f"trial {cv.winner} wins" in out

    # The report lists the finalists with their folds, draws the shipped
    # network part by part, and marks it on accuracy against cost.
    html = write_report(rd.path).read_text()
    table = section(html, "finalists")
    assert "could not be rendered" not in table
    winner_row = table.split('<tr class="best">')[1].split("</tr>")[0]
    assert f">{cv.winner} ✓<" in winner_row and f"{expected.mean:.4f}" in winner_row
    for f in cv.finalists:
        assert all(f"{a:.4f}" in table for a in f.fold_accuracies)
    arch = section(html, "architecture")
    assert "could not be rendered" not in arch
    body = arch.split('<table id="architecture">')[1].split("</table>")[0]
    assert body.count("<tr>") == 1 + 3  # header, two hidden layers (depth 2), the head
    assert f"{card.params:,}" in arch and "final: #" + str(cv.winner) in arch and "Pareto front" in arch


def section(html: str, sid: str) -> str:
    return html.split(f'<section id="{sid}">')[1].split("</section>")[0]


def test_cv_0_ships_the_best_trial_as_the_search_trained_it(tmp_path):
    rd, ds, data, info, cfg, study = searched(tmp_path, "nocv", cv=0)
    card = finalize(rd, study, ds, data, info, cfg, started=time.time(), console=quiet_console())
    assert card.cv is None and json.loads((rd.model_dir / "card.json").read_text()).get("cv") is None
    assert card.best_trial == ranked(study)[0]
    trial_dir = rd.trial_dir(card.best_trial)
    assert (rd.model_dir / "weights.safetensors").read_bytes() == (trial_dir / "weights.safetensors").read_bytes()
    assert card.val_accuracy == study.trials[card.best_trial].value
    html = write_report(rd.path).read_text()
    assert '<section id="finalists">' not in html and '<section id="architecture">' in html


def test_pareto_objective_re_scores_only_the_trial_chosen_on_the_front(tmp_path):
    rd, ds, data, info, cfg, study = searched(tmp_path, "pareto", cv=2, finalists=3, objective="pareto")
    console = quiet_console()
    card = finalize(rd, study, ds, data, info, cfg, started=time.time(), console=console)
    cv = card.cv
    assert [f.trial for f in cv.finalists] == [cv.winner] == [card.best_trial]
    assert cv.finalists[0].won and len(cv.finalists[0].fold_accuracies) == 2
    assert any("--objective pareto" in n for n in cv.notes) and "--objective pareto" in console.file.getvalue()


def finalist(trial: int, mean: float | None, params: int, finished: bool = True) -> Finalist:
    folds = [] if mean is None else [mean, mean]
    return Finalist(trial=trial, search_val_accuracy=0.9, params=params, planned_epochs=10, fold_epochs=10,
                    fold_accuracies=folds, mean=mean, std=0.0 if folds else None, finished=finished)


def test_the_winner_rule_best_mean_then_fewer_parameters():
    # A clear winner, whatever its size.
    i, why = pick_winner([finalist(3, 0.95, 100), finalist(5, 0.97, 9000)])
    assert i == 1 and "highest mean CV accuracy (0.9700; next 0.9500)" in why
    # Means within TIE: the cheaper model wins, and the reason says so.
    i, why = pick_winner([finalist(3, 0.9700, 9000), finalist(5, 0.9700 - TIE / 2, 100), finalist(7, 0.90, 10)])
    assert i == 1 and "cheaper model wins (100 parameters)" in why and "trial 3" in why
    # A finalist the deadline cut cannot win, however good its folds so far.
    i, _ = pick_winner([finalist(3, 0.99, 100, finished=False), finalist(5, 0.91, 100)])
    assert i == 1
    with pytest.raises(ValueError):
        pick_winner([finalist(3, None, 100, finished=False)])


class _Trial:
    def __init__(self, number):
        self.number = number


def cand(number: int, planned: int, s_per_example: float | None, trained_on: int = 1000) -> Candidate:
    return Candidate(_Trial(number), {}, {"epochs": planned}, 1000, s_per_example, trained_on)


def test_a_winner_trained_on_a_share_of_the_data_ships_only_when_retrained():
    best = cand(7, 20, 1e-3)  # the search's best, trained on all 1000 examples
    assert undertrained_winner(cand(3, 3, 1e-3, trained_on=100), best, 1000)  # a short first rung on 10 %
    assert not undertrained_winner(cand(3, 10, 1e-3), best, 1000)  # trained on all the data too
    assert not undertrained_winner(cand(7, 20, 1e-3), best, 1000)  # the search's best itself
    assert not undertrained_winner(None, best, 1000)


def test_the_plan_fits_the_time_and_says_what_it_left_out():
    cands = [cand(0, 10, 1e-3), cand(1, 20, 1e-3)]  # 1 ms per example-epoch
    n, folds = 1000, 3
    assert make_plan(cands, folds, n, None).n == 2  # no time limit: everything, no note
    full = make_plan(cands, folds, n, 10_000)
    assert (full.n, full.share, full.retrain, full.notes) == (2, 1.0, True, [])
    # Folds of both: 3 x (10 + 20) epochs x 667 examples x 1 ms x 1.3 = 78 s; the retraining 26 s.
    need_retrain = retrain_seconds(cands[1], n)
    assert need_retrain == pytest.approx(26.0)
    tight = make_plan(cands, folds, n, 26 + 40)
    assert tight.n == 2 and tight.retrain and 0.2 <= tight.share < 1 and "shortened" in tight.notes[0]
    # 56 s: both would get 38 % of their schedules; one finalist gets all of
    # its own (fold models are the fusion stage's bags: long folds first).
    longer = make_plan(cands, folds, n, 26 + 30)
    assert longer.n == 1 and longer.share == 1.0 and longer.retrain
    # 30 s: one finalist fewer, the retraining kept.
    fewer = make_plan(cands, folds, n, 30)
    assert fewer.n == 1 and fewer.retrain and "only 1 of 2 finalists fit" in fewer.notes[0]
    # 20 s: the first finalist's folds would get 2 of its 10 epochs (fewer than 3): the retraining alone.
    small = make_plan(cands, folds, n, 20)
    assert small.n == 0 and small.retrain and "no time to cross-validate any finalist" in small.notes[0]
    # Too little for any retraining (13 s for the first): cross-validation alone, said.
    no_retrain = make_plan(cands, folds, n, 12)
    assert no_retrain.n == 1 and not no_retrain.retrain
    assert any("ships with the weights the search trained" in x for x in no_retrain.notes)
    nothing = make_plan(cands, folds, n, 1)
    assert nothing.n == 0 and not nothing.retrain and "ships as the search trained it" in nothing.notes[0]
    unmeasured = make_plan([cand(0, 10, None)], folds, n, 100)  # no epoch times: cannot plan, so no training
    assert unmeasured.n == 0 and not unmeasured.retrain and unmeasured.notes
    # A search best whose schedule the budget cut continues its weights: its
    # retraining alone is shortened to fit (fashion 30m: 295 s left against
    # 8 planned epochs). 12 s buy 9 of its 10 epochs at 1.3 s each; 3.5 s buy
    # 2, fewer than 3: cross-validation alone then, as before.
    import dataclasses

    cut = [dataclasses.replace(cands[0], warm_start=Path("weights.safetensors")), cands[1]]
    shortened = make_plan(cut, folds, n, 12)
    assert (shortened.n, shortened.retrain, shortened.retrain_epochs) == (0, True, 9)
    assert "retrained on train+validation for 9, continuing the search's weights" in shortened.notes[0]
    assert make_plan(cut, folds, n, 20).retrain_epochs is None  # the whole retraining fits: nothing shortened
    assert not make_plan(cut, folds, n, 3.5).retrain
    # By the time it starts, planning has taken some of the 12 s: the 9
    # epochs are fitted again to what is left, rather than not retrained.
    nine = with_epochs(cut[0], 9)
    assert retraining_to_run(nine, n, 11.9) == (nine, None)
    eight, why = retraining_to_run(nine, n, 11.6)
    assert eight.planned == 8 and "for 9 epochs would need about 12 s, 12 s were left: 8 epochs" in why
    assert retraining_to_run(nine, n, None) == (nine, None)  # no time limit
    none, why = retraining_to_run(nine, n, 3.5)  # too little for 3 epochs: no retraining
    assert none is None and why.endswith("the winner ships with the weights the search trained")
    # A search best that ran its whole schedule starts over when its
    # retraining fits; when it does not, it continues its own weights for
    # what fits rather than shipping the search's (mnist1d at 7m: 124 s
    # needed, 78 s left, and nothing was retrained).
    whole = [dataclasses.replace(cands[0], weights=Path("weights.safetensors")), cands[1]]
    assert make_plan(whole, folds, n, 20).retrain_epochs is None
    continued = make_plan(whole, folds, n, 12)
    assert (continued.n, continued.retrain, continued.retrain_epochs) == (0, True, 9)
    assert "continuing the search's weights" in continued.notes[0]
    # The plan fitted the whole retraining, then cross-validation ran longer
    # than estimated: the retraining continues the search's weights for the
    # epochs still left rather than starting over or not running.
    assert make_plan(whole, folds, n, 20).retrain
    assert retraining_to_run(whole[0], n, 20) == (whole[0], None)
    short, why = retraining_to_run(whole[0], n, 6.6)
    assert (short.planned, short.warm_start) == (5, whole[0].weights) and "5 epochs, continuing" in why
    assert retraining_to_run(whole[0], n, 3.5)[0] is None


def test_one_fold_is_refused_in_one_line(tmp_path):
    r = run_cli("run", "digits", "--cv", "1", "--trials", "1", "--runs-dir", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "error: cv: one fold is not cross-validation: give 0 (off) or at least 2"
    assert not any(tmp_path.iterdir())  # no half-made run


@pytest.mark.slow
def test_a_budgeted_run_cross_validates_within_its_budget(budget_run):
    """The session's shared `autopilot run digits --budget 60s` (tests/conftest.py,
    default --cv and --finalists): the finalists stage plans within what the budget left."""
    from .conftest import BUDGET_RUN_S

    rd, res = budget_run
    r = SimpleNamespace(**res)
    if r.returncode == 2 and "no trial completed" in r.stderr:
        # A machine too busy for one epoch: the run says so and ships nothing;
        # the finalists stage never ran, so there is nothing more to check.
        return
    assert r.returncode == 0, r.stderr[-2000:]
    card = read(ModelCard, rd)
    assert card.elapsed_s < BUDGET_RUN_S  # imports and the model stage included, the report not
    cv = card.cv
    assert cv is not None and cv.reserved_s is not None and cv.elapsed_s <= cv.reserved_s + 2
    assert cv.folds == RunConfig.model_fields["cv"].default
    assert cv.finalists_asked == RunConfig.model_fields["finalists"].default
    assert any(f.won for f in cv.finalists) or cv.notes  # cross-validated, or said why not
    said = " ".join(r.stderr.split())
    for note in cv.notes:
        if "validation split is part" not in note:
            assert " ".join(note.split())[:50] in said  # every fallback was said on the console


def test_a_reserve_that_buys_nothing_goes_back_to_the_search():
    """The first network's pace, probed for real: a reserve far below the
    cheapest option (fashion's case) is released with the figures; one that
    covers it is kept; tables and --cv 0 keep theirs."""
    from autopilot.data import load, split

    ds = load("digits")
    sp = split(ds.y, seed=0)
    data, info = arrays(ds, sp), data_info(ds, sp)
    cfg = RunConfig(data="digits", budget_s=60)
    why = reserve_too_small(data, info, cfg, 0.01)
    assert why and "the search's final phase trains on that time instead" in why and "s reserved for it" in why
    assert reserve_too_small(data, info, cfg, 1e6) is None
    assert reserve_too_small(data, info, cfg, 0.0) is None  # nothing reserved (--cv 0, no budget)
    # A reserve that buys 60 % of the option is released too (the former
    # rule kept anything above half): the stage would not use it. Each call
    # probes the pace again: the margins are taken from the fastest and the
    # slowest of three probes, for the timing's noise.
    needs = [cheapest_option_probed_s(data, info, cfg) for _ in range(3)]
    assert all(n and n > 0 for n in needs)
    assert reserve_too_small(data, info, cfg, 0.6 * min(needs))
    assert reserve_too_small(data, info, cfg, 4 * max(needs)) is None
    # The cheapest option that changes what ships: a 3-epoch retraining
    # (two finalists' folds cost more; one finalist's folds choose nothing).
    c = Candidate(trial=None, spec={}, hparams={"epochs": 20}, params=None, epoch_s_per_example=1e-3, trained_on=0)
    assert cheapest_option_s(c, 1000) == pytest.approx(3 * 1000 * 1e-3 * 1.3)
    short = Candidate(trial=None, spec={}, hparams={"epochs": 2}, params=None, epoch_s_per_example=1e-3, trained_on=0)
    assert cheapest_option_s(short, 1000) == pytest.approx(retrain_seconds(short, 1000))


def test_a_schedule_the_budget_cut_is_continued_not_restarted(tmp_path):
    """A trial whose schedule the budget cut short (fewer epochs than its
    configuration) is retrained from its search weights; one that ran its
    whole schedule starts over. Proof that the weights are the search's: one
    epoch at a learning rate too small to learn anything keeps the trial's
    accuracy, where the same epoch from scratch stays near chance."""
    import copy
    import dataclasses

    from autopilot.finalists.plan import candidate
    from autopilot.finalists.stage import retrain

    rd, ds, data, info, cfg, study = searched(tmp_path, "warm", cv=2, finalists=2)
    n_train = len(data["train"][1])
    trial = next(t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE)
    assert candidate(rd, trial, n_train).warm_start is None  # its whole schedule: 10 of 10 epochs
    cut = copy.deepcopy(trial)
    cut.user_attrs["planned_epochs"] = 2  # as the search records a schedule the budget shortened
    c = candidate(rd, cut, n_train)
    assert c.planned == 2 and c.warm_start == rd.trial_dir(trial.number) / "weights.safetensors"

    still = dataclasses.replace(c, hparams={**c.hparams, "epochs": 1, "lr": 1e-9})
    X, y = data["train"]
    Xv, yv = data["val"]

    def val_acc(model) -> float:
        with torch.no_grad():
            return float((model(torch.as_tensor(Xv)).argmax(1).numpy() == yv).mean())

    warm, _ = retrain(still, X, y, data, kind=info["kind"], seed=0, device="cpu", deadline=None)
    cold, _ = retrain(dataclasses.replace(still, warm_start=None), X, y, data, kind=info["kind"], seed=0,
                      device="cpu", deadline=None)
    assert val_acc(warm) > 0.85 and val_acc(cold) < 0.5
    # A warm restart the plan shortened grows back toward its schedule when
    # the pace shows the epochs fit before the deadline; the hyper-parameters
    # returned (the shipped model's) say how many it ran.
    grown, hp = retrain(c, X, y, data, kind=info["kind"], seed=0, device="cpu", deadline=time.monotonic() + 600,
                        extend_to=5)
    assert grown is not None and hp["epochs"] == 5 and hp["patience"] > 5
