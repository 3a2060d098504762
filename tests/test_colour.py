"""Colour photos end to end, as users bring them: a folder of PNG sub-folders
in, then `run`, `predict` on a folder, `serve` with a base64 PNG, and ONNX
parity. The images are made by the test (coloured shapes on textured
backgrounds), so nothing is downloaded."""
from __future__ import annotations

import base64
import csv
import subprocess
import sys

import numpy as np
import pytest

import autopilot
from autopilot.data.synthetic import CLASSES, write_folder
from autopilot.rundir import read_json
from autopilot.serve.client import ServerProcess

# budget: the run's accuracy is what 60 s of CPU buy, so make test runs this
# file in its one-process phase (where its module-scoped run is trained once).
pytestmark = [pytest.mark.slow, pytest.mark.budget]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("photos") / "shapes", n=1200, size=32, seed=0)


@pytest.fixture(scope="module")
def colour_run(photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return autopilot.run(str(photos), budget="60s", runs_dir=root, name="shapes", quiet=True, workers=1)


def test_a_colour_folder_trains_and_exports_with_parity(colour_run):
    info = read_json(colour_run.run_json)
    assert info["data"]["input_shape"] == [3, 32, 32]
    assert info["data"]["classes"] == sorted(CLASSES)
    card = read_json(colour_run.model_dir / "card.json")
    assert card["onnx_parity"]["passed"], card["onnx_parity"]
    assert card["test_accuracy"] > 0.5, card["test_accuracy"]  # ten classes: chance is 0.1
    # The first trial is the photo default: a small CNN trained with crop+flip, flips kept by the doctor.
    first = read_json(colour_run.trial_dir(0) / "config.json")
    assert first["hparams"]["aug_policy"] == "cropflip", first["hparams"]
    assert "hflip" not in info["augment_exclude"], info["augment_exclude"]


def test_predict_on_a_folder_of_photos(colour_run, photos, tmp_path):
    new = write_folder(tmp_path / "new", n=30, size=32, seed=7)
    out = tmp_path / "pred.csv"
    done = subprocess.run([sys.executable, "-m", "autopilot", "predict", str(colour_run.path), str(new), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 30
    truth = {p.name: p.parent.name for p in new.rglob("*.png")}
    right = 0
    for row in rows:
        right += row["class"] == truth[row["id"].replace("\\", "/").rsplit("/", 1)[-1]]
    assert right / len(rows) > 0.5, rows[:3]


def test_serve_answers_a_base64_png_like_predict(colour_run, photos):
    from PIL import Image

    from autopilot.predict import predict

    png = next((photos / "triangle-up").glob("*.png"))
    x = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
    want_class = int(predict(colour_run.path, x)[0][0])
    body = {"inputs": [base64.b64encode(png.read_bytes()).decode()]}
    with ServerProcess(colour_run.path) as server:
        status, answer = server.post("/v1/predict", body)
        bad_status, bad = server.post("/v1/predict", {"inputs": [base64.b64encode(b"not a png").decode()]})
    assert status == 200, answer
    got = answer["predictions"][0]
    classes = read_json(colour_run.model_dir / "card.json")["classes"]
    assert got["class"] in (want_class, classes[want_class]), (got, want_class)
    assert bad_status == 400 and "PNG" in str(bad)
