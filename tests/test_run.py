"""`autopilot run` end to end on real data, as a user runs it."""
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from autopilot.config import RunConfig
from autopilot.data import load, split
from autopilot.models import build_model
from autopilot.rundir import RunDir
from autopilot.schemas import read
from autopilot.schemas.search import EpochLine, SearchFile
from autopilot.search.select import best_trial
from autopilot.data.stats import arrays, data_info
from autopilot.search import space
from autopilot.search.study import PROGRESS_STEPS, Objective, open_study, summarize
from autopilot.search.workers import optimize
from autopilot.train import seed_everything, timed_epoch_seconds, train

from .conftest import BUDGET_RUN_S, digits_table, run_cli


def _finished_trials(run_path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run_path / "study" / "journal.log")))
    return optuna.load_study(study_name="autopilot", storage=storage).get_trials(deepcopy=False)


@pytest.mark.slow
def test_run_digits_end_to_end(budget_run, tmp_path):
    """The shared `autopilot run digits --budget 60s` (every default stage)
    leaves a whole run directory, and `predict` on it gives the card's figures."""
    rd, res_run = budget_run
    assert res_run["returncode"] == 0, res_run["stderr"]
    card = json.loads((rd / "model" / "card.json").read_text())
    for key in ("test_accuracy", "test_accuracy_se", "val_accuracy", "params", "data_fingerprint", "seed",
                "budget_s", "elapsed_s", "versions", "confusion_matrix"):
        assert key in card, key
    assert card["test_accuracy"] > 0.9
    assert 0 <= card["test_accuracy_se"] < 0.05  # 0 when every test example is right
    assert card["onnx_parity"]["passed"] and card["onnx_parity"]["max_abs_diff"] <= 1e-4
    assert card["onnx_parity"]["argmax_agree"] == 1.0
    assert np.array(card["confusion_matrix"]).sum() == card["test_examples"]
    run = json.loads((rd / "run.json").read_text())
    assert run["status"] == "done" and run["data"]["fingerprint"] == card["data_fingerprint"]
    for f in ("model/spec.json", "model/weights.safetensors", "model/model.onnx", "report.html",
              "data/splits.npz", "data/profile.json", "search.json", "study/journal.log", "doctor.json",
              "compress/results.json", "monitor/reference.json"):
        assert (rd / f).exists(), f
    search = read(SearchFile, rd)  # the writer's own schema
    best = search.best_trial
    assert search.selection is not None and search.selection.trial == best
    lines = (rd / "trials" / str(best) / "metrics.jsonl").read_text().splitlines()
    epochs = [EpochLine.model_validate_json(line) for line in lines]
    assert [e.epoch for e in epochs] == list(range(1, len(epochs) + 1))
    trial = next(t for t in search.trials if t.number == best)
    if trial.final:  # a finalist scores the end of its schedule
        assert epochs[-1].val_acc == search.best_value
    else:  # an exploration trial its best epoch
        assert max(e.val_acc for e in epochs) == search.best_value
    assert any(p.name.startswith("events.out.tfevents") for p in (rd / "trials" / str(best)).iterdir())
    # The splits partition the data and the test split matches the card.
    s = np.load(rd / "data" / "splits.npz", allow_pickle=False)
    assert len(set(s["train"]) | set(s["val"]) | set(s["test"])) == 1797
    assert len(s["test"]) == card["test_examples"]

    # predict on test inputs through ONNX Runtime gives the card's accuracy
    ds = load("digits")
    np.savez(tmp_path / "x.npz", X=ds.X[s["test"]])
    out = tmp_path / "pred.csv"
    res = run_cli("predict", rd, tmp_path / "x.npz", "--out", out)
    assert res.returncode == 0, res.stderr
    rows = out.read_text().splitlines()
    assert rows[0].startswith("id,class,p_0")
    pred = np.array([int(r.split(",")[1]) for r in rows[1:]])
    # The card's `shipped` entry is the file predict runs, with that file's own accuracy.
    shipped = card["shipped"]
    assert shipped["file"] == ("compress/chosen.onnx" if (rd / "compress" / "chosen.onnx").exists() else "model/model.onnx")
    assert abs((pred == ds.y[s["test"]]).mean() - shipped["test_accuracy"]) < 1e-9
    assert f"shipped: {shipped['name']} ({shipped['file']}): test accuracy {shipped['test_accuracy']:.4f}" in res_run["stdout"]
    res = run_cli("predict", rd, tmp_path / "x.npz", "--out", tmp_path / "pred.json")
    assert res.returncode == 0
    assert len(json.loads((tmp_path / "pred.json").read_text())["predictions"]) == len(pred)

    # The same name again without --resume is refused and loses nothing.
    before = sorted(p.relative_to(rd) for p in rd.rglob("*"))
    res = run_cli("run", "digits", "--trials", "1", "--runs-dir", rd.parent, "--name", rd.name)
    assert res.returncode == 2 and "exists" in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.relative_to(rd) for p in rd.rglob("*")) == before


@pytest.mark.parametrize("case", ["missing", "ragged", "corrupt-image", "bad-budget"])
def test_bad_input_is_one_line_and_leaves_no_run(tmp_path, case):
    runs = tmp_path / "runs"
    if case == "missing":
        args = [tmp_path / "nope.csv"]
    elif case == "ragged":
        p = tmp_path / "t.csv"
        p.write_text("a,b,label\n1,2,x\n3,4,y\n5,y\n" + "1,1,x\n2,2,y\n" * 3)
        args = [p]
    elif case == "corrupt-image":
        from PIL import Image

        for c in ("a", "b"):
            (tmp_path / "img" / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "img" / c / f"{i}.png")
        (tmp_path / "img" / "b" / "broken.png").write_bytes(b"not an image")
        args = [tmp_path / "img"]
    else:
        args = ["digits", "--budget", "soon"]
    res = run_cli("run", *args, "--runs-dir", runs, "--trials", "1")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    assert not runs.exists() or not any(runs.iterdir())
    if case == "ragged":
        assert "line 4" in lines[0]
    if case == "corrupt-image":
        assert "broken.png" in lines[0]


def test_bad_options_and_data_are_reported_before_torch_loads(tmp_path):
    """The CLI's error path: the one line comes before the training stack
    is imported (torch alone takes seconds to load)."""
    ragged = tmp_path / "t.csv"
    ragged.write_text("a,b,label\n1,2,x\n5,y\n")
    code = "import sys; from autopilot.cli import main; rc = main(sys.argv[1:]); print(rc, 'torch' in sys.modules)"
    for args in (["digits", "--budget", "soon"], ["digits", "--cv", "1"], [ragged]):
        res = subprocess.run([sys.executable, "-c", code, "run", *map(str, args), "--runs-dir", str(tmp_path / "runs")],
                             capture_output=True, text=True, timeout=120)
        assert res.stdout.split() == ["2", "False"], (args, res.stdout, res.stderr)
        assert res.stderr.startswith("error: ")


def test_help_lists_every_command_without_loading_torch_or_scipy_stats():
    """`autopilot --help` is what a new user types first: it reads no data
    and tests nothing, so neither torch nor scipy.stats (a second each) loads."""
    code = ("import sys; from autopilot.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
            "    print('EXIT', e.code, 'torch' in sys.modules, 'scipy.stats' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.split()[-4:] == ["EXIT", "0", "False", "False"], (res.stdout[-300:], res.stderr)
    for command in ("run", "predict", "serve", "monitor", "retrain", "rollback"):
        assert command in res.stdout


def _digits_setup(tmp_path, config_overrides=None):
    # One torch thread: on a busy machine two threads wait on each other and
    # an in-process trial can take ten times longer.
    torch.set_num_threads(1)
    ds = load("digits")
    splits = split(ds.y, seed=0)
    data, info = arrays(ds, splits), data_info(ds, splits)
    config = RunConfig(**{"data": "digits", "seed": 0, "sampler": "tpe", "pruner": "none", "storage": None,
                          "device": "cpu", **(config_overrides or {})})
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    return rd, data, info, config


def test_failed_trial_is_recorded_and_the_study_goes_on(tmp_path):
    rd, data, info, config = _digits_setup(tmp_path)
    study = open_study(rd, config, info)
    diverging = {**space.default_params(info), "optimizer": "sgd", "lr_sgd": 1e6, "epochs": 10}
    diverging.pop("lr_adamw")
    study.enqueue_trial(diverging)
    study.enqueue_trial({**space.default_params(info), "epochs": 10, "cnn2d_width": 16})
    objective = Objective(rd, data, info, config, deadline=time.monotonic() + 300)
    optimize(study, objective, time.time() + 300, n_trials=2)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert "diverged" in trials[0].user_attrs["error"]
    assert trials[1].state == TrialState.COMPLETE and trials[1].value > 0.9


def test_trial_cut_by_the_deadline_is_pruned_not_complete(tmp_path):
    """A trial the deadline stops is no result: PRUNED with the values it
    reported, its best weights kept, and offered as the final model only
    while nothing completed, saying how it ended."""
    rd, data, info, config = _digits_setup(tmp_path)
    study = open_study(rd, config, info)
    params = {**space.default_params(info), "epochs": 45}
    study.enqueue_trial(params)
    # About 15 of the 45 epochs at this machine's pace, timed now: a fixed 12 s was 15 epochs on
    # one machine and all 45 on a faster one (the trial completed), and 4 s on a busy one (the
    # other core taken) did not finish the first epoch (a trial cut before any epoch is a failure).
    spec, hp = space.to_config(params, info)
    allowed = 1.0 + 15 * timed_epoch_seconds(build_model(spec), data, hp, info["kind"])
    optimize(study, Objective(rd, data, info, config, deadline=time.monotonic() + allowed), time.time() + 120,
             n_trials=1)
    cut = study.get_trials()[0]
    assert cut.state == TrialState.PRUNED, cut.state
    assert cut.user_attrs["stopped"] == "deadline" and cut.user_attrs["planned_epochs"] == 45
    k = cut.user_attrs["epochs"]
    assert 1 <= k < 45, k
    # Steps are per mille of the planned schedule; the values are all there.
    assert sorted(cut.intermediate_values) == [round(PROGRESS_STEPS * e / 45) for e in range(1, k + 1)]
    assert (rd.trial_dir(0) / "weights.safetensors").exists()
    chosen = best_trial(study, rd)
    assert chosen.trial.number == 0 and not chosen.complete
    assert chosen.how == f"cut by the deadline after {k} of 45 epochs"

    # A trial that finishes its (short) schedule is a result, and results
    # come first whatever accuracy the cut trial reached.
    study.enqueue_trial({**space.default_params(info), "epochs": 10, "cnn2d_width": 16, "cnn2d_depth": 1})
    optimize(study, Objective(rd, data, info, config, deadline=time.monotonic() + 300), time.time() + 300, n_trials=2)
    done = study.get_trials()[1]
    assert done.state == TrialState.COMPLETE and done.user_attrs["stopped"] in ("completed", "early-stop")
    assert max(done.intermediate_values) == PROGRESS_STEPS or done.user_attrs["stopped"] == "early-stop"
    chosen = best_trial(study, rd)
    assert (chosen.trial, chosen.how, chosen.why) == (done, "complete", None)  # a network: no fold scores to weigh

    summary = SearchFile.model_validate(summarize(study, time.time() - 60, config, run=rd))
    states = {t.number: (t.state, t.stopped) for t in summary.trials}
    assert states[0] == ("PRUNED", "deadline") and states[1][0] == "COMPLETE"
    assert summary.best_trial == 1 and summary.selection.trial == 1
    assert summary.trials[0].best_val_acc == cut.user_attrs["best_val_acc"]


def test_same_seed_same_metrics():
    ds = load("digits")
    s = split(ds.y, seed=0)
    info = data_info(ds, s)
    spec, hp = space.to_config({**space.default_params(info), "epochs": 3}, info)
    runs = []
    for _ in range(2):
        seed_everything(7)
        r = train(build_model(spec), (ds.X[s["train"]], ds.y[s["train"]]), (ds.X[s["val"]], ds.y[s["val"]]), hp,
                  kind="image", seed=7, device="cpu")
        runs.append([(m.train_loss, m.val_loss, m.val_acc) for m in r.history])
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_resume_after_sigkill_loses_no_completed_trial(tmp_path):
    # A trial count, not a budget: a budgeted plan's first rung waits for its
    # slots, while here each trial trains its own epochs and completes. (No
    # --max-params: a sampled trial it rejects would be the resumed run's one
    # new trial, pruned, where the test needs a completed one.) A small
    # table: its trials take seconds, where digits' images take half a minute.
    data = digits_table(tmp_path / "digits600.npz")
    args = [sys.executable, "-m", "autopilot", "run", str(data), "--trials", "20", "--runs-dir", str(tmp_path),
            "--name", "k", "--quiet", "--pruner", "none", "--no-doctor", "--no-compress", "--cv", "0", "--no-fusion"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal = tmp_path / "k" / "study" / "journal.log"
    completed = []
    try:
        t_end = time.time() + 300
        while time.time() < t_end:
            if journal.exists():
                completed = [t for t in _finished_trials(tmp_path / "k") if t.state == TrialState.COMPLETE]
                if len(completed) >= 2:
                    break
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(completed) >= 2, "no two trials completed before the kill"
    before = {t.number: (t.value, t.params) for t in _finished_trials(tmp_path / "k") if t.state == TrialState.COMPLETE}
    cut_short = [t for t in _finished_trials(tmp_path / "k") if t.state == TrialState.RUNNING]
    assert not (tmp_path / "k" / "model" / "card.json").exists()

    n_total = len(_finished_trials(tmp_path / "k")) + 1  # one more: a retried trial or a new one
    res = run_cli("run", data, "--resume", "--name", "k", "--runs-dir", tmp_path, "--trials", n_total, "--quiet")
    assert res.returncode == 0, res.stderr
    assert f"resuming study: {len(before)} completed trial(s) kept" in res.stderr
    if cut_short:  # trials the kill cut short run again, once
        assert f"{len(cut_short)} interrupted trial(s) queued again" in res.stderr
    after = _finished_trials(tmp_path / "k")
    after_complete = {t.number: (t.value, t.params) for t in after if t.state == TrialState.COMPLETE}
    for number, (value, params) in before.items():  # nothing lost
        assert after_complete[number] == (value, params)
    new = [t for t in after if t.number not in before and t.state == TrialState.COMPLETE]
    assert new, "the resumed study ran no new trial"
    for t in new:  # nothing repeated
        assert t.params not in [p for _, p in before.values()]
    assert all(t.state != TrialState.RUNNING for t in after)
    assert (tmp_path / "k" / "model" / "card.json").exists()
    # Without a budget (or a pruner), a complete trial ran its whole configured schedule.
    for t in read(SearchFile, tmp_path / "k").trials:
        if t.state == "COMPLETE":
            assert t.stopped == "early-stop" or t.epochs == t.planned_epochs == t.params["epochs"], t


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path):
    data = digits_table(tmp_path / "digits600.npz")  # trials of seconds (see digits_table)
    res = run_cli("run", data, "--workers", "2", "--trials", "3", "--budget", "3m", "--no-compress", "--cv", "0",
                  "--no-fusion", "--no-doctor", "--runs-dir", tmp_path, "--name", "w", "--quiet")
    assert res.returncode == 0, res.stderr
    trials = _finished_trials(tmp_path / "w")
    # --trials caps a budgeted search too: each worker stops once 3 are finished
    # or running; two that finish together may each start one more (Optuna's
    # MaxTrialsCallback counts without a lock), so at most 3 + (2 - 1).
    assert 3 <= len(trials) <= 4, [t.number for t in trials]
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 1
    assert (tmp_path / "w" / "model" / "model.onnx").exists()
    # Two workers ran trials at the same time: some pair of trials overlaps.
    spans = [(t.datetime_start, t.datetime_complete) for t in trials if t.datetime_start and t.datetime_complete]
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if a[0] < b[1] and b[0] < a[1]]
    assert overlapping, f"no two trials ran at the same time: {spans}"


@pytest.mark.slow
def test_short_budget_stores_no_cut_trial_as_complete(budget_run):
    """The acceptance run: in `--budget 60s` the deadline cuts trials; none of
    them is COMPLETE, in search.json or in the study, and each keeps what it reported."""
    rd, res = budget_run
    res = SimpleNamespace(**res)
    search = read(SearchFile, rd)
    study = {t.number: t for t in _finished_trials(rd)}
    assert search.trials and len(search.trials) == len(study)
    for t in search.trials:
        s = study[t.number]
        assert t.state == s.state.name
        if t.state == "COMPLETE":
            assert t.stopped == "early-stop" or (t.stopped == "completed" and t.epochs == t.planned_epochs), t
        if t.stopped == "deadline" and t.state == "FAIL":  # not one epoch before the deadline: nothing to keep
            assert t.error == "cut by the deadline before its first epoch finished" and not s.intermediate_values, t
        elif t.stopped == "deadline":
            assert t.state == "PRUNED" and s.intermediate_values and t.epochs < t.planned_epochs, t
            assert f"trial {t.number:3d} pruned (deadline) epochs={t.epochs}/{t.planned_epochs}" in res.stderr
    chosen = search.selection
    if all(t.state == "FAIL" for t in search.trials):
        # A machine so busy that no trial finished one epoch: nothing to ship, said in one line.
        assert chosen is None and res.returncode == 2 and "no trial completed" in res.stderr.splitlines()[-1]
        return
    assert res.returncode == 0, res.stderr
    assert chosen is not None and (rd / "trials" / str(chosen.trial) / "weights.safetensors").exists()
    if not any(t.state == "COMPLETE" for t in search.trials):
        assert chosen.how.startswith("cut by the deadline after ")
    assert (rd / "model" / "model.onnx").exists()


@pytest.mark.slow
def test_budget_is_respected(budget_run):
    rd, res = budget_run
    budget, wall = BUDGET_RUN_S, res["wall_s"]
    assert res["returncode"] == 0, res["stderr"]
    card = json.loads((rd / "model" / "card.json").read_text())
    assert card["elapsed_s"] <= budget * 1.1
    # plus interpreter start-up before the clock starts (seconds idle, more on a busy machine)
    assert wall <= budget * 1.1 + max(3.0, res["startup_s"])


def test_user_csv_and_image_folder_run_and_predict(tmp_path):
    """User data in both file forms: run, then predict on new files."""
    rng = np.random.default_rng(0)
    # A table: three Gaussian blobs, string labels.
    centers = {"red": (0, 0, 0), "green": (4, 4, 0), "blue": (0, 4, 4)}
    lines = ["f1,f2,f3,colour"]
    for name, c in centers.items():
        for _ in range(40):
            lines.append(",".join(f"{v + rng.normal(0, 0.5):.4f}" for v in c) + f",{name}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    res = run_cli("run", tmp_path / "t.csv", "--label", "colour", "--trials", "1", "--cv", "0", "--runs-dir", tmp_path / "runs",
                  "--name", "csv", "--quiet", "--workers", "1", "--no-compress")
    assert res.returncode == 0, res.stderr
    card = json.loads((tmp_path / "runs" / "csv" / "model" / "card.json").read_text())
    assert card["kind"] == "table" and sorted(card["classes"]) == ["blue", "green", "red"]
    assert card["test_accuracy"] >= 0.9
    (tmp_path / "new.csv").write_text("f1,f2,f3\n0.1,0.2,-0.1\n4.1,3.9,0.2\n")
    res = run_cli("predict", tmp_path / "runs" / "csv", tmp_path / "new.csv")
    assert res.returncode == 0, res.stderr
    rows = res.stdout.strip().splitlines()[1:]
    assert [r.split(",")[1] for r in rows] == ["red", "green"]

    # Images: bright squares on the left vs on the right, colour PNGs.
    from PIL import Image

    for cls, col in (("left", slice(0, 6)), ("right", slice(6, 12))):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(15):
            a = rng.integers(0, 60, (12, 12, 3)).astype(np.uint8)
            a[:, col] = 220
            Image.fromarray(a).save(tmp_path / "img" / cls / f"{i}.png")
    res = run_cli("run", tmp_path / "img", "--trials", "1", "--cv", "0", "--runs-dir", tmp_path / "runs", "--name", "img", "--quiet",
                  "--workers", "1", "--no-compress")
    assert res.returncode == 0, res.stderr
    card = json.loads((tmp_path / "runs" / "img" / "model" / "card.json").read_text())
    assert card["kind"] == "image" and card["input_shape"] == [3, 12, 12]
    assert card["onnx_parity"]["passed"]
    res = run_cli("predict", tmp_path / "runs" / "img", tmp_path / "img" / "right", "--out", tmp_path / "p.json")
    assert res.returncode == 0, res.stderr
    preds = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert len(preds) == 15 and sum(p["class"] == "right" for p in preds) >= 13


def test_doctor_error_stops_the_run_unless_forced(tmp_path):
    """All-zero inputs: the pre-flight says so, and no run directory is made."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "zeros.npz", X=np.zeros((60, 5), np.float32), y=rng.integers(0, 2, 60))
    runs = tmp_path / "runs"
    res = run_cli("run", tmp_path / "zeros.npz", "--trials", "1", "--runs-dir", runs, "--quiet", "--workers", "1")
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the doctor found errors") and "constant-inputs" in last
    assert "Traceback" not in res.stderr
    assert not runs.exists() or not any(runs.iterdir())

    res = run_cli("run", tmp_path / "zeros.npz", "--trials", "1", "--runs-dir", runs, "--name", "z", "--quiet",
                  "--workers", "1", "--force", "--no-compress", "--cv", "0")
    assert res.returncode == 0, res.stderr
    doctor = json.loads((runs / "z" / "doctor.json").read_text())
    assert any(f["id"] == "constant-inputs" and f["severity"] == "error" for f in doctor["findings"])
    assert "constant-inputs" in (runs / "z" / "report.html").read_text()
    assert (runs / "z" / "trials" / "0" / "doctor.json").exists()


def test_doctor_command(tmp_path):
    res = run_cli("doctor", "digits", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert not [f for f in report["findings"] if f["severity"] in ("warn", "error")]
    assert {c["id"] for c in report["checks"]} >= {"batch-mixing", "cannot-overfit", "no-signal"}

    ds = load("digits")
    X = ds.X.copy()
    X[:] = 0.0
    np.savez(tmp_path / "blank.npz", X=X, y=ds.y)
    res = run_cli("doctor", tmp_path / "blank.npz")
    assert res.returncode == 1
    assert "constant-inputs" in res.stderr


def test_any_optuna_storage_url(tmp_path):
    """--storage takes an Optuna URL (here SQLite) instead of the journal file."""
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0, 1, (30, 4)), rng.normal(3, 1, (30, 4))]).astype(np.float32)
    y = np.repeat([0, 1], 30)
    np.savez(tmp_path / "blobs.npz", X=X, y=y)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    res = run_cli("run", tmp_path / "blobs.npz", "--trials", "2", "--storage", url, "--runs-dir", tmp_path / "runs",
                  "--name", "s", "--quiet", "--workers", "1", "--no-compress", "--no-doctor", "--cv", "0", "--no-fusion")
    assert res.returncode == 0, res.stderr
    study = optuna.load_study(study_name=None, storage=url)  # the one study in this database (named after the run)
    assert len([t for t in study.trials if t.state.is_finished()]) == 2  # enqueued first points may wait unrun
    assert not (tmp_path / "runs" / "s" / "study" / "journal.log").exists()
    res = run_cli("report", tmp_path / "runs" / "s")
    assert res.returncode == 0 and (tmp_path / "runs" / "s" / "report.html").exists()
