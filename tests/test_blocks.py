"""Attention inside Ultralytics' CSP blocks (``C2f_EMA``, ``C3k2_CBAM``, ``C3_SE``, ``C2f_ODConv``...).

Each generated block is checked against the stock block it extends: same args, channels and parameter names; the
attention layers get the channels of the tensor they really receive (forward hooks); parameter counts add up;
replacing the attention by identity gives the stock block's output exactly (and not with the attention: the
negative control); stock weights transfer 100%; fuse, export, pickling and the parser's errors behave.
"""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import ultralytics
import yaml
from conftest import load_in_fresh_process, subprocess_env
from torch import nn

from yolo_attn.plugin import integration, registry

integration.register_ultralytics()

from ultralytics.nn.modules import C2, C3, C2f, C3k2, Conv  # noqa: E402
from ultralytics.nn.modules.block import C3k  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

from yolo_attn.plugin import blocks  # noqa: E402
from yolo_attn.plugin.integration import ModelYAMLError  # noqa: E402

CFG = Path(ultralytics.__file__).parent / "cfg" / "models"
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _cfg(rel: str) -> dict:
    return yaml.safe_load((CFG / rel).read_text(encoding="utf-8"))


def _with_blocks(cfg: dict, stock: str, variant: str, section: str = "head", scale: str = "n") -> dict:
    out = copy.deepcopy(cfg)
    out["scale"] = scale
    for row in out[section]:
        if row[2] == stock:
            row[2] = variant
    return out


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _attention_modules(block: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(path, block.get_submodule(path)) for path in block.attn_layers]


def _identity_copy(block: nn.Module) -> nn.Module:
    """The block with every inserted attention layer replaced by identity (the stock computation)."""
    clone = copy.deepcopy(block)
    for path in clone.attn_layers:
        parent, _, name = path.rpartition(".")
        setattr(clone.get_submodule(parent) if parent else clone, name, nn.Identity())
    return clone


# -------------------------------------------------------------------------------------------------- single blocks
CASES = [
    # (block class name, stock class, ctor args (c1, c2, n, ...), options)
    ("C2f_EMA", C2f, (64, 64, 2, True), {}),
    ("C3k2_CBAM", C3k2, (64, 128, 1, False), {}),
    ("C3k2_CBAM", C3k2, (64, 128, 1, True), {}),  # c3k=True: inside the inner C3k's bottlenecks
    ("C3_SE", C3, (64, 64, 2, True), {}),
    ("C2_CoordAtt", C2, (64, 64, 1, True), {}),
    ("C2f_EMA", C2f, (64, 64, 1, True), {"position": "fuse"}),
    ("C3_EMA", C3, (64, 64, 1, True), {"position": "fuse"}),
    ("C2f_SE", C2f, (64, 64, 2, True), {"position": "mid"}),
]


def _build(name: str, args: tuple, options: dict) -> nn.Module:
    block, layer = name.split("_", 1)
    cls = blocks.block_class(block, layer)
    return cls(*args, *([options] if options else []))


@pytest.mark.parametrize(("name", "stock_cls", "args", "options"), CASES)
def test_block_matches_stock_with_attention_inside(name, stock_cls, args, options):
    torch.manual_seed(0)
    block = _build(name, args, options).eval()
    stock = stock_cls(*args).eval()
    assert isinstance(block, stock_cls)
    # Every stock tensor keeps its name and shape; the only new keys are the attention layers'.
    stock_sd, block_sd = stock.state_dict(), block.state_dict()
    assert all(k in block_sd and block_sd[k].shape == v.shape for k, v in stock_sd.items())
    attn = _attention_modules(block)
    assert attn, "no attention layer was inserted"
    new_keys = set(block_sd) - set(stock_sd)
    assert new_keys and all(any(k.startswith(p + ".") for p, _ in attn) for k in new_keys)
    # Parameters add up: stock block + the attention layers.
    assert _params(block) == _params(stock) + sum(_params(m) for _, m in attn)

    # Each attention layer receives a tensor with the channels it was built for.
    seen: dict[str, int] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, p=p: seen.__setitem__(p, a[0].shape[1])) for p, m in attn]
    x = torch.randn(2, args[0], 12, 20)
    block.load_state_dict(stock_sd, strict=False)
    with torch.no_grad():
        y = block(x)
    for h in hooks:
        h.remove()
    assert set(seen) == {p for p, _ in attn}
    for path, m in attn:
        assert seen[path] == m.c1, (path, seen[path], m.c1)

    # With the attention replaced by identity the output is the stock block's; with it, it is not.
    with torch.no_grad():
        want = stock(x)
        assert torch.equal(_identity_copy(block)(x), want)
        assert not torch.allclose(y, want, atol=1e-4)
    assert y.shape == want.shape


def test_default_position_is_the_residual_branch_of_every_bottleneck():
    block = blocks.block_class("C2f", "EMA")(64, 64, 2, True)
    assert block.attn_position == "bottleneck"
    assert block.attn_layers == ["m.0.attn", "m.1.attn"]
    assert all(type(b) is blocks.part_class("ResidualAttentionBottleneck") for b in block.m)
    # C3k2 with c3k=True: the bottlenecks of the inner C3k (two per C3k)
    inner = blocks.block_class("C3k2", "SE")(64, 64, 1, True)
    assert isinstance(inner.m[0], C3k)
    assert inner.attn_layers == ["m.0.m.0.attn", "m.0.m.1.attn"]
    # fuse: once, on the concatenation before the final 1x1 conv ((2 + n) * c channels in C2f)
    fused = blocks.block_class("C2f", "EMA")(64, 64, 2, True, {"position": "fuse"})
    assert fused.attn_layers == ["cv2.attn"] and fused.cv2.attn.c1 == (2 + 2) * 32
    assert isinstance(fused.cv2, blocks.part_class("AttentionInputConv"))


def test_residual_branch_maths_against_a_hand_written_bottleneck():
    """x + attn(cv2(cv1(x))) written out by hand from the stock Bottleneck's own convs."""
    torch.manual_seed(1)
    block = blocks.block_class("C2f", "SE")(32, 32, 1, True).eval()
    b = block.m[0]
    x = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        want = x + b.attn(b.cv2(b.cv1(x)))
        mid_want = x + b.cv2(b.attn(b.cv1(x)))
        assert torch.allclose(b(x), want)
        assert not torch.allclose(b(x), mid_want, atol=1e-5)


def test_layer_options_and_fitted_defaults():
    block = blocks.block_class("C2f", "EMA")(64, 64, 1, True, {"factor": 8})
    assert block.m[0].attn.groups == 8 and block.yolo_attn_notes == []
    # 16 channels inside the bottleneck (yolov8n's first C2f): the official 32 groups do not divide... 16 does.
    small = blocks.block_class("C2f", "EMA")(32, 32, 1, True)
    assert small.m[0].attn.c1 == 16 and small.m[0].attn.groups == 16
    assert "factor=16" in small.yolo_attn_notes[0] and "official default factor=32" in small.yolo_attn_notes[0]
    # 48 channels at the fuse position: largest divisor of 48 that is <= 32
    fused = blocks.block_class("C2f", "EMA")(32, 32, 1, True, {"position": "fuse"})
    assert fused.cv2.attn.c1 == 48 and fused.cv2.attn.groups == 24
    # an explicit invalid value is never changed: the layer's own error lists the valid ones
    with pytest.raises(ValueError, match=r"valid factor values for c1=16: \[1, 2, 4, 8, 16\]"):
        blocks.block_class("C2f", "EMA")(32, 32, 1, True, {"factor": 32})
    with pytest.raises(ValueError, match="position='after' is not one of bottleneck, mid, fuse"):
        blocks.block_class("C2f", "EMA")(32, 32, 1, True, {"position": "after"})
    with pytest.raises(ValueError, match="EMA has no argument 'groups'; valid keywords: factor"):
        blocks.block_class("C2f", "EMA")(32, 32, 1, True, {"groups": 4})
    with pytest.raises(ValueError, match="conv-like"):
        blocks.block_class("C2f", "ODConv")(32, 32, 1, True, {"position": "fuse"})


def test_conv_like_layer_replaces_the_bottleneck_3x3_convs():
    from yolo_attn.layers import ODConv

    block = blocks.block_class("C2f", "ODConv")(32, 64, 2, True, {"kernel_num": 2})
    stock = C2f(32, 64, 2, True)
    assert block.attn_position == "convs"
    assert block.attn_layers == ["m.0.cv1", "m.0.cv2", "m.1.cv1", "m.1.cv2"]
    for path in block.attn_layers:
        new, old = block.get_submodule(path), stock.get_submodule(path)
        assert isinstance(new, ODConv) and new.conv.kernel_num == 2
        assert (new.conv.c1, new.conv.c2) == (old.conv.in_channels, old.conv.out_channels)
    # C3's bottlenecks are 1x1 then 3x3: only the 3x3 is replaced
    c3 = blocks.block_class("C3", "ODConv")(32, 64, 1, True)
    assert c3.attn_layers == ["m.0.cv2"] and isinstance(c3.m[0].cv1, Conv)
    x = torch.randn(2, 32, 10, 14)
    assert block(x).shape == stock(x).shape == (2, 64, 10, 14)
    # BN tensors keep stock names and shapes; only the kernel banks differ
    stock_sd, block_sd = stock.state_dict(), block.state_dict()
    same = [k for k, v in stock_sd.items() if k in block_sd and block_sd[k].shape == v.shape]
    assert [k for k in stock_sd if k not in same] == [f"{p}.conv.weight" for p in block.attn_layers]


# ------------------------------------------------------------------------------------------------------ in models
MODEL_CASES = [
    ("v8/yolov8.yaml", "C2f", "C2f_EMA"),
    ("11/yolo11.yaml", "C3k2", "C3k2_CBAM"),  # head rows with c3k False and True at n
    ("v5/yolov5.yaml", "C3", "C3_SE"),
    ("v8/yolov8.yaml", "C2f", "C2f_ODConv"),
    ("26/yolo26.yaml", "C3k2", "C3k2_CA"),  # alias CA -> CoordAtt
]


@pytest.mark.parametrize("scale", ["n", "s"])
@pytest.mark.parametrize(("rel", "stock", "variant"), MODEL_CASES)
def test_blocks_in_models_keep_stock_rows_and_channels(rel, stock, variant, scale):
    cfg = _cfg(rel)
    base_cfg = copy.deepcopy(cfg)
    base_cfg["scale"] = scale
    base = DetectionModel(base_cfg, verbose=False)
    model = DetectionModel(_with_blocks(cfg, stock, variant, scale=scale), verbose=False)
    assert len(model.model) == len(base.model)
    replaced = [i for i, m in enumerate(model.model) if isinstance(m, blocks.AttentionBlock)]
    assert replaced and all(type(base.model[i]).__name__ == stock for i in replaced)
    base_sd, sd = base.state_dict(), model.state_dict()
    kind = registry.get_spec(variant.split("_", 1)[1]).kind
    for i in replaced:  # per row: stock block params + its layers' params (attention kind)
        row, stock_row = model.model[i], base.model[i]
        assert row.f == stock_row.f
        if kind == "attention":
            assert _params(row) == _params(stock_row) + sum(_params(m) for _, m in _attention_modules(row))
    if kind == "attention":
        assert all(k in sd and sd[k].shape == v.shape for k, v in base_sd.items())
    # channels seen by every inner attention layer equal what it was built for (one real forward)
    seen = []
    for i in replaced:
        for _, m in _attention_modules(model.model[i]):
            c1 = m.c1 if hasattr(m, "c1") else m.conv.c1  # ODConv wrapper: its ODConv2d knows c1
            m.register_forward_pre_hook(lambda mod, a, c1=c1: seen.append((a[0].shape[1], c1)))
    model.eval()(torch.zeros(1, 3, 64, 64))
    assert seen and all(got == want for got, want in seen)


def test_c3k2_scale_rule_applies_to_attention_blocks():
    """At m/l/x Ultralytics forces c3k=True for C3k2 rows; the attention variant follows the same rule."""
    cfg = _with_blocks(_cfg("11/yolo11.yaml"), "C3k2", "C3k2_EMA", section="backbone", scale="m")
    cfg["head"] = [[-1, 1, "nn.Identity", []]]  # backbone only: enough to see the rule
    cfg["backbone"][2][3] = [256, {"factor": 8}]  # c2 and options only: c3k omitted
    seq, _ = integration_parse(cfg)
    row = seq[2]
    assert isinstance(row.m[0], C3k), "c3k was not forced at scale m"
    assert all(m.groups == 8 for _, m in _attention_modules(row))


def integration_parse(cfg: dict):
    import ultralytics.nn.tasks as tasks

    return tasks.parse_model(copy.deepcopy(cfg), ch=3, verbose=False)


def test_block_names_are_case_insensitive_and_follow_aliases():
    cfg = _with_blocks(_cfg("v8/yolov8.yaml"), "C2f", "c2f_ema")
    model = DetectionModel(cfg, verbose=False)
    assert type(model.model[12]) is blocks.block_class("C2f", "EMA")
    assert blocks.block_class("C2f", "CA") is blocks.block_class("C2f", "CoordAtt")
    assert blocks.split_block_name("C2f_Nope") is None and blocks.split_block_name("Foo_EMA") is None


def test_unknown_block_layer_fails_naming_the_row():
    cfg = _with_blocks(_cfg("v8/yolov8.yaml"), "C2f", "C2f_Nope")
    with pytest.raises(ModelYAMLError, match=r"row 12 \(head\).*unknown module 'C2f_Nope'"):
        DetectionModel(cfg, verbose=False)


class ScaleGateForBlocks(nn.Module):
    """A user's channel-preserving layer: one learnt scale per channel."""

    def __init__(self, c1: int) -> None:
        super().__init__()
        self.c1 = c1
        self.scale = nn.Parameter(torch.ones(c1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_user_layers_get_block_variants_and_lose_them_when_unregistered():
    import ultralytics.nn.tasks as tasks

    registry.register_layer(ScaleGateForBlocks, kind="attention")
    try:
        assert tasks.C2f_ScaleGateForBlocks is blocks.block_class("C2f", "ScaleGateForBlocks")
        block = tasks.C3k2_ScaleGateForBlocks(32, 32, 1, False)
        assert block.attn_layers == ["m.0.attn"] and block.m[0].attn.c1 == 16  # cv2 of Bottleneck(16, 16, e=0.5)
    finally:
        registry.unregister_layer("ScaleGateForBlocks")
    assert "C2f_ScaleGateForBlocks" not in tasks.__dict__


def test_stock_weights_transfer_completely_into_blocks_variant():
    """``pretrained=``-style transfer (BaseModel.load): every stock tensor lands, unchanged."""
    torch.manual_seed(0)
    cfg = _cfg("v8/yolov8.yaml")
    base_cfg = copy.deepcopy(cfg)
    base_cfg["scale"] = "n"
    base = DetectionModel(base_cfg, verbose=False)
    variant = DetectionModel(_with_blocks(cfg, "C2f", "C2f_CBAM", section="backbone"), verbose=False)
    before = {k: v.clone() for k, v in variant.state_dict().items()}
    variant.load(base, verbose=False)
    base_sd, sd = base.state_dict(), variant.state_dict()
    transferred = [k for k, v in base_sd.items() if torch.equal(sd[k], v)]
    assert len(transferred) == len(base_sd) == 355
    attn = [k for k in sd if k not in base_sd]
    assert attn and all(".attn." in k for k in attn)
    assert all(torch.equal(sd[k], before[k]) for k in attn)  # attention tensors stay at their fresh init


def test_fuse_export_and_pickle(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    cfg = _with_blocks(_cfg("v8/yolov8.yaml"), "C2f", "C2f_EMA", scale="n")
    for row in cfg["head"]:
        if row[2] == "C2f_EMA" and row[3] == [256]:
            row[3] = [256, False, {"position": "fuse"}]  # one row per position in the same model
    model = DetectionModel(cfg, verbose=False).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        want = model(x)[0]
    # pickling (checkpoints) and fuse (val/predict/export) keep the attention
    fused = pickle.loads(pickle.dumps(model)).fuse(verbose=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.model[12].modules())
    with torch.no_grad():
        torch.testing.assert_close(fused(x)[0], want, atol=1e-3, rtol=1e-3)
    # dynamic ONNX through torch.onnx (Ultralytics' exporter path is covered by the CLI test): two input shapes
    path = tmp_path / "blocks.onnx"
    torch.onnx.export(
        fused,
        torch.zeros(1, 3, 64, 64),
        str(path),
        input_names=["images"],
        output_names=["out"],
        dynamic_axes={"images": {0: "b", 2: "h", 3: "w"}, "out": {0: "b", 2: "a"}},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 64, 96), (2, 3, 96, 64)):
        xi = torch.randn(shape)
        with torch.no_grad():
            ref = fused(xi)[0].numpy()
        got = session.run(None, {"images": xi.numpy()})[0]
        assert abs(got - ref).max() < 1e-3

    class Boxes(nn.Module):  # TorchScript traces one tensor output, as Ultralytics' exporter arranges
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.model(images)[0]

    traced = torch.jit.trace(Boxes(fused), torch.zeros(1, 3, 64, 96), check_trace=False)  # Detect caches anchors
    with torch.no_grad():
        torch.testing.assert_close(traced(x), fused(x)[0], atol=1e-4, rtol=1e-4)


def test_checkpoint_unpickles_in_a_fresh_process_with_safe_load(tmp_path):
    """Block classes are created on demand by name when a checkpoint is unpickled (also weights_only)."""
    cfg = _with_blocks(_cfg("11/yolo11.yaml"), "C3k2", "C3k2_SE", scale="n")
    model = DetectionModel(cfg, verbose=False)
    report = "'LOADED', type(m.model[13]).__module__, type(m.model[13]).__name__, len(m.model[13].attn_layers)"
    assert load_in_fresh_process(model, tmp_path, report) == "LOADED yolo_attn.plugin.blocks C3k2_SE 1"


def test_place_replaces_stock_block_rows_and_refuses_others(tmp_path):
    from yolo_attn.variants.placement import PlacementError, inspect, place

    out = tmp_path / "yolov8n-blocks.yaml"
    place("yolov8.yaml", "C2f_EMA", replace=[12, 15, 18, 21], out=out, scale="n")
    rows = inspect(out, imgsz=64)
    assert [r["module"] for r in rows if r["module"].startswith("C2f")].count("C2f_EMA") == 4
    with pytest.raises(PlacementError, match="not a C2f row"):
        place("yolov8.yaml", "C2f_EMA", replace=[16], scale="n")
    with pytest.raises(PlacementError, match="replaces a stock C2f row"):
        place("yolov8.yaml", "C2f_EMA", after=[15], scale="n")


@pytest.mark.slow
def test_yolo_cli_trains_validates_and_exports_a_blocks_variant(tmp_path, coco8_copy):
    """`yolo train model=yolov8n-cbam-blocks.yaml` with the real console script from an empty folder, then `yolo val`
    and a dynamic ONNX export that onnxruntime runs to the PyTorch outputs at two input shapes."""
    import numpy as np
    import onnxruntime as ort
    from conftest import console_script
    from ultralytics import YOLO

    env = subprocess_env(YOLO_ATTN_VARIANT_DIR=str(tmp_path / "variants"))
    work = tmp_path / "work"
    work.mkdir()
    common = ["imgsz=64", "batch=4", "workers=0", "device=cpu", "plots=False"]

    def yolo(*args: str, cwd: Path) -> str:
        run = subprocess.run([console_script("yolo"), *args], cwd=cwd, capture_output=True, text=True, env=env)
        assert run.returncode == 0, f"yolo {' '.join(args)}:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
        return run.stdout + run.stderr

    yolo("train", "model=yolov8n-cbam-blocks.yaml", f"data={coco8_copy}", "epochs=1", *common, "seed=0",
         f"project={work / 'runs'}", "name=blocks", cwd=work)  # fmt: skip
    best = work / "runs" / "blocks" / "weights" / "best.pt"
    model = torch.load(best, map_location="cpu", weights_only=False)["model"]
    rows = [m.i for m in model.model if type(m).__name__ == "C2f_CBAM"]
    assert rows == [12, 15, 18, 21]  # the head's C2f rows, same indices as the stock model
    assert all(type(b).__name__ == "ResidualAttentionBottleneck" for i in rows for b in model.model[i].m)
    assert "all" in yolo("val", f"model={best}", f"data={coco8_copy}", *common, cwd=work)

    yolo("export", f"model={best}", "format=onnx", "imgsz=64", "dynamic=True", "device=cpu", cwd=work)
    session = ort.InferenceSession(str(best.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    reference = YOLO(str(best)).model.float().fuse().eval()
    rng = np.random.default_rng(0)
    for shape in ((1, 3, 64, 64), (2, 3, 96, 64)):
        x = rng.random(shape, dtype=np.float32)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            want = reference(torch.from_numpy(x))[0].numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    "first",
    [
        "from yolo_attn.plugin.blocks import block_class; block_class('C2f', 'EMA')",
        "import pickle, yolo_attn.plugin.blocks as b; pickle.dumps(b.part_class('AttentionInputConv'))",
        "import ultralytics",
    ],
)
def test_blocks_work_whatever_is_imported_first(first):
    """Importing Ultralytics runs the start-up hook, which needs the blocks module: no import order may break it."""
    code = f"{first}\nimport ultralytics.nn.tasks as t\nprint('OK', t.C2f_EMA.__name__, t.C3k2_CA.__name__)\n"
    command = [sys.executable, "-W", "error::RuntimeWarning", "-c", code]
    run = subprocess.run(command, capture_output=True, text=True, env=subprocess_env())
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "OK C2f_EMA C3k2_CoordAtt"
