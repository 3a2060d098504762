"""The gate slice: after the winner is retrained on train+validation, the
compression gate and the fusion choice judge on validation examples no
judged model trained on (data/gate.py)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from autopilot.compress.policy import keeps_accuracy
from autopilot.data import load, split
from autopilot.data.gate import GATE_FILE, check_split, gate_split, gated, load_gate, pooled
from autopilot.data.stats import arrays, data_info
from autopilot.models import build_model
from autopilot.search import space
from autopilot.stats import paired
from autopilot.train import train

from .finished_run import SMALL_MLP, quiet_console


def test_the_gate_is_a_stratified_seeded_part_of_validation():
    y = np.repeat(np.arange(5), [40, 30, 20, 3, 2])
    gate, rest = gate_split(y, 0.5, seed=3)
    assert len(np.intersect1d(gate, rest)) == 0 and np.array_equal(np.union1d(gate, rest), np.arange(len(y)))
    for c, n in enumerate([40, 30, 20, 3, 2]):  # about half of every class, and every class on both sides
        g, r = (y[gate] == c).sum(), (y[rest] == c).sum()
        assert g >= 1 and r >= 1 and abs(g - n / 2) <= 1
    again, _ = gate_split(y, 0.5, seed=3)
    other, _ = gate_split(y, 0.5, seed=4)
    assert np.array_equal(gate, again) and not np.array_equal(gate, other)


def test_the_gated_view_trains_on_everything_but_the_gate():
    """Each example's feature is its own index: what the later stages train
    on and what they judge on must not share one."""
    y = np.arange(100) % 4
    X = np.arange(100, dtype=np.float32)[:, None]
    data = {"train": (X[:60], y[:60]), "val": (X[60:85], y[60:85]), "test": (X[85:], y[85:])}
    gate, rest = gate_split(data["val"][1], 0.5, seed=0)
    view = gated(data, gate)
    trained, judged = view["train"][0][:, 0], view["val"][0][:, 0]
    assert len(np.intersect1d(trained, judged)) == 0
    assert np.array_equal(np.sort(np.concatenate([trained, judged])), np.arange(85))
    assert np.array_equal(view["train"][0], pooled(data, rest)[0])  # the folds' and the retraining's examples
    assert len(np.intersect1d(view["check"][0][:, 0], judged)) == 0  # a stage's own epoch checks: training data
    assert view["test"] is data["test"] and gated(view, gate) is view


def test_without_a_gate_the_epoch_checks_are_training_data_too():
    """--cv 0 (or a finalists stage that fell back): validation judges the
    compression candidates, so their trainings pick best epochs elsewhere."""
    y = np.arange(100) % 4
    X = np.arange(100, dtype=np.float32)[:, None]
    data = {"train": (X[:60], y[:60]), "val": (X[60:85], y[60:85]), "test": (X[85:], y[85:])}
    checked = check_split(data)[0][:, 0]
    assert len(checked) > 0 and set(checked) <= set(range(60))


def test_a_candidate_that_lost_accuracy_on_unseen_data_is_refused_on_the_gate():
    """The failure the gate fixes: the shipped model was retrained on
    validation, so a candidate that merely remembers those examples looked
    lossless there. Judged on the gate, the same candidate is refused."""
    torch.set_num_threads(1)
    ds = load("digits")
    data = arrays(ds, split(ds.y, seed=0))
    info = data_info(ds, split(ds.y, seed=0))
    gate, rest = gate_split(data["val"][1], 0.5, seed=0)
    view = gated(data, gate)
    spec, hp = space.to_config({**space.default_params(info), **SMALL_MLP, "epochs": 8}, info)
    torch.manual_seed(0)
    shipped = build_model(spec)
    train(shipped, view["train"], view["check"], hp, kind="image", seed=0, device="cpu")  # train + val outside the gate
    shipped.eval()

    def correct_shipped(X, y):
        with torch.no_grad():
            return shipped(torch.as_tensor(X)).argmax(1).numpy() == y

    # The candidate: right on every example it trained on (the retraining's
    # data, as a fine-tuned student of that model would be), wrong elsewhere.
    seen = {x.tobytes() for x in view["train"][0]}

    def correct_candidate(X, y):
        return np.array([x.tobytes() in seen for x in X])

    max_drop = 5.0  # points: ~135 examples on each side cannot vouch for less, even with no disagreement
    old_val = data["val"][0][rest], data["val"][1][rest]  # validation the shipped model trained on: the blind gate
    before = {"val_paired": paired(correct_shipped(*old_val), correct_candidate(*old_val)).to_dict()}
    assert keeps_accuracy(before, max_drop)
    judged = view["val"]
    after = {"val_paired": paired(correct_shipped(*judged), correct_candidate(*judged)).to_dict()}
    assert correct_shipped(*judged).mean() > 0.8  # the shipped model generalises to the gate
    assert not keeps_accuracy(after, max_drop)


@pytest.mark.slow
def test_after_the_retraining_compression_and_fusion_judge_on_the_gate(tmp_path):
    """A real search, cross-validated finalists, the winner retrained; then
    compression and fusion: both judge on the gate, fusion's ensemble is a
    bag of the finalists' fold models selected on out-of-fold predictions,
    and its one ONNX graph passes parity."""
    from autopilot.compress import compress_run
    from autopilot.final import finalize
    from autopilot.fusion.stage import fuse_run
    from autopilot.schemas.card import read_card
    from autopilot.schemas.compress import CompressResults
    from autopilot.schemas import read
    from autopilot.schemas.fusion import read_fusion

    from .test_finalists import searched

    rd, ds, data, info, cfg, study = searched(tmp_path, "gate", cv=2, finalists=2)
    card = finalize(rd, study, ds, data, info, cfg, started=time.time(), console=quiet_console())
    gate = load_gate(rd.data_dir)
    assert (rd.data_dir / GATE_FILE).exists() and card.cv.retrained
    n_val = len(data["val"][1])
    assert card.cv.gate_examples == len(gate) and 0.4 * n_val <= len(gate) <= 0.6 * n_val
    assert card.cv.examples == len(data["train"][1]) + n_val - len(gate)  # the folds and the retraining left it out
    assert any("gate slice" in n for n in card.cv.notes)

    compress_run(rd.path, budget_s=12, data=data, console=quiet_console())
    comp = read(CompressResults, rd.path)
    assert all(c.val_paired.n == len(gate) for c in comp.candidates)
    assert "gate slice" in comp.measurement.accuracy

    fuse_run(rd.path, budget_s=15, ship="accurate", max_drop=0.5, data=data, console=quiet_console())
    res = read_fusion(rd.path)
    assert res.selection.pool == "mixed" and "out-of-fold" in res.selection.selected_on
    assert f"{n_val - len(gate)} validation examples outside the gate" in res.selection.selected_on
    assert res.judged_on.startswith("the gate slice") and str(len(gate)) in res.judged_on
    bags = {p.trial for p in res.pool if p.models == 2}  # each finalist's 2 fold models
    assert bags == {f.trial for f in card.cv.finalists}
    siblings = [f"fusion/{f.name}" for f in sorted((rd.path / "fusion").glob("sibling*"))]
    shipped = f"trial {card.best_trial}"
    assert sum(m.models for m in res.selection.members) >= 2 and any(m.name == shipped for m in res.selection.members)
    for m in res.selection.members:  # a bag: 2 fold models; the shipped trial: the shipped model and its siblings
        assert m.models == (2 if m.name.startswith("bag") else 1 + len(siblings) if m.name == shipped else 1)
    # The runner-up was retrained on train+validation too (no time limit here).
    runner_up = next(f.trial for f in card.cv.finalists if not f.won)
    assert (rd.path / "finalists" / str(runner_up) / "full" / "weights.safetensors").exists()
    refits = {card.best_trial: "model", runner_up: f"finalists/{runner_up}/full"}
    for m in res.selection.members:  # the retrained models stand in for their own trials; other trials are themselves
        if m.name.startswith("trial"):
            assert m.files == [refits.get(m.trial, f"trials/{m.trial}"), *(siblings if m.name == shipped else [])]
    assert res.candidate("ensemble").parity.passed
    final = read_card(rd.path)
    assert final.ensemble is not None and final.ensemble.members == [m.trial for m in res.selection.members]
    chosen = res.candidate(res.chosen)  # --ship accurate: nothing less accurate on the gate
    assert all(chosen.val_acc >= c.val_acc for c in res.candidates if c.name != "fp32")
