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
    class SkipsItsConv(nn.Module):  # holds a conv whose work the count must contain, but never reaches it
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    with pytest.raises(FlopCountError, match="0 conv/matmul MACs"):
        count_flops(SkipsItsConv(), 8, channels=3, name="skips-its-conv")


def test_elementwise_only_layer_with_parameters_counts_zero_macs() -> None:
    """Shuffle Attention / NAM style: parameters that only scale or normalise -- 0 MACs is the right count."""
    report = count_flops(nn.Sequential(nn.BatchNorm2d(3)), 8, channels=3, name="bn-only")
    assert report.macs == 0 and report.elementwise_ops == 2 * 3 * 64


# ------------------------------------------------------------------------------------------- Ultralytics reference
@pytest.fixture(scope="module")
def yolov8s():
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel("yolov8s.yaml", verbose=False)


@pytest.fixture(scope="module")
def yolov8s_fused_640(yolov8s):
    import copy

    fused_model = copy.deepcopy(yolov8s)
    fuse_model(fused_model)
    return fused_model, count_flops(fused_model, 640, name="yolov8s")


def test_yolov8s_fused_640_is_the_published_28_6(yolov8s, yolov8s_fused_640) -> None:
    unfused = count_flops(yolov8s, 640, name="yolov8s")
    fused_model, fused = yolov8s_fused_640
    assert fused.macs == fused.executed_macs == 14_301_312_000  # stock modules: both columns are the same count
    assert round(fused.gflops, 1) == round(fused.executed_gflops, 1) == 28.6  # Ultralytics docs: YOLOv8s 28.6 GFLOPs
    assert not fused.official_formulations
    assert all(row["macs"] == row["executed_macs"] for row in fused.layers)
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
    from yolo_attn.plugin import registry

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


# ------------------------------------------------------------------------ official formulation vs executed (headline)
def ema_official_macs(b: int, c: int, h: int, w: int, groups: int = 32) -> int:
    """MACs of the official EMA code (YOLOonMe/EMA-attention-module), counted by hand from its forward.

    On the (B*G, C/G, H, W) reshape: conv1x1 (C/G -> C/G, bias) on the concatenated (H + W) x 1 strips; conv3x3
    (C/G -> C/G, padding 1, bias) on the full map; two matmuls (1, C/G) x (C/G, H*W) per group. Pools, sigmoids,
    GroupNorm and softmax are elementwise.
    """
    bg, cg = b * groups, c // groups
    conv1x1 = bg * cg * (h + w) * cg
    conv3x3 = bg * cg * h * w * cg * 9
    matmuls = 2 * bg * h * w * cg
    return conv1x1 + conv3x3 + matmuls


def ema_executed_macs(b: int, c: int, h: int, w: int, groups: int = 32) -> int:
    """MACs of the ops yolo-attn's EMA executes in inference (yolo_attn/layers/ema.py ``_ema_forward``)."""
    g, cg, hw = groups, c // groups, h * w
    strips = b * g * cg * cg * (h + w)  # shared 1x1 conv as a matmul on each strip of means
    variance = b * g * cg * hw  # yc . yc per channel (bmm)
    a2 = b * g * cg * 9 * cg  # W3 . window means
    k1 = cg * 9 * cg  # a1 . W3 (the kernel of the shared 3x3 conv)
    t1 = b * g * 9 * hw * cg  # 9 tap maps per group, contracted over C/G (CPU loop path)
    t2 = b * g * hw * cg  # k2 . yc
    return strips + variance + a2 + k1 + t1 + t2 + cg  # + dot(a1, b3)


@pytest.fixture(scope="module")
def yolov8s_ema_640(yolov8s_fused_640):
    from ultralytics.nn.tasks import DetectionModel

    ema = DetectionModel("yolov8s-ema.yaml", verbose=False)
    fuse_model(ema)
    return yolov8s_fused_640[1], count_flops(ema, 640, name="yolov8s-ema")


def test_yolov8s_ema_official_delta_is_the_analytic_count_of_the_official_code(yolov8s_ema_640) -> None:
    base, ema = yolov8s_ema_640
    rows = ema.plugin_modules
    assert [r["layer"] for r in rows] == ["EMA"] * 3
    shapes = [r["output_shape"] for r in rows]
    assert shapes == [[1, 128, 80, 80], [1, 256, 40, 40], [1, 512, 20, 20]]
    analytic = sum(ema_official_macs(*s) for s in shapes)
    assert analytic == 31_211_520 + 30_474_240 + 30_228_480
    delta = ema.macs - base.macs
    assert delta == analytic
    assert 0.17 <= 2 * delta / 1e9 <= 0.25  # about +0.2 GFLOPs, the figure the literature reports for EMA
    assert round(ema.gflops, 2) == 28.79
    for row, shape in zip(rows, shapes):
        assert row["macs"] == ema_official_macs(*shape)
        assert row["formulation"] == "yolo_attn.bench.official_flops:ema_official"
    by_name = {e["name"]: e for e in ema.official_formulations}
    assert sorted(by_name) == ["model.16", "model.20", "model.24"]
    assert all(e["max_rel_diff"] < 1e-5 and e["calls"] == 1 for e in by_name.values())


def test_yolov8s_ema_executed_column_is_the_count_of_the_executed_ops(yolov8s_ema_640) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from yolo_attn import EMA

    base, ema = yolov8s_ema_640
    rows = ema.plugin_modules
    for row in rows:
        assert row["executed_macs"] == ema_executed_macs(*row["output_shape"])
    # a channel-preserving layer leaves every other layer's work unchanged, in both columns
    assert ema.executed_macs == base.executed_macs + sum(r["executed_macs"] for r in rows)
    assert ema.macs == base.macs + sum(r["macs"] for r in rows)
    assert round(ema.executed_gflops, 2) == 28.64  # what yolo-attn runs: +0.033 GFLOPs
    # torch's own counter on the same layer agrees (it has no rule for the 4-MAC dot product)
    _, c, h, w = rows[0]["output_shape"]
    layer = EMA(c).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as torch_counter:
        layer(torch.randn(1, c, h, w))
    assert torch_counter.get_total_flops() == 2 * (rows[0]["executed_macs"] - c // 32)
    # the layer rows partition both totals
    assert sum(r["macs"] for r in ema.layers) == ema.macs
    assert sum(r["executed_macs"] for r in ema.layers) == ema.executed_macs


def test_counting_does_not_switch_ema_to_its_observed_gate_path() -> None:
    """A hook on EMA's GateTap makes EMA materialise the gate: the counter must not add one."""
    from yolo_attn import EMA

    layer = EMA(64).eval()
    seen = []
    layer.register_forward_pre_hook(lambda m, args: seen.append(m.spatial_gate.observed))
    count_flops(layer, (12, 10), channels=64)
    assert seen and not any(seen)


def test_coordatt_both_columns_are_the_analytic_count() -> None:
    from yolo_attn import CoordAtt

    c, h, w = 96, 20, 28
    mip = max(8, c // 32)
    report = count_flops(CoordAtt(c).eval(), (h, w), channels=c)
    analytic = c * mip * (h + w) + mip * c * h + mip * c * w  # conv1 on the H+W strip, conv_h, conv_w (bias: elem)
    assert report.macs == report.executed_macs == analytic  # its forward is the official formulation
    assert not report.official_formulations


def odconv_official_macs(b: int, c1: int, c2: int, k: int, h_out: int, w_out: int, n: int = 4) -> int:
    """MACs of the official ODConv2d (OSVAI/ODConv, groups 1) by hand: the attention's 1x1 convs on the pooled
    vector (fc c1 -> A, then channel A -> c1, filter A -> c2, spatial A -> k*k, kernel A -> n) and the dynamic
    conv itself. The kernel mix sum_n a_s a_wn W_n is an elementwise multiply and sum in the official code."""
    a = max(int(c1 * 0.0625), 16)
    attention = c1 * a + a * c1 + a * c2 + a * k * k + a * n
    return b * (attention + c2 * h_out * w_out * c1 * k * k)


def test_odconv_official_and_executed_columns_are_the_analytic_counts() -> None:
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n-odconv.yaml", verbose=False)
    fuse_model(model)
    report = count_flops(model, 320)
    rows = report.plugin_modules
    assert [r["layer"] for r in rows] == ["ODConv", "ODConv"]
    for row in rows:
        conv = model.get_submodule(row["name"]).conv
        _, c2, ho, wo = row["output_shape"]
        official = odconv_official_macs(1, conv.c1, c2, conv.k, ho, wo)
        assert row["macs"] == official
        # yolo-attn mixes the bank with one (B, n) x (n, c2*c1*k*k) matmul: counted as MACs where it runs
        assert row["executed_macs"] == official + conv.kernel_num * c2 * conv.c1 * conv.k**2
        assert row["formulation"] == "conv: yolo_attn.bench.official_flops:odconv2d_official"
    assert [e["name"] for e in report.official_formulations] == [f"{r['name']}.conv" for r in rows]


class MergedPair(nn.Module):
    """Two 1x1 convs with no activation between them, run as one conv with the product kernel (cheaper, same maths).

    The official formulation runs them one after the other.
    """

    official_formulation = "test_bench_flops:merged_pair_official"

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1 = c
        self.a = nn.Conv2d(c, c, 1, bias=False)
        self.b = nn.Conv2d(c, c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = torch.mm(self.b.weight.flatten(1), self.a.weight.flatten(1))
        return F.conv2d(x, kernel[:, :, None, None])


def merged_pair_official(m: MergedPair, x: torch.Tensor) -> torch.Tensor:
    return m.b(m.a(x))


class Block(nn.Module):
    """A stock-style block with a declared layer nested inside (like an attention layer inside a C2f)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.inner = nn.Sequential(MergedPair(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.inner(x)


def test_declared_formulation_nested_in_a_block_is_attributed_per_module() -> None:
    c, h, w = 8, 6, 5
    model = nn.Sequential(nn.Conv2d(3, c, 1, bias=False), Block(c), MergedPair(c))
    report = count_flops(model, (h, w), channels=3)
    stem, conv3, pair_exec, pair_official = 3 * c * h * w, c * c * 9 * h * w, c**3 + c * c * h * w, 2 * c * c * h * w
    assert report.executed_macs == stem + conv3 + 2 * pair_exec
    assert report.macs == stem + conv3 + 2 * pair_official
    rows = {r["name"]: r for r in report.layers}
    assert (rows["1"]["macs"], rows["1"]["executed_macs"]) == (conv3 + pair_official, conv3 + pair_exec)
    assert (rows["2"]["macs"], rows["2"]["executed_macs"]) == (pair_official, pair_exec)
    assert [e["name"] for e in report.official_formulations] == ["1.inner.0", "2"]
    assert all(e["formulation"] == "test_bench_flops:merged_pair_official" for e in report.official_formulations)
    # executed-only counting when asked
    plain = count_flops(model, (h, w), channels=3, official=False)
    assert plain.macs == plain.executed_macs == report.executed_macs


def test_formulation_calling_children_gives_children_official_counts() -> None:
    c, h, w = 4, 3, 7
    report = count_flops(MergedPair(c), (h, w), channels=c)
    rows = {r["name"]: r for r in report.layers}
    assert rows["a"]["macs"] == rows["b"]["macs"] == c * c * h * w  # the formulation runs the children's convs
    assert rows["a"]["executed_macs"] == rows["b"]["executed_macs"] == 0  # the fast forward never calls them


def test_registered_formulation_and_callable_attribute() -> None:
    from yolo_attn.bench import official_formulation_of, register_official_formulation, unregister_official_formulation

    class Plain(MergedPair):
        official_formulation = None  # a subclass may opt out (its forward is official)

    assert official_formulation_of(Plain(2)) is None
    register_official_formulation(Plain, merged_pair_official)
    try:
        assert official_formulation_of(Plain(2)) is None  # the class's own attribute (None = opt out) wins
    finally:
        unregister_official_formulation(Plain)

    class Unmarked(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(c, c, 1, bias=False), nn.Conv2d(c, c, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return MergedPair.forward(self, x)

    register_official_formulation(Unmarked, merged_pair_official)
    try:
        report = count_flops(Unmarked(4), 5, channels=4)
    finally:
        unregister_official_formulation(Unmarked)
    assert report.macs == 2 * 4 * 4 * 25 and report.executed_macs == 4**3 + 4 * 4 * 25


def test_a_wrong_formulation_is_refused_not_counted() -> None:
    class WrongPair(MergedPair):
        official_formulation = staticmethod(lambda m, x: m.a(x))  # forgets the second conv: different maths

    with pytest.raises(FlopCountError, match="does not compute the module's output"):
        count_flops(WrongPair(4), 5, channels=4, name="wrong")

    class Unimportable(MergedPair):
        official_formulation = "no_such_module:fn"

    with pytest.raises(FlopCountError, match="cannot be imported"):
        count_flops(Unimportable(4), 5, channels=4)
