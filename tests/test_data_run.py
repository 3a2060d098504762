"""The new data options through the real command: --test-split official and
--layout, and their one-line errors (exit 2, no run directory left behind)."""
from __future__ import annotations

import json

import numpy as np

from tests.conftest import run_cli
from tests.test_data_formats import cifar10_folder


def one_line_error(res, *parts):
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


def test_run_cifar_with_its_official_test_split(tmp_path):
    cifar10_folder(tmp_path / "cifar-10-batches-bin", per_batch=30, batches=2, n_test=20)
    runs = tmp_path / "runs"
    # The splits are the subject: one worker, one trial, no fusion (its student alone trained 16 s).
    res = run_cli("run", tmp_path / "cifar-10-batches-bin", "--test-split", "official", "--trials", "1", "--cv", "0",
                  "--no-compress", "--no-doctor", "--no-fusion", "--workers", "1", "--runs-dir", runs, "--name", "c",
                  "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    with np.load(runs / "c" / "data" / "splits.npz") as z:
        assert z["test"].tolist() == list(range(60, 80))  # test_batch.bin, exactly
        assert len(z["val"]) == 10 and len(z["train"]) == 50  # val: 15 % of the rest, one per class
    info = json.loads((runs / "c" / "run.json").read_text())
    assert info["config"]["test_split"] == "official"
    assert info["data"]["input_shape"] == [3, 32, 32] and info["data"]["classes"][0] == "airplane"


def test_run_refuses_official_split_without_one_and_ambiguous_layout(tmp_path):
    runs = tmp_path / "runs"
    res = run_cli("run", "digits", "--test-split", "official", "--trials", "1", "--runs-dir", runs)
    one_line_error(res, "no official test split")
    p = tmp_path / "odd.npz"
    np.savez(p, X=np.zeros((9, 3, 8, 3), np.uint8), y=np.repeat([0, 1, 2], 3))
    res = run_cli("run", p, "--trials", "1", "--runs-dir", runs)
    one_line_error(res, str(p), "--layout nhwc", "--layout nchw")
    pk = tmp_path / "cifar-10-batches-py"
    pk.mkdir()
    (pk / "data_batch_1").write_bytes(b"\x80\x04.")
    res = run_cli("run", pk, "--trials", "1", "--runs-dir", runs)
    one_line_error(res, "pickle", "data_batch_1.bin")
    assert not runs.exists() or not any(runs.iterdir())
