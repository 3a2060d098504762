"""The final stage's gates and the model card: what ships is what the card,
the CLI and `predict` say ships."""
import copy
import json

import numpy as np
import pytest
import torch

import autopilot.final
from autopilot.cli import main
from autopilot.export import export_onnx
from autopilot.predict import predict
from autopilot.registry.versions import shipped_onnx
from autopilot.rundata import load_run_data
from autopilot.rundir import RunDir
from autopilot.schemas import read
from autopilot.schemas.card import ModelCard
from autopilot.schemas.compress import CompressResults

from .conftest import run_cli
from .finished_run import finished_run

SHIPPED_FIELDS = ("name", "file", "test_accuracy", "test_accuracy_se", "val_accuracy", "latency_ms_batch1")


def export_a_different_model(model, input_shape, path):
    """A real ONNX export of a model that is not the one given: its output
    bias is shifted, so many predicted classes change. This is what a broken
    exporter looks like to the parity check, planted without touching it."""
    other = copy.deepcopy(model).eval()
    with torch.no_grad():
        bias = list(other.parameters())[-1]
        bias.add_(torch.linspace(-4.0, 4.0, bias.numel()))
    return export_onnx(other, input_shape, path)


@pytest.fixture
def images_npz(tmp_path):
    """Three separable classes of 8x8 one-channel images: the default CNN
    trains in seconds. Images, not a table: a table's first trial is boosted
    trees, whose export does not go through `export_onnx`."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 450)
    X = (rng.uniform(0.0, 0.5, size=(450, 1, 8, 8)) + 0.5 * np.eye(3, 64).reshape(3, 1, 8, 8)[y]).astype(np.float32)
    path = tmp_path / "blobs.npz"
    np.savez(path, X=X, y=y)
    return path


def _run(images_npz, runs, name, *extra):
    return main(["run", str(images_npz), "--trials", "1", "--cv", "0", "--workers", "1", "--no-doctor", "--no-compress", "--quiet",
                 "--runs-dir", str(runs), "--name", name, *extra])


def test_parity_failure_stops_shipping_unless_forced(images_npz, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    monkeypatch.setattr(autopilot.final, "export_onnx", export_a_different_model)

    assert _run(images_npz, runs, "p") == 2
    out, err = capsys.readouterr()
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ONNX parity failed: on ") and "the model was not shipped" in last
    assert "--force" in last and "Traceback" not in err
    assert not out.strip()  # no closing lines claiming a model
    rd = RunDir(runs / "p")
    assert not rd.model_dir.exists() and not (rd.path / "compress").exists() and not (rd.path / ".model.tmp").exists()
    assert json.loads(rd.run_json.read_text())["status"] == "failed"
    assert run_cli("predict", rd.path, images_npz).returncode != 0  # nothing to serve

    assert _run(images_npz, runs, "f", "--force") == 0
    out, err = capsys.readouterr()
    assert "shipping it anyway (--force)" in err
    rd = RunDir(runs / "f")
    card = read(ModelCard, rd.path)
    assert not card.onnx_parity.passed and card.onnx_parity.forced
    assert card.onnx_parity.argmax_agree < 1.0 and card.onnx_parity.max_abs_diff > card.onnx_parity.max_abs_diff_limit
    assert card.shipped.file == "model/model.onnx" and "FAILED parity" in card.shipped.reason
    assert "WARNING: the ONNX export failed its parity check" in out
    # The card tells the truth about the file that ships: its own accuracy,
    # not the PyTorch model's.
    _, _, data, _ = load_run_data(rd)
    pred, _ = predict(rd.path, data["test"][0])
    onnx_acc = float((pred == data["test"][1]).mean())
    assert card.shipped.test_accuracy == pytest.approx(onnx_acc, abs=1e-12)
    assert card.shipped.test_accuracy < card.test_accuracy - 0.05


def test_card_and_closing_lines_describe_the_shipped_model(tmp_path):
    rd, ds, data, info = finished_run(tmp_path / "runs", "c")
    card = read(ModelCard, rd.path)  # the writer's own schema
    raw = json.loads((rd.model_dir / "card.json").read_text())
    assert all(raw["shipped"][k] is not None for k in SHIPPED_FIELDS)
    # Before compression the fp32 export ships, measured as it runs.
    assert card.shipped.name == "fp32" and card.shipped.chosen_by == "final"
    assert rd.path / card.shipped.file == shipped_onnx(rd.path) == rd.model_dir / "model.onnx"
    assert card.onnx_parity.passed and not card.onnx_parity.forced
    assert card.selection.trial == card.best_trial == 0 and card.selection.how == "complete"
    assert card.shipped.test_examples == card.test_examples == len(data["test"][1])
    assert card.shipped.test_accuracy == pytest.approx(card.test_accuracy)  # parity passed: same predictions
    assert card.shipped.test_accuracy_se == pytest.approx(
        (card.shipped.test_accuracy * (1 - card.shipped.test_accuracy) / card.test_examples) ** 0.5)
    assert 0 < card.shipped.latency_ms_batch1 < 50

    # `autopilot compress` on size with a 3-point limit (269 validation
    # examples bound even a perfect match at 1.36 points, so the run's own
    # half point would keep fp32): int8 halves an MLP's file, so a compressed
    # file ships.
    res = run_cli("compress", rd.path, "--budget", "15s", "--target", "size", "--max-drop", "3")
    assert res.returncode == 0, res.stderr
    results = read(CompressResults, rd.path)
    assert results.max_drop == 3.0 and results.chosen != "fp32"
    card = read(ModelCard, rd.path)
    chosen = results.chosen_candidate
    assert card.shipped.name == chosen.name and card.shipped.file == "compress/chosen.onnx"
    assert rd.path / card.shipped.file == shipped_onnx(rd.path)
    assert (card.shipped.test_accuracy, card.shipped.val_accuracy) == (chosen.test_acc, chosen.val_acc)
    assert card.fp32.test_accuracy == results.candidate("fp32").test_acc
    pred, _ = predict(rd.path, data["test"][0])
    assert float((pred == data["test"][1]).mean()) == pytest.approx(card.shipped.test_accuracy, abs=1e-12)
    lines = res.stdout.splitlines()
    s = card.shipped
    assert lines[0] == (f"shipped: {s.name} (compress/chosen.onnx): test accuracy {s.test_accuracy:.4f} ± "
                        f"{s.test_accuracy_se:.4f}, val {s.val_accuracy:.4f}, batch-1 p50 {s.latency_ms_batch1:.3f} ms, "
                        f"{s.file_bytes / 1024:.0f} KiB")
    assert lines[1].startswith(f"fp32:    model/model.onnx: test accuracy {card.fp32.test_accuracy:.4f}")
    assert any(line.startswith("why:     ") and "upper bound" in line for line in lines)


def test_a_chance_level_model_has_not_learnt_anything():
    from autopilot.data import load, split
    from autopilot.final import learnt_something, majority_share

    ds = load("digits")
    yv = ds.y[split(ds.y, seed=0)["val"]]
    assert 0.09 < majority_share(yv) < 0.12  # ten balanced classes
    assert not learnt_something(0.10, yv)  # the 40 s run under load that shipped 0.10
    assert not learnt_something(majority_share(yv) + 0.05, yv)
    assert learnt_something(0.9, yv)
