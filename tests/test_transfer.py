"""Pretrained transfer: every baseline tensor reaches its renumbered row; Ultralytics' index-keyed transfer does not."""

from __future__ import annotations

import re
from copy import deepcopy

import pytest
import torch

from yolo_attn.plugin import integration, registry
from yolo_attn.variants.transfer import (
    NotAVariantError,
    TransferError,
    align_layers,
    make_initial_checkpoint,
    map_layers,
    renamed_state_dict,
    transfer_state_dict,
)

integration.register_ultralytics()

from ultralytics.nn.tasks import DetectionModel  # noqa: E402
from ultralytics.utils.torch_utils import intersect_dicts  # noqa: E402

PLUGIN = set(registry.list_layers())
ATTENTION_VARIANTS = [f"{fam}n-{v}.yaml" for fam in ("yolov8", "yolo11") for v in ("se", "cbam", "eca", "ema", "ca")]


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def bases() -> dict[str, DetectionModel]:
    out = {}
    for fam in ("yolov8", "yolo11"):
        torch.manual_seed(0)  # random (not pretrained) weights, fixed so failures reproduce
        model = DetectionModel(f"{fam}n.yaml", verbose=False)
        with torch.no_grad():  # BN statistics are at their defaults after a build; make them distinctive too
            for name, buf in model.named_buffers():
                if name.endswith(("running_mean", "running_var")):
                    buf.copy_(torch.rand_like(buf) + 0.5)
        out[fam] = model
    return out


def row_of(key: str) -> int:
    return int(re.match(r"model\.(\d+)\.", key).group(1))


@pytest.mark.parametrize("variant_name", ATTENTION_VARIANTS)
def test_every_base_tensor_reaches_its_renumbered_row(variant_name, bases):
    base = bases[variant_name.split("n-")[0]]
    variant = DetectionModel(variant_name, verbose=False)
    fresh = {k: v.clone() for k, v in variant.state_dict().items()}
    base_sd = base.state_dict()

    report = transfer_state_dict(base, variant)

    assert report.n_transferred == report.n_base_tensors == len(base_sd)  # BN buffers included
    assert report.n_skipped == 0 and not report.skipped
    plugin_rows = {m.i for m in variant.model if type(m).__name__ in PLUGIN}
    assert len(plugin_rows) == 3
    assert set(report.new) == {k for k in fresh if row_of(k) in plugin_rows}  # exactly the inserted layers' state
    assert report.n_variant_new + report.n_transferred == len(fresh)
    mapping = map_layers(base.yaml, variant.yaml)
    var_sd = variant.state_dict()
    for key, tensor in base_sd.items():
        new_key = f"model.{mapping[row_of(key)]}.{key.split('.', 2)[2]}"
        assert torch.equal(var_sd[new_key], tensor), key
    for key in report.new:
        assert torch.equal(var_sd[key], fresh[key]), f"{key} should keep its fresh initialisation"
    assert [j for j, _ in report.extra_rows] == sorted(plugin_rows)
    assert report.renumbered and all(i < j for i, j, _ in report.renumbered)


@pytest.mark.parametrize("variant_name", ["yolov8n-ema.yaml", "yolo11n-ca.yaml"])
def test_ultralytics_intersect_dicts_drops_layers_after_the_first_insertion(variant_name, bases):
    base = bases[variant_name.split("n-")[0]]
    variant = DetectionModel(variant_name, verbose=False)
    ours = transfer_state_dict(base, variant, load=False)
    stock = intersect_dicts(base.state_dict(), variant.state_dict())
    assert len(stock) < ours.n_transferred == len(base.state_dict())
    first_insert = min(j for j, _ in ours.extra_rows)
    assert all(row_of(k) < first_insert for k in stock), "index-keyed transfer only keeps rows before the insertion"


def test_map_layers_yolov8_ema():
    base = DetectionModel("yolov8n.yaml", verbose=False).yaml
    variant = DetectionModel("yolov8n-ema.yaml", verbose=False).yaml
    expected = {i: i for i in range(16)} | {16: 17, 17: 18, 18: 19, 19: 21, 20: 22, 21: 23, 22: 25}
    assert map_layers(base, variant) == expected
    alignment = align_layers(base, variant)
    assert alignment.extra == [16, 20, 24] and not alignment.replaced and not alignment.dropped


def test_odconv_rows_are_reported_not_transferred(bases):
    base = bases["yolov8"]
    variant = DetectionModel("yolov8n-odconv.yaml", verbose=False)
    report = transfer_state_dict(base, variant)
    assert report.replaced == [(16, 16, "Conv", "ODConv"), (19, 19, "Conv", "ODConv")]
    conv_keys = {k for k in base.state_dict() if row_of(k) in (16, 19)}
    assert set(report.skipped) == conv_keys
    assert all("replaced by ODConv" in reason for reason in report.skipped.values())
    assert report.n_transferred == len(base.state_dict()) - len(conv_keys)
    assert {row_of(k) for k in report.new} == {16, 19}
    assert "replaced rows (not transferred): 16 Conv -> 16 ODConv, 19 Conv -> 19 ODConv" in report.summary()


def test_removed_plugin_rows_and_tuple_input(bases):
    variant = DetectionModel("yolov8n-ema.yaml", verbose=False)
    state, report = renamed_state_dict((variant.state_dict(), variant.yaml), bases["yolov8"].yaml)
    assert report.n_base_tensors == len(variant.state_dict()) and report.n_transferred == len(state)
    assert [i for i, _ in report.dropped_rows] == [16, 20, 24]
    assert all("EMA has no counterpart" in r for r in report.skipped.values())
    assert set(state) == set(bases["yolov8"].state_dict())


def test_not_a_variant_pair_raises(bases):
    with pytest.raises(NotAVariantError, match=r"base row 2 C2f .* has no counterpart"):
        align_layers(bases["yolov8"].yaml, bases["yolo11"].yaml)
    rewired = deepcopy(bases["yolov8"].yaml)
    rewired["head"][1][0] = [-1, 4]  # the FPN Concat reads P3 instead of P4: same modules, different wiring
    with pytest.raises(NotAVariantError, match=r"base row 11 Concat"):
        align_layers(bases["yolov8"].yaml, rewired)


def test_initial_checkpoint_loads_and_trains_from_it(tmp_path, bases):
    from ultralytics import YOLO
    from ultralytics.nn.tasks import load_checkpoint

    base = deepcopy(bases["yolov8"]).half()
    base.names = {i: f"class{i}" for i in range(80)}
    base_pt = tmp_path / "base.pt"
    torch.save({"model": base, "train_args": {"imgsz": 64, "data": "coco8.yaml"}, "epoch": -1}, base_pt)
    out = tmp_path / "ema-init.pt"

    report = make_initial_checkpoint(base_pt, "yolov8n-ema.yaml", out)
    assert report.n_transferred == report.n_base_tensors == len(base.state_dict())

    loaded = YOLO(str(out))
    assert loaded.model.names[3] == "class3" and loaded.overrides["data"] == "coco8.yaml"
    mapping = map_layers(base.yaml, loaded.model.yaml)
    got = loaded.model.state_dict()
    for key, tensor in base.state_dict().items():
        new_key = f"model.{mapping[row_of(key)]}.{key.split('.', 2)[2]}"
        assert torch.equal(got[new_key].float(), tensor.float()), key
    # What `yolo train model=ema-init.pt` does: load_checkpoint, rebuild from its YAML, model.load(weights).
    weights, _ = load_checkpoint(out)
    rebuilt = DetectionModel(weights.yaml, nc=80, verbose=False)
    rebuilt.load(weights, verbose=False)
    assert all(torch.equal(v, weights.state_dict()[k]) for k, v in rebuilt.state_dict().items())

    with pytest.raises(TransferError, match=r"scale 'n' but the variant yolov8s-ema.yaml is scale 's'"):
        make_initial_checkpoint(base_pt, "yolov8s-ema.yaml", tmp_path / "s.pt")
    with pytest.raises(TransferError, match="is the base checkpoint itself"):
        make_initial_checkpoint(base_pt, "yolov8n-ema.yaml", base_pt)
