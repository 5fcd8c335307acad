"""SimAM, ShuffleAttention, NAM, TripletAttention: faithfulness, gradients, arguments, gates, export, models.

Equivalence is checked against the naive official-style references in ``tests/reference_layers.py`` (written from the
official repositories, independent of ``yolo_attn``) after copying weights with ``load_state_dict(strict=True)`` in
both directions: outputs, input gradients, parameter gradients and BN running statistics, in train and eval mode, on
non-square inputs and several channel counts. Tolerance as in ``test_layers.py``: float32, ``rtol=1e-5`` and
``atol=1e-5 * max(1, max|expected|)``, against the float32 reference or, failing that, the reference run in float64
(the exact maths). Each layer has a negative control that the same comparison must reject.
"""

from __future__ import annotations

import copy
import functools
import io
import pickle
import sys
import warnings
import zlib
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the references live next to this file

import reference_layers as ref  # noqa: E402
from layer_checks import assert_close, onnx_roundtrip, randomize_  # noqa: E402

from yolo_attn.layers import NAM, ShuffleAttention, SimAM, TripletAttention  # noqa: E402
from yolo_attn.layers._gate import GATE_KINDS, GateTap  # noqa: E402
from yolo_attn.layers.shuffle_attn import channel_shuffle, valid_groups  # noqa: E402

SHAPE_HW = (13, 21)  # non-square on purpose


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared 2-core machine: extra threads only spin
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------- helpers
def assert_close_to_either(actual: torch.Tensor, ref32: torch.Tensor, ref64: torch.Tensor, what: str) -> None:
    try:
        assert_close(actual, ref32, what)
    except AssertionError:
        assert_close(actual.double(), ref64, f"{what} (also not within tolerance of the float64 reference)")


def _run(module: nn.Module, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    x = x.detach().clone().requires_grad_(True)
    y = module(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(y.dtype))
    grads = {name: p.grad.detach().clone() for name, p in module.named_parameters()}
    return y.detach(), x.grad.detach(), grads


def compare(reference: nn.Module, fast: nn.Module, x: torch.Tensor, train: bool, seed: int = 0) -> None:
    """Outputs, input grads, parameter grads and buffers (after the step) of two modules with identical weights."""
    reference.train(train)
    fast.train(train)
    ref64 = copy.deepcopy(reference).double()
    y32, gx32, gp32 = _run(reference, x, seed)
    y64, gx64, gp64 = _run(ref64, x.double(), seed)
    y, gx, gp = _run(fast, x, seed)
    assert y.shape == y32.shape == x.shape
    assert_close_to_either(y, y32, y64, "output")
    assert_close_to_either(gx, gx32, gx64, "input grad")
    assert gp.keys() == gp32.keys()
    for name, g in gp.items():
        assert_close_to_either(g, gp32[name], gp64[name], f"grad of {name}")
    ref_buffers = dict(reference.named_buffers())
    assert set(ref_buffers) == {name for name, _ in fast.named_buffers()}
    for name, buf in fast.named_buffers():
        assert_close(buf.float(), ref_buffers[name].float(), f"buffer {name}")


def make_input(b: int, c: int, hw: tuple[int, int] = SHAPE_HW, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, *hw, generator=gen) * 1.5 + 0.3


def paired(make_fast, make_ref, seed: int) -> tuple[nn.Module, nn.Module]:
    """A randomised reference and the production layer with its weights (copied both ways: names/shapes match)."""
    torch.manual_seed(0)
    reference = randomize_(make_ref(), seed)
    fast = make_fast()
    fast.load_state_dict(reference.state_dict(), strict=True)
    reference.load_state_dict(fast.state_dict(), strict=True)
    return fast, reference


# ---------------------------------------------------------------------------------------------- equivalence table
# id -> (production factory, reference factory, channels, batch, spatial size)
CASES = {
    "SimAM-16": (lambda: SimAM(16), lambda: ref.RefSimAM(16), 16, 2, SHAPE_HW),
    "SimAM-64-lambda0.1": (lambda: SimAM(64, 0.1), lambda: ref.RefSimAM(64, 0.1), 64, 3, (9, 5)),
    "SimAM-128-1xW": (lambda: SimAM(128), lambda: ref.RefSimAM(128), 128, 2, (1, 7)),
    "SA-64-g32": (lambda: ShuffleAttention(64, 32), lambda: ref.RefShuffleAttention(64, 32), 64, 2, SHAPE_HW),
    "SA-256-g64": (lambda: ShuffleAttention(256), lambda: ref.RefShuffleAttention(256), 256, 2, (17, 19)),
    "SA-128-g64-small-map": (lambda: ShuffleAttention(128), lambda: ref.RefShuffleAttention(128), 128, 2, (9, 5)),
    "SA-96-g4": (lambda: ShuffleAttention(96, 4), lambda: ref.RefShuffleAttention(96, 4), 96, 3, SHAPE_HW),
    "SA-96-g3-odd": (lambda: ShuffleAttention(96, 3), lambda: ref.RefShuffleAttention(96, 3), 96, 2, SHAPE_HW),
    "SA-16-g8": (lambda: ShuffleAttention(16, 8), lambda: ref.RefShuffleAttention(16, 8), 16, 2, (2, 3)),
    "NAM-16": (lambda: NAM(16), lambda: ref.RefNAM(16), 16, 2, SHAPE_HW),
    "NAM-64": (lambda: NAM(64), lambda: ref.RefNAM(64), 64, 3, (9, 5)),
    "NAM-256": (lambda: NAM(256), lambda: ref.RefNAM(256), 256, 2, (7, 11)),
    "Triplet-16": (lambda: TripletAttention(16), lambda: ref.RefTripletAttention(16), 16, 2, SHAPE_HW),
    "Triplet-64": (lambda: TripletAttention(64), lambda: ref.RefTripletAttention(64), 64, 3, (9, 5)),
    "Triplet-96-no-spatial": (
        lambda: TripletAttention(96, True),
        lambda: ref.RefTripletAttention(96, no_spatial=True),
        96,
        2,
        SHAPE_HW,
    ),
}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case: str, train: bool) -> None:
    make_fast, make_ref, c, b, hw = CASES[case]
    fast, reference = paired(make_fast, make_ref, seed=zlib.crc32(case.encode()) % 1000)
    compare(reference, fast, make_input(b, c, hw), train)


@pytest.mark.parametrize("case", ["SimAM-16", "SA-64-g32", "NAM-64", "Triplet-64"])
def test_matches_reference_without_grad(case: str) -> None:
    """Inference takes the in-place path (no autograd): same outputs, and train-mode BN stats still update."""
    make_fast, make_ref, c, b, hw = CASES[case]
    fast, reference = paired(make_fast, make_ref, seed=7)
    x = make_input(b, c, hw)
    for train in (False, True):
        fast.train(train)
        reference.train(train)
        with torch.inference_mode():
            assert_close(fast(x), reference(x), f"{case} no-grad output (train={train})")
    for (name, a), (_, b_) in zip(fast.named_buffers(), reference.named_buffers()):
        assert_close(a.float(), b_.float(), f"buffer {name}")


@pytest.mark.parametrize("hw", [(5, 5), (13, 21)])
@pytest.mark.parametrize("fast_min_hw", [0, 10**9], ids=["fast-path", "official-order"])
def test_sa_both_paths_match_reference(monkeypatch, fast_min_hw: int, hw: tuple[int, int]) -> None:
    """ShuffleAttention runs the official op sequence on small maps and the fast path on large ones: force each."""
    from yolo_attn.layers import shuffle_attn

    monkeypatch.setattr(shuffle_attn, "_FAST_MIN_HW", fast_min_hw)
    for groups in (8, 4):
        fast, reference = paired(
            lambda g=groups: ShuffleAttention(64, g), lambda g=groups: ref.RefShuffleAttention(64, g), seed=41
        )
        x = make_input(2, 64, hw)
        grad_fn = type(fast(x.clone().requires_grad_(True)).grad_fn).__name__
        assert ("SAFunction" in grad_fn) == (fast_min_hw == 0), grad_fn  # the path under test really ran
        for train in (False, True):
            compare(reference, fast, x, train)


def test_simam_one_by_one_map_is_finite_where_official_is_nan() -> None:
    """Departure: at H*W = 1 the official code computes 0/0; here the gate is sigmoid(0.5) (d = 0, the limit)."""
    x = make_input(2, 8, (1, 1)).requires_grad_(True)
    with torch.no_grad():
        assert torch.isnan(ref.RefSimAM()(x)).all()
    y = SimAM(8)(x)
    assert_close(y.detach(), x.detach() * torch.sigmoid(torch.tensor(0.5)), "1x1 output")
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------------------------------ negative controls
def test_negative_control_simam_n_equals_hw() -> None:
    fast, wrong = SimAM(16), ref.RefSimAM(16, variant="n_hw")
    with pytest.raises(AssertionError):
        compare(wrong, fast, make_input(2, 16, (3, 4)), train=False)


def test_negative_control_sa_swapped_halves() -> None:
    fast, wrong = paired(lambda: ShuffleAttention(64, 8), lambda: ref.RefShuffleAttention(64, 8, "swapped_halves"), 3)
    with pytest.raises(AssertionError):
        compare(wrong, fast, make_input(2, 64), train=True)


@pytest.mark.parametrize("variant", ["relu", "weight_with_grad"])
def test_negative_control_nam(variant: str) -> None:
    """The older revision's ReLU changes outputs; letting the gradient through w changes only gamma's gradient."""
    fast, wrong = paired(lambda: NAM(32), lambda: ref.RefNAM(32, variant), 5)
    with pytest.raises(AssertionError, match="output" if variant == "relu" else "grad of Channel_Att.bn2.weight"):
        compare(wrong, fast, make_input(2, 32), train=True)


@pytest.mark.parametrize("variant", ["mean_max", "bn_momentum_default"])
def test_negative_control_triplet(variant: str) -> None:
    """Swapped pool order changes outputs; BN momentum 0.1 (not 0.01) shows in the running stats after one step."""
    fast, wrong = paired(lambda: TripletAttention(32), lambda: ref.RefTripletAttention(32, variant=variant), 9)
    with pytest.raises(AssertionError, match="output" if variant == "mean_max" else "buffer .*running_"):
        compare(wrong, fast, make_input(2, 32), train=True)


# ------------------------------------------------------------------------------------- gradients reach every parameter
@pytest.mark.parametrize(
    "factory, c",
    [(lambda: ShuffleAttention(64, 8), 64), (lambda: ShuffleAttention(96, 3), 96), (lambda: NAM(32), 32)]
    + [(lambda: TripletAttention(32), 32), (lambda: TripletAttention(32, True), 32)],
    ids=["SA-g8", "SA-g3", "NAM", "Triplet", "Triplet-no-spatial"],
)
def test_every_parameter_gets_gradient(factory, c: int) -> None:
    # Randomised: at SA's official init (sweight = 0) gn.weight/gn.bias get exactly zero gradient, as upstream.
    m = randomize_(factory(), seed=11).train()
    x = make_input(2, c).requires_grad_(True)
    y = m(x)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} gradient is all zero"


def test_simam_has_no_parameters_and_input_gets_gradient() -> None:
    m = SimAM(32)
    assert list(m.parameters()) == [] and m.state_dict() == {}
    x = make_input(2, 32).requires_grad_(True)
    (m(x) * torch.randn(2, 32, *SHAPE_HW)).sum().backward()
    assert x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "factory, pattern",
    [
        (lambda: SimAM(64, 0), r"SimAM: e_lambda must be a finite number > 0 .*got 0"),
        (lambda: SimAM(64, -1e-4), r"SimAM: e_lambda .* got -0.0001"),
        (lambda: SimAM(64, "1e-4"), r"SimAM: e_lambda .* got '1e-4'"),
        (lambda: SimAM(0), r"SimAM: channels must be a positive int; got 0"),
        (
            lambda: ShuffleAttention(64),
            r"ShuffleAttention: c1=64 is not divisible by 2 \* groups = 2 \* 64 .*"
            r"valid groups for c1=64: \[1, 2, 4, 8, 16, 32\]",
        ),
        (
            lambda: ShuffleAttention(48, 5),
            r"ShuffleAttention: c1=48 .* 2 \* 5 .*valid groups for c1=48: \[1, 2, 3, 4, 6, 8, 12, 24\]",
        ),
        (lambda: ShuffleAttention(64, 0), r"ShuffleAttention: .*groups = 2 \* 0"),
        (lambda: ShuffleAttention(64, 8.0), r"ShuffleAttention: .*groups = 2 \* 8\.0"),
        (lambda: ShuffleAttention(63, 1), r"ShuffleAttention: c1=63 is odd"),
        (lambda: ShuffleAttention([64, 64]), r"ShuffleAttention takes one input; got channels \[64, 64\]"),
        (lambda: NAM(-8), r"NAM: channels must be a positive int; got -8"),
        (lambda: NAM(64.0), r"NAM: channels must be a positive int; got 64\.0"),
        (lambda: TripletAttention(64, 1), r"TripletAttention: no_spatial must be True or False; got 1"),
        (lambda: TripletAttention("64"), r"TripletAttention: channels must be a positive int; got '64'"),
    ],
)
def test_bad_arguments(factory, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        factory()


def test_valid_groups_rule_brute_force() -> None:
    for c in range(2, 300, 2):
        expected = [g for g in range(1, 65) if c // (2 * g) >= 1 and (c // g) * g == c and (c // g) % 2 == 0]
        assert [g for g in valid_groups(c) if g <= 64] == expected, c
        for g in expected:
            ShuffleAttention(c, g)  # every listed value builds


# --------------------------------------------------------------------------------------------------- fitted defaults
@pytest.mark.parametrize("c, fitted", [(16, 8), (32, 16), (64, 32), (96, 48), (128, None), (256, None), (80, 40)])
def test_sa_groups_fitted_like_the_plugin_rule(c: int, fitted: int | None) -> None:
    from yolo_attn.plugin.layer_args import fit_defaults

    rule = ShuffleAttention.fit_defaults["groups"]
    assert rule(c, 64) == (c % 128 == 0)
    keywords, notes = fit_defaults(ShuffleAttention, c, [], {})
    assert keywords == ({} if fitted is None else {"groups": fitted})
    assert bool(notes) == (fitted is not None)
    if fitted is not None:
        assert ShuffleAttention(c, fitted).groups == fitted
        assert fit_defaults(ShuffleAttention, c, [4], {}) == ({}, [])  # an explicit value is never changed


# ---------------------------------------------------------------------------------------------------- gate taps
def _collect_gates(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[GateTap, torch.Tensor]]]:
    gates: list[tuple[GateTap, torch.Tensor]] = []
    taps = [t for t in m.modules() if isinstance(t, GateTap)]
    hooks = [t.register_forward_hook(lambda mod, inp, out: gates.append((mod, out))) for t in taps]
    try:
        out = m(x)
    finally:
        for h in hooks:
            h.remove()
    return out, gates


GATE_LAYERS = {
    "SimAM": (lambda: SimAM(32), [("element", None)]),
    "SA-g8": (lambda: ShuffleAttention(32, 8), [("channel", "channel"), ("element", "spatial")]),
    "SA-g3": (lambda: ShuffleAttention(48, 3), [("channel", "channel"), ("element", "spatial")]),
    "NAM": (lambda: NAM(32), [("element", None)]),
    "Triplet": (lambda: TripletAttention(32), [("strip_w", "C-W"), ("strip_h", "H-C"), ("spatial", "H-W")]),
    "Triplet-no-spatial": (lambda: TripletAttention(32, True), [("strip_w", "C-W"), ("strip_h", "H-C")]),
}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list(GATE_LAYERS))
def test_gate_taps_reproduce_the_output(name: str, train: bool) -> None:
    """``output == input * gates`` (product; mean for TripletAttention; then the 2-way shuffle for SA)."""
    factory, kinds = GATE_LAYERS[name]
    m = randomize_(factory(), seed=13)
    m.train(train)
    assert "element" in GATE_KINDS
    c = m.c1
    x = make_input(2, c)
    with torch.no_grad():
        fast = copy.deepcopy(m)(x)  # the fast path (nothing observed), same BN state
        out, gates = _collect_gates(m, x)
    assert [(t.kind, t.label) for t, _ in gates] == kinds
    assert_close(out, fast, "observed path vs fast path")
    broadcast = [GateTap.broadcast(g, c) for _, g in gates]
    for (tap, g), full in zip(gates, broadcast):
        assert (x * full).shape == x.shape, f"{tap.kind} gate {tuple(g.shape)} does not broadcast"
    if getattr(m, "gate_combine", "product") == "mean":
        total = sum(broadcast) / len(broadcast)
    else:
        total = torch.ones(())
        for g in broadcast:
            total = total * g
    rebuilt = x * total
    if getattr(m, "output_channel_shuffle", None):
        rebuilt = channel_shuffle(rebuilt, m.output_channel_shuffle)
    assert_close(rebuilt, out, "input * gates")


@pytest.mark.parametrize("name", list(GATE_LAYERS))
def test_gradients_flow_while_gates_are_observed(name: str) -> None:
    """Hooks on the taps (Grad-CAM-style reading during a backward) switch paths, not results."""
    factory, _ = GATE_LAYERS[name]
    observed = randomize_(factory(), seed=37).train()
    fast = copy.deepcopy(observed)
    hooks = [t.register_forward_hook(lambda *a: None) for t in observed.modules() if isinstance(t, GateTap)]
    assert all(t.observed for t in observed.modules() if isinstance(t, GateTap))
    x = make_input(2, observed.c1)
    y_obs, gx_obs, gp_obs = _run(observed, x, seed=3)
    for h in hooks:
        h.remove()
    y, gx, gp = _run(fast, x, seed=3)
    assert_close(y_obs, y, "output")
    assert_close(gx_obs, gx, "input grad")
    for k, g in gp.items():
        assert_close(gp_obs[k], g, f"grad of {k}")


@pytest.mark.parametrize("name", list(GATE_LAYERS))
def test_gate_taps_add_no_state(name: str) -> None:
    m = GATE_LAYERS[name][0]()
    keys = set(m.state_dict())
    assert not any("gate" in k for k in keys)
    assert pickle.loads(pickle.dumps(m)).state_dict().keys() == keys


def test_official_state_dicts_load_strict() -> None:
    """Keys of the official modules (as the references reproduce them) are the production keys."""
    pairs = [
        (ShuffleAttention(128), ref.RefShuffleAttention(128)),
        (NAM(64), ref.RefNAM(64)),
        (TripletAttention(64), ref.RefTripletAttention(64)),
        (TripletAttention(64, True), ref.RefTripletAttention(64, no_spatial=True)),
    ]
    for fast, official in pairs:
        buf = io.BytesIO()
        torch.save(randomize_(official, seed=17).state_dict(), buf)
        buf.seek(0)
        fast.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    assert set(ShuffleAttention(128).state_dict()) == {"cweight", "cbias", "sweight", "sbias", "gn.weight", "gn.bias"}
    assert {k for k in NAM(8).state_dict() if not k.endswith("num_batches_tracked")} == {
        "Channel_Att.bn2.weight",
        "Channel_Att.bn2.bias",
        "Channel_Att.bn2.running_mean",
        "Channel_Att.bn2.running_var",
    }


def test_bfloat16_input_keeps_dtype() -> None:
    """Half inputs with float32 weights (TripletAttention's convs need matching dtypes, like any nn.Conv2d)."""
    for m in (SimAM(32), randomize_(ShuffleAttention(32, 4), 19), randomize_(NAM(32), 19)):
        m.eval()
        x = make_input(2, 32)
        with torch.no_grad():
            y = m(x.to(torch.bfloat16))
            assert y.dtype == torch.bfloat16
            expected = m(x.to(torch.bfloat16).float())
        torch.testing.assert_close(y.float(), expected, atol=0.05, rtol=0.02)


# ------------------------------------------------------------------------------------------------------------- ONNX
def _seeded_input(shape: tuple[int, ...]) -> torch.Tensor:
    return make_input(*shape[:2], shape[2:], seed=shape[2])


@pytest.mark.parametrize(
    "factory, c",
    [(lambda: SimAM(32), 32), (lambda: ShuffleAttention(64, 16), 64), (lambda: ShuffleAttention(48, 3), 48)]
    + [(lambda: NAM(32), 32), (lambda: TripletAttention(32), 32)],
    ids=["SimAM", "SA", "SA-odd-groups", "NAM", "Triplet"],
)
def test_dynamic_onnx_two_shapes(factory, c: int) -> None:
    onnx_roundtrip(randomize_(factory(), seed=23), (2, c, 16, 16), [(1, c, 13, 21), (3, c, 24, 17)], _seeded_input)


@pytest.mark.parametrize(
    "factory, c",
    [(lambda: SimAM(32), 32), (lambda: ShuffleAttention(64, 16), 64), (lambda: NAM(32), 32)]
    + [(lambda: TripletAttention(32), 32)],
    ids=["SimAM", "SA", "NAM", "Triplet"],
)
def test_torchscript_trace_is_shape_independent(factory, c: int) -> None:
    """Ultralytics' TorchScript export traces the model: the trace must not bake in the example's B, H or W."""
    model = randomize_(factory(), seed=31).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, make_input(2, c, (16, 16)))
    for shape in [(1, 13, 21), (3, 24, 17)]:
        x = make_input(shape[0], c, shape[1:])
        with torch.no_grad():
            assert_close(traced(x), model(x), f"traced at {shape}")


def test_simam_onnx_handles_one_by_one() -> None:
    """The exported graph keeps H*W symbolic, including the 1x1 guard."""
    onnx_roundtrip(SimAM(8), (2, 8, 16, 16), [(1, 8, 1, 1), (2, 8, 5, 3)], _seeded_input)


# ------------------------------------------------------------------------------------------------------- models
ULTRALYTICS_CFG = Path(__import__("ultralytics").__file__).parent / "cfg" / "models"
BASES = {"yolov8": ULTRALYTICS_CFG / "v8" / "yolov8.yaml", "yolo26": ULTRALYTICS_CFG / "26" / "yolo26.yaml"}


def _detect_inputs(text: str) -> list[int]:
    rows = yaml.safe_load(text)
    detect = (rows["backbone"] + rows["head"])[-1]
    assert detect[2] == "Detect"
    return list(detect[0])


def _largest_groups(c: int) -> int:
    return max(g for g in range(1, 65) if c % (2 * g) == 0)


#: Expected parameters of one layer at c channels, from the layers' definitions (independent of the modules).
LAYER_PARAMS = {
    "SimAM": lambda c: 0,
    "ShuffleAttention": lambda c: 6 * (c // (2 * _largest_groups(c))),  # cweight, cbias, sweight, sbias, gn w/b
    "SA": lambda c: 6 * (c // (2 * _largest_groups(c))),
    "NAM": lambda c: 2 * c,  # BN weight and bias
    "TripletAttention": lambda c: 3 * (2 * 7 * 7 + 2),  # three 7x7 convs (2 -> 1, no bias) + BN(1) affine
}
NECK_CHANNELS = {"n": [64, 128, 256], "s": [128, 256, 512]}  # P3/P4/P5 outputs of yolov8 and yolo26 at n and s


def _build(text: str, scale: str):
    from yolo_attn.plugin import integration

    integration.register_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    cfg = yaml.safe_load(text)
    cfg["scale"] = scale
    return DetectionModel(cfg, verbose=False)


@functools.cache
def _base_params(family: str, scale: str) -> int:
    return sum(p.numel() for p in _build(BASES[family].read_text(), scale).parameters())


@pytest.mark.parametrize("scale", ["n", "s"])
@pytest.mark.parametrize("family", list(BASES))
@pytest.mark.parametrize("layer", list(LAYER_PARAMS))
def test_model_with_layer_after_neck_outputs(layer: str, family: str, scale: str, single_torch_thread) -> None:
    from yolo_attn.variants.edit import insert_layer

    base_text = BASES[family].read_text()
    outputs = _detect_inputs(base_text)
    assert outputs == ([15, 18, 21] if family == "yolov8" else [16, 19, 22])
    variant = _build(insert_layer(base_text, layer, [], after=outputs), scale)
    cls = {"SA": "ShuffleAttention"}.get(layer, layer)
    added = [m for m in variant.model if type(m).__name__ == cls]
    assert len(added) == 3

    seen: dict[int, tuple[int, int]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o: seen.__setitem__(mod.i, (i[0].shape[1], o.shape[1]))) for m in added
    ]
    variant.eval()
    with torch.no_grad():
        out = variant(torch.zeros(1, 3, 64, 96))
    for h in hooks:
        h.remove()
    assert [seen[m.i] for m in added] == [(c, c) for c in NECK_CHANNELS[scale]]
    assert [m.c1 for m in added] == NECK_CHANNELS[scale]
    if cls == "ShuffleAttention":  # the fitted default, the same rule at every row
        assert [m.groups for m in added] == [_largest_groups(c) for c in NECK_CHANNELS[scale]]
    # Detect reads the attention rows.
    assert variant.model[-1].f == [m.i for m in added]
    n_params = sum(p.numel() for p in variant.parameters())
    assert n_params == _base_params(family, scale) + sum(LAYER_PARAMS[layer](c) for c in NECK_CHANNELS[scale])
    assert isinstance(out, (tuple, list, dict, torch.Tensor))


def test_model_with_all_four_fuses_and_exports(single_torch_thread, tmp_path) -> None:
    """One yolov8n with all four layers: fuse keeps the output, dynamic ONNX matches at two input sizes."""
    ort = pytest.importorskip("onnxruntime")
    from yolo_attn.variants.edit import insert_layer

    text = BASES["yolov8"].read_text()
    text = insert_layer(text, "TripletAttention", [], after=[9])  # after SPPF; later rows shift by one
    text = insert_layer(text, "SimAM", [], after=[16])
    text = insert_layer(text, "SA", [], after=[20])
    text = insert_layer(text, "NAM", [], after=[24])
    model = _build(text, "n")
    names = [type(m).__name__ for m in model.model]
    for layer in ("TripletAttention", "SimAM", "ShuffleAttention", "NAM"):
        assert names.count(layer) == 1, names
    randomize_(model, seed=29, std=0.05)
    model.eval()
    x = make_input(1, 3, (64, 96))
    with torch.no_grad():
        before = model(x)[0]
        model.fuse()
        after = model(x)[0]
    assert_close(after, before, "fused model output")
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 64, 64),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["output0"],
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 64, 64), (2, 3, 96, 64)):
        xi = make_input(shape[0], 3, shape[2:], seed=shape[2])
        with torch.no_grad():
            want = model(xi)[0].numpy()
        got = session.run(None, {"images": xi.numpy()})[0]
        assert got.shape == want.shape
        assert abs(got - want).max() <= 1e-3


@pytest.mark.parametrize("layer", ["SimAM", "SA", "NAM", "TripletAttention"])
def test_c2f_block_with_layer_fits_16_channels(layer: str, single_torch_thread) -> None:
    """``C2f_<Layer>`` (the generic blocks): yolov8n's first C2f has 16-channel bottlenecks; SA gets groups 8."""
    from yolo_attn.variants.edit import replace_layer

    text = BASES["yolov8"].read_text()
    model = _build(replace_layer(text, f"C2f_{layer}", [2]), "n")
    cls = {"SA": "ShuffleAttention"}.get(layer, layer)
    inner = [m for m in model.model[2].modules() if type(m).__name__ == cls]
    assert inner and all(m.c1 == 16 for m in inner)
    if cls == "ShuffleAttention":
        assert all(m.groups == 8 for m in inner)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 64, 64))
