"""Faithfulness, gradient, argument and export tests for ``yolo_attn.layers``.

Equivalence is checked against ``tests/reference_layers.py`` (naive official-style code, written independently) after
copying weights with ``load_state_dict(strict=True)``: outputs, input gradients, parameter gradients and BN running
statistics, in train and eval mode, on non-square inputs. Each layer also has a negative control (a known-wrong
variant) that the same comparison must reject, so a passing equivalence test means something.

Tolerance: float32, ``rtol=1e-5`` and ``atol=1e-5 * max(1, max|expected|)`` (gradients are sums over B*H*W terms
whose magnitude grows with the input, so the absolute tolerance follows the tensor's scale), against the float32
reference or, where the official float32 computation is itself that far from the exact maths, against the reference
run in float64 (see ``compare``). No ``torch.backends`` settings are changed (CPU float32 matmuls are plain IEEE
float32, no TF32).
"""

from __future__ import annotations

import copy
import io
import sys
import warnings
import zlib
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the references live next to this file

import reference_layers as ref  # noqa: E402
from layer_checks import assert_close, onnx_roundtrip, randomize_  # noqa: E402

from yolo_attn.layers import CBAM, ECA, EMA, SE, CoordAtt, ODConv, ODConv2d, eca_kernel_size  # noqa: E402
from yolo_attn.layers.ema import _conv3x3_shared_backward, _conv3x3_shared_eager, _ema_forward  # noqa: E402

SHAPE_HW = (13, 21)  # non-square on purpose


# ------------------------------------------------------------------------------------------------------- helpers
def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    dst.load_state_dict(src.state_dict(), strict=True)


def _run(module: nn.Module, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    x = x.detach().clone().requires_grad_(True)
    y = module(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(y.dtype))
    grads = {name: p.grad.detach().clone() for name, p in module.named_parameters()}
    return y.detach(), x.grad.detach(), grads


def assert_close_to_either(actual: torch.Tensor, ref32: torch.Tensor, ref64: torch.Tensor, what: str) -> None:
    """Close (1e-5) to the float32 reference, or else to the float64 reference (the exact maths)."""
    try:
        assert_close(actual, ref32, what)
    except AssertionError:
        assert_close(actual.double(), ref64, f"{what} (also not within tolerance of the float64 reference)")


def compare(reference: nn.Module, fast: nn.Module, x: torch.Tensor, train: bool, seed: int = 0) -> None:
    """Outputs, input grads, parameter grads and buffers of two modules with identical weights.

    Each tensor must be within tolerance of the float32 reference or, failing that, of the same reference run in
    float64. Gradients are sums over B*H*W terms and some are ill-conditioned (ODConv's attention BN over a batch of
    2 amplifies rounding ~100x): there the official float32 code itself is ~1e-4 away from the exact value (and so
    is ours); elsewhere (EMA's conv3x3.bias) the official float32 code is 4e-5 off while ours is 2e-6 off.
    """
    reference.train(train)
    fast.train(train)
    ref64 = copy.deepcopy(reference).double()
    y32, gx32, gp32 = _run(reference, x, seed)
    y64, gx64, gp64 = _run(ref64, x.double(), seed)
    y, gx, gp = _run(fast, x, seed)
    assert y.shape == y32.shape
    assert_close_to_either(y, y32, y64, "output")
    assert_close_to_either(gx, gx32, gx64, "input grad")
    assert gp.keys() == gp32.keys()
    for name, g in gp.items():
        assert_close_to_either(g, gp32[name], gp64[name], f"grad of {name}")
    ref_buffers = dict(reference.named_buffers())
    for name, buf in fast.named_buffers():
        assert_close(buf.float(), ref_buffers[name].float(), f"buffer {name}")


def max_output_diff(reference: nn.Module, fast: nn.Module, x: torch.Tensor) -> float:
    reference.eval()
    fast.eval()
    with torch.no_grad():
        return (reference(x) - fast(x)).abs().max().item()


def make_input(b: int, c: int, hw: tuple[int, int] = SHAPE_HW, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, *hw, generator=gen) * 1.5 + 0.3


# ---------------------------------------------------------------------------------------------- equivalence table
# id -> (production factory, reference factory, channels, batch, spatial size)
CASES = {
    "SE-16": (lambda: SE(16), lambda: ref.RefSE(16), 16, 2, SHAPE_HW),
    "SE-64-r8": (lambda: SE(64, 8), lambda: ref.RefSE(64, 8), 64, 3, (9, 5)),
    "SE-128": (lambda: SE(128), lambda: ref.RefSE(128), 128, 2, SHAPE_HW),
    "CBAM-16": (lambda: CBAM(16), lambda: ref.RefCBAM(16), 16, 2, SHAPE_HW),
    "CBAM-64-k3": (lambda: CBAM(64, 3), lambda: ref.RefCBAM(64, 3), 64, 3, (9, 5)),
    "CBAM-96-r8": (lambda: CBAM(96, 7, 8), lambda: ref.RefCBAM(96, 7, 8), 96, 2, SHAPE_HW),
    "ECA-16": (lambda: ECA(16), lambda: ref.RefECA(16, ref.ref_eca_kernel_size(16)), 16, 2, SHAPE_HW),
    "ECA-256": (lambda: ECA(256), lambda: ref.RefECA(256, ref.ref_eca_kernel_size(256)), 256, 2, SHAPE_HW),
    "ECA-64-k7": (lambda: ECA(64, 7), lambda: ref.RefECA(64, 7), 64, 3, (9, 5)),
    "CoordAtt-16": (lambda: CoordAtt(16), lambda: ref.RefCoordAtt(16), 16, 2, SHAPE_HW),
    "CoordAtt-64-r8": (lambda: CoordAtt(64, 8), lambda: ref.RefCoordAtt(64, 8), 64, 3, (9, 5)),
    "CoordAtt-512": (lambda: CoordAtt(512), lambda: ref.RefCoordAtt(512), 512, 2, (7, 11)),
    "EMA-64-g32": (lambda: EMA(64), lambda: ref.RefEMA(64), 64, 2, SHAPE_HW),
    "EMA-128-g32": (lambda: EMA(128), lambda: ref.RefEMA(128), 128, 2, (9, 5)),
    "EMA-96-g8": (lambda: EMA(96, 8), lambda: ref.RefEMA(96, 8), 96, 3, SHAPE_HW),
    "EMA-64-g4": (lambda: EMA(64, 4), lambda: ref.RefEMA(64, 4), 64, 2, (1, 7)),
    "EMA-32-g8-1x1": (lambda: EMA(32, 8), lambda: ref.RefEMA(32, 8), 32, 2, (2, 1)),
    "ODConv2d-k3": (lambda: ODConv2d(16, 32, 3, p=1), lambda: ref.RefODConv2d(16, 32, 3, padding=1), 16, 3, SHAPE_HW),
    "ODConv2d-k3s2g4d2": (
        lambda: ODConv2d(32, 64, 3, s=2, p=2, d=2, g=4),
        lambda: ref.RefODConv2d(32, 64, 3, 2, 2, 2, 4),
        32,
        2,
        SHAPE_HW,
    ),
    "ODConv2d-dw": (
        lambda: ODConv2d(16, 16, 3, p=1, g=16),
        lambda: ref.RefODConv2d(16, 16, 3, padding=1, groups=16),
        16,
        2,
        SHAPE_HW,
    ),
    "ODConv2d-k1-n4": (lambda: ODConv2d(16, 24, 1), lambda: ref.RefODConv2d(16, 24, 1), 16, 2, SHAPE_HW),
    "ODConv2d-k1-n1": (
        lambda: ODConv2d(16, 24, 1, kernel_num=1),
        lambda: ref.RefODConv2d(16, 24, 1, kernel_num=1),
        16,
        2,
        SHAPE_HW,
    ),
    "ODConv2d-k5-n1": (
        lambda: ODConv2d(16, 24, 5, p=2, kernel_num=1, reduction=0.25),
        lambda: ref.RefODConv2d(16, 24, 5, padding=2, reduction=0.25, kernel_num=1),
        16,
        2,
        SHAPE_HW,
    ),
    "ODConv-k3s2": (lambda: ODConv(16, 32, 3, 2), lambda: ref.RefODConv(16, 32, 3, 2), 16, 3, SHAPE_HW),
    "ODConv-k1": (lambda: ODConv(32, 16, 1), lambda: ref.RefODConv(32, 16, 1), 32, 2, SHAPE_HW),
}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case: str, train: bool) -> None:
    make_fast, make_ref, c, b, hw = CASES[case]
    torch.manual_seed(0)
    reference = randomize_(make_ref(), seed=zlib.crc32(case.encode()) % 1000)
    fast = make_fast()
    copy_weights(reference, fast)
    copy_weights(fast, reference)  # names and shapes match in both directions
    compare(reference, fast, make_input(b, c, hw), train)


@pytest.mark.parametrize("case", list(CASES))
def test_every_parameter_gets_gradient(case: str) -> None:
    make_fast, _, c, _, hw = CASES[case]
    torch.manual_seed(0)
    m = make_fast().train()  # default init: randomised weights can leave a 1-unit ReLU bottleneck dead
    # Per-sample signs and scales so that a 1-unit ReLU bottleneck (SE/CBAM at C = r) is active for some sample.
    y = m(make_input(4, c, hw) * torch.tensor([1.0, -1.0, 4.0, -4.0]).reshape(4, 1, 1, 1))
    (y * torch.randn_like(y)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{case}: {name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{case}: {name} gradient is all zero"


@pytest.mark.parametrize(
    "layer",
    [SE, CBAM, ECA, CoordAtt, lambda c: EMA(c, 16), lambda c: ODConv(c, c, 3), lambda c: ODConv2d(c, c, 3, p=1)],
    ids=["SE", "CBAM", "ECA", "CoordAtt", "EMA", "ODConv", "ODConv2d"],
)
@pytest.mark.parametrize("c", [32, 64, 160])
def test_output_shape_non_square(layer, c: int) -> None:
    x = torch.randn(2, c, 13, 21)
    with torch.no_grad():
        assert layer(c).eval()(x).shape == (2, c, 13, 21)


# ------------------------------------------------------------------------------------------------ negative controls
def test_negative_control_se_blog_linear_no_bias() -> None:
    fast = randomize_(SE(64), seed=5)
    blog = ref.RefSEBlog(64)
    with torch.no_grad():  # same weights, but the blog variant has no biases
        blog.fc[0].weight.copy_(fast.fc1.weight.flatten(1))
        blog.fc[2].weight.copy_(fast.fc2.weight.flatten(1))
    assert max_output_diff(blog, fast, make_input(2, 64)) > 1e-3


def test_negative_control_cbam_mean_max_order() -> None:
    blog = randomize_(ref.RefCBAM(64, variant="mean_max"), seed=5)
    fast = CBAM(64)
    copy_weights(blog, fast)
    assert max_output_diff(blog, fast, make_input(2, 64)) > 1e-3


def test_negative_control_eca_fixed_k3_vs_adaptive() -> None:
    fast = randomize_(ECA(256), seed=5)  # adaptive: k = 5
    k3 = ref.RefECA(256, 3)
    with torch.no_grad():  # best 3-tap approximation: the centre taps of the 5-tap kernel
        k3.conv.weight.copy_(fast.conv.weight[..., 1:4])
    assert fast.k_size == 5
    assert max_output_diff(k3, fast, make_input(2, 256)) > 1e-3


def test_negative_control_coordatt_swapped_heads() -> None:
    swapped = randomize_(ref.RefCoordAtt(64, variant="swapped_heads"), seed=5)
    fast = CoordAtt(64)
    copy_weights(swapped, fast)
    assert max_output_diff(swapped, fast, make_input(2, 64)) > 1e-3


def test_negative_control_ema_softmax_wrong_axis() -> None:
    wrong = randomize_(ref.RefEMA(64, 8, variant="softmax_wrong_axis"), seed=5)
    fast = EMA(64, 8)
    copy_weights(wrong, fast)
    assert max_output_diff(wrong, fast, make_input(2, 64)) > 1e-3


def test_negative_control_odconv_softmax_over_batch() -> None:
    wrong = randomize_(ref.RefODConv2d(16, 32, 3, padding=1, variant="softmax_batch_axis"), seed=5)
    fast = ODConv2d(16, 32, 3, p=1)
    copy_weights(wrong, fast)
    assert max_output_diff(wrong, fast, make_input(3, 16)) > 1e-3


# ---------------------------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "factory, pattern",
    [
        (lambda: SE(8), r"SE: reduction must be an int in 1\.\.8 .*got reduction=16"),
        (lambda: SE(64, 0), r"SE: reduction .* got reduction=0"),
        (lambda: CBAM(64, 5), r"CBAM: kernel_size must be one of \(3, 7\); got 5"),
        (lambda: CBAM(8), r"CBAM: reduction must be an int in 1\.\.8 .*got reduction=16"),
        (lambda: ECA(64, 4), r"ECA: k_size must be None .* odd int >= 1 \(1, 3, 5, 7, \.\.\.\); got k_size=4"),
        (lambda: ECA(64, 0), r"ECA: k_size .* got k_size=0"),
        (lambda: ECA(64, -3), r"ECA: k_size .* got k_size=-3"),
        (lambda: CoordAtt(64, 0), r"CoordAtt: reduction must be an int >= 1 .*got 0"),
        (
            lambda: EMA(48),
            r"EMA: c1=48 is not divisible by factor=32 \(factor is the number of groups G\); "
            r"valid factor values for c1=48: \[1, 2, 3, 4, 6, 8, 12, 16, 24, 48\]",
        ),
        (lambda: EMA(80, 0), r"EMA: c1=80 is not divisible by factor=0 .*\[1, 2, 4, 5, 8, 10, 16, 20, 40, 80\]"),
        (
            lambda: ODConv2d(16, 30, 3, g=4),
            r"ODConv2d: c1=16 and c2=30 must both be divisible by g=4; valid g .*\[1, 2\]",
        ),
        (
            lambda: ODConv(16, 32, 3, g=3),
            r"ODConv2d: c1=16 and c2=32 must both be divisible by g=3; valid g .*\[1, 2, 4",
        ),
        (lambda: ODConv2d(16, 32, 3, kernel_num=0), r"ODConv2d: kernel_num must be an int >= 1 .*got kernel_num=0"),
        (lambda: ODConv2d(16, 32, 0), r"ODConv2d: k \(kernel size\) must be an int >= 1; got k \(kernel size\)=0"),
        (lambda: ODConv2d(16, 32, 3, reduction=0), r"ODConv2d: reduction must be a number > 0"),
    ],
)
def test_bad_arguments(factory, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        factory()


ALL_LAYERS = {
    "SE": SE,
    "CBAM": CBAM,
    "ECA": ECA,
    "CoordAtt": CoordAtt,
    "EMA": EMA,
    "ODConv": lambda c: ODConv(c, 64, 3),
    "ODConv2d": lambda c: ODConv2d(c, 64, 3),
}


@pytest.mark.parametrize("name", list(ALL_LAYERS))
@pytest.mark.parametrize("bad", [0, -64, 64.0, "64"])
def test_bad_channels(name: str, bad) -> None:
    with pytest.raises(ValueError, match=rf"{name}: channels must be a positive int; got {bad!r}"):
        ALL_LAYERS[name](bad)


@pytest.mark.parametrize("name", list(ALL_LAYERS))
def test_several_inputs_message(name: str) -> None:
    layer = "ODConv2d" if name == "ODConv2d" else name
    msg = (
        rf"{layer} takes one input; got channels \[64, 128\] \(a YAML row whose `from` lists several layers\)\. "
        r"Put a Concat before it\."
    )
    with pytest.raises(ValueError, match=msg):
        ALL_LAYERS[name]([64, 128])


def test_odconv_c2_checked() -> None:
    with pytest.raises(ValueError, match=r"ODConv2d: channels must be a positive int; got 0"):
        ODConv(16, 0)


# ----------------------------------------------------------------------------------------------------------- ECA
# Hand-written from the paper's rule k = |log2(C)/2 + 1/2|_odd (nearest odd; ties -> up), gamma = 2, b = 1.
ECA_TABLE = {
    1: 1, 2: 1, 4: 1, 8: 3, 16: 3, 32: 3, 48: 3, 64: 3, 80: 3, 96: 3, 128: 5, 160: 5, 192: 5, 256: 5,
    320: 5, 384: 5, 512: 5, 640: 5, 768: 5, 1024: 5, 2048: 7, 4096: 7,
}  # fmt: skip


@pytest.mark.parametrize("c, k", sorted(ECA_TABLE.items()))
def test_eca_adaptive_kernel_table(c: int, k: int) -> None:
    assert eca_kernel_size(c) == k
    assert ECA(c).k_size == k
    assert ECA(c).conv.weight.shape == (1, 1, k)


def test_eca_rule_matches_paper_snippet_for_all_channel_counts() -> None:
    """The published snippet (truncate, bump even to odd) and the nearest-odd rule agree for C = 1..65535."""
    assert all(eca_kernel_size(c) == ref.ref_eca_kernel_size(c) for c in range(1, 1 << 16))
    assert eca_kernel_size(256, gamma=1, b=0) == 9  # log2(256) = 8 -> even -> 9


def test_eca_fixed_k() -> None:
    assert ECA(256, 3).k_size == 3


# ------------------------------------------------------------------------------------------------------ CoordAtt
@pytest.mark.parametrize(
    "c, reduction, mip",
    [(16, 32, 8), (64, 32, 8), (256, 32, 8), (288, 32, 9), (512, 32, 16), (1024, 32, 32), (256, 16, 16)],
)
def test_coordatt_mip_rule(c: int, reduction: int, mip: int) -> None:
    m = CoordAtt(c, reduction)
    assert m.mip == mip
    assert m.conv1.weight.shape == (mip, c, 1, 1)
    assert m.conv_h.weight.shape == m.conv_w.weight.shape == (c, mip, 1, 1)


# ------------------------------------------------------------------------------------------------------------ EMA
def test_ema_loads_official_state_dict_strict() -> None:
    official = randomize_(ref.RefEMA(128, 32), seed=11)
    buf = io.BytesIO()
    torch.save(official.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fast = EMA(128, 32)
    fast.load_state_dict(state, strict=True)
    assert set(fast.state_dict()) == {
        "gn.weight",
        "gn.bias",
        "conv1x1.weight",
        "conv1x1.bias",
        "conv3x3.weight",
        "conv3x3.bias",
    }
    assert max_output_diff(official, fast, make_input(2, 128)) < 1e-5


def test_ema_training_uses_custom_backward_and_plain_path_matches() -> None:
    """Training goes through the hand-written backward; the op-by-op path (export/autocast) is equivalent too."""
    official = randomize_(ref.RefEMA(64, 8), seed=13)
    fast = EMA(64, 8)
    copy_weights(official, fast)
    x = make_input(2, 64).requires_grad_(True)
    assert "EMAFunction" in type(fast(x).grad_fn).__name__

    xa, xb = x.detach().clone().requires_grad_(True), x.detach().clone().requires_grad_(True)
    ya = official(xa)
    params = (fast.conv1x1.weight, fast.conv1x1.bias, fast.gn.weight, fast.gn.bias, fast.conv3x3.weight)
    yb = _ema_forward(xb, *params, fast.conv3x3.bias, 8, 8, fast.gn.eps, eager=False)[0]
    assert_close(yb, ya, "plain-path output")
    gout = torch.randn_like(ya)
    ya.backward(gout)
    yb.backward(gout)
    assert_close(xb.grad, xa.grad, "plain-path input grad")
    official_params = dict(official.named_parameters())
    for name, p in fast.named_parameters():
        assert_close(p.grad, official_params[name].grad, f"plain-path grad of {name}")


def test_ema_conv_paths_agree() -> None:
    """The CPU loop implementation of the shared 3x3 conv and its gradients equal the grouped-conv one (GPU path)."""
    gen = torch.Generator().manual_seed(43)
    xg = torch.randn(2, 4, 8, 11, 6, generator=gen)
    k1 = torch.randn(8, 3, 3, generator=gen)
    dw = torch.randn(2, 4, 11, 6, generator=gen)
    assert_close(_conv3x3_shared_eager(xg, k1, loops=True), _conv3x3_shared_eager(xg, k1, loops=False), "t1")
    dx_loop, dk_loop = _conv3x3_shared_backward(xg, dw, k1, loops=True)
    dx_conv, dk_conv = _conv3x3_shared_backward(xg, dw, k1, loops=False)
    assert_close(dx_loop, dx_conv, "dx")
    assert_close(dk_loop, dk_conv, "dk1")


def test_ema_half_and_autocast_compute_in_float32() -> None:
    m = randomize_(EMA(64, 8), seed=47)
    x = make_input(2, 64)
    with torch.no_grad():
        expected = m(x)
        out_half = m(x.to(torch.bfloat16))
    assert out_half.dtype == torch.bfloat16
    with torch.no_grad():  # same result as float32 maths on the rounded input, rounded once at the end
        torch.testing.assert_close(out_half, m(x.to(torch.bfloat16).float()).to(torch.bfloat16))
    xa = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(xa)
    assert y.dtype == torch.float32
    assert_close(y.detach(), expected, "under autocast")
    y.sum().backward()
    assert xa.grad is not None and all(p.grad is not None for p in m.parameters())


def test_ema_dynamic_onnx_export() -> None:
    model = randomize_(EMA(64, 16), seed=17)
    onnx_roundtrip(model, (2, 64, 16, 16), [(1, 64, 13, 21), (3, 64, 24, 17)])


def test_ema_torchscript_trace_is_shape_independent() -> None:
    """Ultralytics' TorchScript export traces the model: the trace must not bake in the example's B, H or W."""
    model = randomize_(EMA(64, 16), seed=53).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.randn(2, 64, 16, 16))
    for shape in [(1, 64, 13, 21), (3, 64, 24, 17)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert_close(traced(x), model(x), f"traced at {shape}")


@pytest.mark.parametrize("layer", [SE, CBAM, ECA, CoordAtt], ids=["SE", "CBAM", "ECA", "CoordAtt"])
def test_channel_attention_dynamic_onnx_export(layer) -> None:
    onnx_roundtrip(randomize_(layer(64), seed=19), (2, 64, 16, 16), [(1, 64, 13, 21), (3, 64, 24, 17)])


# --------------------------------------------------------------------------------------------------------- ODConv
def _odconv_model() -> nn.Module:
    return randomize_(nn.Sequential(ODConv(16, 32, 3, 2), ODConv(32, 32, 1), ODConv(32, 32, 3, g=32)), seed=23, std=0.3)


def test_odconv_dynamic_onnx_export_batch_1_and_3() -> None:
    onnx_roundtrip(_odconv_model(), (2, 16, 32, 32), [(1, 16, 13, 21), (3, 16, 24, 17)])


def test_odconv_torchscript_trace_and_script_are_batch_independent() -> None:
    model = _odconv_model().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.randn(2, 16, 16, 16))
        scripted = torch.jit.script(model)
    for shape in [(1, 16, 13, 21), (3, 16, 24, 17)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x)
            assert_close(traced(x), expected, f"traced at {shape}")
            assert_close(scripted(x), expected, f"scripted at {shape}")


def test_odconv_unfold_path_matches_grouped_path() -> None:
    m = randomize_(ODConv2d(32, 64, 3, s=2, p=2, d=2, g=4), seed=29).eval()
    x = make_input(3, 32)
    agg = (m.weight.unsqueeze(0) * torch.rand(3, 4, 1, 1, 1, 1)).sum(1)
    with torch.no_grad():
        assert_close(m._conv_unfold(x, agg), m._conv_grouped(x, agg), "unfold vs grouped")


def test_odconv_fuse_matches_unfused_in_eval() -> None:
    m = randomize_(ODConv(16, 32, 3, 2), seed=31, std=0.3).eval()
    x = make_input(3, 16)
    with torch.no_grad():
        expected = m(x)
        m.fuse()
        assert isinstance(m.bn, nn.Identity) and m.conv.bias is not None
        assert_close(m(x), expected, "fused forward")
        assert_close(m.forward_fuse(x), expected, "forward_fuse")
        m.fuse()  # idempotent
        assert_close(m(x), expected, "fused twice")


def test_odconv_train_batch_one_uses_running_stats() -> None:
    """Batch 1 in training must not crash; the attention BN then uses (and keeps) its running statistics."""
    fast = randomize_(ODConv(16, 32, 3), seed=37, std=0.3)
    reference = ref.RefODConv(16, 32, 3)
    copy_weights(fast, reference)
    fast.train()
    reference.train()
    reference.conv.attention.bn.eval()  # what the departure means, expressed with the official module
    before = fast.conv.attention.bn.running_mean.clone()
    x = make_input(1, 16)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = reference(xa), fast(xb)
    assert_close(yb, ya, "batch-1 train output")
    ya.sum().backward()
    yb.sum().backward()
    assert_close(xb.grad, xa.grad, "batch-1 train input grad")
    assert torch.equal(fast.conv.attention.bn.running_mean, before)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        ref.RefODConv(16, 32, 3).train()(x)  # the official behaviour this departs from


def test_odconv_temperature() -> None:
    fast = randomize_(ODConv2d(16, 32, 3, p=1), seed=41)
    reference = ref.RefODConv2d(16, 32, 3, padding=1)
    copy_weights(fast, reference)
    x = make_input(2, 16)
    base = max_output_diff(reference, fast, x)
    fast.update_temperature(30.0)
    assert fast.attention.temperature == 30.0
    assert max_output_diff(reference, fast, x) > 1e-3  # temperature changes the output ...
    reference.attention.temperature = 30.0
    assert max_output_diff(reference, fast, x) <= max(base, 1e-5)  # ... exactly as in the official module


@pytest.mark.parametrize("k, d, p", [(1, 1, None), (3, 1, None), (5, 1, None), (3, 2, None), (3, 1, 0)])
def test_odconv_autopad_matches_ultralytics(k: int, d: int, p: int | None) -> None:
    conv_mod = pytest.importorskip("ultralytics.nn.modules.conv")
    assert ODConv(8, 16, k, 1, p, 1, d).conv.p == conv_mod.autopad(k, p, d)


def test_odconv_activation_and_attributes() -> None:
    assert isinstance(ODConv(8, 16).act, nn.SiLU)
    assert isinstance(ODConv(8, 16, act=False).act, nn.Identity)
    relu = nn.ReLU()
    assert ODConv(8, 16, act=relu).act is relu
    m = ODConv(8, 16, 3)
    assert isinstance(m.conv, ODConv2d) and isinstance(m.bn, nn.BatchNorm2d)
    assert m.conv.weight.shape == (4, 16, 8, 3, 3)
    assert m.conv.attention.fc.out_channels == 16  # A = max(int(8 * 0.0625), 16)
    assert ODConv2d(512, 512, 3).attention.fc.out_channels == 32
    # Skipped heads have no parameters (official state_dict layout).
    dw = ODConv2d(16, 16, 1, g=16, kernel_num=1)
    assert dw.attention.filter_fc is None and dw.attention.spatial_fc is None and dw.attention.kernel_fc is None
