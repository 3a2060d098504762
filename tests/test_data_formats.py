"""Standard formats read directly: IDX (MNIST / Fashion-MNIST), CIFAR-10/100
binaries, channels-last and channels-first NPZ, and official test splits.

Every file is written here in the format's official byte layout; nothing
depends on a data set being installed."""
from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from autopilot.data import DataError, Dataset, load, official_test, read_inputs, split, validate
from autopilot.data.builtin import FASHION_CLASSES, FASHION_DIR, load_fashion
from autopilot.data.dataset import as_float, pixels_to_float
from autopilot.data.idx import read_idx


def raises(fn, *parts):
    """fn() must raise a one-line DataError whose message contains every part."""
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert str(part) in msg, f"{part!r} not in {msg!r}"
    return msg


# ------------------------------------------------------------------- IDX

def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX encoding, written from the format's description (not our reader)."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C,
            np.dtype(np.float32): 0x0D}[a.dtype]
    head = bytes([0, 0, code, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_idx(path, a: np.ndarray, gz: bool) -> None:
    data = idx_bytes(a)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def idx_folder(root, n_train=30, n_test=20, classes=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % classes).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", x, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", y, gz)
        out[prefix] = (x, y)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_gz_and_raw(tmp_path, gz):
    want = idx_folder(tmp_path / "mnist", gz=gz)
    ds = load(str(tmp_path / "mnist"))
    assert (ds.kind, ds.X.shape, ds.X.dtype) == ("image", (50, 1, 28, 28), np.uint8)  # pixels as stored
    x = np.concatenate([want["train"][0], want["t10k"][0]])
    assert np.array_equal(ds.X[:, 0], x)
    assert np.array_equal(as_float(ds.X)[:, 0], x.astype(np.float32) / 255.0)
    assert ds.classes == [str(i) for i in range(10)]
    assert ds.y.tolist() == np.concatenate([want["train"][1], want["t10k"][1]]).tolist()
    assert ds.official_test.tolist() == list(range(30, 50))  # the t10k pair, after training


def test_read_idx_other_types(tmp_path):
    a = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    write_idx(tmp_path / "a.idx", a, gz=False)
    got = read_idx(tmp_path / "a.idx")
    assert got.dtype == np.int16 and np.array_equal(got, a)
    f = np.linspace(0, 1, 5, dtype=np.float32)
    write_idx(tmp_path / "f.idx", f, gz=True)
    assert np.array_equal(read_idx(tmp_path / "f.idx"), f)


def test_idx_bad_files(tmp_path):
    root = tmp_path / "m"
    idx_folder(root, gz=False)
    images = root / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    raises(lambda: load(str(root)), str(images), "truncated", "(30, 28, 28)")
    images.write_bytes(b"PK\x03\x04 not idx")
    raises(lambda: load(str(root)), str(images), "not an IDX file")
    idx_folder(root, gz=True)  # gz beside raw: a cut-off gzip stream
    (root / "train-images-idx3-ubyte").unlink()
    gzp = root / "train-images-idx3-ubyte.gz"
    gzp.write_bytes(gzp.read_bytes()[:200])
    raises(lambda: load(str(root)), str(gzp), "cannot read")
    idx_folder(root, gz=True)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    (root / "t10k-labels-idx1-ubyte").unlink()
    raises(lambda: load(str(root)), "t10k-images-idx3-ubyte", "no labels file")


def test_idx_labels_count_must_match(tmp_path):
    root = tmp_path / "m"
    idx_folder(root, gz=False)
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(29, np.uint8), gz=False)
    raises(lambda: load(str(root)), "train-labels-idx1-ubyte", "29 labels for 30 images")


def test_fashion_from_its_folder_with_class_names(tmp_path):
    idx_folder(tmp_path / "fashion-mnist")
    ds = validate(load_fashion(tmp_path / "fashion-mnist"))
    assert ds.name == "fashion" and ds.classes == FASHION_CLASSES and ds.classes[9] == "Ankle boot"
    assert len(ds.official_test) == 20
    raises(lambda: load_fashion(tmp_path / "nowhere"), "apt-get install dataset-fashion-mnist", "nowhere")


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_builtin_when_installed():
    ds = load("fashion")
    assert ds.X.shape == (70000, 1, 28, 28) and ds.classes == FASHION_CLASSES
    assert ds.official_test.tolist() == list(range(60000, 70000))
    assert np.bincount(ds.y[ds.official_test]).tolist() == [1000] * 10  # the official test set is balanced


# ----------------------------------------------------------------- CIFAR

def cifar_records(labels: list[np.ndarray], pixels: np.ndarray) -> bytes:
    """Official record layout: label byte(s), then R, G, B planes of 32x32."""
    n = len(pixels)
    rec = np.concatenate([np.stack(labels, 1).astype(np.uint8), pixels.reshape(n, 3072)], 1)
    return rec.tobytes()


def cifar10_folder(root, per_batch=10, batches=2, n_test=10, seed=0, meta=True):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    out = []
    names = [f"data_batch_{i}.bin" for i in range(1, batches + 1)] + ["test_batch.bin"]
    for name in names:
        n = n_test if name == "test_batch.bin" else per_batch
        px = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = np.arange(n) % 10
        (root / name).write_bytes(cifar_records([y], px))
        out.append((px, y))
    if meta:
        names10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        (root / "batches.meta.txt").write_text("\n".join(names10) + "\n\n")
    return out


def test_cifar10_binary(tmp_path):
    parts = cifar10_folder(tmp_path / "cifar-10-batches-bin")
    ds = load(str(tmp_path / "cifar-10-batches-bin"))
    assert ds.X.shape == (30, 3, 32, 32) and ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    px = np.concatenate([p for p, _ in parts])
    assert ds.X.dtype == np.uint8 and np.array_equal(ds.X, px)
    assert np.array_equal(as_float(ds.X), px.astype(np.float32) / 255.0)
    # record 0 of batch 1: its red plane's first row is the file's bytes 1..32
    raw = (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()
    assert np.array_equal(ds.X[0, 0, 0], np.frombuffer(raw[1:33], np.uint8))
    assert ds.y.tolist() == np.concatenate([y for _, y in parts]).tolist()
    assert ds.official_test.tolist() == list(range(20, 30))
    # the folder above the official sub-folder works too
    assert load(str(tmp_path)).fingerprint() == ds.fingerprint()
    s = split(ds.y, seed=0, val=0.2, official_test=official_test(ds, "official"))
    assert s["test"].tolist() == list(range(20, 30))


def test_cifar100_binary_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-binary"
    root.mkdir()
    rng = np.random.default_rng(1)
    fine = np.arange(300) % 100
    coarse = fine // 5
    px = rng.integers(0, 256, (300, 3, 32, 32), dtype=np.uint8)
    (root / "train.bin").write_bytes(cifar_records([coarse, fine], px))
    (root / "test.bin").write_bytes(cifar_records([coarse[:100], fine[:100]], px[:100]))
    (root / "fine_label_names.txt").write_text("\n".join(f"fine{i}" for i in range(100)) + "\n")
    (root / "coarse_label_names.txt").write_text("\n".join(f"coarse{i}" for i in range(20)) + "\n")
    ds = load(str(root))
    assert len(ds.classes) == 100 and ds.classes[42] == "fine42"
    assert ds.y[:300].tolist() == fine.tolist()  # the fine label, not the coarse one
    assert np.array_equal(ds.X[300:], px[:100])
    assert ds.official_test.tolist() == list(range(300, 400))


def test_cifar_bad_files(tmp_path):
    root = tmp_path / "c"
    cifar10_folder(root)
    b = root / "data_batch_2.bin"
    b.write_bytes(b.read_bytes()[:-5])
    raises(lambda: load(str(root)), str(b), "not a whole number of 3073-byte")
    cifar10_folder(tmp_path / "c2", meta=False)
    (tmp_path / "c2" / "batches.meta.txt").write_text("cat\ndog\n")
    raises(lambda: load(str(tmp_path / "c2")), "batches.meta.txt", "2 class names, expected 10")


def test_cifar_pickle_folders_are_refused_without_unpickling(tmp_path):
    py10 = tmp_path / "cifar-10-batches-py"
    py10.mkdir()
    # A file that would run code if unpickled: loading must not touch it.
    for name in ("data_batch_1", "batches.meta", "test_batch"):
        (py10 / name).write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    raises(lambda: load(str(py10)), str(py10), "pickle", "data_batch_1.bin", "batches.meta.txt")
    py100 = tmp_path / "cifar-100-python"
    py100.mkdir()
    for name in ("train", "test", "meta"):
        (py100 / name).write_bytes(b"\x80\x04junk")
    raises(lambda: load(str(py100)), "pickle", "train.bin", "fine_label_names.txt")
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------- NPZ layout

def test_npz_channels_last_and_first(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    y = np.repeat([0, 1, 2], 4)
    p = tmp_path / "photos.npz"
    np.savez(p, X=nhwc, y=y)
    ds = load(str(p))
    assert ds.X.shape == (12, 3, 32, 32)  # not 32 channels of 32x3 pixels
    assert ds.X.dtype == np.uint8 and ds.X.flags.c_contiguous  # pixels stay uint8, laid out channels first
    assert np.array_equal(as_float(ds.X), nhwc.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    np.savez(p, X=nhwc.transpose(0, 3, 1, 2), y=y)
    assert load(str(p)).fingerprint() == ds.fingerprint()
    np.savez(p, X=nhwc[..., :1], y=y)  # grey, channels last
    assert load(str(p)).X.shape == (12, 1, 32, 32)


def test_npz_ambiguous_layout_is_asked_about(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 3)
    p = tmp_path / "a.npz"
    x = rng.integers(0, 256, (6, 3, 4, 3), dtype=np.uint8)  # both end axes could be channels
    np.savez(p, X=x, y=y)
    raises(lambda: load(str(p)), str(p), "--layout nhwc", "--layout nchw", "(6, 3, 4, 3)")
    assert load(str(p), layout="nhwc").X.shape == (6, 3, 3, 4)
    assert load(str(p), layout="nchw").X.shape == (6, 3, 4, 3)
    np.savez(p, X=rng.random((6, 16, 8, 8)), y=y)  # neither: 16 channels or 8?
    raises(lambda: load(str(p)), "cannot tell the layout", "16 channels of 8x8")
    assert load(str(p), layout="nchw").X.shape == (6, 16, 8, 8)
    raises(lambda: load(str(p), layout="hwc"), "unknown layout 'hwc'")
    np.savez(p, X=np.zeros((6, 3)), y=y)
    raises(lambda: load(str(p), layout="nhwc"), "--layout applies to 4-D image arrays")
    raises(lambda: load("digits", layout="nhwc"), "--layout", "digits")


def test_predict_inputs_channels_last(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    p = tmp_path / "in.npz"
    np.savez(p, X=x)
    got, _ = read_inputs(p, (3, 8, 8), "image")
    assert np.array_equal(got, x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    np.savez(p, X=x[0])  # one picture, channels last
    assert read_inputs(p, (3, 8, 8), "image")[0].shape == (1, 3, 8, 8)


# ------------------------------------------------------- official test split

def test_split_official_keeps_test_and_carves_val_stratified():
    y = np.repeat(np.arange(4), 50)
    fixed = np.concatenate([np.flatnonzero(y == c)[:10] for c in range(4)])
    s = split(y, seed=3, val=0.25, official_test=fixed)
    assert s["test"].tolist() == sorted(fixed.tolist())
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(200))
    assert np.bincount(y[s["val"]]).tolist() == [10, 10, 10, 10]  # 25% of each class's remaining 40
    again = split(y, seed=3, val=0.25, official_test=fixed)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = split(y, seed=4, val=0.25, official_test=fixed)
    assert not np.array_equal(s["val"], other["val"]) and np.array_equal(s["test"], other["test"])
    # the default path is unchanged by the new option
    assert all(np.array_equal(split(y, seed=3)[k], split(y, seed=3, official_test=None)[k]) for k in s)


def test_official_test_errors():
    y = np.repeat([0, 1], 5)
    ds = Dataset("t", "table", np.zeros((10, 2), np.float32), y, ["a", "b"], source="t.csv")
    assert official_test(ds, "seeded") is None
    raises(lambda: official_test(ds, "official"), "t.csv", "no official test split")
    raises(lambda: official_test(ds, "random"), "unknown test split")
    raises(lambda: split(y, official_test=np.array([0, 1])), "no example of class 1")
    ds.official_test = np.array([0, 0, 9])
    raises(lambda: validate(ds), "official_test")


# ------------------------------------------------------------- conversions

def test_pixels_to_float_matches_the_plain_formula_and_fingerprint_is_stable():
    px = np.random.default_rng(0).integers(0, 256, (9000, 1, 5, 5), dtype=np.uint8)  # > one chunk
    plain = px.astype(np.float32) / 255.0
    assert np.array_equal(pixels_to_float(px), plain)
    ds = Dataset("d", "image", pixels_to_float(px), np.arange(9000) % 2, ["a", "b"])
    h = hashlib.sha256()  # the fingerprint as it was computed before chunking
    h.update(str(plain.shape).encode())
    h.update(plain.tobytes())
    h.update(ds.y.astype(np.int64).tobytes())
    h.update("a\0b".encode())
    assert ds.fingerprint() == h.hexdigest()[:16]
    # Pixels held as uint8 give the same id as their float form: runs made
    # before keep resuming and retraining on the same data.
    assert Dataset("d", "image", px, ds.y, ["a", "b"]).fingerprint() == ds.fingerprint()


def test_uint8_pixels_give_the_float_statistics_batches_and_profile():
    import torch

    from autopilot.data.profile import profile
    from autopilot.data.stats import arrays, data_info
    from autopilot.train import as_inputs, float_batch

    rng = np.random.default_rng(1)
    px = rng.integers(0, 256, (5000, 3, 6, 5), dtype=np.uint8)
    px[:, 2] //= 4  # channels with different statistics
    y = np.arange(5000) % 3
    pixels = validate(Dataset("p", "image", px, y, ["a", "b", "c"]))
    floats = validate(Dataset("f", "image", pixels_to_float(px), y, ["a", "b", "c"]))
    splits = split(y, seed=0)
    # Held as uint8 end to end: the data set and every split, no float copy.
    assert pixels.X.nbytes == px.size and all(X.dtype == np.uint8 for X, _ in arrays(pixels, splits).values())
    got, want = data_info(pixels, splits), data_info(floats, splits)
    assert np.allclose(got["mean"], want["mean"], rtol=0, atol=1e-6)
    assert np.allclose(got["std"], want["std"], rtol=0, atol=1e-6)
    assert got["mean"][2] < 0.3 < got["mean"][0]
    # A batch becomes exactly the floats the loaders used to hold, in torch as in numpy.
    batch = float_batch(as_inputs(px[:300]))
    assert batch.dtype == torch.float32 and np.array_equal(batch.numpy(), pixels_to_float(px[:300]))
    assert np.array_equal(as_float(px), pixels_to_float(px)) and as_float(floats.X) is floats.X
    p_pix, p_flt = profile(pixels, splits), profile(floats, splits)
    for a, b in zip(p_pix["channels"], p_flt["channels"]):
        assert a["min"] == b["min"] and a["max"] == b["max"] and abs(a["mean"] - b["mean"]) < 1e-6
    assert p_pix["fingerprint"] == p_flt["fingerprint"] and p_pix["train_duplicates"] == p_flt["train_duplicates"]


def test_npz_uint8_mask_of_zeros_and_ones_stays_zeros_and_ones(tmp_path):
    p = tmp_path / "masks.npz"
    mask = (np.random.default_rng(0).random((6, 1, 8, 8)) > 0.5).astype(np.uint8)
    np.savez(p, X=mask, y=np.repeat([0, 1], 3))
    ds = load(str(p))
    assert ds.X.dtype == np.float32 and np.array_equal(ds.X, mask)  # not 1/255: 0/1 is not 0..255 pixels
