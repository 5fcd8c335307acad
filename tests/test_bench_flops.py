"""FLOPs counter: analytic counts for hand-checkable modules, the published yolov8s figure, no stride extrapolation.

Conventions under test (see ``yolo_attn.bench.flops``): MACs of conv/matmul (bias excluded), GFLOPs = 2 x MACs;
elementwise ops separate (pointwise 1/output, reductions 1/input, softmax 3, BN-eval 2, GN/LN 4 with affine,
pooling 1/window element, resampling 1/output).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yolo_attn.bench import FlopCountError, OpCounter, count_flops, fuse_model, thop_cross_check, ultralytics_get_flops


def counts(module: nn.Module, *inputs: torch.Tensor) -> tuple[int, int, OpCounter]:
    module.eval()
    with torch.inference_mode(), OpCounter(module) as counter:
        module(*inputs)
    return counter.macs, counter.elementwise, counter


class Fn(nn.Module):
    """Wrap a function of the inputs as a module (for functional-only work)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        return self.fn(*x)


# ------------------------------------------------------------------------------------------------- conv and matmul
@pytest.mark.parametrize(
    ("conv", "shape", "expected_macs"),
    [
        # dense 3x3, padding 1: C_out x H x W outputs x C_in x 9
        (nn.Conv2d(3, 8, 3, padding=1, bias=False), (1, 3, 10, 12), 8 * 10 * 12 * 3 * 9),
        # grouped, stride 2: output 5x6, each output sees C_in/groups = 2 channels
        (nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4, bias=False), (1, 8, 10, 12), 16 * 5 * 6 * 2 * 9),
        # depthwise 5x5
        (nn.Conv2d(6, 6, 5, padding=2, groups=6, bias=False), (2, 6, 7, 7), 2 * 6 * 7 * 7 * 25),
        # 1-D (ECA's conv across channels)
        (nn.Conv1d(1, 1, 3, padding=1, bias=False), (4, 1, 64), 4 * 64 * 3),
        # transposed, grouped: every input element scatters into C_out/groups x k x k outputs
        (nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2, bias=False), (1, 4, 5, 5), 4 * 5 * 5 * 3 * 4),
    ],
)
def test_conv_macs(conv: nn.Module, shape: tuple[int, ...], expected_macs: int) -> None:
    macs, elementwise, _ = counts(conv, torch.randn(shape))
    assert macs == expected_macs
    assert elementwise == 0  # no bias


def test_conv_bias_is_elementwise_not_macs() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
    macs, elementwise, _ = counts(conv, torch.randn(1, 3, 10, 12))
    assert macs == 8 * 10 * 12 * 27
    assert elementwise == 8 * 10 * 12  # one add per output element


def test_linear_matmul_einsum_bmm_sdpa() -> None:
    macs, elementwise, _ = counts(nn.Linear(5, 7), torch.randn(3, 5))
    assert (macs, elementwise) == (3 * 7 * 5, 3 * 7)

    a, b = torch.randn(2, 3, 4), torch.randn(2, 4, 6)
    assert counts(Fn(torch.matmul), a, b)[:2] == (2 * 3 * 6 * 4, 0)
    assert counts(Fn(lambda x, y: torch.einsum("bij,bjk->bik", x, y)), a, b)[:2] == (2 * 3 * 6 * 4, 0)
    assert counts(Fn(lambda x, y: x @ y), torch.randn(3, 4), torch.randn(4))[0] == 3 * 4  # matrix-vector

    q = k = v = torch.randn(1, 2, 8, 4)  # (B, heads, L, E): QK^T and (attn)V, 8*8*4 MACs each per head
    macs, elementwise, _ = counts(Fn(F.scaled_dot_product_attention), q, k, v)
    assert macs == 2 * 8 * 8 * (4 + 4)
    assert elementwise == 4 * 2 * 8 * 8  # scale + softmax (3) per score


# ------------------------------------------------------------------------------------------------------ elementwise
N = 2 * 4 * 6 * 5  # elements of the (2, 4, 6, 5) test tensor


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda x: x * torch.sigmoid(x) + 1, 3 * N),  # sigmoid, mul, add: 1 per output element each
        (F.silu, N),
        (F.hardswish, N),
        (lambda x: x.mean((2, 3), keepdim=True), N),  # a reduction reads every input element once
        (lambda x: x.amax(1), N),
        (lambda x: torch.var_mean(x, (2, 3)), 2 * N),
        (lambda x: x.softmax(1), 3 * N),  # exp, sum, divide
        (lambda x: F.group_norm(x, 2, torch.ones(4), torch.zeros(4)), 4 * N),  # stats 2 + normalise 1 + affine 1
        (lambda x: F.group_norm(x, 2), 3 * N),
        (lambda x: F.batch_norm(x, torch.zeros(4), torch.ones(4), torch.ones(4), torch.zeros(4)), 2 * N),
        (lambda x: F.max_pool2d(x, 3, 1, 1), N * 9),  # every output reads a 3x3 window
        (lambda x: F.adaptive_avg_pool2d(x, 1), N),
        (lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), 4 * N),  # 1 per output element
        (lambda x: torch.cat((x, x), 1).reshape(-1).clone(), 0),  # data movement is free
    ],
)
def test_elementwise_conventions(fn, expected: int) -> None:
    macs, elementwise, counter = counts(Fn(fn), torch.randn(2, 4, 6, 5))
    assert macs == 0
    assert elementwise == expected
    assert not counter.uncounted


def test_ops_without_a_rule_are_listed_not_hidden() -> None:
    _, _, counter = counts(Fn(lambda x: x.sort(1).values), torch.randn(2, 5))
    assert any("sort" in op for op in counter.uncounted)


class SE(nn.Module):
    """Squeeze-and-excitation with module convs: the classic hand-count example."""

    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


def test_se_block_analytic_and_module_attribution() -> None:
    c, h, w = 16, 10, 8
    model = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), SE(c))
    report = count_flops(model, (h, w), channels=3)
    stem = c * h * w * 3 * 9
    se_macs = c * (c // 4) + (c // 4) * c  # two 1x1 convs on a 1x1 map
    se_elem = c * h * w + (c // 4) + (c // 4) + c + c + c * h * w  # mean, bias, relu, bias, sigmoid, scale
    assert report.macs == stem + se_macs
    assert report.elementwise_ops == se_elem
    assert report.gflops == pytest.approx(2 * (stem + se_macs) / 1e9)
    by_name = {row["name"]: row for row in report.layers}
    assert by_name["0"]["macs"] == stem and by_name["1"]["macs"] == se_macs
    assert by_name["1"]["elementwise_ops"] == se_elem
    assert by_name["1"]["type"] == "SE" and by_name["1"]["output_shape"] == [1, c, h, w]
    assert report.functional_conv_macs == 0
    check = thop_cross_check(model, report)
    assert check["thop_gflops"] == pytest.approx(report.gflops)  # module convs only: both counters agree exactly


def test_functional_conv_is_counted_and_flagged() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    model = Fn(lambda x: F.conv2d(x, conv.weight, padding=1))  # borrowed weights: no module hook fires
    model.conv = conv
    report = count_flops(model, 6, channels=4)
    assert report.macs == report.functional_conv_macs == 4 * 36 * 4 * 9
    check = thop_cross_check(model, report)
    assert check["thop_gflops"] is None or check["thop_gflops"] < report.gflops  # thop misses it
    assert any("functionally" in note for note in check["notes"] + [check.get("error", "")])


# ------------------------------------------------------------------------------------------------ never a silent 0
def test_failure_raises_with_model_name() -> None:
    model = Fn(lambda x: x.reshape(7, -1, 3))
    model.p = nn.Parameter(torch.zeros(1))
    with pytest.raises(FlopCountError, match="broken-model"):
        count_flops(model, 8, channels=3, name="broken-model")


def test_zero_macs_for_model_with_parameters_raises() -> None:
    with pytest.raises(FlopCountError, match="0 conv/matmul MACs"):
        count_flops(nn.Sequential(nn.BatchNorm2d(3)), 8, channels=3, name="bn-only")


# ------------------------------------------------------------------------------------------- Ultralytics reference
@pytest.fixture(scope="module")
def yolov8s():
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel("yolov8s.yaml", verbose=False)


def test_yolov8s_fused_640_is_the_published_28_6(yolov8s) -> None:
    import copy

    unfused = count_flops(yolov8s, 640, name="yolov8s")
    fused_model = copy.deepcopy(yolov8s)
    fuse_model(fused_model)
    fused = count_flops(fused_model, 640, name="yolov8s")
    assert fused.macs == 14_301_312_000
    assert round(fused.gflops, 1) == 28.6  # Ultralytics docs: YOLOv8s 28.6 GFLOPs (fused, 640)
    # conv MACs do not change when BN folds in; the BN work leaves the elementwise column
    assert unfused.macs == fused.macs and unfused.elementwise_ops > fused.elementwise_ops
    assert not fused.uncounted_ops
    assert sum(row["macs"] for row in fused.layers) == fused.macs  # per-layer rows partition the total
    assert fused.layers[-1]["type"].endswith("Detect")
    check = thop_cross_check(fused_model, fused)
    assert check["thop_gflops"] == pytest.approx(fused.gflops, rel=1e-9)


# ----------------------------------------------------------------------------------- no stride extrapolation (CA)
class StripAttention(nn.Module):
    """Coordinate-Attention strips with module convs and mean pools (no BN, so thop counts only the convs)."""

    def __init__(self, c: int, mip: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, mip, 1)
        self.conv_h = nn.Conv2d(mip, c, 1)
        self.conv_w = nn.Conv2d(mip, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        y = torch.cat((x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)), 2)  # (B, C, H+W, 1)
        y = F.hardswish(self.conv1(y))
        a_h = self.conv_h(y[:, :, :h]).sigmoid()
        a_w = self.conv_w(y[:, :, h:]).sigmoid().transpose(2, 3)
        return x * a_h * a_w


def test_coordinate_attention_is_not_inflated_by_stride_extrapolation() -> None:
    c, mip, size = 16, 8, 640
    model = StripAttention(c, mip)
    analytic = 2 * c * mip * (size + size)  # conv1 on H+W strip positions, conv_h on H, conv_w on W
    report = count_flops(model, size, channels=c)
    assert report.macs == analytic
    check = thop_cross_check(model, report)
    assert check["thop_gflops"] == pytest.approx(report.gflops)  # at the real size the two counters agree
    extrapolated = ultralytics_get_flops(model, size)
    # get_flops profiles a 32-px-tall proxy and scales by area: strip work (∝ H+W) comes out many times too high
    assert extrapolated is not None and extrapolated > 4 * report.gflops


class BenchProbe(nn.Module):
    """A channel-preserving layer with module convs (thop sees them), registered for the per-module breakdown."""

    def __init__(self, c1: int) -> None:
        super().__init__()
        self.c1 = c1
        self.fc = nn.Conv2d(c1, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x).sigmoid()


def test_plugin_rows_per_registered_layer_with_thop_per_module() -> None:
    from yolo_attn import registry

    registry.register_layer(BenchProbe, kind="attention")
    try:
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Sequential(BenchProbe(8)), BenchProbe(8))
        report = count_flops(model, (6, 10), channels=3)
        thop_cross_check(model, report)
    finally:
        registry.unregister_layer("BenchProbe")
    rows = report.plugin_modules
    assert [(r["name"], r["layer"]) for r in rows] == [("1.0", "BenchProbe"), ("2", "BenchProbe")]
    for row in rows:
        assert row["macs"] == 8 * 8 * 60 and row["elementwise_ops"] == 3 * 8 * 60  # bias, sigmoid, mul
        assert row["output_shape"] == [1, 8, 6, 10] and row["params"] == 8 * 8 + 8
        assert row["thop_gflops"] == pytest.approx(row["gflops"])  # per-module cross-check found the subtree


def test_plugin_coordatt_model_counts_each_layer_analytically() -> None:
    from ultralytics.nn.tasks import DetectionModel

    base = DetectionModel("yolov8n.yaml", verbose=False)
    ca = DetectionModel("yolov8n-ca.yaml", verbose=False)
    fuse_model(base)
    fuse_model(ca)
    rb, rc = count_flops(base, 320), count_flops(ca, 320)
    rows = rc.plugin_modules
    assert [r["layer"] for r in rows] == ["CoordAtt"] * 3
    for row in rows:
        _, ch, h, w = row["output_shape"]
        mip = max(8, ch // 32)
        assert row["macs"] == 2 * ch * mip * (h + w)
    # channel-preserving layers leave every other layer's work unchanged
    assert rc.macs == rb.macs + sum(r["macs"] for r in rows)


def test_plugin_ema_row_matches_the_standalone_layer() -> None:
    from ultralytics.nn.tasks import DetectionModel

    from yolo_attn import EMA

    model = DetectionModel("yolov8n-ema.yaml", verbose=False)
    fuse_model(model)
    report = count_flops(model, 256)
    rows = report.plugin_modules
    assert [r["layer"] for r in rows] == ["EMA"] * 3
    for row in rows:
        _, ch, h, w = row["output_shape"]
        alone = count_flops(EMA(ch).eval(), (h, w), channels=ch)
        assert (row["macs"], row["elementwise_ops"]) == (alone.macs, alone.elementwise_ops)
        assert row["params"] == alone.params
