"""Model builder: every family builds, reloads exactly, and exports to ONNX
that agrees with PyTorch."""
import numpy as np
import pytest
import torch

from autopilot.export import check_parity, export_onnx
from autopilot.models import build_model, count_params, load_model, save_model

@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared
    machine its spinning made the training here 7x slower in wall time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SPECS = {
    "mlp": {"family": "mlp", "input_shape": [12], "n_classes": 3, "mean": [0.5] * 12, "std": [2.0] * 12,
            "width": 32, "depth": 3, "residual": True, "batch_norm": True, "dropout": 0.2},
    "cnn1d": {"family": "cnn1d", "input_shape": [1, 40], "n_classes": 10, "mean": [0.1], "std": [1.3],
              "width": 16, "depth": 3, "residual": True, "batch_norm": True, "dropout": 0.1,
              "kernel_size": 5, "pool": "max", "head": "flatten"},
    "cnn2d": {"family": "cnn2d", "input_shape": [3, 16, 16], "n_classes": 4, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.2, 0.3],
              "width": 8, "depth": 3, "residual": False, "batch_norm": True, "dropout": 0.0,
              "kernel_size": 3, "pool": "avg", "head": "gap"},
}


def _trained_a_little(spec):
    """Non-trivial BN statistics and weights, so parity is tested on a real model."""
    torch.manual_seed(0)
    model = build_model(spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(32, *spec["input_shape"])
    y = torch.randint(0, spec["n_classes"], (32,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("family", list(SPECS))
def test_reload_from_spec_and_safetensors_is_exact(tmp_path, family):
    spec = SPECS[family]
    model = _trained_a_little(spec)
    save_model(tmp_path, model, spec)
    again, spec2 = load_model(tmp_path)
    assert spec2 == spec
    x = torch.randn(9, *spec["input_shape"])
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert count_params(again) == count_params(model) > 0


@pytest.mark.parametrize("family", list(SPECS))
def test_onnx_parity(tmp_path, family):
    spec = SPECS[family]
    model = _trained_a_little(spec)
    path = export_onnx(model, spec["input_shape"], tmp_path / "m.onnx")
    X = np.random.default_rng(0).normal(size=(50, *spec["input_shape"])).astype(np.float32)
    report = check_parity(model, path, X)
    assert report["passed"], report
    assert report["max_abs_diff"] <= 1e-4
    assert report["argmax_agree"] == 1.0


def test_spec_fields_change_the_architecture():
    base = SPECS["cnn2d"]
    small = count_params(build_model(base))
    assert count_params(build_model({**base, "width": 16})) > small
    assert count_params(build_model({**base, "depth": 2})) < small
    assert count_params(build_model({**base, "kernel_size": 5})) > small
    assert count_params(build_model({**base, "residual": True})) > small
    flat = build_model({**base, "head": "flatten"})
    assert count_params(flat) > small


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model family"):
        build_model({**SPECS["mlp"], "family": "transformer"})


# --- Version-2 (component) specs -------------------------------------------

from autopilot.models import (  # noqa: E402
    ACTIVATIONS, NORMS, OPERATIONS, SpecError, describe_model, model_parts, time_parts,
)

DOWNSAMPLE_CYCLE = ("stride", "max", "avg")
SHAPES = {1: [2, 16], 2: [2, 8, 8]}


def component_spec(op: str, dims: int, i: int) -> dict:
    """A tiny network built around one operation. The global choices cycle
    with i, so across the seven operations every norm, activation and
    downsampling appears in both 1-D and 2-D; stage 2 changes width (a
    projected skip) and resolution."""
    norms, acts = list(NORMS), list(ACTIVATIONS)
    return {
        "version": 2, "family": f"cnn{dims}d", "input_shape": SHAPES[dims], "n_classes": 3,
        "mean": [0.2, -0.1], "std": [1.5, 0.7],
        "stem": {"width": 4},
        "stages": [{"op": op, "blocks": 2, "width": 4, "skip": i % 2 == 0, "se": i % 2 == 1},
                   {"op": op, "blocks": 1, "width": 8, "skip": True, "se": i % 2 == 0}],
        "downsample": DOWNSAMPLE_CYCLE[i % 3], "activation": acts[i % 3], "norm": norms[(i + dims) % 3],
        "head": "flatten" if i % 2 else "gap", "dropout": 0.1,
    }


COMPONENT_CASES = {f"{op}-{dims}d": component_spec(op, dims, i) for dims in (1, 2) for i, op in enumerate(OPERATIONS)}
MLP_V2 = {
    f"mlp-{norm}": {"version": 2, "family": "mlp", "input_shape": [6], "n_classes": 3, "mean": [0.5] * 6, "std": [2.0] * 6,
                    "layers": [{"width": 8}, {"width": 8, "residual": True}, {"width": 4, "residual": True}],
                    "activation": act, "norm": norm, "dropout": 0.1}
    for norm, act in zip(NORMS, ACTIVATIONS)
}
# An MLP on images: per-channel statistics, flattened after standardising.
MLP_V2["mlp-image"] = {**MLP_V2["mlp-batch"], "input_shape": [2, 3, 3], "mean": [0.1, 0.2], "std": [1.0, 2.0]}
V2_CASES = {**COMPONENT_CASES, **MLP_V2}


def test_the_cases_cover_every_choice():
    for dims in (1, 2):
        cases = [s for s in COMPONENT_CASES.values() if s["family"] == f"cnn{dims}d"]
        assert {s["stages"][0]["op"] for s in cases} == set(OPERATIONS)
        assert {s["norm"] for s in cases} == set(NORMS)
        assert {s["activation"] for s in cases} == set(ACTIVATIONS)
        assert {s["downsample"] for s in cases} == set(DOWNSAMPLE_CYCLE)
        assert {s["head"] for s in cases} == {"gap", "flatten"}
    assert {s["norm"] for s in MLP_V2.values()} == set(NORMS)


@pytest.mark.parametrize("name", list(V2_CASES))
def test_every_operation_exports_with_parity(tmp_path, name):
    spec = V2_CASES[name]
    model = _trained_a_little(spec)
    path = export_onnx(model, spec["input_shape"], tmp_path / "m.onnx")
    X = np.random.default_rng(1).normal(size=(16, *spec["input_shape"])).astype(np.float32)
    report = check_parity(model, path, X)
    assert report["passed"], report
    assert report["argmax_agree"] == 1.0
    # Batch 1, as latency is measured and single requests are served.
    from autopilot.export import onnx_session, run_onnx

    with torch.no_grad():
        ref = model(torch.as_tensor(X[:1])).numpy()
    assert np.abs(run_onnx(onnx_session(path, threads=1), X[:1]) - ref).max() <= 1e-4


@pytest.mark.parametrize("name", ["mbconv_e6-2d", "sepconv5-1d", "mlp-group"])
def test_v2_reload_is_exact(tmp_path, name):
    spec = V2_CASES[name]
    model = _trained_a_little(spec)
    save_model(tmp_path, model, spec)
    again, spec2 = load_model(tmp_path)
    assert spec2 == spec and spec2["version"] == 2
    x = torch.randn(5, *spec["input_shape"])
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_component_choices_change_the_architecture():
    base = component_spec("conv3", 2, 0)
    params = lambda **change: count_params(build_model({**base, **change}))  # noqa: E731
    stage = base["stages"][0]
    with_stage = lambda **c: params(stages=[{**stage, **c}, base["stages"][1]])  # noqa: E731
    small = params()
    assert with_stage(op="conv5") > small > with_stage(op="sepconv3")
    assert with_stage(op="mbconv_e6") > with_stage(op="mbconv_e3")
    assert with_stage(blocks=3) > small
    assert with_stage(width=16) > small
    assert with_stage(se=True) > small
    assert params(stem={"width": 8}) > small
    # dilation widens the field of view, not the weights
    assert with_stage(op="dilconv3") == small
    assert params(head="flatten") > small


def test_stride_and_pool_downsample_alike():
    for down in DOWNSAMPLE_CYCLE:
        spec = {**component_spec("conv3", 2, 0), "input_shape": [2, 9, 9], "downsample": down}
        spec["stages"] = spec["stages"] + [{"op": "conv3", "blocks": 1, "width": 8, "skip": False}]
        shapes = [r["output_shape"] for r in describe_model(spec)]
        # stride rounds odd sizes up (same padding), pooling rounds down; 5 -> 3 or 2 is
        # the last step because below 4 wide the network stops downsampling
        expected = [9, 5, 3] if down == "stride" else [9, 4, 2]
        assert [s[1] for s in shapes[1:4]] == expected, (down, shapes)


# --- Specs written before versions existed still load ----------------------

# spec.json as runs wrote it before spec versions (today's search output for
# a signal), and the weight names and shapes the builder of that time gave it.
OLD_SPEC_JSON = """{
  "family": "cnn1d", "input_shape": [1, 12], "n_classes": 3, "mean": [0.0], "std": [1.0],
  "width": 4, "depth": 2, "residual": true, "batch_norm": true, "dropout": 0.0,
  "kernel_size": 3, "pool": "max", "head": "gap"
}"""
OLD_WEIGHT_SHAPES = {
    "0.mean": [1, 1, 1], "0.std": [1, 1, 1], "1.0.weight": [4, 1, 3], "1.1.weight": [4], "1.1.bias": [4],
    "1.1.running_mean": [4], "1.1.running_var": [4], "1.1.num_batches_tracked": [], "2.body.0.0.weight": [4, 4, 3],
    "2.body.0.1.weight": [4], "2.body.0.1.bias": [4], "2.body.0.1.running_mean": [4], "2.body.0.1.running_var": [4],
    "2.body.0.1.num_batches_tracked": [], "2.body.1.weight": [4, 4, 3], "2.body.2.weight": [4], "2.body.2.bias": [4],
    "2.body.2.running_mean": [4], "2.body.2.running_var": [4], "2.body.2.num_batches_tracked": [],
    "4.0.weight": [8, 4, 3], "4.1.weight": [8], "4.1.bias": [8], "4.1.running_mean": [8], "4.1.running_var": [8],
    "4.1.num_batches_tracked": [], "5.body.0.0.weight": [8, 8, 3], "5.body.0.1.weight": [8], "5.body.0.1.bias": [8],
    "5.body.0.1.running_mean": [8], "5.body.0.1.running_var": [8], "5.body.0.1.num_batches_tracked": [],
    "5.body.1.weight": [8, 8, 3], "5.body.2.weight": [8], "5.body.2.bias": [8], "5.body.2.running_mean": [8],
    "5.body.2.running_var": [8], "5.body.2.num_batches_tracked": [], "9.weight": [3, 8], "9.bias": [3],
}


def test_an_old_spec_json_still_loads_with_its_weights(tmp_path):
    import json

    from safetensors.torch import save_file

    spec = json.loads(OLD_SPEC_JSON)
    assert "version" not in spec
    model = _trained_a_little(spec)
    state = model.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == OLD_WEIGHT_SHAPES
    # Written the way old runs wrote them: the JSON text as is, the weights by name.
    (tmp_path / "spec.json").write_text(OLD_SPEC_JSON)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "weights.safetensors"))
    again, spec2 = load_model(tmp_path)
    assert spec2 == spec
    x = torch.randn(4, 1, 12)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


@pytest.mark.parametrize("family", list(SPECS))
def test_v1_specs_build_exactly_as_before(family):
    """The templates are untouched: same module tree, same parameter count
    as the builder had before component specs (counts recorded from it)."""
    before = {"mlp": 2819, "cnn1d": 73722, "cnn2d": 18428}
    model = build_model(SPECS[family])
    assert type(model) is torch.nn.Sequential
    assert count_params(model) == before[family]


def test_weights_that_do_not_fit_the_spec_are_one_clear_error(tmp_path):
    model = _trained_a_little(SPECS["mlp"])
    save_model(tmp_path, model, {**SPECS["mlp"], "width": 16})
    with pytest.raises(SpecError, match="weights.safetensors does not fit .*spec.json"):
        load_model(tmp_path)


@pytest.mark.parametrize("change, where", [
    ({"stages": [{"op": "conv7", "blocks": 1, "width": 4, "skip": False}]}, "stages.0.op"),
    ({"stages": [{"op": "conv3", "blocks": 0, "width": 4, "skip": False}]}, "stages.0.blocks"),
    ({"norm": "layer"}, "norm"),
    ({"activation": "tanh"}, "activation"),
    ({"stem": {"width": 4, "kernal_size": 3}}, "stem.kernal_size"),
    ({"input_shape": [2, 8]}, "needs input_shape"),
    ({"version": 3}, "version 3 is not known"),
    ({"family": "rnn"}, "family: 'rnn' is not one of cnn1d, cnn2d, mlp"),
])
def test_bad_v2_specs_name_the_field(change, where):
    with pytest.raises(SpecError, match=where):
        build_model({**component_spec("conv3", 2, 0), **change})


# --- Describing and timing a model stage by stage --------------------------

@pytest.mark.parametrize("name", ["mbconv_e3-2d", "dilconv3-1d", "mlp-none", "v1-cnn1d", "v1-mlp", "v1-cnn2d"])
def test_parts_compose_to_the_model_and_rows_add_up(name):
    spec = SPECS[name[3:]] if name.startswith("v1-") else V2_CASES[name]
    model = _trained_a_little(spec)
    x = torch.randn(3, *spec["input_shape"])
    with torch.no_grad():
        y = x
        for _, part in model_parts(model, spec):
            y = part(y)
        assert torch.equal(y, model(x))
    rows = describe_model(spec, model)
    assert sum(r["params"] for r in rows) == count_params(model)
    assert rows[-1]["name"] == "head" and rows[-1]["output_shape"] == [spec["n_classes"]]
    assert all(r["params"] > 0 for r in rows)
    assert model.training is False  # describing did not flip the mode


def test_describe_reports_each_stage_of_a_component_net():
    spec = component_spec("mbconv_e6", 2, 0)  # stride downsampling
    rows = describe_model(spec)
    assert [r["name"] for r in rows] == ["stem", "stage 1", "stage 2", "head"]
    assert [(r["op"], r["blocks"], r["width"], r["skip"], r["se"]) for r in rows[1:3]] == [
        ("mbconv_e6", 2, 4, True, False), ("mbconv_e6", 1, 8, True, True)]
    assert [r["output_shape"] for r in rows[:3]] == [[4, 8, 8], [4, 8, 8], [8, 4, 4]]


def test_time_parts_measures_every_part():
    spec = component_spec("sepconv3", 2, 0)
    threads = torch.get_num_threads()
    timed = time_parts(spec, repeats=5)
    assert torch.get_num_threads() == threads
    assert [t["name"] for t in timed] == ["stem", "stage 1", "stage 2", "head"]
    assert all(t["ms"] > 0 for t in timed)
    assert sum(t["share"] for t in timed) == pytest.approx(1.0)


# --- Component networks learn ----------------------------------------------

@pytest.mark.parametrize("family", ["cnn2d", "mlp"])
def test_component_networks_learn_digits(family):
    """Real training through train.train on scikit-learn's 8x8 digits: the
    assembled networks (separable conv + MBConv with SE, stride; a per-layer
    residual MLP) reach the level of an SVC's neighbourhood, not chance."""
    from sklearn.datasets import load_digits

    from autopilot.train import train

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32).reshape(-1, 1, 8, 8) * 16.0  # raw 0..256 pixels: the model standardises
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    tr, va = order[:1400], order[1400:]
    mean, std = float(X[tr].mean()), float(X[tr].std())
    if family == "mlp":
        X = X.reshape(len(X), -1)
        m, s = X[tr].mean(0), np.where(X[tr].std(0) > 1e-6, X[tr].std(0), 1.0)
        spec = {"version": 2, "family": "mlp", "input_shape": [64], "n_classes": 10, "mean": m.tolist(), "std": s.tolist(),
                "layers": [{"width": 64}, {"width": 64, "residual": True}], "activation": "gelu", "norm": "batch", "dropout": 0.1}
    else:
        spec = {"version": 2, "family": "cnn2d", "input_shape": [1, 8, 8], "n_classes": 10, "mean": [mean], "std": [std],
                "stem": {"width": 16},
                "stages": [{"op": "sepconv3", "blocks": 1, "width": 16, "skip": True},
                           {"op": "mbconv_e3", "blocks": 1, "width": 32, "skip": True, "se": True}],
                "downsample": "stride", "activation": "silu", "norm": "batch", "head": "gap", "dropout": 0.1}
    torch.manual_seed(0)
    model = build_model(spec)
    result = train(model, (X[tr], y[tr]), (X[va], y[va]), {"epochs": 8, "lr": 5e-3}, kind="table", seed=0, device="cpu")
    assert result.best_val_acc >= 0.93, result.best_val_acc


@pytest.mark.parametrize("name", ["v1-cnn2d", "v1-mlp", "mbconv_e6-2d", "conv3-1d", "mlp-batch"])
def test_scale_widths_makes_a_smaller_model_of_the_same_shape(name):
    from autopilot.models import scale_widths

    spec = SPECS[name[3:]] if name.startswith("v1-") else V2_CASES[name]
    spec = scale_widths(spec, 4.0)  # widen first so halving has room
    half = scale_widths(spec, 0.5)
    assert half.keys() == spec.keys()
    assert count_params(build_model(half)) < count_params(build_model(spec))
    assert len(describe_model(half)) == len(describe_model(spec))
    assert all(r["width"] % 4 == 0 for r in describe_model(half)[:-1])


def test_group_norm_never_normalises_single_values():
    from autopilot.models.ops import normalization

    assert [normalization("group", 2, c).num_groups for c in (4, 8, 16, 48, 5)] == [2, 4, 8, 8, 1]
    assert normalization("group", 0, 16).num_groups == 1  # features: layer norm
    model = build_model(MLP_V2["mlp-group"]).eval()
    with torch.no_grad():  # batch 1 works and the output depends on the input
        a, b = model(torch.zeros(1, 6)), model(torch.ones(1, 6))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("family", list(SPECS))
@pytest.mark.parametrize("residual", [False, True])
def test_from_template_gives_the_component_twin(family, residual):
    from autopilot.models import from_template

    v1 = {**SPECS[family], "residual": residual}
    v2 = from_template(v1)
    assert v2["version"] == 2
    rows1, rows2 = describe_model(v1), describe_model(v2)
    assert rows1[-2]["output_shape"] == rows2[-2]["output_shape"]
    n1, n2 = count_params(build_model(v1)), count_params(build_model(v2))
    if family == "mlp" or not residual:
        assert n1 == n2  # the same layers
    else:
        assert abs(n2 - n1) / n1 < 0.05  # three skipped convs per stage instead of conv + residual pair
