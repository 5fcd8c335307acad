"""Registration into Ultralytics' parser: channels at every scale, errors naming the row, user layers, hook, opt-out."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from conftest import REPO, subprocess_env

import yolo_attn
from yolo_attn.plugin import integration, registry
from yolo_attn.plugin.integration import IntegrationError, ModelYAMLError

integration.register_ultralytics()  # the start-up hook normally did this already; must be idempotent

from ultralytics.nn.tasks import DetectionModel  # noqa: E402
from ultralytics.utils.torch_utils import get_num_params  # noqa: E402

ATTENTION = ["SE", "CBAM", "ECA", "EMA", "CoordAtt"]


def build(rows_head_extra: list | None = None, scale: str = "n", base: str = "yolov8.yaml", **overrides):
    """Build a DetectionModel from the stock YAML dict with the head replaced/extended."""
    import ultralytics

    cfg_dir = Path(ultralytics.__file__).parent / "cfg" / "models"
    path = next(cfg_dir.rglob(base))
    d = yaml.safe_load(path.read_text())
    d["scale"] = scale
    d.update(overrides)
    if rows_head_extra is not None:
        d["head"] = rows_head_extra
    return DetectionModel(d, verbose=False)


def small_yaml(rows: list, scale: str = "n") -> dict:
    """A tiny valid detection model: stock yolov8 backbone rows 0-4, then ``rows``, then a 1-level Detect."""
    import ultralytics

    path = Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yolov8.yaml"
    d = yaml.safe_load(path.read_text())
    d["scale"] = scale
    d["backbone"] = d["backbone"][:5]
    d["head"] = [*rows, [[len(d["backbone"]) + len(rows) - 1], 1, "Detect", ["nc"]]]
    return d


def test_registered_names_are_in_parser_namespace():
    import ultralytics.nn.tasks as tasks

    for name in [*ATTENTION, "ODConv"]:
        assert getattr(tasks, name) is getattr(yolo_attn, name)
    assert integration.is_registered()


def test_registration_is_idempotent():
    import ultralytics.nn.tasks as tasks

    parse_model = tasks.parse_model
    integration.register_ultralytics()
    integration.register_ultralytics()
    assert tasks.parse_model is parse_model
    assert getattr(tasks.parse_model, "_yolo_attn", False)


@pytest.mark.parametrize("scale,expected", [("n", 64), ("s", 128), ("m", 192), ("l", 256), ("x", 320)])
def test_attention_gets_true_input_channels_at_every_scale(scale, expected):
    # Row 4 of yolov8 is C2f(256) -> width-scaled to 64/128/192/256/320 channels.
    d = small_yaml([[-1, 1, "EMA", [16]], [-1, 1, "CBAM", [7]], [-1, 1, "SE", []]], scale=scale)
    model = DetectionModel(d, verbose=False)
    ema, cbam, se = model.model[5], model.model[6], model.model[7]
    assert (ema.c1, cbam.c1, se.c1) == (expected, expected, expected)
    assert ema.gn.num_channels == expected // 16  # factor=16 groups -> C/G channels per group
    assert (ema.groups, cbam.kernel_size) == (16, 7)
    out = model(torch.zeros(1, 3, 64, 96))
    assert out is not None
    for m in (ema, cbam, se):
        assert m.np == sum(p.numel() for p in m.parameters()) > 0


def test_yaml_args_follow_injected_channels():
    d = small_yaml([[-1, 1, "EMA", []], [-1, 1, "EMA", [8]], [-1, 1, "ECA", [5]], [-1, 1, "CoordAtt", [16]]])
    model = DetectionModel(d, verbose=False)
    assert (model.model[5].groups, model.model[6].groups) == (32, 8)
    assert model.model[7].conv.kernel_size == (5,)
    assert model.model[8].conv1.out_channels == max(8, 64 // 16)


@pytest.mark.parametrize("scale,c2", [("n", 32), ("s", 64), ("x", 160)])
def test_conv_like_layer_is_width_scaled_like_conv(scale, c2):
    d = small_yaml([[-1, 1, "ODConv", [128, 3, 2]], [-1, 1, "Conv", [128, 3, 2]]], scale=scale)
    model = DetectionModel(d, verbose=False)
    od, conv = model.model[5], model.model[6]
    assert od.conv.weight.shape[1:3] == (c2, model.model[4].cv2.conv.out_channels)  # kernel bank (K, c2, c1, k, k)
    assert od.bn.num_features == conv.bn.num_features == c2
    assert conv.conv.in_channels == c2  # the next layer reads ODConv's scaled width
    y = model(torch.zeros(2, 3, 64, 64))
    assert y is not None


def test_multi_input_from_passes_channel_list_and_shipped_layers_refuse_it():
    d = small_yaml([[[-1, 2], 1, "EMA", []]])
    with pytest.raises(ModelYAMLError, match=r"row 5 .*EMA.*(one input|different channels)"):
        DetectionModel(d, verbose=False)


def test_stock_models_are_unaffected():
    """Building stock YAMLs through the patched parser gives Ultralytics' published parameter counts."""
    assert get_num_params(build()) == 3157200  # yolov8n, the figure in yolov8.yaml's own comment
    assert get_num_params(build(scale="s")) == 11166560
    assert get_num_params(build(scale="n", base="yolo11.yaml")) == 2624080


def test_stock_build_identical_with_plugin_disabled():
    code = (
        "from ultralytics.nn.tasks import DetectionModel;"
        "m = DetectionModel('yolov8n.yaml', verbose=False);"
        "print(sum(p.numel() for p in m.parameters()), len(list(m.modules())))"
    )
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    off = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(YOLO_ATTN_DISABLE="1")
    )
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert on.stdout == off.stdout


def test_unknown_module_error_names_row_and_lists_layers(tmp_path):
    path = tmp_path / "bad-yolov8n.yaml"
    text = (REPO / "model_yamls" / "yolov8-ema.yaml").read_text().replace("EMA, []", "EMAA, []", 1)
    path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "EMAA" in t)
    with pytest.raises(ModelYAMLError) as info:
        DetectionModel(str(path), verbose=False)
    message = str(info.value)
    assert f"{path}:{line}:" in message
    assert "'EMAA'" in message
    for name in [*ATTENTION, "ODConv"]:
        assert name in message


def test_invalid_layer_argument_names_row(tmp_path):
    # yolov8n row 15 C2f(256) has 64 channels; 48 groups do not divide 64
    path = tmp_path / "yolov8n-badema.yaml"
    text = (REPO / "model_yamls" / "yolov8-ema.yaml").read_text().replace("EMA, []", "EMA, [48]", 1)
    path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "EMA, [48]" in t)
    with pytest.raises(ModelYAMLError, match=rf"{path.name}:{line}: model YAML row 16 .*EMA.*48"):
        DetectionModel(str(path), verbose=False)


def test_conv_like_layer_without_channels_is_a_clear_error():
    with pytest.raises(ModelYAMLError, match=r"ODConv is a conv-like layer.*\[-1, 1, ODConv, \[256, 3, 2\]\]"):
        DetectionModel(small_yaml([[-1, 1, "ODConv", []]]), verbose=False)


# --------------------------------------------------------------------------------------------------------------------
# user registration
# --------------------------------------------------------------------------------------------------------------------
class ScaleGate(nn.Module):
    """A user's channel-preserving layer: YAML ``[-1, 1, ScaleGate, [0.5]]``."""

    def __init__(self, c1: int, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, c1, 1, 1), float(init)))

    def forward(self, x):
        return x * self.scale


class PointConv(nn.Module):
    """A user's conv-like layer: YAML ``[-1, 1, PointConv, [128]]``."""

    def __init__(self, c1: int, c2: int, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 1, s)

    def forward(self, x):
        return self.conv(x)


def test_user_layers_of_both_kinds():
    registry.register_layer(ScaleGate, kind="attention")
    registry.register_layer(kind="conv")(PointConv)
    try:
        model = DetectionModel(
            small_yaml([[-1, 1, "ScaleGate", [0.5]], [-1, 1, "PointConv", [128, 2]]], "s"), verbose=False
        )
        gate, conv = model.model[5], model.model[6]
        assert gate.scale.shape[1] == 128 and gate.scale[0, 0].item() == 0.5
        assert (conv.conv.in_channels, conv.conv.out_channels, conv.conv.stride) == (128, 64, (2, 2))
        assert "ScaleGate" in registry.list_layers("attention") and "PointConv" in registry.list_layers("conv")
    finally:
        registry.unregister_layer("ScaleGate")
        registry.unregister_layer("PointConv")
    import ultralytics.nn.tasks as tasks

    assert not hasattr(tasks, "ScaleGate")


def test_duplicate_names_error_unless_forced():
    with pytest.raises(KeyError, match=r"'EMA' is already registered.*force=True"):
        registry.register_layer(ScaleGate, name="EMA")
    registry.register_layer(ScaleGate, name="Gate2")
    try:
        with pytest.raises(KeyError, match="already registered"):
            registry.register_layer(PointConv, name="Gate2", kind="conv")
        registry.register_layer(PointConv, name="Gate2", kind="conv", force=True)
        assert registry.get_layer("Gate2") is PointConv
    finally:
        registry.unregister_layer("Gate2")


def test_registering_a_stock_ultralytics_name_is_refused():
    with pytest.raises(KeyError, match="Ultralytics already defines 'Conv'"):
        registry.register_layer(ScaleGate, name="Conv")
    assert "Conv" not in registry.list_layers()


def test_registry_rejects_bad_input():
    with pytest.raises(ValueError, match="kind='spatial' is not one of attention, conv"):
        registry.register_layer(ScaleGate, kind="spatial")
    with pytest.raises(TypeError, match="not an nn.Module subclass"):
        registry.register_layer(dict)
    with pytest.raises(KeyError, match="registered layers: ") as info:
        registry.get_layer("Nope")
    for spec in registry.specs():  # every valid name (and alias) is listed
        assert all(name in str(info.value) for name in spec.names), spec.name
    assert "CoordAtt (alias CA)" in str(info.value)


# --------------------------------------------------------------------------------------------------------------------
# failure of the integration itself
# --------------------------------------------------------------------------------------------------------------------
def _fake_tasks(tmp_path: Path, body: str) -> types.ModuleType:
    src = tmp_path / "fake_tasks.py"
    src.write_text(textwrap.dedent(body))
    namespace = types.ModuleType("fake_tasks")
    namespace.__file__ = str(src)
    exec(compile(src.read_text(), str(src), "exec"), namespace.__dict__)
    return namespace


def test_missing_parser_structure_raises_integration_error(tmp_path):
    fake = _fake_tasks(
        tmp_path,
        """
        def parse_model(d, ch, verbose=True):
            width, max_channels = 1.0, 1024
            for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
                if m in base_modules:
                    c1, c2 = ch[f], args[0]
                else:
                    c2 = args[0]  # a future release that changed the catch-all
        """,
    )
    with pytest.raises(IntegrationError, match="no longer ends in `else: c2 = ch\\[f\\]`"):
        integration._patched_parse_model(fake)


def test_missing_parser_locals_raise_integration_error(tmp_path):
    fake = _fake_tasks(
        tmp_path,
        """
        def parse_model(d, ch, verbose=True):
            for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
                if m in base_modules:
                    c1, c2 = ch[f], args[0]
                else:
                    c2 = ch[f]
        """,
    )
    with pytest.raises(IntegrationError, match=r"no longer defines \['max_channels', 'width'\]"):
        integration._patched_parse_model(fake)


def test_hook_failure_warns_and_placeholders_refuse_to_build():
    """If patching fails, `yolo` keeps working for stock models and plugin names raise the reason (no wrong model)."""
    code = textwrap.dedent(
        """
        import warnings, yolo_attn.plugin.integration as integ
        def broken(tasks):
            raise integ.IntegrationError("simulated: parse_model changed")
        integ._patched_parse_model = broken
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from ultralytics.nn.tasks import DetectionModel
        print("WARN", [str(w.message) for w in caught if "yolo-attn" in str(w.message)])
        DetectionModel("yolov8n.yaml", verbose=False)
        print("STOCK OK")
        try:
            DetectionModel("yolov8n-ema.yaml", verbose=False)
        except Exception as exc:
            print("EMA REFUSED", type(exc).__name__, exc)
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert run.returncode == 0, run.stderr
    assert "simulated: parse_model changed" in run.stdout.split("STOCK OK")[0]
    assert "STOCK OK" in run.stdout
    assert "EMA REFUSED" in run.stdout and "simulated: parse_model changed" in run.stdout.split("EMA REFUSED")[1]


# --------------------------------------------------------------------------------------------------------------------
# start-up hook
# --------------------------------------------------------------------------------------------------------------------
def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(**env))


def test_plain_python_does_not_import_torch_or_ultralytics():
    run = _run("import sys; print('torch' in sys.modules, 'ultralytics' in sys.modules, 'yolo_attn' in sys.modules)")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "False", "True"]  # the hook module is loaded, nothing heavy


@pytest.mark.parametrize(
    "code",
    [
        "from ultralytics.nn.tasks import DetectionModel as D; m = D('yolov8n-ema.yaml', verbose=False)",
        "import yolo_attn; from ultralytics import YOLO; m = YOLO('yolov8n-ema.yaml').model",
        "from ultralytics import YOLO; import yolo_attn; m = YOLO('yolov8n-ema.yaml').model",
    ],
    ids=["hook-only", "yolo_attn-first", "ultralytics-first"],
)
def test_works_whatever_is_imported_first(code, tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", code + "; print(type(m.model[16]).__name__, m.model[16].gn.num_channels)"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,  # from any folder
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-2:] == ["EMA", str(64 // 32)]


def test_opt_out_variable_disables_registration(tmp_path):
    code = (
        "import ultralytics.nn.tasks as t; print(hasattr(t, 'EMA'), getattr(t.parse_model, '_yolo_attn', False))\n"
        "from ultralytics.nn.tasks import DetectionModel\n"
        "try:\n    DetectionModel('yolov8n-ema.yaml', verbose=False)\nexcept Exception as e:\n"
        "    print('FAILED', type(e).__name__)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(YOLO_ATTN_DISABLE="1"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split("\n")
    assert lines[0] == "False False"
    assert "FAILED" in run.stdout  # the shipped YAML is not even found: the plugin is really off


# --------------------------------------------------------------------------------------------------------------------
# pretrained transfer through Ultralytics' own BaseModel.load (what `yolo train pretrained=base.pt` calls)
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "base_name,variant_name", [("yolov8n.yaml", "yolov8n-ema.yaml"), ("yolo11n.yaml", "yolo11n-se.yaml")]
)
def test_pretrained_load_transfers_every_base_tensor(base_name, variant_name):
    from ultralytics.utils.torch_utils import intersect_dicts

    torch.manual_seed(0)
    base = DetectionModel(base_name, verbose=False)
    for p in base.parameters():  # distinguishable values: a wrong placement cannot pass by accident
        p.data.normal_()
    variant = DetectionModel(variant_name, verbose=False)
    stock_count = len(intersect_dicts(base.state_dict(), variant.state_dict()))  # Ultralytics' index-keyed rule
    variant.load(base, verbose=False)
    plugin_rows = {m.i for m in variant.model if type(m).__name__ in registry.list_layers()}
    k = 0
    transferred = 0
    for layer in variant.model:
        if layer.i in plugin_rows:
            continue
        b_sd, v_sd = base.model[k].state_dict(), layer.state_dict()
        assert b_sd.keys() == v_sd.keys()
        for key in b_sd:
            assert torch.equal(b_sd[key], v_sd[key]), (layer.i, key)
            transferred += 1
        k += 1
    assert transferred == len(base.state_dict())  # every base tensor, in its renumbered layer
    assert stock_count < transferred  # what Ultralytics alone would have kept


def test_model_fuse_also_fuses_plugin_layers():
    torch.manual_seed(0)
    model = DetectionModel("yolov8n-odconv.yaml", verbose=False).eval()
    for m in model.modules():  # non-trivial BN statistics so an unfused/fused mismatch would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        before = model(x)[0]
        model.fuse(verbose=False)
        after = model(x)[0]
    odconv = [m for m in model.model if type(m).__name__ == "ODConv"]
    assert len(odconv) == 2 and all(isinstance(m.bn, nn.Identity) for m in odconv)
    torch.testing.assert_close(after, before, atol=1e-3, rtol=1e-4)


def test_startup_hook_is_silent_when_the_package_is_gone(tmp_path):
    """A left-behind .pth (e.g. the editable checkout was deleted) must not print errors at every Python start."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "yolo_attn_autoload.pth").write_text((REPO / "yolo_attn_autoload.pth").read_text())
    env = subprocess_env()
    env["PYTHONPATH"] = ""
    code = f"import site, sys; site.addsitedir({str(site_dir)!r}); print('yolo_attn' in sys.modules)"
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0 and run.stderr == "" and run.stdout.strip() == "False"
    # and with the package importable, the same file installs the hook
    env["PYTHONPATH"] = str(REPO)
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == "True", run.stderr
