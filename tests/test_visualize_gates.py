"""Gate maps (`yolo_attn.visualize.gates`): the map the API returns is the layer's real gate.

For every attention layer in the registry (so layers added later are covered when they land): the layer's output
equals its input times the product of the gates the API returns (broadcast as the layer multiplies), in eval and
train mode, on random inputs and random weights; gates of a different input must fail the same check (so the check
can fail). In a detector, gates are named by YAML row and position, layers nested inside a row are found, and the
``.npy`` files ``save_maps=True`` writes hold exactly the same values.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLE_COCO8
from torch import nn

from yolo_attn.layers._gate import GateTap
from yolo_attn.plugin import registry
from yolo_attn.visualize import GateRecorder, collect_gates, layer_gate, render_gate_maps
from yolo_attn.visualize._common import load_model
from yolo_attn.visualize.gates import MAX_PANELS_PER_LINE, display_maps, figure_layout, figure_pixels

VAL_IMAGES = sorted((SAMPLE_COCO8 / "images" / "val").glob("*.jpg"))[:2]
#: Registered attention layers that are not gate-style, and why (everything else must declare its gates).
NOT_GATE_STYLE = {"TimmAttn": "a bridge to arbitrary timm modules, which declare no GateTap"}
ATTENTION = [s for s in registry.specs() if s.kind == "attention" and s.builtin and s.name not in NOT_GATE_STYLE]
C = 128  # every layer's official defaults fit (ShuffleAttention's 64 groups need C % 128 == 0)


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Random weights and BN statistics: default init (gamma=1, beta=0, zero biases) would hide mistakes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return module


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle as the official ShuffleAttention code writes it: (B, g, C/g, H, W) -> (B, C/g, g, H, W)."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)


def expected_output(layer: nn.Module, x: torch.Tensor, gates: dict) -> torch.Tensor:
    """What the layer's declared contract says its output is, from the recorded gates.

    Default: ``x * g1 * g2 * ...``; ``gate_combine = "mean"`` (TripletAttention): ``x * mean(g)``;
    ``output_channel_shuffle = k`` (ShuffleAttention): the result channel-shuffled in k groups.
    """
    parts = [g.broadcast() for g in gates.values()]
    if getattr(layer, "gate_combine", "product") == "mean":
        y = x * (sum(parts) / len(parts))
    else:
        y = x
        for part in parts:
            y = y * part
    shuffle = getattr(layer, "output_channel_shuffle", None)
    return channel_shuffle(y, shuffle) if shuffle else y


def test_registry_has_attention_layers():
    names = {s.name for s in ATTENTION}
    assert {"SE", "CBAM", "ECA", "CoordAtt", "EMA"} <= names


@pytest.mark.parametrize("spec", ATTENTION, ids=[s.name for s in ATTENTION])
def test_every_attention_layer_declares_a_gate(spec):
    layer = spec.cls(C)
    taps = [m for m in layer.modules() if isinstance(m, GateTap)]
    assert taps, f"{spec.name} declares no GateTap: its gate cannot be shown (see yolo_attn/layers/_gate.py)"
    assert len(GateRecorder(layer).names) == len(taps)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("spec", ATTENTION, ids=[s.name for s in ATTENTION])
def test_output_equals_input_times_gate(spec, train):
    torch.manual_seed(0)
    layer = randomize_(spec.cls(C), seed=len(spec.name)).train(train)
    plain = copy.deepcopy(layer)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, C, 13, 21, generator=gen) * 1.5 + 0.3  # non-square, batch 2
    other = torch.randn(2, C, 13, 21, generator=gen) * 1.5 - 0.2

    with GateRecorder(layer) as recorder, torch.no_grad():
        y = layer(x)
    gates = recorder.gates
    assert len(gates) == len(recorder.names), f"{spec.name}: not every declared gate was recorded"
    for g in gates.values():
        assert g.input_shape == tuple(x.shape)
        assert g.layer_type == spec.cls.__name__
    with torch.no_grad():
        expected_plain = plain(x)  # reading the gates does not change the output
    torch.testing.assert_close(y, expected_plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, expected_output(layer, x, gates), rtol=1e-5, atol=1e-6)
    if not getattr(layer, "output_channel_shuffle", None):
        torch.testing.assert_close(y, x * layer_gate(list(gates.values())), rtol=1e-5, atol=1e-6)

    # Negative controls: the gates of a different input, or one gate left out, must not explain this output.
    with GateRecorder(layer) as wrong, torch.no_grad():
        layer(other)
    assert not torch.allclose(y, expected_output(layer, x, wrong.gates), rtol=1e-3, atol=1e-4)
    if len(gates) > 1:
        first = next(iter(gates))
        partial = {k: v for k, v in gates.items() if k != first}
        assert not torch.allclose(y, expected_output(layer, x, partial), rtol=1e-3, atol=1e-4)
    if not train:  # collect_gates (the documented API) returns the same tensors; eval mode is deterministic
        for name, g in collect_gates(layer, x).items():
            torch.testing.assert_close(g.gate, gates[name].gate)


@pytest.mark.parametrize("spec", ATTENTION, ids=[s.name for s in ATTENTION])
def test_taps_add_no_state_dict_entries(spec):
    layer = spec.cls(C)
    tap_paths = [p for p, m in layer.named_modules() if isinstance(m, GateTap)]
    assert tap_paths and not [k for k in layer.state_dict() for p in tap_paths if k.startswith(p + ".")]


#: Layers that were released (and pickled into checkpoints) before gate taps existed.
OLDER_THAN_TAPS = ["SE", "CBAM", "ECA", "CoordAtt", "EMA"]


@pytest.mark.parametrize("name", OLDER_THAN_TAPS)
def test_checkpoints_pickled_before_taps_get_them_back(name):
    layer = randomize_(registry.get_layer(name)(C), seed=1).eval()
    tap_paths = [p for p, m in layer.named_modules() if isinstance(m, GateTap)]
    x = torch.randn(1, C, 7, 9)
    with torch.no_grad():
        expected = layer(x)
    old = copy.deepcopy(layer)
    for path in tap_paths:  # a module pickled before the taps existed
        parent, _, attr = path.rpartition(".")
        del old.get_submodule(parent)._modules[attr]
    assert not [m for m in old.modules() if isinstance(m, GateTap)]
    restored = pickle.loads(pickle.dumps(old))
    assert [p for p, m in restored.named_modules() if isinstance(m, GateTap)] == tap_paths
    with torch.no_grad():
        torch.testing.assert_close(restored(x), expected)
    with GateRecorder(restored) as recorder, torch.no_grad():
        restored(x)
    assert len(recorder.gates) == len(tap_paths)


@pytest.fixture(scope="module")
def detectors(single_torch_thread):
    torch.manual_seed(0)
    return [load_model("yolov8n-cbam.yaml"), load_model("yolov8n-ca.yaml"), load_model("yolov8n.yaml")]


def test_gates_in_a_detector_are_named_by_row(detectors):
    cbam, ca, base = detectors
    gates = collect_gates(cbam, VAL_IMAGES[0], imgsz=64)
    assert list(gates) == [f"row {r} CBAM {g}" for r in (16, 20, 24) for g in ("channel", "spatial")]
    assert gates["row 16 CBAM spatial"].gate.shape == (1, 1, 8, 8)  # P3 at imgsz 64
    assert gates["row 24 CBAM channel"].gate.shape == (1, 256, 1, 1)
    assert collect_gates(base, VAL_IMAGES[0], imgsz=64) == {}
    ca_gates = collect_gates(ca, VAL_IMAGES[0], imgsz=64)
    assert list(ca_gates)[:2] == ["row 16 CoordAtt h", "row 16 CoordAtt w"]
    panels = [p.title for p in display_maps(ca_gates)]
    assert any(t.startswith("row 16 CoordAtt h x w") for t in panels)  # the strips' product is shown too


def test_layers_nested_inside_a_row_are_found():
    """A layer inside a block (as in C2f_EMA's bottlenecks) is found by walking named_modules, named by position."""
    from yolo_attn.layers import EMA

    model = load_model("yolov8n.yaml").model
    row = model.model[6]  # C2f with 2 bottlenecks of 64 channels at scale n
    row.m[0] = nn.Sequential(row.m[0], EMA(64, 8))
    gates = collect_gates(model, torch.rand(1, 3, 64, 64))
    assert list(gates) == ["row 6 C2f m.0.1"]
    g = gates["row 6 C2f m.0.1"]
    assert g.path == "model.6.m.0.1.spatial_gate" and g.kind == "spatial" and g.groups == 8
    assert g.gate.shape == (1, 8, 4, 4) and g.input_shape == (1, 64, 4, 4)


def test_attention_inside_blocks_is_named_by_row_and_position(tmp_path):
    """C2f_EMA (in every bottleneck) and C2f_CBAM with position fuse (before the final conv), from real YAMLs."""
    import ultralytics

    stock = (Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yolov8.yaml").read_text()
    row4 = "- [-1, 6, C2f, [256, True]]"  # backbone row 4 (P3), 2 bottlenecks at scale n
    assert row4 in stock
    cases = {
        "yolov8n-c2f-ema.yaml": ("- [-1, 6, C2f_EMA, [256, True, {factor: 8}]]", ["m.0.attn", "m.1.attn"]),
        "yolov8n-c2f-cbam.yaml": (
            "- [-1, 6, C2f_CBAM, [256, True, {position: fuse}]]",
            ["cv2.attn channel", "cv2.attn spatial"],
        ),
    }
    for name, (row, inner) in cases.items():
        (tmp_path / name).write_text(stock.replace(row4, row, 1))
        gates = collect_gates(str(tmp_path / name), VAL_IMAGES[0], imgsz=64)
        block = row.split(",")[2].strip()
        assert list(gates) == [f"row 4 {block} {position}" for position in inner], name
        assert all(g.path.startswith("model.4.") for g in gates.values())


def test_figures_and_npy_files_hold_the_gates(detectors, tmp_path):
    cbam, ca, base = detectors
    paths = render_gate_maps([cbam, ca, base], VAL_IMAGES, imgsz=64, out=tmp_path, save_maps=True, verbose=False)
    assert [p.name for p in paths] == [f"{p.stem}.png" for p in VAL_IMAGES]
    from PIL import Image

    counts = [len(display_maps(collect_gates(m, VAL_IMAGES[0], imgsz=64))) for m in (cbam, ca, base)]
    assert counts == [6, 9, 0]  # CBAM: 3 x (channel bars, spatial map); CoordAtt: 3 x (h, w, h x w)
    assert figure_layout(counts) == (1 + 2 + 1, 1 + MAX_PANELS_PER_LINE)  # CoordAtt's 9 panels wrap to 2 lines
    for path in paths:
        with Image.open(path) as im:
            assert im.size == figure_pixels(*figure_layout(counts))
            assert np.asarray(im.convert("L")).std() > 5  # not blank
    for image in VAL_IMAGES:
        for model in (cbam, ca):
            folder = tmp_path / "maps" / image.stem / model.name
            index = json.loads((folder / "gates.json").read_text())
            gates = collect_gates(model, image, imgsz=64)
            assert [row["name"] for row in index] == list(gates)
            for row in index:
                saved = np.load(folder / row["file"])
                expected = gates[row["name"]].gate[0].numpy()
                assert saved.shape == expected.shape == tuple(row["shape"])
                np.testing.assert_array_equal(saved, expected)
    assert not (tmp_path / "maps" / VAL_IMAGES[0].stem / "yolov8n" / "gates.json").read_text().strip("[]\n ")


def test_attn_command_checks_its_arguments(tmp_path):
    from yolo_attn.visualize.commands import attn_command

    with pytest.raises(ValueError, match="model= is required"):
        attn_command(source=str(VAL_IMAGES[0]))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['layers'\]; valid keys: model, source"):
        attn_command(model="yolov8n-se.yaml", source=str(VAL_IMAGES[0]), layers=[1])
    with pytest.raises(FileNotFoundError, match="no such image"):
        attn_command(model="yolov8n-se.yaml", source=str(tmp_path / "missing.jpg"))
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        attn_command(model=str(tmp_path / "missing.pt"), source=str(VAL_IMAGES[0]))
    paths = attn_command(model="yolov8n-se.yaml", source=str(VAL_IMAGES[0]), imgsz=64, out=str(tmp_path))
    assert paths == [tmp_path / f"{VAL_IMAGES[0].stem}.png"] and paths[0].is_file()
