"""Fork-style YAML rows (channels first, like a Conv c2) build the layer the author meant, never silently wrong.

The rule (yolo_attn.plugin.layer_args): a channel-preserving layer's first YAML arg that, scaled like a Conv c2,
equals the true input channels is the channel count: dropped and logged. Anything else is the layer's own argument.
Keywords (a trailing mapping) and a top-level ``fork_args: literal`` force the literal reading.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import ultralytics
import yaml

from yolo_attn.plugin import integration

integration.register_ultralytics()

import ultralytics.nn.tasks as tasks  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

from yolo_attn.layers import CBAM, EMA, SE  # noqa: E402
from yolo_attn.plugin.integration import ModelYAMLError  # noqa: E402
from yolo_attn.plugin.layer_args import conv_scaled  # noqa: E402

CFG = Path(ultralytics.__file__).parent / "cfg" / "models"
pytestmark = pytest.mark.usefixtures("single_torch_thread")
# yolov8's neck outputs: rows 15 (256 unscaled), 18 (512), 21 (1024) feed Detect.
V8 = yaml.safe_load((CFG / "v8" / "yolov8.yaml").read_text(encoding="utf-8"))


def _neck_channels(scale: str) -> list[int]:
    _, width, max_ch = V8["scales"][scale]
    return [conv_scaled(c, width, max_ch) for c in (256, 512, 1024)]


def test_conv_scaled_is_ultralytics_make_divisible_rule():
    for value in (3, 8, 16, 100, 128, 256, 768, 1024, 2048):
        for width, max_ch in ((0.25, 1024), (0.5, 1024), (0.75, 768), (1.0, 512), (1.25, 512), (1, float("inf"))):
            assert conv_scaled(value, width, max_ch) == tasks.make_divisible(min(value, max_ch) * width, 8)


def _fork_text() -> str:
    """yolov8 with `[-1, 1, EMA, [<unscaled channels>]]` after each neck output: how the community writes it."""
    from yolo_attn.variants.edit import insert_layer

    text = (CFG / "v8" / "yolov8.yaml").read_text(encoding="utf-8")
    for row, channels in ((21, 1024), (18, 512), (15, 256)):  # last first: earlier indices stay valid
        text = insert_layer(text, "EMA", [channels], after=[row])
    return text


@pytest.mark.parametrize("scale", ["n", "s", "m", "l", "x"])
def test_channel_first_args_are_read_as_channels_at_every_scale(scale):
    cfg = yaml.safe_load(_fork_text())
    cfg["scale"] = scale
    model = DetectionModel(cfg, verbose=False)
    emas = [m for m in model.model if isinstance(m, EMA)]
    assert [m.c1 for m in emas] == _neck_channels(scale)
    assert all(m.groups == 32 for m in emas)  # the official default, not factor=<channels>
    for m in emas:
        notes = m.yolo_attn_notes
        assert len(notes) == 1 and "read as the channel count" in notes[0] and f"{m.c1} input channels" in notes[0]


def test_the_reading_is_logged_once_per_row(caplog):
    cfg = yaml.safe_load(_fork_text())
    cfg["scale"] = "n"
    lines = []
    handler = type("H", (__import__("logging").Handler,), {"emit": lambda self, r: lines.append(r.getMessage())})()
    tasks.LOGGER.addHandler(handler)
    try:
        DetectionModel(cfg, verbose=True)
    finally:
        tasks.LOGGER.removeHandler(handler)
    readings = [m for m in lines if m.startswith("yolo-attn: row") and "read as the channel count" in m]
    assert [m.split(":")[1].strip() for m in readings] == ["row 16 EMA", "row 20 EMA", "row 24 EMA"]


def test_literal_layer_args_are_kept():
    from yolo_attn.variants.edit import insert_layer

    text = (CFG / "v8" / "yolov8.yaml").read_text(encoding="utf-8")
    text = insert_layer(insert_layer(text, "CBAM", [7, 8], after=[21]), "EMA", [8], after=[21])
    cfg = yaml.safe_load(text)
    cfg["scale"] = "s"
    model = DetectionModel(cfg, verbose=False)
    ema, cbam = model.model[22], model.model[23]
    assert isinstance(ema, EMA) and (ema.c1, ema.groups) == (_neck_channels("s")[2], 8)
    assert not hasattr(ema, "yolo_attn_notes")
    assert isinstance(cbam, CBAM) and (cbam.kernel_size, cbam.reduction) == (7, 8)


NO_SCALES = {
    "nc": 80,
    "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [64, 3, 2]]],
    "head": [[-1, 1, "EMA", [64]], [[-1], 1, "Detect", ["nc"]]],
}


def test_collision_reads_channels_and_the_keyword_form_forces_the_literal_reading():
    # Without scales, [64] after a 64-channel row could be channels or factor=64: channels wins, and says how to
    # get the other reading.
    model = DetectionModel(copy.deepcopy(NO_SCALES), verbose=False)
    ema = model.model[2]
    assert (ema.c1, ema.groups) == (64, 32)
    assert "write [{factor: 64}]" in ema.yolo_attn_notes[0]
    forced = copy.deepcopy(NO_SCALES)
    forced["head"][0] = [-1, 1, "EMA", [{"factor": 64}]]
    assert DetectionModel(forced, verbose=False).model[2].groups == 64
    whole = copy.deepcopy(NO_SCALES)
    whole["fork_args"] = "literal"
    assert DetectionModel(whole, verbose=False).model[2].groups == 64


def test_impossible_reading_names_the_row_what_the_arg_was_taken_for_and_the_fix(tmp_path):
    from yolo_attn.variants.edit import insert_layer

    # CBAM [128] after the 256-channel (unscaled) P3 row: at scale n, 128 -> 32 != 64 channels, so it is kernel_size
    text = insert_layer((CFG / "v8" / "yolov8.yaml").read_text(encoding="utf-8"), "CBAM", [128], after=[15])
    path = tmp_path / "yolov8n-forkbad.yaml"
    path.write_text(text, encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip() == "- [-1, 1, CBAM, [128]]")
    with pytest.raises(ModelYAMLError) as info:
        DetectionModel(str(path), verbose=False)
    message = str(info.value)
    assert f"{path}:{line}:" in message and "row 16" in message
    assert "kernel_size must be one of (3, 7)" in message
    assert "taken as kernel_size" in message and "128 scales to 32" in message and "64 input channels" in message
    assert "drop it" in message


def test_fitted_default_for_small_channels_and_explicit_values_unchanged():
    cfg = copy.deepcopy(NO_SCALES)
    cfg["backbone"][1] = [-1, 1, "Conv", [48, 3, 2]]
    cfg["head"][0] = [-1, 1, "EMA", []]
    ema = DetectionModel(cfg, verbose=False).model[2]
    assert (ema.c1, ema.groups) == (48, 24)
    assert "factor=24" in ema.yolo_attn_notes[0] and "official default factor=32" in ema.yolo_attn_notes[0]
    cfg["head"][0] = [-1, 1, "EMA", [{"factor": 32}]]
    with pytest.raises(ModelYAMLError, match=r"valid factor values for c1=48"):
        DetectionModel(cfg, verbose=False)


def test_keyword_errors_list_the_valid_names():
    cfg = copy.deepcopy(NO_SCALES)
    cfg["head"][0] = [-1, 1, "SE", [{"ratio": 4}]]
    with pytest.raises(ModelYAMLError, match="SE has no argument 'ratio'; valid keywords: reduction"):
        DetectionModel(cfg, verbose=False)
    cfg["head"][0] = [-1, 1, "SE", [{"reduction": 4}]]
    se = DetectionModel(cfg, verbose=False).model[2]
    assert isinstance(se, SE) and se.reduction == 4


def test_conv_like_rows_take_keywords_after_conv_args():
    cfg = copy.deepcopy(NO_SCALES)
    cfg["head"][0] = [-1, 1, "ODConv", [128, 3, 2, {"kernel_num": 2}]]
    layer = DetectionModel(cfg, verbose=False).model[2]
    assert layer.conv.kernel_num == 2 and layer.conv.c2 == 128 and (layer.conv.k, layer.conv.s) == (3, 2)


def test_inspect_shows_the_reading(tmp_path):
    from yolo_attn.variants.placement import inspect

    path = tmp_path / "fork.yaml"
    path.write_text(yaml.safe_dump(NO_SCALES, sort_keys=False), encoding="utf-8")
    rows = inspect(path, imgsz=64)
    assert rows[2]["module"] == "EMA" and "read as the channel count" in rows[2]["notes"][0]
    assert math.isfinite(rows[2]["gflops"])


def test_fork_class_names_build_the_layer_they_stand_for_and_say_so():
    cfg = copy.deepcopy(NO_SCALES)
    cfg["head"][0] = [-1, 1, "EMA_attention", [64]]
    cfg["head"].insert(1, [-1, 1, "C2f_SEAttention", [64]])
    model = DetectionModel(cfg, verbose=False)
    assert type(model.model[2]) is EMA and model.model[2].c1 == 64 and model.model[2].groups == 32
    assert "'EMA_attention' (a fork's class name) built as yolo-attn's EMA" in model.model[2].yolo_attn_notes[0]
    assert type(model.model[3]).__name__ == "C2f_SE"
    # checkpoints store the YAML as written; resuming parses it again into the same model
    assert [type(m) for m in DetectionModel(model.yaml, verbose=False).model] == [type(m) for m in model.model]
    unknown = copy.deepcopy(NO_SCALES)
    unknown["head"][0] = [-1, 1, "GAM_Attention", [64]]
    with pytest.raises(ModelYAMLError, match="Forks use 'GAM_Attention' for GAM, which yolo-attn does not ship"):
        DetectionModel(unknown, verbose=False)
