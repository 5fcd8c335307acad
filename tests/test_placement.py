"""`place` (insert/replace/remove with every `from` rewired) and `inspect` (per-layer table, wiring errors).

The rewiring claim is checked on built models, not on YAML text: for every shipped YAML and the stock yolov8/yolo11
YAMLs, SE is inserted after a backbone row feeding a Concat, a neck output feeding Detect and a plain row, both
models are built at scale n, and every layer's producers (from the built modules' ``.f``) are compared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO

from yolo_attn.plugin import integration
from yolo_attn.variants.placement import PlacementError, WiringError, inspect, place, place_command, resolve_model_yaml

integration.register_ultralytics()

import ultralytics  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

STOCK = {
    "yolov8.yaml": Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yolov8.yaml",
    "yolo11.yaml": Path(ultralytics.__file__).parent / "cfg" / "models" / "11" / "yolo11.yaml",
}
SHIPPED = sorted(p.name for p in (REPO / "model_yamls").glob("*.yaml"))
ALL_YAMLS = [*STOCK, *SHIPPED]


def build(text: str) -> DetectionModel:
    d = yaml.safe_load(text)
    d["scale"] = "n"
    return DetectionModel(d, verbose=False)


def producers(model: DetectionModel) -> list[list[int]]:
    """Absolute producer indices of every built layer (-1 = the image), from the modules' own ``.f``."""
    out = []
    for m in model.model:
        f = [m.f] if isinstance(m.f, int) else list(m.f)
        out.append([x if x >= 0 else m.i + x for x in f] if m.i else [-1])
    return out


def rows_of(text: str) -> list:
    d = yaml.safe_load(text)
    return d["backbone"] + d["head"]


def targets(text: str) -> dict[str, int]:
    """A backbone row read by a Concat, a neck output read by Detect, and a plain single-consumer row."""
    rows = rows_of(text)
    n_backbone = len(yaml.safe_load(text)["backbone"])
    concat_in = next(
        x for r in rows if r[2] == "Concat" for x in r[0] if 0 <= x < n_backbone
    )  # e.g. yolov8 row 6 (P4 into the FPN)
    detect_in = rows[-1][0][1]  # P4 output: read by Detect and by the next stride-2 Conv
    return {"backbone->Concat": concat_in, "neck->Detect": detect_in, "plain": 2}


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def base_models() -> dict[str, tuple[str, DetectionModel]]:
    out = {}
    for name in ALL_YAMLS:
        path, _ = resolve_model_yaml(name)
        text = path.read_text(encoding="utf-8")
        out[name] = (text, build(text))
    return out


def test_resolve_names_like_ultralytics():
    assert resolve_model_yaml("yolov8s.yaml") == (STOCK["yolov8.yaml"], "s")
    path, scale = resolve_model_yaml("yolo11m-ema.yaml")
    assert path.name == "yolo11-ema.yaml" and scale == "m"
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_model_yaml("nothere.yaml")


@pytest.mark.parametrize("name", ALL_YAMLS)
def test_insert_rewires_exactly_the_targets_consumers(name, base_models):
    text, base = base_models[name]
    base_prod = producers(base)
    for what, t in targets(text).items():
        variant = build(place(name, "SE", after=t, check=False))
        var_prod = producers(variant)
        assert len(variant.model) == len(base.model) + 1, what
        new = t + 1

        def to_var(i: int, t: int = t) -> int:
            return i if i <= t else i + 1

        assert type(variant.model[new]).__name__ == "SE" and var_prod[new] == [t], what
        rewired = 0
        for i, m in enumerate(base.model):
            j = to_var(i)
            vm = variant.model[j]
            assert type(vm) is type(m) and vm.np == m.np, f"{name} {what}: row {i} -> {j} is not the same layer"
            expected = [new if p == t else (p if p < 0 else to_var(p)) for p in base_prod[i]]
            assert var_prod[j] == expected, f"{name} {what}: row {i} (now {j}) reads {var_prod[j]}, want {expected}"
            rewired += t in base_prod[i]
        consumers = sum(t in p for p in base_prod)
        assert rewired == consumers >= 1, what
        if what != "plain":
            assert consumers >= 2, f"{name}: row {t} should feed a Concat/Detect and the next row"


@pytest.mark.parametrize("name", ALL_YAMLS)
def test_insert_then_remove_round_trips(name):
    path, _ = resolve_model_yaml(name)
    text = path.read_text(encoding="utf-8")
    t = targets(text)
    inserted = place(name, "EMA", after=sorted(set(t.values())), check=False)
    assert len(rows_of(inserted)) == len(rows_of(text)) + len(set(t.values()))
    new_rows = [i + 1 + k for k, i in enumerate(sorted(set(t.values())))]
    back = place_text(inserted, remove=new_rows)
    assert rows_of(back) == rows_of(text)  # every from, repeats, module and args exactly as before
    assert back.endswith(text)  # comments and layout byte-identical; header comments record the two edits


def place_text(text: str, **kwargs) -> str:
    """place() on a YAML given as text (written to a temp file next to nothing else)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "variant.yaml"
        path.write_text(text, encoding="utf-8")
        return place(str(path), check=False, **kwargs)


def test_remove_by_layer_name_restores_the_stock_rows():
    back = place("yolov8-ema.yaml", remove="EMA", check=False)
    assert rows_of(back) == rows_of(STOCK["yolov8.yaml"].read_text())


def test_before_single_input_row():
    text = place("yolov8.yaml", "SE", before=12, check=False)  # row 12 (C2f) reads the Concat at 11
    rows = rows_of(text)
    assert rows[12] == [-1, 1, "SE", []] and rows[13][2] == "C2f" and rows[13][0] == -1
    assert rows[14][2] == "nn.Upsample"
    assert rows[18] == [[-1, 13], 1, "Concat", [1]]  # the PAN Concat still reads the C2f (was row 12), not the SE
    assert rows[21][0] == [-1, 9] and rows[-1][0] == [16, 19, 22]  # SPPF (row 9) is before the insertion


def test_replace_conv_with_odconv_keeps_wiring(base_models):
    text = place("yolov8.yaml", "ODConv", replace=[16, 19])
    rows, stock = rows_of(text), rows_of(STOCK["yolov8.yaml"].read_text())
    assert [r[2] for r in rows].count("ODConv") == 2
    assert [(r[0], r[1], r[3]) for r in rows] == [(r[0], r[1], r[3]) for r in stock]
    assert producers(build(text)) == producers(base_models["yolov8.yaml"][1])


def test_place_writes_header_and_refuses_to_overwrite_base(tmp_path, capsys):
    out = tmp_path / "my.yaml"
    result = place_command(base="yolov8s.yaml", layer="EMA", after=[15, 18, 21], args=[16], out=str(out))
    printed = capsys.readouterr().out
    assert "rewired row 25 Detect (was row 22): reads 16 EMA, 20 EMA, 24 EMA" in printed
    assert "scale s" in printed and f"wrote {out}" in printed
    text = out.read_text()
    assert text.startswith("# yolo-attn place base=yolov8s.yaml layer=EMA after=15,18,21 args=[16]")
    assert "# cat backbone P4" in text  # comments survive
    assert result["out"] == str(out)
    assert rows_of(text)[16] == [-1, 1, "EMA", [16]]
    with pytest.raises(PlacementError, match="is the base YAML itself"):
        place(str(out), "SE", after=3, out=str(out))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": "EMA", "after": 99}, r"yolov8\.yaml: after=99 is not a row index of this YAML \(0\.\.22\)"),
        ({"layer": "EMA", "before": 11}, r"yolov8\.yaml:\d+: before=11: row 11 .*Concat.* reads 2 inputs"),
        ({"remove": 16}, r"yolov8\.yaml:\d+: remove=16: row 16 is Conv, a stock Ultralytics row.*force=True"),
        ({"layer": "EMA", "replace": 16}, r"EMA is a layer of kind 'attention'.*Layers of kind 'conv': ODConv"),
        ({"layer": "ODConv", "replace": 15}, r"yolov8\.yaml:\d+: replace=15: row 15 is C2f, not a Conv row"),
        ({"layer": "Nope", "after": 3}, r"layer='Nope' is neither a registered yolo-attn layer \(CBAM, CoordAtt"),
        ({"layer": "EMA", "after": 22}, r"row 22 .*Detect.* is the model's output"),
        ({"layer": "EMA", "after": 15, "args": [48]}, r"does not build at scale 'n'.*not divisible by factor=48"),
        ({"remove": "EMA"}, r"no row uses module 'EMA'"),
        ({"layer": "EMA", "after": 15, "remove": "EMA"}, r"say exactly one of"),
    ],
)
def test_place_errors(kwargs, match):
    with pytest.raises(PlacementError, match=match):
        place("yolov8.yaml", **kwargs)


def test_place_error_line_points_at_the_row():
    with pytest.raises(PlacementError) as info:
        place("yolov8.yaml", remove=16)
    line = int(str(info.value).split(":", 2)[1])
    assert "[-1, 1, Conv, [256, 3, 2]]" in STOCK["yolov8.yaml"].read_text().splitlines()[line - 1]


def test_stock_layers_may_be_inserted_and_removed_with_force():
    text = place("yolov8.yaml", "nn.Identity", after=9)
    assert rows_of(text)[10] == [-1, 1, "nn.Identity", []]
    back = place_text(text, remove=10, force=True)
    assert rows_of(back) == rows_of(STOCK["yolov8.yaml"].read_text())


# ------------------------------------------------------------------------------------------------------ inspect
def test_inspect_yolov8n_shapes():
    rows = inspect("yolov8n-ema.yaml", imgsz=64)
    built = DetectionModel("yolov8n-ema.yaml", verbose=False)
    assert len(rows) == len(built.model) == 26
    by_index = {r["index"]: r for r in rows}
    assert by_index[0]["output_shape"] == [1, 16, 32, 32]  # stride 2, 64 * 0.25 channels
    assert by_index[4]["output_shape"] == [1, 64, 8, 8]  # P3/8
    assert by_index[9]["output_shape"] == [1, 256, 2, 2]  # SPPF at P5/32, 1024 * 0.25
    assert by_index[16] == {**by_index[16], "module": "EMA", "args": "[64]", "output_shape": [1, 64, 8, 8]}
    assert by_index[24]["output_shape"] == [1, 256, 2, 2]
    assert by_index[25]["module"] == "Detect" and by_index[25]["from"] == [16, 20, 24]
    assert by_index[25]["output_shape"] == [1, 84, 8 * 8 + 4 * 4 + 2 * 2]
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in built.parameters())
    assert [r["params"] for r in rows] == [m.np for m in built.model]
    assert all(r["gflops"] >= 0 for r in rows) and by_index[25]["gflops"] > 0


def _edited_stock(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    text = STOCK["yolov8.yaml"].read_text()
    assert old in text
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new, 1))
    return path, text[: text.index(old)].count("\n") + 1


def test_inspect_bad_from_names_file_and_line(tmp_path):
    path, line = _edited_stock(tmp_path, "[[-1, 6], 1, Concat, [1]]", "[[-1, 99], 1, Concat, [1]]")
    with pytest.raises(WiringError, match=rf"broken\.yaml:{line}: row 11 .*from index 99 is past the last row"):
        inspect(str(path), imgsz=64)


def test_inspect_concat_of_mismatched_sizes(tmp_path):
    # The P3 Concat (row 14) made to read row 6 (P4/16) instead of row 4 (P3/8).
    path, line = _edited_stock(tmp_path, "[[-1, 4], 1, Concat, [1]]", "[[-1, 6], 1, Concat, [1]]")
    expected = (
        rf"broken\.yaml:{line}: row 14 \(Concat\) inputs from rows \[13, 6\] have spatial sizes \(8,8\) vs \(4,4\)"
    )
    with pytest.raises(WiringError, match=expected):
        inspect(str(path), imgsz=64)


def test_inspect_command_prints_table(capsys):
    from yolo_attn.variants.placement import inspect_command

    result = inspect_command(model="yolov8n.yaml", imgsz=64)
    out = capsys.readouterr().out.splitlines()
    assert len(result["rows"]) == 23 and len(out) == 1 + 23 + 2
    assert "22    [15, 18, 21]" in out[23] and "Detect" in out[23]
    assert "23 layers, 3,157,200 parameters" in out[24]  # yolov8n, as in yolov8.yaml's own comment


def test_inspect_plugin_arg_error_names_the_row(tmp_path):
    path, line = _edited_stock(tmp_path, "[-1, 3, C2f, [256]] # 15", "[-1, 3, C2f, [256]]\n  - [-1, 1, EMA, [48]] #")
    with pytest.raises(integration.ModelYAMLError, match=rf"broken\.yaml:{line + 1}: model YAML row 16 .*factor=48"):
        inspect(str(path), imgsz=64)


def test_inspect_falls_back_to_thop_when_the_counter_fails(monkeypatch, capsys):
    import yolo_attn.bench.flops as flops
    from yolo_attn.variants.placement import inspect_command

    def broken(*args, **kwargs):
        raise RuntimeError("counter unavailable")

    monkeypatch.setattr(flops, "count_flops", broken)
    result = inspect_command(model="yolov8n-se.yaml", imgsz=64)
    assert "thop.profile per layer" in result["footer"][1]
    assert result["rows"][0]["gflops"] > 0 and "thop" in capsys.readouterr().out
