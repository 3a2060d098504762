"""Augmentation as a searched choice: the space (search.augment_space), the
policies that leave out what the doctor excluded, mixup / CutMix in the
training loss, and test-time flip averaging built into the model and its
ONNX file."""
from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch

from autopilot.data import load, split
from autopilot.data.augment import augment_from_hparams, make_mix
from autopilot.data.policies import image_policy
from autopilot.data.stats import arrays, data_info
from autopilot.models import build_model, count_params, from_template, validate_spec
from autopilot.models.spec import scale_widths
from autopilot.schemas.hparams import TrainingHparams
from autopilot.schemas.spec import TemplateSpec
from autopilot.search import augment_space, space
from autopilot.train import train

PHOTO = {"kind": "image", "input_shape": [3, 32, 32], "n_classes": 4, "mean": [0.5] * 3, "std": [0.25] * 3}
DIGITS = {"kind": "image", "input_shape": [1, 8, 8], "n_classes": 10, "mean": [0.3], "std": [0.4],
          "augment_exclude": ["hflip", "vflip", "rotate"]}


def _trials(info: dict, n: int = 60) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.suggest(trial, info))
        study.tell(trial, 0.0)
    return out


def test_the_search_draws_every_policy_and_its_own_parameters():
    drawn = _trials(PHOTO)
    assert {p["aug_policy"] for p in drawn} == {"none", "hflip", "affine", "cropflip", "trivial", "randaugment"}
    assert {p["mix"] for p in drawn if "mix" in p} == {"none", "mixup", "cutmix"}
    assert {p["tta_hflip"] for p in drawn} == {False, True}
    for p in drawn:  # conditional parameters exist only on their own branch
        assert ("randaugment_n" in p) == (p["aug_policy"] == "randaugment")
        assert ("aug_strength" in p) == (p["aug_policy"] == "affine")
        assert ("mix_alpha" in p) == (p.get("mix", "none") != "none")
        # Cutout and mixing only on a schedule long enough for them to pay off
        long = p["epochs"] >= augment_space.LONG_SCHEDULE_EPOCHS
        assert ("cutout" in p) == long and ("mix" in p) == long
        spec, hp = space.to_config(p, PHOTO)
        TrainingHparams.model_validate(hp)  # hparams.json's schema accepts every draw
        assert (spec.get("tta") == "hflip") == p["tta_hflip"]
        if p["aug_policy"] == "randaugment":
            assert hp["aug_ops"] == p["randaugment_n"] and hp["aug_strength"] == p["randaugment_m"]


def test_excluded_flips_are_never_offered_at_test_time():
    drawn = _trials(DIGITS, 30)
    assert all("tta_hflip" not in p and p["aug_policy"] != "hflip" for p in drawn)
    forced = {**space.default_params(DIGITS), "tta_hflip": True}  # e.g. a trial enqueued by hand
    spec, hp = space.to_config(forced, DIGITS)
    assert "tta" not in spec and hp["aug_exclude"] == ["hflip", "vflip", "rotate"]


def test_first_trial_on_colour_photos_trains_with_crop_and_flip():
    p = space.default_params(PHOTO)
    assert p["aug_policy"] == "cropflip"
    spec, hp = space.to_config(p, PHOTO)
    assert hp["aug_policy"] == "cropflip" and "tta" not in spec
    gray_info = {**PHOTO, "input_shape": [1, 28, 28], "mean": [0.5], "std": [0.25]}
    gray = space.default_params(gray_info)
    assert gray["aug_policy"] == "affine" and gray["aug_strength"] == 0.5
    assert not any(stage["skip"] for stage in space.to_config(gray, gray_info)[0]["stages"])
    # Enqueued, the first trial draws nothing at random: every parameter suggest asks for is given.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    study.enqueue_trial(p)
    assert space.suggest(study.ask(), PHOTO) == {k: v for k, v in p.items() if k in study.trials[0].params}
    assert set(study.trials[0].params) == set(p)


@pytest.mark.parametrize("info, variants", [(PHOTO, ["none", "hflip", "affine"]), (DIGITS, ["none", "cropflip"])])
def test_the_first_network_without_augmentation_and_with_the_other_policies(info, variants):
    default = space.default_params(info)
    first = space.first_trials("components", info, augment_variants=True)
    assert first[:2] == space.first_trials("components", info)  # the variants come after the known-good networks
    tail = first[2:]
    assert [p["aug_policy"] for p in tail] == variants
    for p in tail:  # the first network, only the augmentation differs
        assert {k: v for k, v in p.items() if k not in augment_space.PARAMS} == \
            {k: v for k, v in default.items() if k not in augment_space.PARAMS}
        assert p.get("cutout", 0.0) == 0.0 and p.get("mix", "none") == "none"
        # a short first schedule (photos: 20 epochs) asks for no Cutout or mixing at all
        assert ("cutout" in p) == augment_space.heavy_allowed(default["epochs"])
    assert [p["aug_policy"] for p in tail if "aug_strength" in p] == [v for v in variants if v == "affine"]
    # Enqueued, each draws nothing at random and leaves no stray parameter behind.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for p in first:
        study.enqueue_trial(p)
    for p in first:
        assert space.suggest(study.ask(), info) == p
    # The former knob and no augmentation are compared as they were: nothing added.
    assert augment_space.first_variants({**info, "augment_search": "affine"}) == []
    assert augment_space.first_variants({**info, "kind": "signal", "input_shape": [1, 40]}) == []


def test_autopilot_run_queues_the_variants_unless_the_budget_leaves_rung_0_at_its_floor():
    from autopilot.search.driver import queues_augment_variants

    assert queues_augment_variants(None, None, 1)  # no time budget
    assert not queues_augment_variants(90.0, None, 1, now=0.0)  # a 90 s search: its slots go to promotions
    assert queues_augment_variants(600.0, None, 1, now=0.0)
    assert queues_augment_variants(90.0, 4, 1, now=0.0)  # --trials 4: within the 4


def test_trials_stored_before_policies_still_mean_the_affine_knob():
    old = {k: v for k, v in space.default_params({**PHOTO, "input_shape": [1, 28, 28], "mean": [0.5], "std": [0.25]}).items()
           if k not in ("aug_policy", "cutout", "mix", "tta_hflip")}
    old["aug_strength"] = 0.7
    _, hp = space.to_config(old, PHOTO)
    assert hp["aug_strength"] == 0.7 and "aug_policy" not in hp
    TrainingHparams.model_validate({"aug_strength": 0.7, "epochs": 3})  # an old hparams.json
    aug = augment_from_hparams("image", hp, (1, 28, 28))
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    assert not torch.equal(aug(x), x)


def _left_marked(b: int = 64, c: int = 3, side: int = 32) -> torch.Tensor:
    x = torch.zeros(b, c, side, side)
    x[..., 8:24, 2:10] = 1.0  # a bright bar well left of the centre
    return x


@pytest.mark.parametrize("policy", ["cropflip", "affine", "trivial", "randaugment", "hflip"])
def test_geometric_policies_bring_in_no_black_border(policy):
    """Pixels shifted in from outside the image are reflected, not zero: a
    black band is a feature no test image has (on shapes, zero-padded crops
    cost 10-13 points of test accuracy at 15 epochs)."""
    torch.manual_seed(0)
    x = torch.full((64, 3, 32, 32), 0.6)
    out = image_policy(policy, strength=1.0 if policy == "affine" else 0.5, channels=3)(x)
    # Colour operations may change the grey, but every image stays uniform: no band or corner of another value.
    assert (out.flatten(2).std(-1) < 1e-3).all()
    if policy in ("cropflip", "affine", "hflip"):
        assert torch.allclose(out, x)  # a shifted, turned or scaled uniform image is the same image


def test_elastic_distortion_moves_pixels_by_a_smooth_field_of_simards_size():
    """Simard et al. 2003 at 28x28 (sigma 4, alpha 34 pixels): displacements
    of about a pixel and a third, smooth (neighbours move together), half as
    far at half strength; from a hyper-parameter on any policy, none included."""
    torch.manual_seed(0)
    side = 28
    columns = torch.arange(side, dtype=torch.float32).expand(256, 1, side, side).clone()  # each pixel: its x
    centre = (..., slice(6, 22), slice(6, 22))  # away from the reflected border
    moved = image_policy("none", elastic=1.0)(columns)[centre] - columns[centre]
    assert 1.0 < moved.std() < 1.7
    half = image_policy("none", elastic=0.5)(columns)[centre] - columns[centre]
    assert 0.4 < half.std() / moved.std() < 0.6
    neighbours = torch.corrcoef(torch.stack([moved[..., :, :-1].flatten(), moved[..., :, 1:].flatten()]))[0, 1]
    assert neighbours > 0.9
    grey = torch.full((8, 1, side, side), 0.6)
    assert torch.allclose(image_policy("none", elastic=1.0)(grey), grey, atol=1e-5)  # no black border
    assert image_policy("none", elastic=0.0) is None
    assert augment_from_hparams("image", {"aug_policy": "none", "elastic": 0.5}, (1, side, side)) is not None
    assert TrainingHparams(elastic=0.5).elastic == 0.5
    with pytest.raises(ValueError, match="elastic must be in"):
        image_policy("affine", elastic=1.5)


@pytest.mark.parametrize("policy", ["cropflip", "hflip"])
def test_flipping_policies_never_mirror_when_the_doctor_excluded_flips(policy):
    torch.manual_seed(0)
    x = _left_marked()
    half = 16
    kept = image_policy(policy, exclude=("hflip",), channels=3)
    if policy == "hflip":
        assert kept is None  # flips alone, without flips: nothing to do
    else:
        kept = kept(x)
        assert (kept[..., :half].sum((1, 2, 3)) > kept[..., half:].sum((1, 2, 3))).all()
    flipped = image_policy(policy, channels=3)(x)
    mirrored = (flipped[..., half:].sum((1, 2, 3)) > flipped[..., :half].sum((1, 2, 3))).float().mean()
    assert 0.25 < mirrored < 0.75  # half the images, per image
    if policy == "hflip":  # and nothing else: each image is itself or its exact mirror image
        same = (flipped == x).flatten(1).all(1) | (flipped == x.flip(-1)).flatten(1).all(1)
        assert same.all()


def test_excluded_rotation_stays_within_the_safe_range():
    from autopilot.data.policies import SAFE_ROTATION, op_ranges

    assert op_ranges(("rotate",))["rotate"] == SAFE_ROTATION
    assert op_ranges(())["rotate"] > 90
    assert not any("flip" in op for op in op_ranges(()))  # flips come only from cropflip, which obeys hflip


def test_mixup_and_cutmix_mix_pairs_with_the_share_they_report():
    torch.manual_seed(0)
    x = torch.stack([torch.full((3, 16, 16), float(i)) for i in range(8)])
    y = torch.arange(8)
    mixed, partner, lam = make_mix("mixup", 0.4)(x, y)
    assert 0 < lam < 1
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[partner])  # labels are the image values here
    for _ in range(5):
        cut, partner, lam = make_mix("cutmix", 1.0)(x, y)
        own = (cut == x).float().mean((1, 2, 3))
        moved = partner != y
        assert torch.allclose(own[moved], torch.full_like(own[moved], lam), atol=1e-6)
    assert make_mix("none", 1.0) is None
    with pytest.raises(ValueError, match="unknown mix"):
        make_mix("blend", 1.0)


@pytest.fixture(scope="module")
def digits():
    ds = load("digits")
    splits = split(ds.y, seed=0)
    return ds, splits, arrays(ds, splits), data_info(ds, splits)


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_training_with_mixing_and_label_smoothing_learns(digits, mix):
    ds, splits, parts, info = digits
    spec, hp = space.to_config({**space.default_params(info), "mix": mix, "mix_alpha": 0.4, "epochs": 6}, info)
    assert hp["mix"] == mix and hp["label_smoothing"] > 0
    torch.manual_seed(0)
    model = build_model(scale_widths(spec, 0.5))  # half the widths: what is tested is the loss, not the network
    res = train(model, parts["train"], parts["val"], hp, kind="image", seed=0, device="cpu")
    assert res.best_val_acc > 0.85, res.best_val_acc


def test_flip_averaging_lives_in_the_spec_and_in_the_onnx_file(tmp_path):
    from autopilot.compress.prune import prune_channels
    from autopilot.compress.students import student_spec
    from autopilot.export import check_parity, export_onnx, onnx_session, run_onnx

    spec, _ = space.to_config({**space.default_params(PHOTO), "tta_hflip": True}, PHOTO)
    assert spec["tta"] == "hflip"
    validate_spec(spec)  # spec.json's schemas accept it, of either version
    template = {"family": "cnn2d", "input_shape": [3, 32, 32], "n_classes": 4, "mean": [0.5] * 3, "std": [0.25] * 3,
                "width": 8, "depth": 2, "residual": True, "kernel_size": 3, "pool": "max", "head": "gap", "tta": "hflip"}
    TemplateSpec.model_validate(template)
    assert from_template(template)["tta"] == "hflip"
    torch.manual_seed(0)
    model = build_model(spec)
    plain = build_model({k: v for k, v in spec.items() if k != "tta"})
    assert count_params(model) == count_params(plain)
    X = np.random.default_rng(0).random((16, 3, 32, 32), dtype=np.float32)
    path = export_onnx(model, spec["input_shape"], tmp_path / "m.onnx")
    assert check_parity(model, path, X)["passed"]
    session = onnx_session(path)
    a, b = run_onnx(session, X), run_onnx(session, X[..., ::-1].copy())
    assert np.abs(a - b).max() < 1e-5  # the file averages over the mirror image
    plain.load_state_dict(model.net.state_dict())
    with torch.no_grad():
        expected = (plain.eval()(torch.as_tensor(X)) + plain(torch.as_tensor(X[..., ::-1].copy()))) / 2
    assert np.abs(a - expected.numpy()).max() < 1e-4
    # Compression candidates keep it: pruned copies and students alike.
    assert type(prune_channels(model, spec["input_shape"], 0.5)).__name__ == "FlipAverage"
    assert student_spec(spec, 0.25)["tta"] == "hflip"


def test_the_former_and_the_empty_augmentation_spaces_for_comparison():
    affine = _trials({**PHOTO, "augment_search": "affine"}, 5)
    assert all(set(p) >= {"aug_strength"} and "aug_policy" not in p and "mix" not in p for p in affine)
    _, hp = space.to_config({**space.default_params({**PHOTO, "augment_search": "none"})}, PHOTO)
    assert augment_from_hparams("image", hp, (3, 32, 32)) is None and "mix" not in hp
    with pytest.raises(ValueError, match="unknown augmentation search"):
        space.default_params({**PHOTO, "augment_search": "autoaugment"})


@pytest.mark.slow
@pytest.mark.budget  # the probes must learn within 20 s: it depends on the CPU they get
def test_the_photo_default_passes_the_pre_flight_and_shuffled_labels_still_fail_it(tmp_path):
    """The doctor probes the first trial before the search: on the colour
    photos the tests build, the default must learn within the probes, and
    the same probe must still catch labels that carry no signal."""
    from autopilot.data.synthetic import make_shapes
    from autopilot.doctor import doctor_dataset

    X, y, _ = make_shapes(1200, 32, seed=0)
    np.savez(tmp_path / "shapes.npz", X=X, y=y)
    ds = load(str(tmp_path / "shapes.npz"))
    splits = split(ds.y, seed=0)
    model, hp = space.default_model(ds, splits)
    probes = ["no-signal", "cannot-overfit"]
    report = doctor_dataset(ds, splits, model=model, hparams=hp, budget_s=20, checks=probes)
    status = {c.id: c.status for c in report.checks}
    assert status == {"no-signal": "ok", "cannot-overfit": "ok"}, report.checks
    shuffled = np.random.default_rng(0).permutation(ds.y)
    ds.y[:] = shuffled
    report = doctor_dataset(ds, splits, model=model, hparams=hp, budget_s=20, checks=["no-signal"])
    assert [f.id for f in report.findings if f.severity == "error"] == ["no-signal"], report.checks
