"""Variant names for every family and placement: grammar, rules, cache, builds + wiring vs stock, any folder, e2e.

The build matrix builds every family x placement that :mod:`yolo_attn.variants.families` claims at its smallest
scale or size and compares it with the stock model row by row: same graph apart from the edit, every consumer of a
target row moved to the attention row, every attention layer receiving its producer's channels (forward hooks), and
parameters = stock + the new layers' own. Refused combinations must fail with the reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml
from conftest import console_script, subprocess_env

from yolo_attn.bench.flops import first_tensor
from yolo_attn.plugin import integration, registry
from yolo_attn.variants import families
from yolo_attn.variants.families import VariantNameError, parse_variant_name, resolve_variant_yaml

integration.register_ultralytics()

from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")

IMGSZ = 64


def _has_blocks() -> bool:
    try:
        import yolo_attn.plugin.blocks  # noqa: F401
    except ImportError:
        return False
    return True


needs_blocks = pytest.mark.skipif(
    not _has_blocks(), reason="needs yolo_attn.plugin.blocks (C2f_<Layer> classes, the integrator's part of issue 8)"
)


# ---------------------------------------------------------------------------------------------------- the grammar
# Expected rows, read by hand from Ultralytics 8.4's stock YAMLs (the Detect row's `from`, the backbone rows the head
# reads, the last backbone row, the head's C2f/C3k2/C3 rows, the head's stride-2 Conv rows).
STOCK_RULES = {
    ("yolov8", ""): ([15, 18, 21], [4, 6, 9], [9], [12, 15, 18, 21], [16, 19]),
    ("yolo11", ""): ([16, 19, 22], [4, 6, 10], [10], [13, 16, 19, 22], [17, 20]),
    ("yolo26", ""): ([16, 19, 22], [4, 6, 10], [10], [13, 16, 19, 22], [17, 20]),
    ("yolo12", ""): ([14, 17, 20], [4, 6, 8], [8], [20], [15, 18]),
    ("yolov5", ""): ([17, 20, 23], [4, 6, 9], [9], [13, 17, 20, 23], [18, 21]),
    ("yolov10", "n"): ([16, 19, 22], [4, 6, 10], [10], [13, 16, 19], [17]),
    ("yolov9", "t"): ([15, 18, 21], [4, 6, 9], [9], None, None),
    ("yolov9", "e"): ([35, 38, 41], [22, 25, 29], [29], None, None),
    ("rtdetr", "l"): ([21, 24, 27], [3, 7, 9], [9], None, [22, 25]),
}


@pytest.mark.parametrize("key", list(STOCK_RULES), ids=lambda k: "".join(k))
def test_placement_rows_follow_the_stock_structure(key):
    rules = families.family_placements(families.FAMILIES[key[0]], key[1])
    for name, expected in zip(("neck", "backbone", "sppf", "blocks", "convs"), STOCK_RULES[key]):
        if expected is None:
            assert isinstance(rules[name], str) and "has no" in rules[name], (name, rules[name])
        else:
            assert rules[name] == expected, name


@pytest.mark.parametrize(
    "name, stem, scale, layer, placement, rows",
    [
        ("yolo26s-ema.yaml", "yolo26-ema", "s", "EMA", "neck", [16, 19, 22]),
        ("yolo26-ema.yaml", "yolo26-ema", "", "EMA", "neck", [16, 19, 22]),  # Ultralytics' unified form
        ("yolo26s-ema-neck.yaml", "yolo26-ema-neck", "s", "EMA", "neck", [16, 19, 22]),
        ("yolo26s-EMA-Backbone.yaml", "yolo26-ema-backbone", "s", "EMA", "backbone", [4, 6, 10]),
        ("yolo26m-Cbam-SPPF.yaml", "yolo26-cbam-sppf", "m", "CBAM", "sppf", [10]),
        ("yolo26x-se-blocks.yaml", "yolo26-se-blocks", "x", "SE", "blocks", [13, 16, 19, 22]),
        ("yolo26n-ca.yaml", "yolo26-ca", "n", "CoordAtt", "neck", [16, 19, 22]),  # alias
        ("yolo26n-coordatt.yaml", "yolo26-coordatt", "n", "CoordAtt", "neck", [16, 19, 22]),
        ("yolo26s-odconv.yaml", "yolo26-odconv", "s", "ODConv", "neck", [17, 20]),
        ("yolo26s-ODConv-blocks.yaml", "yolo26-odconv-blocks", "s", "ODConv", "blocks", [13, 16, 19, 22]),
        ("yolov8n-p2-ema.yaml", "yolov8-p2-ema", "n", "EMA", "neck", [18, 21, 24, 27]),
        ("yolov9c-ema.yaml", "yolov9c-ema", "", "EMA", "neck", [15, 18, 21]),
        ("yolov10n-eca-blocks.yaml", "yolov10n-eca-blocks", "", "ECA", "blocks", [13, 16, 19]),
        ("rtdetr-l-ema-sppf.yaml", "rtdetr-l-ema-sppf", "", "EMA", "sppf", [9]),
        ("/some/where/yolo11l-cbam-backbone.yaml", "yolo11-cbam-backbone", "l", "CBAM", "backbone", [4, 6, 10]),
    ],
)
def test_names_parse_case_insensitively(name, stem, scale, layer, placement, rows):
    variant = parse_variant_name(name)
    assert variant is not None
    assert (variant.stem, variant.scale, variant.layer.name, variant.placement) == (stem, scale, layer, placement)
    assert families._target_rows(variant) == rows


@pytest.mark.parametrize(
    "name",
    [
        "yolov8n.yaml",  # stock models: the fast path of every `yolo train`
        "yolo26s.yaml",
        "yolov8n-p2.yaml",  # Ultralytics ships yolov8-p2.yaml: its own lookup wins
        "yolo26n-seg.yaml",
        "rtdetr-l.yaml",
        "yolov8n-ema.yaml",  # shipped with yolo-attn: the shipped file wins
        "yolov8-ema.yaml",
        "coco8.yaml",
        "my-model.yaml",
        "yolo26n-ema.pt",
        "yolov7-ema.yaml",  # not a family Ultralytics ships
    ],
)
def test_non_variant_names_resolve_to_none(name):
    assert parse_variant_name(name) is None
    assert resolve_variant_yaml(name) is None


def test_a_local_file_wins_over_the_generated_variant(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_variant_yaml("yolo26n-ema.yaml") is not None
    (tmp_path / "yolo26-ema.yaml").write_text("# mine\n")
    assert resolve_variant_yaml("yolo26n-ema.yaml") is None  # Ultralytics then finds ./yolo26-ema.yaml itself


def test_unknown_layer_lists_every_registered_layer():
    with pytest.raises(VariantNameError, match="'foo' is not a registered layer") as info:
        resolve_variant_yaml("yolo26s-foo.yaml")
    for spec in registry.specs():
        assert spec.name in str(info.value) and spec.name in info.value.choices


def test_unknown_placement_lists_the_placements():
    with pytest.raises(VariantNameError, match="'head' is not a placement for EMA") as info:
        resolve_variant_yaml("yolo26s-ema-head.yaml")
    assert info.value.choices == ["neck", "backbone", "sppf", "blocks"]
    with pytest.raises(VariantNameError, match="'head' is not a placement for ODConv") as info:
        resolve_variant_yaml("yolo26s-odconv-head.yaml")
    assert info.value.choices == ["neck", "blocks"]
    with pytest.raises(VariantNameError, match="yolo26-odconv-sppf: ODConv is a conv-kind layer") as info:
        resolve_variant_yaml("yolo26s-odconv-sppf.yaml")  # an attention placement: says why conv layers can't
    assert info.value.choices == ["neck", "blocks"]
    with pytest.raises(VariantNameError, match="not a placement"):
        resolve_variant_yaml("yolo26s-ema-neck-blocks.yaml")


@pytest.mark.parametrize(
    "name, match, choices",
    [
        ("yolov9t-ema-blocks.yaml", "YOLOv9's head has no C2f/C3k2/C3/C2 rows", ["neck", "backbone", "sppf"]),
        ("yolov9c-odconv.yaml", "YOLOv9's head has no stride-2 Conv rows", []),
        ("rtdetr-l-cbam-blocks.yaml", "RT-DETR's head has no C2f/C3k2/C3/C2 rows", ["neck", "backbone", "sppf"]),
        ("yolov6n-se-blocks.yaml", "YOLOv6's head has no C2f", ["neck", "backbone", "sppf"]),
        ("yolo26n-odconv-backbone.yaml", "conv-kind layer", ["neck", "blocks"]),
        ("yolov10-ema.yaml", "Name one of yolov10n, yolov10s", None),
        ("yolov9-ema.yaml", "yolov9t, yolov9s", None),
        ("rtdetr-ema.yaml", "rtdetr-l, rtdetr-x", None),
        ("YOLO26s-ema.yaml", "write the family in lower case, yolo26s-ema.yaml", ["yolo26s-ema"]),
    ],
)
def test_refused_combinations_say_why(name, match, choices):
    with pytest.raises(VariantNameError, match=match.replace("(", r"\(")) as info:
        resolve_variant_yaml(name)
    if choices is not None:
        assert info.value.choices == choices


def test_layers_registered_later_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv(families.CACHE_ENV, str(tmp_path))
    registry.register_layer(LateGate, kind="attention")
    try:
        path = resolve_variant_yaml("yolo26n-lategate-backbone.yaml")
        model = DetectionModel(_variant_dict(path, "n"), verbose=False)
        assert [m.i for m in model.model if isinstance(m, LateGate)] == [5, 8, 13]
    finally:
        registry.unregister_layer("LateGate")
    with pytest.raises(VariantNameError, match="'lategate' is not a registered layer"):
        resolve_variant_yaml("yolo26n-lategate-backbone.yaml")


def test_layer_names_differing_only_in_case_must_be_written_exactly():
    registry.register_layer(LateGate, kind="attention", name="DupGate")
    registry.register_layer(LateGate, kind="attention", name="DUPGATE")
    try:
        with pytest.raises(VariantNameError, match="matches several registered layers .DUPGATE, DupGate.") as info:
            resolve_variant_yaml("yolo26n-dupgate.yaml")
        assert info.value.choices == ["DUPGATE", "DupGate"]
        assert parse_variant_name("yolo26n-DupGate.yaml").layer.name == "DupGate"  # the exact name still works
    finally:
        registry.unregister_layer("DupGate")
        registry.unregister_layer("DUPGATE")


class LateGate(nn.Module):
    """A user layer registered after start-up (importable: checkpoints and DDP workers find it by module path)."""

    def __init__(self, c1: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, c1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


# ---------------------------------------------------------------------------------------------------------- cache
def test_cache_is_keyed_by_versions_written_atomically_and_refreshed(tmp_path, monkeypatch):
    import ultralytics

    import yolo_attn

    monkeypatch.setenv(families.CACHE_ENV, str(tmp_path))
    path = resolve_variant_yaml("yolo26s-ema-backbone.yaml")
    assert path.parent == tmp_path / f"ultralytics-{ultralytics.__version__}_yolo-attn-{yolo_attn.__version__}"
    text = path.read_text()
    assert text == families.render_variant(parse_variant_name("yolo26s-ema-backbone.yaml"))
    assert "Where: one EMA row after each backbone row the head reads -- rows 4, 6, 10" in text
    assert resolve_variant_yaml("yolo26m-ema-backbone.yaml") == path  # the scale is not part of the file
    path.write_text("stale")  # e.g. an older render: regenerated, never trusted blindly
    assert resolve_variant_yaml("yolo26s-ema-backbone.yaml").read_text() == text
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left behind


def test_unwritable_cache_falls_back_to_the_temp_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv(families.CACHE_ENV, str(blocker))
    path = resolve_variant_yaml("yolo26n-se-sppf.yaml")
    import tempfile

    assert path.parent.parent == Path(tempfile.gettempdir()) / "yolo-attn-variants" and path.is_file()


def test_rendering_is_deterministic_and_edits_only_the_targets():
    variant = parse_variant_name("yolo26-cbam-blocks.yaml")
    text = families.render_variant(variant)
    assert text == families.render_variant(variant)
    rows = yaml.safe_load(text)
    stock = yaml.safe_load(variant.base_path.read_text())
    for i, (new, old) in enumerate(zip(rows["backbone"] + rows["head"], stock["backbone"] + stock["head"])):
        if i in (13, 16, 19, 22):
            assert new == [old[0], old[1], f"{old[2]}_CBAM", old[3]]
        else:
            assert new == old
    assert "# 13" in text  # the stock row comments survive the text-level edit


# ------------------------------------------------------------------------------------------------ the build matrix
# family stem at its smallest scale/size -> the placements it claims (every other one must be refused)
CLAIMS = {
    "yolov5n": {"neck", "backbone", "sppf", "blocks", "odconv", "odconv-blocks"},
    "yolov5n-p6": {"neck", "backbone", "sppf", "blocks", "odconv", "odconv-blocks"},
    "yolov6n": {"neck", "backbone", "sppf", "odconv"},
    "yolov8n": {"neck", "backbone", "sppf", "blocks", "odconv", "odconv-blocks"},
    "yolov8n-p2": {"neck", "backbone", "sppf", "blocks", "odconv", "odconv-blocks"},
    "yolov8n-p6": {"neck", "backbone", "sppf", "blocks", "odconv", "odconv-blocks"},
    "yolov9t": {"neck", "backbone", "sppf"},
    "yolov10n": {"neck", "backbone", "sppf", "blocks", "odconv", "odconv-blocks"},
    "yolo11n": {"neck", "backbone", "sppf", "blocks", "odconv", "odconv-blocks"},
    "yolo12n": {"neck", "backbone", "sppf", "blocks", "odconv", "odconv-blocks"},
    "yolo26n": {"neck", "backbone", "sppf", "blocks", "odconv", "odconv-blocks"},
    "yolo26n-p2": {"neck", "backbone", "sppf", "blocks", "odconv", "odconv-blocks"},
    "yolo26n-p6": {"neck", "backbone", "sppf", "blocks", "odconv", "odconv-blocks"},
    "rtdetr-l": {"neck", "backbone", "sppf", "odconv"},
}
PLACES = ["neck", "backbone", "sppf", "blocks", "odconv", "odconv-blocks"]


def _variant_name(stem: str, place: str, layer: str = "ema") -> str:
    # `-neck` spelt out: yolov8n-odconv.yaml is a shipped file (tested in test_model_yamls); this tests generation
    suffix = {"odconv": "odconv-neck", "odconv-blocks": "odconv-blocks"}.get(place, f"{layer}-{place}")
    return f"{stem}-{suffix}.yaml"  # yolov8n-p2 + ema-neck: the scale letter sits after the version digits


def _variant_dict(path: Path, scale: str) -> dict:
    d = yaml.safe_load(Path(path).read_text())
    d["scale"] = scale
    return d


def _model_class(stem: str) -> type:
    return RTDETRDetectionModel if stem.startswith("rtdetr") else DetectionModel


_BASES: dict[str, nn.Module] = {}


def _base(stem: str) -> nn.Module:
    if stem not in _BASES:
        _BASES[stem] = _model_class(stem)(f"{stem}.yaml", verbose=False).eval()
    return _BASES[stem]


def _run_rows(model: nn.Module, layer_cls: type) -> tuple[dict[int, tuple], list[tuple[int, int]]]:
    """Output shape of every row, and (input channels, output channels) of every ``layer_cls`` instance anywhere."""
    shapes: dict[int, tuple] = {}
    seen: list[tuple[int, int]] = []
    hooks = []
    for m in model.model:
        hooks.append(m.register_forward_hook(lambda mod, i, o: shapes.__setitem__(mod.i, tuple(first_tensor(o).shape))))
    for m in model.modules():
        if isinstance(m, layer_cls):
            hooks.append(m.register_forward_hook(lambda mod, i, o: seen.append((i[0].shape[1], o.shape[1]))))
    model.eval()
    # Non-square catches H/W mix-ups in the layers. RT-DETR's decoder picks its 300 queries among the anchors, which
    # Ultralytics 8.4.0 requires to number at least 300 (84 at 64x128): give it a larger map there.
    size = (IMGSZ * 2, IMGSZ * 3) if type(model.model[-1]).__name__ == "RTDETRDecoder" else (IMGSZ, IMGSZ + 64)
    with torch.no_grad():
        model(torch.zeros(1, 3, *size))
    for h in hooks:
        h.remove()
    return shapes, seen


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _srcs(m) -> list[int]:
    return [x if x >= 0 else m.i + x for x in ([m.f] if isinstance(m.f, int) else m.f)]


def check_against_stock(variant: nn.Module, base: nn.Module, layer_cls: type, targets: list[int], mode: str) -> None:
    """The wiring/channel/parameter checks every generated variant must pass (``mode``: insert, replace, blocks)."""
    v_rows, b_rows = list(variant.model), list(base.model)
    conv_kind = registry.get_spec(layer_cls.__name__).kind == "conv"
    v_shapes, seen = _run_rows(variant, layer_cls)
    b_shapes, _ = _run_rows(base, layer_cls)
    if mode == "insert":
        assert len(v_rows) == len(b_rows) + len(targets)
        inserted = [m.i for m in v_rows if isinstance(m, layer_cls)]
        assert inserted == [t + k + 1 for k, t in enumerate(targets)]  # right after each target, reading it
        to_base, k = {}, 0
        for m in v_rows:
            if m.i in inserted:
                assert m.f == -1
                to_base[m.i] = to_base[m.i - 1]  # an attention row stands for its producer
            else:
                to_base[m.i] = k
                k += 1
        for m in v_rows:
            if m.i in inserted:
                continue
            b = b_rows[to_base[m.i]]
            assert type(m) is type(b)
            assert [to_base[s] if s >= 0 else -1 for s in _srcs(m)] == [s if s >= 0 else -1 for s in _srcs(b)]
            assert v_shapes[m.i] == b_shapes[b.i]
            # consumers rewired exactly: nothing but the attention row reads a target row directly any more
            assert not set(_srcs(m)) & {a - 1 for a in inserted}, (m.i, m.f)
        for a in inserted:  # ... and every stock consumer of the target now reads the attention row
            consumers = [to_base[m.i] for m in v_rows if a in _srcs(m)]
            stock_consumers = [b.i for b in b_rows if to_base[a] in _srcs(b)]
            assert consumers == stock_consumers, (a, consumers, stock_consumers)
        added = sum(_params(v_rows[a]) for a in inserted)
        assert _params(variant) == _params(base) + added
    else:
        assert len(v_rows) == len(b_rows)
        assert [m.f for m in v_rows] == [b.f for b in b_rows]  # wiring untouched
        for m, b in zip(v_rows, b_rows):
            assert v_shapes[m.i] == b_shapes[b.i]
            if m.i in targets:
                assert type(m) is not type(b)
            else:
                assert type(m) is type(b)
        if mode == "replace":
            assert [m.i for m in v_rows if isinstance(m, layer_cls)] == targets
            for t in targets:
                assert type(b_rows[t]).__name__ == "Conv"
                assert v_rows[t].bn.num_features == b_rows[t].bn.num_features  # c2 scaled exactly like the Conv
            replaced = sum(_params(b_rows[t]) for t in targets)
            assert _params(variant) == _params(base) - replaced + sum(_params(v_rows[t]) for t in targets)
        else:  # blocks: the stock block class with the layer inside, same channels; stock tensors all present
            for t in targets:
                assert type(v_rows[t]).__name__ == f"{type(b_rows[t]).__name__}_{layer_cls.__name__}"
                assert isinstance(v_rows[t], type(b_rows[t]))
                assert any(isinstance(x, layer_cls) for x in v_rows[t].modules())
            stock_names = {k: v.shape for k, v in base.state_dict().items()}
            variant_names = {k: v.shape for k, v in variant.state_dict().items()}
            if conv_kind:  # the 3x3 convs' weights become kernel banks; every other stock tensor stays, same shape
                swapped = {k for k in stock_names if k.endswith(".conv.weight") and int(k.split(".")[1]) in targets}
                assert swapped and all(variant_names.get(k) == s for k, s in stock_names.items() if k not in swapped)
            else:
                assert all(variant_names.get(k) == s for k, s in stock_names.items())
                inner = sum(_params(x) for r in v_rows for x in r.modules() if isinstance(x, layer_cls))
                assert _params(variant) == _params(base) + inner
    assert seen, "the layer never ran"
    if not conv_kind:
        for c_in, c_out in seen:
            assert c_in == c_out  # channel-preserving, built for the channels it receives


def _matrix():
    for stem, claimed in CLAIMS.items():
        for place in PLACES:
            marks = [needs_blocks] if place.endswith("blocks") and place in claimed else []
            yield pytest.param(stem, place, place in claimed, id=f"{stem}-{place}", marks=marks)


@pytest.mark.parametrize("stem, place, claimed", list(_matrix()))
def test_family_placement_builds_and_is_wired(stem, place, claimed, tmp_path, monkeypatch):
    monkeypatch.setenv(families.CACHE_ENV, str(tmp_path))
    name = _variant_name(stem, place)
    if not claimed:
        with pytest.raises(VariantNameError, match="has no|conv-kind"):
            resolve_variant_yaml(name)
        return
    variant = parse_variant_name(name)
    path = resolve_variant_yaml(name)
    scale = variant.scale or next(iter(yaml.safe_load(path.read_text()).get("scales") or {"": 0}))
    model = _model_class(stem)(_variant_dict(path, scale), verbose=False)
    mode = {"neck": "insert", "backbone": "insert", "sppf": "insert", "blocks": "blocks"}[variant.placement]
    if variant.layer.kind == "conv" and variant.placement == "neck":
        mode = "replace"
    check_against_stock(model, _base(stem), variant.layer.cls, families._target_rows(variant), mode)


#: Layers whose constructor needs an arg a file name cannot give (TimmAttn: the timm type); their own error says so.
NEEDS_ARGS = {"TimmAttn"}
ATTENTION_SPECS = [s for s in registry.specs() if s.kind == "attention"]


@pytest.mark.parametrize("spec", ATTENTION_SPECS, ids=lambda s: s.name)
def test_every_registered_layer_by_name(spec, tmp_path, monkeypatch):
    """``yolo26n-<layer>.yaml`` for every registered attention layer (lower-case name)."""
    monkeypatch.setenv(families.CACHE_ENV, str(tmp_path))
    path = resolve_variant_yaml(f"yolo26n-{spec.name.lower()}.yaml")
    if spec.name in NEEDS_ARGS:
        with pytest.raises(Exception, match=spec.name):
            DetectionModel(_variant_dict(path, "n"), verbose=False)
        return
    model = DetectionModel(_variant_dict(path, "n"), verbose=False)
    check_against_stock(model, _base("yolo26n"), spec.cls, [16, 19, 22], "insert")


# ---------------------------------------------------------------------------------------- Ultralytics' own lookup
def test_names_resolve_from_any_folder_through_ultralytics(tmp_path):
    script = textwrap.dedent(
        """
        import json
        from ultralytics.nn.tasks import DetectionModel, yaml_model_load
        out = {}
        d = yaml_model_load("yolo26s-ema.yaml")
        out["load"] = [d["scale"], d["yaml_file"], [r[2] for r in d["head"]].count("EMA")]
        m = DetectionModel("yolo26s-ema.yaml", verbose=False)
        out["s"] = [type(x).__name__ for x in m.model].count("EMA"), m.yaml["scale"], m.model[17].c1, m.model[17].groups
        m = DetectionModel("yolo26n-CBAM-sppf.yaml", verbose=False)
        out["sppf"] = [x.i for x in m.model if type(x).__name__ == "CBAM"]
        try:
            DetectionModel("yolo26n-nosuchlayer.yaml", verbose=False)
        except ValueError as exc:
            out["error"] = [type(exc).__name__, str(exc)]
        print("RESULT " + json.dumps(out))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=subprocess_env(), timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.split("RESULT ", 1)[1])
    assert out["load"] == ["s", "yolo26s-ema.yaml", 3]
    assert out["s"] == [3, "s", 128, 32]  # 3 EMA rows; scale s from the name: P3 has 128 channels; official 32 groups
    assert out["sppf"] == [11]
    assert out["error"][0] == "VariantNameError" and "'nosuchlayer' is not a registered layer" in out["error"][1]
    assert "EMA (attention)" in out["error"][1] and "ODConv (conv)" in out["error"][1]
    assert not list(tmp_path.glob("*.yaml"))  # nothing written into the user's folder


# --------------------------------------------------------------------------------- the real `yolo` CLI, end to end
def _yolo(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    run = subprocess.run([console_script("yolo"), *args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, f"yolo {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    return run


@pytest.mark.slow
def test_yolo_cli_trains_validates_and_exports_yolo26n_ema(tmp_path, coco8_copy):
    """`yolo train model=yolo26n-ema.yaml` from an empty folder: the variant is generated, trained, validated and
    exported to dynamic ONNX, which onnxruntime runs to the same outputs as PyTorch."""
    import onnxruntime as ort
    from ultralytics import YOLO

    cache = tmp_path / "variants"
    env = subprocess_env(**{families.CACHE_ENV: str(cache)})
    work = tmp_path / "work"
    work.mkdir()
    common = [f"imgsz={IMGSZ}", "batch=4", "workers=0", "device=cpu", "plots=False"]
    _yolo(
        "train",
        "model=yolo26n-ema.yaml",
        f"data={coco8_copy}",
        "epochs=1",
        *common,
        "seed=0",
        f"project={work / 'runs'}",
        "name=ema",
        "exist_ok=True",
        cwd=work,
        env=env,
    )
    generated = list(cache.rglob("yolo26-ema.yaml"))
    assert len(generated) == 1 and not list(work.glob("*.yaml"))
    best = work / "runs" / "ema" / "weights" / "best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    model = ckpt["model"]
    assert model.yaml["scale"] == "n"
    assert [m.i for m in model.model if type(m).__name__ == "EMA"] == [17, 21, 25]
    assert model.model[-1].f == [17, 21, 25]

    run = _yolo("val", f"model={best}", f"data={coco8_copy}", *common, cwd=work, env=env)
    assert "all" in run.stdout + run.stderr

    export_dir = tmp_path / "export"
    export_dir.mkdir()
    copy = export_dir / "best.pt"
    copy.write_bytes(best.read_bytes())
    _yolo(
        "export",
        f"model={copy}",
        "format=onnx",
        f"imgsz={IMGSZ}",
        "dynamic=True",
        "device=cpu",
        cwd=export_dir,
        env=env,
    )
    session = ort.InferenceSession(str(export_dir / "best.onnx"), providers=["CPUExecutionProvider"])
    reference = YOLO(str(copy)).model.float().fuse().eval()
    rng = np.random.default_rng(0)
    for shape in [(1, 3, IMGSZ, IMGSZ), (2, 3, IMGSZ + 32, IMGSZ)]:
        x = rng.random(shape, dtype=np.float32)
        onnx_out = session.run(None, {session.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            ref = first_tensor(reference(torch.from_numpy(x))).numpy()
        assert onnx_out.shape == ref.shape
        for got, want in zip(onnx_out, ref):  # per image: YOLO26's top-k rows (x1, y1, x2, y2, score, class)
            _assert_same_detections(got, want)


def _assert_same_detections(got: np.ndarray, want: np.ndarray) -> None:
    """The same top-k detections, whatever the order of equal scores.

    YOLO26's end-to-end head returns its top-k detections sorted by score. At random init many scores are equal to
    ~1e-8, and onnxruntime may order (and, at the k-th place, choose) such ties differently. So: the sorted scores
    must agree, and every row whose score stands apart from all others (by more than 1e-6) must be found, whole, in
    the other output.
    """
    np.testing.assert_allclose(np.sort(got[:, 4]), np.sort(want[:, 4]), atol=1e-6, rtol=0)
    scores = want[:, 4]
    gaps = np.abs(scores[:, None] - scores[None, :]) + np.eye(len(scores))
    distinct = np.flatnonzero(gaps.min(1) > 1e-6)
    for i in distinct:
        j = int(np.argmin(np.abs(got[:, 4] - scores[i])))
        np.testing.assert_allclose(got[j], want[i], atol=1e-3, rtol=0)


def test_layers_command_lists_families_placements_and_layers(capsys):
    from yolo_attn.cli import layers_command

    out = layers_command(timm=False)
    text = capsys.readouterr().out
    assert set(out["placements"]) == {"neck", "backbone", "sppf", "blocks"}
    stems = [entry["stem"] for entry in out["families"]]
    assert {"yolov8", "yolo11", "yolo12", "yolo26", "yolov9t", "yolov10n", "rtdetr-l"} <= set(stems)
    yolo26 = next(e for e in out["families"] if e["stem"] == "yolo26")
    assert yolo26["rules"]["backbone"] == [4, 6, 10]
    assert "  yolo26<s>" in text and "13,16,19,22" in text
    assert "- yolov9 blocks: YOLOv9's head has no C2f/C3k2/C3/C2 rows" in text
    for spec in registry.specs():
        assert f"\n{spec.name:<11} {spec.kind:<11}" in text
    assert "CoordAtt    attention  CA" in text  # aliases listed
