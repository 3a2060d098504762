"""Image folders: uint8 decoding in a process pool, the on-disk cache and when
it is rebuilt. Real PNG files in tmp_path."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from autopilot.data import DataError, load
from autopilot.data import folder as folder_mod
from autopilot.data.folder import read_image_folder


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def photos(root, per=6, size=(9, 7), grey_class=None, seed=0):
    rng = np.random.default_rng(seed)
    for c in ("a", "b", "c"):
        for i in range(per):
            shape = size if c == grey_class else (*size, 3)
            save_png(root / c / f"{i:03d}.png", rng.integers(0, 256, shape))
    return root


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPILOT_CACHE", str(tmp_path / "cache"))
    root = photos(tmp_path / "imgs")
    first = read_image_folder(root)
    assert not first.from_cache and first.cache_file.parent == tmp_path / "cache" / "images"
    assert first.pixels.dtype == np.uint8 and first.pixels.shape == (18, 3, 9, 7)
    second = read_image_folder(root)
    assert second.from_cache and np.array_equal(second.pixels, first.pixels)
    assert np.array_equal(second.y, first.y)
    # The Dataset is the same whether decoded or read from the cache.
    ds = load(str(root))
    ref = np.asarray(Image.open(root / "a" / "000.png")).transpose(2, 0, 1)
    assert ds.X.dtype == np.uint8 and np.array_equal(ds.X[0], ref)


def test_cache_is_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPILOT_CACHE", str(tmp_path / "cache"))
    root = photos(tmp_path / "imgs")
    before = read_image_folder(root)
    target = root / "b" / "002.png"
    save_png(target, np.zeros((9, 7, 3)))
    os.utime(target, ns=(1, 1))  # a different mtime even on a coarse clock
    after = read_image_folder(root)
    assert not after.from_cache and after.cache_file != before.cache_file
    assert after.pixels[8].max() == 0 and before.pixels[8].max() > 0
    assert not before.cache_file.exists()  # one cache file per folder: the old state is gone
    (root / "c" / "005.png").unlink()  # a removed file changes the key too
    assert len(read_image_folder(root).y) == 17
    assert len(list((tmp_path / "cache" / "images").iterdir())) == 1


def test_process_pool_gives_the_same_pixels_as_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPILOT_CACHE", str(tmp_path / "cache"))
    root = photos(tmp_path / "imgs", per=40, grey_class="a")  # grey first, colour later: switches to RGB
    serial = read_image_folder(root, use_cache=False)
    monkeypatch.setattr(folder_mod, "PARALLEL_MIN_FILES", 10)
    monkeypatch.setattr(folder_mod, "CHUNK_FILES", 16)
    assert folder_mod._workers(120) >= min(2, os.cpu_count() or 1)
    # a few large photos count like many thumbnails
    assert folder_mod._workers(3, 0) == 1 and folder_mod._workers(3, folder_mod.PARALLEL_MIN_BYTES) == folder_mod._workers(120)
    pooled = read_image_folder(root, use_cache=False)
    assert pooled.pixels.shape == (120, 3, 9, 7)
    assert np.array_equal(pooled.pixels, serial.pixels) and np.array_equal(pooled.y, serial.y)
    grey = pooled.pixels[:40]  # grey images: one plane repeated in R, G and B
    assert np.array_equal(grey[:, 0], grey[:, 2])


def test_grey_folder_stays_one_channel_and_bad_files_in_the_pool(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPILOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(folder_mod, "PARALLEL_MIN_FILES", 10)
    monkeypatch.setattr(folder_mod, "CHUNK_FILES", 8)
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for c in ("x", "y"):
        for i in range(12):
            save_png(root / c / f"{i:02d}.png", rng.integers(0, 256, (6, 6)))
    broken = root / "y" / "05.png"
    broken.write_bytes(broken.read_bytes()[:40])  # header fine, pixels cut off
    with pytest.raises(DataError, match="05.png.*--skip-bad"):
        read_image_folder(root)
    got = read_image_folder(root, skip_bad=True)
    assert got.pixels.shape == (23, 1, 6, 6) and got.skipped == [str(broken)]
    cached = read_image_folder(root, skip_bad=True)
    assert cached.from_cache and cached.skipped == [str(broken)]
    assert load(str(root), skip_bad=True).skipped == [str(broken)]


def test_unreadable_cache_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPILOT_CACHE", str(tmp_path / "cache"))
    root = photos(tmp_path / "imgs")
    first = read_image_folder(root)
    first.cache_file.write_bytes(b"not an npz")
    again = read_image_folder(root)
    assert not again.from_cache and np.array_equal(again.pixels, first.pixels)
    assert read_image_folder(root).from_cache


def test_second_load_reads_the_cache_and_decodes_no_image(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPILOT_CACHE", str(tmp_path / "cache"))
    root = photos(tmp_path / "imgs", per=100, size=(12, 10))
    first = load(str(root))
    read = []
    real_read = folder_mod.read_npz
    monkeypatch.setattr(folder_mod, "read_npz", lambda p: read.append(p) or real_read(p))

    def no_decoding(*_a, **_k):
        raise AssertionError("an image was decoded although the cache is valid")

    monkeypatch.setattr(folder_mod, "decode", no_decoding)
    monkeypatch.setattr(folder_mod, "_read_sizes", no_decoding)
    second = load(str(root))
    assert read and read[0].parent == tmp_path / "cache" / "images"
    assert np.array_equal(second.X, first.X) and second.fingerprint() == first.fingerprint()


def test_loaded_folder_is_held_at_its_uint8_size(tmp_path, monkeypatch):
    import tracemalloc

    monkeypatch.setenv("AUTOPILOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(folder_mod, "CHUNK_FILES", 32)  # a chunk is a small part of the folder, as at scale
    load(str(photos(tmp_path / "warm", per=3)))  # first-call imports are not the data's memory
    root = photos(tmp_path / "imgs", per=100, size=(64, 64))
    uint8_bytes = 300 * 3 * 64 * 64

    def peak_of(fn):
        tracemalloc.start()
        try:
            out = fn()
            return out, tracemalloc.get_traced_memory()[1] / uint8_bytes
        finally:
            tracemalloc.stop()

    # Decoding: the uint8 array, a grey plane until the first colour image, one chunk (float32 alone would be 4x).
    got, peak = peak_of(lambda: read_image_folder(root, use_cache=False))
    assert got.pixels.nbytes == uint8_bytes and peak < 1.6, peak
    load(str(root))  # writes the cache (np.savez copies at most 16 MB at a time: here all of it)
    ds, peak = peak_of(lambda: load(str(root)))
    assert ds.X.dtype == np.uint8 and ds.X.nbytes == uint8_bytes
    assert peak < 1.3, peak  # the cache is read into the data set's own array: no second copy


def test_uint8_pixels_reach_every_stage_as_the_floats_the_onnx_file_takes(tmp_path, monkeypatch):
    """From the loader to training, export, compression (int8 calibration,
    fine-tuning), prediction and the drift reference: the splits stay uint8
    and each stage that feeds a model must give it pixel / 255, as the
    server does. Unscaled pixels anywhere show as lost accuracy, failed
    parity or drift features above 1."""
    from autopilot.compress import compress_run
    from autopilot.data.dataset import as_float
    from autopilot.monitor.reference import build_reference
    from autopilot.predict import predict
    from tests.finished_run import finished_run, quiet_console

    monkeypatch.setenv("AUTOPILOT_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "green", "blue")):  # the bright channel is the class
        for i in range(40):
            a = rng.integers(0, 90, (8, 8, 3))
            a[..., c] += 150
            save_png(tmp_path / "rgb" / name / f"{i:02d}.png", a)
    rd, ds, data, info = finished_run(tmp_path / "runs", "rgb", data=str(tmp_path / "rgb"))
    assert ds.X.dtype == np.uint8 and all(X.dtype == np.uint8 for X, _ in data.values())
    assert all(0 < m < 1 for m in info["mean"])  # statistics on the float scale the model normalises with
    card = json.loads((rd.model_dir / "card.json").read_text())
    assert card["onnx_parity"]["passed"] and card["test_accuracy"] >= 0.9, card["test_accuracy"]

    res = compress_run(rd.path, budget_s=15, target="size", max_drop=5.0, data=data, console=quiet_console())
    int8 = [c for c in res["candidates"] if c["method"].startswith("int8")]
    assert int8 and all(c["test_acc"] >= 0.9 and c["parity"]["passed"] for c in int8), res["candidates"]
    card = json.loads((rd.model_dir / "card.json").read_text())
    pred, _ = predict(rd.path, as_float(data["test"][0]))  # what predict and serve are given: floats
    assert float((pred == data["test"][1]).mean()) == pytest.approx(card["shipped"]["test_accuracy"], abs=0.05)

    ref = build_reference(rd.path, data=data, write=False)
    assert 0 <= min(ref["features"]["mean"]) and max(ref["features"]["mean"]) <= 1
    assert ref["predictions"]["accuracy"] >= 0.9


def test_first_load_of_a_large_folder_shows_a_progress_bar_and_the_second_none(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOPILOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(folder_mod, "PARALLEL_MIN_FILES", 10)  # "large" from 10 files on
    monkeypatch.setattr(folder_mod, "CHUNK_FILES", 8)
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws its bar only on a terminal: be one
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    root = photos(tmp_path / "imgs", per=10)
    read_image_folder(root)
    err = capsys.readouterr().err
    assert "decoding at 9x7" in err and "30/30" in err and f"read 30 images from {root}" in err
    assert read_image_folder(root).from_cache
    assert "decoding" not in capsys.readouterr().err  # nothing decoded, nothing to show
