"""``yolo-attn migrate``: fork-style YAMLs (channels first, fork class names, generic blocks) rewritten to the plugin's
conventions, checked against YAMLs written by hand in the plugin's conventions.

The fork YAMLs below are written the way community repositories write them (see shared/notes/community-yamls.md):
the channel count first and unscaled, attention rows after Conv, C2f, SPPF and Concat rows, fork class names,
comments everywhere.
"""

from __future__ import annotations

import math
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from conftest import console_script, subprocess_env

from yolo_attn.plugin import integration, registry
from yolo_attn.variants import migrate as migrate_module
from yolo_attn.variants.migrate import MigrateError, migrate

integration.register_ultralytics()

from ultralytics.nn.tasks import DetectionModel  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SCALES = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.0, 1.0, 512),
    "x": (1.0, 1.25, 512),
}  # yolov8's scales: m and l/x cap the channels (768, 512)

HEAD_COMMENT = "# YOLOv8 + attention, as published in a blog post (channels first)"
FORK = f"""{HEAD_COMMENT}
nc: 80 # number of classes
scales: # [depth, width, max_channels]
  n: [0.33, 0.25, 1024]
  s: [0.33, 0.50, 1024]
  m: [0.67, 0.75, 768]
  l: [1.00, 1.00, 512]
  x: [1.00, 1.25, 512]

backbone:
  # [from, repeats, module, args]
  - [-1, 1, Conv, [64, 3, 2]] # 0-P1/2
  - [-1, 1, Conv, [128, 3, 2]] # 1-P2/4
  - [-1, 3, C2f, [128, True]]
  - [-1, 1, Conv, [256, 3, 2]] # 3-P3/8
  - [-1, 1, CBAM, [256, 7]] # 4 after a Conv: c1, kernel
  - [-1, 6, C2f, [256, True]]
  - [-1, 1, Conv, [512, 3, 2]] # 6-P4/16
  - [-1, 6, C2f, [512, True]]
  - [-1, 1, Conv, [1024, 3, 2]] # 8-P5/32
  - [-1, 3, C2f, [1024, True]]
  - [-1, 1, SPPF, [1024, 5]] # 10
  - [-1, 1, SEAttention, [1024, 16]] # 11 SE after SPPF

head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 7], 1, Concat, [1]] # cat backbone P4
  - [-1, 1, CoordAttention, [1536, 1536]] # 14 on the concat (inp, oup)
  - [-1, 3, C2f_ATT, [512, 'EMA']] # 15 generic block naming its attention

  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 5], 1, Concat, [1]] # cat backbone P3
  - [-1, 3, C2f, [256]] # 18 (P3/8-small)
  - [-1, 1, EMA_attention, [256]] # 19

  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 15], 1, Concat, [1]] # cat head P4
  - [-1, 3, C2f, [512]] # 22 (P4/16-medium)
  - [-1, 1, EMA, [512, 8]] # 23 channels, then factor 8

  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 11], 1, Concat, [1]] # cat head P5
  - [-1, 3, C2f, [1024]] # 26 (P5/32-large)
  - [-1, 1, simam_module, []] # 27 parameter-free

  - [[19, 23, 27], 1, Detect, [nc]] # Detect(P3, P4, P5)
"""
# The same model written by hand in the plugin's conventions.
PLUGIN_ROWS = {
    4: ["CBAM", [7]],
    11: ["SE", [16]],
    14: ["CoordAtt", []],
    15: ["C2f_EMA", [512]],
    19: ["EMA", []],
    23: ["EMA", [8]],
    27: ["SimAM", []],
}


def conv_scaled(c: int, width: float, max_channels: float) -> int:
    """Ultralytics' width rule for a Conv c2, written out independently: ceil(min(c, cap) * w / 8) * 8."""
    return int(math.ceil(min(c, max_channels) * width / 8) * 8)


@pytest.fixture(scope="module")
def simam():
    """SimAM is a built-in layer; register a stand-in only if this checkout has none (the mapping needs the layer)."""
    if registry.find_spec("SimAM") is not None:
        yield registry.find_spec("SimAM").cls
        return
    registry.register_layer(StandInSimAM, kind="attention", name="SimAM")
    yield StandInSimAM
    registry.unregister_layer("SimAM")


class StandInSimAM(nn.Module):
    def __init__(self, c1: int, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def rows_of(text: str) -> list:
    d = yaml.safe_load(text)
    return d["backbone"] + d["head"]


def _has_blocks() -> bool:
    try:
        import yolo_attn.plugin.blocks  # noqa: F401
    except ImportError:
        return False
    return True


def test_fork_yaml_migrates_to_the_hand_written_plugin_yaml(tmp_path, simam):
    src = write(tmp_path, "fork-yolov8-att.yaml", FORK)
    result = migrate(src, tmp_path / "yolov8-att.yaml", check=False)
    fork_rows = rows_of(FORK)
    expected = [[r[0], r[1], *PLUGIN_ROWS[i]] if i in PLUGIN_ROWS else r for i, r in enumerate(fork_rows)]
    assert rows_of(result.text) == expected
    assert [c.row for c in result.changes] == sorted(PLUGIN_ROWS)
    assert result.unmapped == []
    # comments and layout survive: every comment of the input is still there, in order
    comments = [line.split("#", 1)[1] for line in FORK.splitlines() if "#" in line]
    out_comments = [line.split("#", 1)[1] for line in result.text.splitlines() if "#" in line]
    positions = [out_comments.index(c) for c in comments]
    assert positions == sorted(positions)
    # the header lists each change with its row and its line in the input file
    lines = FORK.splitlines()
    for change in result.changes:
        assert lines[change.line - 1].lstrip().startswith("- [")
        assert yaml.safe_load(lines[change.line - 1].split("#")[0].strip()[2:])[2] == change.before[0]
        assert f"row {change.row} (line {change.line}):" in result.text
    assert (tmp_path / "yolov8-att.yaml").read_text() == result.text


def test_channel_counts_are_read_at_every_scale(tmp_path, simam):
    """The report's per-scale channels equal Ultralytics' width rule applied by hand (scales n..x, caps at m/l/x)."""
    result = migrate(write(tmp_path, "fork.yaml", FORK), check=False)
    by_row = {c.row: " ".join(c.reasons) for c in result.changes}

    def expected(*channels: int) -> str:
        return ", ".join(str(sum(conv_scaled(c, w, cap) for c in channels)) for _, w, cap in SCALES.values())

    assert f"row 3 Conv: 256 unscaled; {expected(256)} at n, s, m, l, x" in by_row[4]
    assert f"row 10 SPPF: 1024 unscaled; {expected(1024)} at n, s, m, l, x" in by_row[11]
    # after a Concat the input is the sum of the scaled producers: 1024 + 512 -> at l: 512 + 512, not min(1536, 512)
    assert f"row 13 Concat: 1536 unscaled; {expected(1024, 512)} at n, s, m, l, x" in by_row[14]
    assert "and so is the equal second arg" in by_row[14]
    assert "the other args bind as EMA(factor=8)" in by_row[23]
    assert "the other args bind as CBAM(kernel_size=7)" in by_row[4]


@pytest.mark.skipif(not _has_blocks(), reason="needs yolo_attn.plugin.blocks (C2f_EMA, the integrator's part)")
@pytest.mark.parametrize("scale", ["n", "s"])
def test_migrated_yaml_builds_the_same_model_as_the_hand_written_one(tmp_path, simam, scale):
    result = migrate(write(tmp_path, "fork.yaml", FORK))
    assert result.build == "the migrated YAML builds at scale n"
    hand = yaml.safe_load(FORK)
    for i, (module, args) in PLUGIN_ROWS.items():
        section, j = ("backbone", i) if i < len(hand["backbone"]) else ("head", i - len(hand["backbone"]))
        hand[section][j] = [hand[section][j][0], hand[section][j][1], module, args]
    migrated = yaml.safe_load(result.text)
    models = []
    for d in (migrated, hand):
        d["scale"] = scale
        models.append(DetectionModel(d, verbose=False))
    a, b = (m.state_dict() for m in models)
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert [type(m).__name__ for m in models[0].model] == [type(m).__name__ for m in models[1].model]
    assert models[0].model[23].groups == 8 and models[0].model[19].groups == 32


NO_SCALES = """
# a custom small model: no `scales:`, so every width is literal
nc: 3
backbone:
  - [-1, 1, Conv, [32, 3, 2]]   # 0
  - [-1, 1, Conv, [64, 3, 2]]   # 1
  - [-1, 1, EMA, [64]]          # 2 channels first
  - [-1, 1, C2f, [64, True]]    # 3
  - [-1, 1, EMA, [8]]           # 4 factor 8 (the input has 64 channels)
  - [-1, 1, Conv, [128, 3, 2]]  # 5
  - [[-1, 3], 1, EMA, [128]]    # 6 two inputs: a channel-preserving layer takes one
head:
  - [5, 1, ECAAttention, [128]] # 7 fork name for ECA
  - [[7], 1, Detect, [nc]]
"""


def test_yaml_without_scales(tmp_path):
    result = migrate(write(tmp_path, "small.yaml", NO_SCALES), check=False)
    rows = rows_of(result.text)
    assert rows[2] == [-1, 1, "EMA", []] and rows[4] == [-1, 1, "EMA", [8]] and rows[7] == [5, 1, "ECA", []]
    assert "(no scales)" in " ".join(result.changes[0].reasons)
    assert any(p.row == 4 and "kept as the layer's own args: EMA(factor=8)" in p.text for p in result.kept)
    assert [p.row for p in result.unmapped] == [6] and "reads 2 rows" in result.unmapped[0].text
    assert rows[6] == [[-1, 3], 1, "EMA", [128]]  # left as written, and said so in the header
    assert "# not migrated (left as written):" in result.text


WIDTH_MULTIPLE = """
nc: 80
depth_multiple: 0.33
width_multiple: 0.25  # old yolov5-style YAML: one width, no scales
backbone:
  - [-1, 1, Conv, [64, 6, 2, 2]]
  - [-1, 1, Conv, [1024, 3, 2]]
  - [-1, 1, SE, [1024]]
head:
  - [[2], 1, Detect, [nc]]
"""


def test_width_multiple_without_scales(tmp_path):
    result = migrate(write(tmp_path, "v5.yaml", WIDTH_MULTIPLE))
    assert rows_of(result.text)[2] == [-1, 1, "SE", []]
    assert "row 1 Conv: 1024 unscaled; 256 (no scales)" in result.changes[0].reasons[0]
    assert result.build == "the migrated YAML builds at its widths (no scales)"


COLLISION = """
nc: 80
backbone:
  - [-1, 1, Conv, [64, 3, 2]]  # 0: 64 channels (no scales: widths are literal)
  - [-1, 1, EMA, [64]]         # 1: 64 groups meant here (one channel per group) -- or the channel count?
head:
  - [[1], 1, Detect, [nc]]
"""

SCALED_COLLISION = """
nc: 80
scales:
  n: [0.33, 0.25, 1024]
  s: [0.33, 0.50, 1024]
backbone:
  - [-1, 1, Conv, [256, 3, 2]]  # 0: 64 channels at n, 128 at s
  - [-1, 1, EMA, [64]]          # 1: not the unscaled count (256), but equal to the channels at n as written
head:
  - [[1], 1, Detect, [nc]]
"""


def test_collision_and_the_literal_switch(tmp_path):
    src = write(tmp_path, "collide.yaml", COLLISION)
    default = migrate(src)
    assert [c.row for c in default.changes] == [1]  # the fork convention wins by default: 64 = the channel count
    assert rows_of(default.text)[1] == [-1, 1, "EMA", []] and "fork_args" not in default.text
    forced = migrate(src, literal=[1])
    assert forced.changes == [] and rows_of(forced.text)[1] == [-1, 1, "EMA", [64]]
    assert any("kept as written (literal=)" in p.text for p in forced.kept)
    # the kept 64 would be re-read as channels by the plugin's parser: the YAML now says to read args literally
    assert yaml.safe_load(forced.text)["fork_args"] == "literal"
    assert forced.build == "the migrated YAML builds at its widths (no scales)"
    model = DetectionModel(yaml.safe_load(forced.text), verbose=False)
    assert (model.model[1].c1, model.model[1].groups) == (64, 64)  # built literally: factor 64
    model = DetectionModel(yaml.safe_load(default.text), verbose=False)
    assert (model.model[1].c1, model.model[1].groups) == (64, 32)


def test_a_kept_arg_the_parser_would_read_as_channels_gets_the_literal_key(tmp_path):
    result = migrate(write(tmp_path, "scaled.yaml", SCALED_COLLISION))
    assert result.changes == []  # 64 is not the unscaled channel count (256) nor scaled-equal at every scale
    assert any("would be read as a channel count at scale n" in p.text for p in result.kept)
    d = yaml.safe_load(result.text)
    assert d["fork_args"] == "literal"
    d["scale"] = "s"
    assert DetectionModel(d, verbose=False).model[1].groups == 64  # the same reading at every scale


AMBIGUOUS = """
nc: 80
scales:
  n: [0.33, 0.25, 1024]
  l: [1.00, 1.00, 512]
backbone:
  - [-1, 1, Conv, [1024, 3, 2]]  # 0: 256 at n, 512 at l (capped)
  - [-1, 1, SE, [768]]           # 1: 192 at n, 512 at l: equals the channels at l only
head:
  - [[1], 1, Detect, [nc]]
"""


def test_reading_that_holds_at_some_scales_only_is_reported(tmp_path):
    result = migrate(write(tmp_path, "amb.yaml", AMBIGUOUS), check=False)
    assert result.changes == []
    assert len(result.unmapped) == 1 and "at scale(s) l only" in result.unmapped[0].text
    assert rows_of(result.text)[1] == [-1, 1, "SE", [768]]
    assert "fork_args" not in result.text  # an ambiguous row keeps the plugin's own per-scale reading


UNKNOWN = """
nc: 80
scales:
  n: [0.33, 0.25, 1024]
backbone:
  - [-1, 1, Conv, [256, 3, 2]]
  - [-1, 1, BiFPN_Add2, [256, 256]]  # a fork-only module
  - [-1, 1, EMA, [256]]              # its input channels cannot be known
  - [-1, 1, GAM_Attention, [256, 256]]
  - [-1, 1, ODConv2d, [256, 3, 1]]
head:
  - [[4], 1, Detect, [nc]]
"""


def test_unknown_modules_are_reported_not_guessed(tmp_path, monkeypatch):
    monkeypatch.setitem(migrate_module.FORK_NAMES, "GAM_Attention", "NoSuchGAM")  # a fork name without a layer
    result = migrate(write(tmp_path, "unknown.yaml", UNKNOWN))
    assert result.changes == []
    texts = {p.row: p.text for p in result.unmapped}
    assert set(texts) == {1, 2, 3, 4}
    assert "BiFPN_Add2: not a registered yolo-attn layer nor an Ultralytics module" in texts[1]
    assert "cannot tell whether 256 is a channel count" in texts[2] and "row 1 BiFPN_Add2" in texts[2]
    assert "stands for NoSuchGAM, which is not a registered layer" in texts[3]
    assert "yolo-attn's conv-like layer is ODConv" in texts[4]
    assert result.build.startswith("the migrated YAML does not build at scale n yet")
    assert rows_of(result.text) == rows_of(UNKNOWN)


def test_block_names_with_fork_layer_names(tmp_path):
    text = """
    nc: 80
    scales:
      n: [0.33, 0.25, 1024]
    backbone:
      - [-1, 1, Conv, [128, 3, 2]]
      - [-1, 3, C2f_EMA_attention, [128, True]]  # block + fork layer name
      - [-1, 3, C3_SE, [128]]                    # already plugin style: unchanged
      - [-1, 3, C2f_Attention, [128, True, CBAM]]  # generic block, layer named in a bare word
    head:
      - [[3], 1, Detect, [nc]]
    """
    result = migrate(write(tmp_path, "blocks.yaml", text), check=False)
    rows = rows_of(result.text)
    assert rows[1][2:] == ["C2f_EMA", [128, True]]
    assert rows[2][2:] == ["C3_SE", [128]]
    assert rows[3][2:] == ["C2f_CBAM", [128, True]]
    assert [c.row for c in result.changes] == [1, 3]


def test_multi_line_rows_are_migrated_and_the_lost_comments_reported(tmp_path):
    text = """
    nc: 80
    scales:
      n: [0.33, 0.25, 1024]
    backbone:
      - [-1, 1, Conv, [256, 3, 2]]
      - - -1
        - 1
        - EMA_Attention
        - [256]
    head:
      - [[1], 1, Detect, [nc]]
    """
    result = migrate(write(tmp_path, "multi.yaml", text), check=False)
    assert rows_of(result.text)[1] == [-1, 1, "EMA", []]
    assert result.changes[0].line is None
    assert "comments could not be kept" in result.unmapped[0].text


def test_errors(tmp_path):
    src = write(tmp_path, "fork.yaml", FORK)
    with pytest.raises(MigrateError, match="is the input YAML itself"):
        migrate(src, src)
    with pytest.raises(MigrateError, match="not an Ultralytics model YAML"):
        migrate(write(tmp_path, "data.yaml", "path: x\nnames: {0: a}\n"))
    with pytest.raises(FileNotFoundError):
        migrate(tmp_path / "missing.yaml")
    with pytest.raises(MigrateError, match="unknown argument"):
        migrate_module.migrate_command(**{"in": str(src), "output": "x.yaml"})
    with pytest.raises(MigrateError, match="give in="):
        migrate_module.migrate_command(out="x.yaml")


def test_console_script(tmp_path, simam):
    src = write(tmp_path, "blog-yolov8-ema.yaml", FORK)
    exe = console_script("yolo-attn")
    run = subprocess.run(
        [exe, "migrate", f"in={src}", "out=mine.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "7 row(s) migrated, 0 not migrated" in run.stdout and "wrote mine.yaml" in run.stdout
    assert rows_of((tmp_path / "mine.yaml").read_text()) == rows_of(migrate(src, check=False).text)
    run = subprocess.run(
        [exe, "migrate", f"in={src}", "check=False"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert run.returncode == 0 and run.stdout.startswith("# yolo-attn migrate blog-yolov8-ema.yaml: 7 row(s)")
    line = next(k for k, text in enumerate(FORK.splitlines(), 1) if "EMA_attention" in text)
    assert f"changed row 19 (line {line}): [EMA_attention, [256]] -> [EMA, []]" in run.stderr
