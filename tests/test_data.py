"""Data layer: built-ins, file loaders, every bad-input message, splits, profile,
prediction inputs and augmentation. Real files written to tmp_path, no mocks."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from autopilot.data import (
    BUILTINS, DataError, Dataset, load, load_splits, profile, read_inputs, save_splits, split, validate,
)
from autopilot.data.builtin import load_builtin
from autopilot.data.dataset import as_float


def raises(fn, *parts):
    """fn() must raise a one-line DataError whose message contains every part."""
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for part in parts:
        assert str(part) in msg, f"{part!r} not in {msg!r}"
    return msg


def write_csv(path, text):
    path.write_text(text)
    return str(path)


def table_csv(tmp_path, rows, header="a,b,label", name="t.csv"):
    return write_csv(tmp_path / name, header + "\n" + "\n".join(rows) + "\n")


def good_rows(classes=("x", "y"), per=3):
    return [f"{i},{i * 2},{c}" for c in classes for i in range(per)]


def save_png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode).save(path)


def image_folder(root, classes=("a", "b"), per=3, size=(10, 12), colour=False, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        for i in range(per):
            shape = (*size, 3) if colour else size
            save_png(root / c / f"{i}.png", rng.integers(0, 256, shape))
    return root


# ---------------------------------------------------------------- built-ins

def test_builtin_digits():
    ds = load("digits")
    assert (ds.kind, ds.X.shape, ds.X.dtype, ds.y.dtype) == ("image", (1797, 1, 8, 8), np.float32, np.int64)
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.X.min() == 0 and ds.X.max() == 1


def test_builtin_mnist1d_is_cached_and_keeps_global_rng(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPILOT_CACHE", str(tmp_path))
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    ds = load("mnist1d")
    assert (ds.kind, ds.X.shape, ds.X.dtype, ds.n_classes) == ("signal", (5000, 1, 40), np.float32, 10)
    assert np.bincount(ds.y).tolist() == [500] * 10
    assert (np.random.get_state()[1] == state).all(), "loading must not reseed numpy's global RNG"
    assert [p.name for p in tmp_path.iterdir()] == ["mnist1d-v1.npz"]  # no tmp file left behind
    t = time.perf_counter()
    again = load("mnist1d")
    assert time.perf_counter() - t < 1.0
    assert again.fingerprint() == ds.fingerprint()


def test_builtin_mnist5k(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPILOT_CACHE", str(tmp_path))
    ds = load("mnist5k")
    assert (ds.kind, ds.X.shape, ds.n_classes) == ("image", (5000, 1, 28, 28), 10)
    assert ds.X.dtype == np.uint8 and ds.X.min() == 0 and ds.X.max() == 255  # pixels: a quarter of float32


def test_unknown_builtin_and_missing_path(tmp_path):
    raises(lambda: load("nosuch"), "no such file or folder: nosuch", ", ".join(BUILTINS))
    raises(lambda: load_builtin("nosuch"), "nosuch", ", ".join(BUILTINS))
    missing = str(tmp_path / "gone.csv")
    raises(lambda: load(missing), f"no such file or folder: {missing}")


def test_unsupported_file_type(tmp_path):
    p = tmp_path / "data.txt"
    p.write_text("1,2,3\n")
    raises(lambda: load(str(p)), str(p), "'.txt'", ".csv", ".npz", "folder")


# ------------------------------------------------------------- image folders

def test_image_folder_grey(tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    sizes = {"cat": [(10, 12), (10, 12), (20, 24)], "dog": [(10, 12), (30, 36), (10, 12)]}
    for c, shapes in sizes.items():
        for i, s in enumerate(shapes):
            save_png(root / c / f"{i}.png", rng.integers(0, 256, s))
    (root / "cat" / ".hidden.png").write_bytes(b"not an image")  # ignored: hidden
    (root / "cat" / "notes.txt").write_text("ignored: not an image extension")
    (root / ".cache").mkdir()  # ignored: hidden folder, not a class
    ds = load(str(root))
    assert ds.classes == ["cat", "dog"] and ds.kind == "image"
    assert ds.X.shape == (6, 1, 10, 12)  # median size; grey -> 1 channel
    # an image already at the chosen size is read exactly (reference: Pillow)
    ref = np.asarray(Image.open(root / "cat" / "0.png"), dtype=np.float32) / 255
    assert np.allclose(as_float(ds.X)[0, 0], ref)
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1]


def test_image_folder_colour_and_modes(tmp_path):
    root = tmp_path / "imgs"
    image_folder(root, classes=("grey",), size=(100, 80))
    image_folder(root, classes=("colour",), size=(100, 80), colour=True)
    rgba = np.zeros((100, 80, 4), np.uint8)
    rgba[..., 0] = 255  # red, half of it transparent -> on white
    rgba[:50, :, 3] = 255
    save_png(root / "colour" / "rgba.png", rgba)
    Image.new("P", (100, 80), 3).save(root / "colour" / "palette.png")
    Image.fromarray(np.full((100, 80, 3), 200, np.uint8)).save(root / "grey" / "x.jpg", quality=95)
    Image.fromarray(np.full((100, 80), 40000, np.uint16)).save(root / "grey" / "deep.png")  # 16-bit
    ds = load(str(root))
    assert ds.classes == ["colour", "grey"]
    assert ds.X.shape == (10, 3, 64, 51)  # longest side capped at 64, aspect kept
    assert ds.X.dtype == np.uint8
    x = as_float(ds.X)
    i = ds.y.tolist().index(0) + 4  # colour/rgba.png (sorted after 0..2.png, palette.png)
    assert np.allclose(x[i, :, 5, 5], [1, 0, 0]) and np.allclose(x[i, :, 60, 5], [1, 1, 1])
    deep = x[-2]  # grey/deep.png (before x.jpg): 16-bit scaled, not clipped
    assert np.allclose(deep, 40000 / 65535, atol=1 / 255)


def test_empty_class_folder(tmp_path):
    root = image_folder(tmp_path / "imgs")
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("no images")
    raises(lambda: load(str(root)), "empty class folder", str(root / "empty"))


def test_folder_without_class_folders(tmp_path):
    save_png(tmp_path / "flat" / "0.png", np.zeros((4, 4)))
    raises(lambda: load(str(tmp_path / "flat")), "no class sub-folders")


def test_corrupt_image_and_skip_bad(tmp_path):
    root = image_folder(tmp_path / "imgs", per=4)
    bad = root / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    truncated = root / "b" / "cut.png"
    good = (root / "b" / "0.png").read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    raises(lambda: load(str(root)), str(bad), "--skip-bad")
    ds = load(str(root), skip_bad=True)
    assert sorted(ds.skipped) == sorted([str(bad), str(truncated)])
    assert len(ds) == 8
    # nothing readable left in a class: still an error, naming the class folder
    for p in (root / "a").iterdir():
        p.write_bytes(b"junk")
    raises(lambda: load(str(root), skip_bad=True), str(root / "a"))


# --------------------------------------------------------------------- CSV

def test_csv_roundtrip_string_and_int_labels(tmp_path):
    from autopilot.data.tables import prepare

    ds = load(table_csv(tmp_path, good_rows(("dog", "cat"))))
    assert (ds.kind, ds.task, ds.table.names, [c.type for c in ds.table.schema]) == \
        ("table", "classification", ["a", "b"], ["number", "number"])
    assert ds.classes == ["cat", "dog"]
    assert ds.y.tolist() == [1, 1, 1, 0, 0, 0]
    ready = prepare(ds, split(ds.y))  # the model input: fitted on the training rows
    assert (ready.X.shape, ready.X.dtype, ready.feature_names) == ((6, 2), np.float32, ["a", "b"])
    # integer labels sort numerically; the label column is found case-insensitively
    ds = load(table_csv(tmp_path, good_rows((10, 2)), header="a,b,Target"))
    assert ds.classes == ["2", "10"] and ds.y.tolist() == [1, 1, 1, 0, 0, 0]
    # an explicit --label, anywhere in the row
    ds = load(table_csv(tmp_path, [f"{c},{i}" for c in "pq" for i in range(3)], header="kind,v"), label="kind")
    assert ds.table.names == ["v"] and ds.classes == ["p", "q"]


def test_csv_without_label_column(tmp_path):
    p = table_csv(tmp_path, good_rows(), header="a,b,kind")
    raises(lambda: load(p), p, "--label")
    raises(lambda: load(p, label="nope"), p, "'nope'", "kind")


def test_csv_ragged_row(tmp_path):
    rows = good_rows()
    rows[2] = "1,2"  # file line 4
    p = table_csv(tmp_path, rows)
    raises(lambda: load(p), p, "line 4", "expected 3 fields, got 2")


def test_csv_text_and_empty_cells_are_data_not_errors(tmp_path):
    rows = good_rows()
    rows[4] = "1,abc,y"  # a word among numbers: the column holds categories
    rows[3] = ",3,y"  # an empty cell: missing, imputed later
    ds = load(table_csv(tmp_path, rows))
    assert [c.type for c in ds.table.schema] == ["number", "category"]
    assert ds.table.columns[0][3] is None and ds.table.schema[0].missing == 1


@pytest.mark.parametrize("value", ["inf", "-Infinity", "1e39"])  # "nan" is a missing cell
def test_csv_non_finite_feature(tmp_path, value):
    rows = good_rows()
    rows[1] = f"1,{value},x"  # line 3
    p = table_csv(tmp_path, rows)
    raises(lambda: load(p), p, "line 3", "column 'b'", "non-finite")


def test_csv_missing_label(tmp_path):
    for cell in ("", "NaN"):
        rows = good_rows()
        rows[3] = f"1,2,{cell}"  # line 5
        p = table_csv(tmp_path, rows)
        raises(lambda: load(p), p, "line 5", "missing label", "'label'")


def test_csv_empty_and_header_only(tmp_path):
    p = write_csv(tmp_path / "empty.csv", "")
    raises(lambda: load(p), f"empty CSV file: {p}")
    p = write_csv(tmp_path / "header.csv", "a,b,label\n\n")
    raises(lambda: load(p), p, "no data rows")


def test_fewer_than_two_classes(tmp_path):
    p = table_csv(tmp_path, good_rows(("only",)))
    raises(lambda: load(p), p, "fewer than 2 classes", "'only'")


def test_class_with_too_few_examples(tmp_path):
    rows = good_rows(("x",), per=5) + good_rows(("y",), per=2)
    p = table_csv(tmp_path, rows)
    raises(lambda: load(p), p, "class 'y' has 2", "at least 3")


# --------------------------------------------------------------------- NPZ

def test_npz_kinds_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 4)
    p = tmp_path / "t.npz"
    np.savez(p, X=rng.normal(size=(12, 5)), y=y)
    ds = load(str(p))
    assert (ds.kind, ds.X.shape, ds.classes) == ("table", (12, 5), ["0", "1", "2"])
    np.savez(p, X=rng.normal(size=(12, 2, 30)), y=np.array(["b", "a", "c"] * 4))
    ds = load(str(p))
    assert (ds.kind, ds.X.shape, ds.classes) == ("signal", (12, 2, 30), ["a", "b", "c"])
    pixels = rng.integers(0, 256, (12, 1, 6, 7), dtype=np.uint8)
    np.savez(p, X=pixels, y=y.astype(np.float64))  # float labels that are whole numbers are fine
    ds = load(str(p))
    assert (ds.kind, ds.X.shape) == ("image", (12, 1, 6, 7))
    assert ds.X.dtype == np.uint8 and np.array_equal(as_float(ds.X), pixels.astype(np.float32) / 255.0)


def test_npz_bad_inputs(tmp_path):
    p = tmp_path / "bad.npz"
    y = np.repeat([0, 1], 3)
    np.savez(p, X=np.zeros((6, 2)), y=np.arange(5))
    raises(lambda: load(str(p)), str(p), "X has 6 examples but y has 5 labels")
    np.savez(p, X=np.zeros(6), y=y)
    raises(lambda: load(str(p)), str(p), "shape (6,)")
    np.savez(p, X=np.zeros((6, 1, 2, 2, 2)), y=y)
    raises(lambda: load(str(p)), str(p), "shape (6, 1, 2, 2, 2)")
    np.savez(p, features=np.zeros((6, 2)), y=y)
    raises(lambda: load(str(p)), str(p), "'X' and 'y'", "features")
    np.savez(p, X=np.array([{"a": 1}] * 6, dtype=object), y=y)  # needs pickle: refused
    raises(lambda: load(str(p)), str(p), "'X'")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    raises(lambda: load(str(tmp_path / "junk.npz")), "junk.npz")


def test_npz_missing_label_and_non_finite(tmp_path):
    p = tmp_path / "bad.npz"
    yf = np.repeat([0.0, 1.0], 3)
    yf[3] = np.nan
    np.savez(p, X=np.zeros((6, 2)), y=yf)
    raises(lambda: load(str(p)), str(p), "missing label", "y[3]")
    ys = np.array(["a", "a", "a", "b", "", "b"])
    np.savez(p, X=np.zeros((6, 2)), y=ys)
    raises(lambda: load(str(p)), "missing label", "y[4]")
    x = np.zeros((6, 3))
    x[2, 1] = np.inf
    np.savez(p, X=x, y=np.repeat([0, 1], 3))
    raises(lambda: load(str(p)), str(p), "feature 1", "example 2")
    x = np.zeros((6, 2, 10))
    x[4, 1, 7] = np.nan
    np.savez(p, X=x, y=np.repeat([0, 1], 3))
    raises(lambda: load(str(p)), str(p), "example 4", "[1, 7]")


def test_validate_named_table_column():
    x = np.zeros((6, 2), np.float32)
    x[5, 1] = np.nan
    ds = Dataset("t", "table", x, np.repeat([0, 1], 3), ["a", "b"], feature_names=["age", "height"], source="mem")
    raises(lambda: validate(ds), "mem", "column 'height'", "example 5")


# ------------------------------------------------------------------- splits

def test_split_partitions_stratified_deterministic(tmp_path):
    y = np.repeat(np.arange(4), [100, 40, 7, 3])
    s = split(y, seed=1)
    all_idx = np.concatenate([s["train"], s["val"], s["test"]])
    assert np.array_equal(np.sort(all_idx), np.arange(len(y)))
    for part in s.values():
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)
        assert set(y[part]) == {0, 1, 2, 3}  # every class everywhere, even the class of 3
    assert np.bincount(y[s["val"]]).tolist()[:2] == [15, 6]  # 15 % of each class
    assert all(np.array_equal(s[k], split(y, seed=1)[k]) for k in s)
    assert not np.array_equal(s["val"], split(y, seed=2)["val"])
    save_splits(tmp_path / "d" / "splits.npz", s)
    back = load_splits(tmp_path / "d" / "splits.npz")
    assert all(np.array_equal(s[k], back[k]) and back[k].dtype == np.int64 for k in s)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 10])
def test_split_tiny_classes(n):
    y = np.repeat([0, 1], n)
    s = split(y, seed=0, val=0.2, test=0.2)
    for part in s.values():
        assert set(y[part]) == {0, 1}


# ------------------------------------------------------------------ profile

def test_profile_duplicates_leaks_and_features():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.repeat([0, 1], 10)
    x[1] = x[0]  # duplicate pair (both in train below)
    x[15], y[15] = x[2], 0  # a test example equal to a train example: leak
    x[12] = x[3]  # a val copy of a train example with another label: leak and conflict
    ds = Dataset("t", "table", x, y, ["a", "b"], feature_names=["u", "v"])
    splits = {"train": np.arange(10), "val": np.arange(10, 14), "test": np.arange(14, 20)}
    p = profile(ds, splits)
    json.dumps(p)
    assert p["train_duplicates"] == 1
    assert p["leaks"] == {"val": 1, "test": 1}
    assert p["conflicting_duplicates"] == 1
    assert p["splits"]["val"]["class_counts"] == {"a": 0, "b": 4}
    assert p["imbalance_ratio"] == pytest.approx(11 / 9)
    assert p["features"][0]["name"] == "u" and p["features"][1]["max"] == float(x[:, 1].max())


def test_profile_image_dataset():
    ds = load("digits")
    p = profile(ds, split(ds.y))
    json.dumps(p)
    assert len(p["channels"]) == 1 and sum(s["examples"] for s in p["splits"].values()) == 1797


# ------------------------------------------------------------ read_inputs

def test_read_inputs_npz(tmp_path):
    p = tmp_path / "in.npz"
    x = np.random.default_rng(0).normal(size=(5, 1, 40))
    np.savez(p, X=x, other=np.zeros(3))
    got, ids = read_inputs(p, (1, 40), "signal")
    assert got.dtype == np.float32 and np.allclose(got, x) and ids == ["0", "1", "2", "3", "4"]
    np.savez(p, inputs=x[:, 0])  # the only array, flattened rows
    assert read_inputs(p, (1, 40), "signal")[0].shape == (5, 1, 40)
    np.savez(p, X=x[0])  # one example without the batch axis
    assert read_inputs(p, (1, 40), "signal")[0].shape == (1, 1, 40)
    np.savez(p, X=np.zeros((5, 3, 8, 8)))
    raises(lambda: read_inputs(p, (1, 8, 8), "image"), str(p), "expected inputs of shape (N, 1, 8, 8)", "(5, 3, 8, 8)")
    np.savez(p, a=np.zeros(2), b=np.zeros(2))
    raises(lambda: read_inputs(p, (2,), "table"), "'X'")


def test_read_inputs_csv(tmp_path):
    p = write_csv(tmp_path / "in.csv", "a,b,c\n1,2,3\n4,5,6\n")
    x, ids = read_inputs(p, (3,), "table")
    assert x.tolist() == [[1, 2, 3], [4, 5, 6]] and ids == ["0", "1"]
    p = write_csv(tmp_path / "plain.csv", "1,2,3\n4,5,6\n")  # no header
    assert read_inputs(p, (3,), "table")[0].shape == (2, 3)
    p = write_csv(tmp_path / "extra.csv", "a,b,c,label\n1,2,3,x\n")
    raises(lambda: read_inputs(p, (3,), "table"), p, "line 2", "4 columns", "3 features")
    p = write_csv(tmp_path / "word.csv", "a,b,c\n1,2,3\n1,oops,3\n")
    raises(lambda: read_inputs(p, (3,), "table"), p, "line 3", "column 'b'", "oops")


def test_read_inputs_images(tmp_path):
    folder = tmp_path / "pics"
    rng = np.random.default_rng(0)
    save_png(folder / "b.png", rng.integers(0, 256, (16, 16, 3)))
    save_png(folder / "sub" / "a.png", rng.integers(0, 256, (8, 8)))
    (folder / "readme.txt").write_text("skip me")
    x, ids = read_inputs(folder, (1, 8, 8), "image")
    assert x.shape == (2, 1, 8, 8) and ids == ["b.png", "sub/a.png"]
    ref = np.asarray(Image.open(folder / "sub" / "a.png"), dtype=np.float32) / 255
    assert np.allclose(x[1, 0], ref)
    x, ids = read_inputs(folder / "sub" / "a.png", (3, 4, 4), "image")
    assert x.shape == (1, 3, 4, 4) and ids == ["a.png"] and 0 <= x.min() and x.max() <= 1
    raises(lambda: read_inputs(folder, (1, 40), "signal"), "image model")
    (folder / "c.png").write_bytes(b"broken")
    raises(lambda: read_inputs(folder, (1, 8, 8), "image"), str(folder / "c.png"))


# ------------------------------------------------------------------ augment

def test_augment_shapes_change_and_seed():
    import torch

    from autopilot.data.augment import make_augment

    assert make_augment("image", 0.0, (1, 28, 28)) is None
    assert make_augment("table", 1.0, (5,)) is None
    for kind, shape in [("image", (1, 28, 28)), ("image", (3, 8, 8)), ("signal", (2, 40))]:
        aug = make_augment(kind, 0.7, shape)
        torch.manual_seed(0)
        x = torch.rand(16, *shape)
        torch.manual_seed(1)
        a = aug(x)
        torch.manual_seed(1)
        b = aug(x)
        assert a.shape == x.shape and a.dtype == x.dtype
        assert not torch.allclose(a, x), kind
        assert torch.equal(a, b), "seeding torch must make augmentation repeatable"
