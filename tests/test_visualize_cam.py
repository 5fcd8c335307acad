"""CAM grids (`yolo_attn.visualize.cam`, on pytorch-grad-cam): two coco8 images x two models built from YAML.

Random weights are fine for what is checked here: one grid per image of the size the layout says, heatmaps that are
not constant, ``layers=`` hooking exactly the named rows, the gradient target being the model's own detections, and
errors that list the choices.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import SAMPLE_COCO8
from PIL import Image

pytest.importorskip("pytorch_grad_cam", reason="grad-cam is an optional extra: pip install 'yolo-attn[cam]'")

from yolo_attn.visualize import render_cam_grids  # noqa: E402
from yolo_attn.visualize._common import letterbox, load_model  # noqa: E402
from yolo_attn.visualize.cam import DetectionScoreTarget, _RawOutput, compute_cams, grid_pixels, resolve_layers  # noqa: E402

IMAGES = sorted((SAMPLE_COCO8 / "images" / "val").glob("*.jpg"))[:2]
IMGSZ = 64


@pytest.fixture(scope="module")
def models(single_torch_thread):
    torch.manual_seed(0)
    return [load_model("yolov8n.yaml"), load_model("yolov8n-ema.yaml")]


@pytest.fixture(scope="module")
def scaled(models):
    """The EMA model with its convs re-initialised (Kaiming, fan-in): activations keep their scale through the
    network. Ultralytics' default init shrinks them ~0.6x per conv, to ~1e-10 by P5, where the gradient maps of
    gradcam++ etc. underflow to exactly 0: true, but useless for checking what the target does."""
    model = copy.deepcopy(models[1].model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / m.weight[0].numel()) ** 0.5)
    return model


@pytest.fixture(scope="module")
def default_grids(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("cam")
    return render_cam_grids(models, IMAGES, imgsz=IMGSZ, out=out, verbose=False)


def test_one_grid_per_image_of_the_expected_size(default_grids):
    assert [g.path.name for g in default_grids] == [f"{p.stem}.png" for p in IMAGES]
    for grid in default_grids:
        assert grid.heatmaps.shape == (2, 3, IMGSZ, IMGSZ)  # models x layers (the three head inputs)
        with Image.open(grid.path) as im:
            assert im.size == grid_pixels(2, 3)
            assert np.asarray(im.convert("L")).std() > 5
        assert all("random init" in title for title in grid.models)  # built from YAML: the figure says so


def test_heatmaps_are_not_constant(default_grids):
    for grid in default_grids:
        for r in range(2):
            for c in range(3):
                cell = grid.heatmaps[r, c]
                assert np.isfinite(cell).all() and cell.min() >= 0
                assert cell.max() > cell.min(), f"model {r} layer {c} heatmap is constant"
        assert not np.allclose(grid.heatmaps[0], grid.heatmaps[1])  # two different models, two different maps


def test_default_layers_are_the_rows_feeding_the_head(default_grids):
    assert default_grids[0].layers == [
        ["row 15 C2f", "row 18 C2f", "row 21 C2f"],
        ["row 16 EMA", "row 20 EMA", "row 24 EMA"],
    ]


def test_layers_picks_the_named_rows(models, default_grids, tmp_path):
    grids = render_cam_grids(models, IMAGES[:1], layers=[18, "12"], imgsz=IMGSZ, out=tmp_path, verbose=False)
    grid = grids[0]
    assert grid.layers == [["row 18 C2f", "row 12 C2f"], ["row 18 Concat", "row 12 C2f"]]
    assert grid.heatmaps.shape == (2, 2, IMGSZ, IMGSZ)
    with Image.open(grid.path) as im:
        assert im.size == grid_pixels(2, 2)
    # yolov8n's row 18 is also its default second column: the same hooked module gives the same map.
    np.testing.assert_allclose(grid.heatmaps[0, 0], default_grids[0].heatmaps[0, 1], rtol=1e-5, atol=1e-12)
    assert not np.allclose(grid.heatmaps[0, 1], grid.heatmaps[0, 0])
    # a module inside a row: the first bottleneck of row 12's C2f
    ((label, module),) = resolve_layers(models[0].model, ["12.m.0"])
    assert label == "row 12 C2f m.0" and module is models[0].model.model[12].m[0]


def test_unknown_layer_and_method_fail_listing_the_choices(models, tmp_path):
    with pytest.raises(ValueError, match=r"layers=99: no such row.*Choices \(row index, type\): 0 Conv; .*15 C2f"):
        render_cam_grids(models, IMAGES[:1], layers=[99], imgsz=IMGSZ, out=tmp_path, verbose=False)
    with pytest.raises(ValueError, match=r"layers='15.nope'"):
        render_cam_grids(models, IMAGES[:1], layers=["15.nope"], imgsz=IMGSZ, out=tmp_path, verbose=False)
    with pytest.raises(ValueError, match="is the detection head itself"):
        resolve_layers(models[0].model, [22])
    with pytest.raises(
        ValueError, match=r"method='scorecam' is not one of eigencam, gradcam, gradcam\+\+, hirescam, layercam"
    ):
        render_cam_grids(models, IMAGES[:1], method="scorecam", imgsz=IMGSZ, out=tmp_path, verbose=False)
    with pytest.raises(ValueError, match="class='zebra-crossing' is not one of the model's classes"):
        render_cam_grids(
            [load_model("yolov8n.yaml")], IMAGES[:1], cls="zebra-crossing", imgsz=IMGSZ, out=tmp_path, verbose=False
        )
    from yolo_attn.visualize.commands import cam_command

    with pytest.raises(ValueError, match=r"unknown key\(s\) \['save_maps'\]"):
        cam_command(model="yolov8n.yaml", source=str(IMAGES[0]), save_maps=True)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam", "layercam"])
def test_gradient_methods_explain_the_models_own_detections(scaled, method):
    """The target is the detections after NMS: with none (conf 1.0: nothing passes) the map is empty."""
    model = scaled
    _, x = letterbox(IMAGES[0], IMGSZ)
    layers = resolve_layers(model, None)
    maps, dets = compute_cams(model, x, layers, method, conf=0.0, iou=0.7)
    assert len(dets) > 0
    assert all(m.max() > m.min() for m in maps), f"{method}: a constant map despite {len(dets)} detections"
    with torch.no_grad():
        raw = _RawOutput(model)(x)
    # The target reads exactly the scores NMS reported, at the anchors it kept.
    assert float(DetectionScoreTarget(dets)(raw[0])) == pytest.approx(float(dets.scores.sum()), rel=1e-5)
    empty, none = compute_cams(model, x, layers, method, conf=1.0)
    assert len(none) == 0 and all(m.max() == 0 for m in empty)


def test_class_restricts_the_target(scaled):
    model = scaled
    _, x = letterbox(IMAGES[0], IMGSZ)
    layers = resolve_layers(model, None)
    all_maps, all_dets = compute_cams(model, x, layers, "layercam", conf=0.0)
    counts = np.bincount(all_dets.classes)
    assert (counts > 0).sum() > 1, "need detections of several classes for this check"
    target = int(counts.argmax())
    maps, dets = compute_cams(model, x, layers, "layercam", conf=0.0, cls=target)
    assert len(dets) > 0 and set(dets.classes.tolist()) == {target}
    assert any(m.max() > 0 for m in maps)
    assert not all(np.allclose(a, b) for a, b in zip(maps, all_maps))  # a different target, a different map
