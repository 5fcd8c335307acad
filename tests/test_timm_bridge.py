"""The timm bridge: ``TimmAttn`` rows build ``timm.layers.create_attn(name, c1, ...)`` with the true channels.

Every type timm's ``create_attn`` accepts is listed (read from timm's source and cross-checked here with a plain text
search of that source), classified usable or refused, and the classification is verified by building and running
each type: usable ones keep the shape at several channel counts and two non-square sizes, in eval and train mode;
each refused one is shown failing the way its reason says.
"""

from __future__ import annotations

import inspect
import io
import pickle
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

timm = pytest.importorskip("timm")  # an extra, included in dev: CI has it

from timm.layers import create_attn  # noqa: E402

from yolo_attn.layers import timm_bridge  # noqa: E402
from yolo_attn.layers.timm_bridge import TIMM_INSTALL, TimmAttn, timm_attention_types  # noqa: E402

ULTRALYTICS_CFG = Path(__import__("ultralytics").__file__).parent / "cfg" / "models"
YOLOV8 = (ULTRALYTICS_CFG / "v8" / "yolov8.yaml").read_text()
NECK = [15, 18, 21]
NECK_CHANNELS_N = [64, 128, 256]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Random weights: several timm layers zero-init their last conv (gc with fuse_add, nl), an identity at init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return module


def _build(text: str, scale: str = "n"):
    from yolo_attn.plugin import integration

    integration.register_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    cfg = yaml.safe_load(text)
    cfg["scale"] = scale
    return DetectionModel(cfg, verbose=False)


# -------------------------------------------------------------------------------------------------- the type list
def test_types_are_read_from_timms_source() -> None:
    source = inspect.getsource(sys.modules["timm.layers.create_attn"])
    by_text = list(dict.fromkeys(re.findall(r"attn_type == ['\"](\w+)['\"]", source)))
    types = timm_attention_types()
    assert list(types) == by_text
    assert {"se", "eca", "gc", "cbam", "ge", "sk", "halo", "bottleneck", "nl"} <= set(types)  # timm 1.0.x names
    for name in types:  # each listed name is one timm's factory accepts
        assert timm.layers.get_attn(name) is not None


USABLE = [name for name, reason in timm_attention_types().items() if reason is None]
REFUSED = {name: reason for name, reason in timm_attention_types().items() if reason is not None}


def test_timm_version_and_split() -> None:
    print(f"timm {timm.__version__}: usable {USABLE}; refused {sorted(REFUSED)}")
    assert len(USABLE) >= 12 and REFUSED
    assert set(REFUSED) >= {"bottleneck", "halo", "bat"}  # the fixed-size ones, by what their code needs


@pytest.mark.parametrize("name", USABLE)
def test_usable_type_preserves_shape_and_is_timms_module(name: str) -> None:
    for c in (16, 64, 96):
        m = TimmAttn(c, name)
        official = create_attn(name, c)
        assert type(m.attn) is type(official)
        assert set(m.state_dict()) == {f"attn.{k}" for k in official.state_dict()}
        official.load_state_dict({k[len("attn.") :]: v for k, v in randomize_(m, seed=c).state_dict().items()})
        for train in (False, True):
            m.train(train)
            official.train(train)
            for shape in ((2, c, 13, 21), (2, c, 20, 12)):
                x = torch.randn(shape)
                with torch.no_grad():
                    y = m(x)
                    assert y.shape == x.shape, f"{name} at {shape}, train={train}"
                    if not train:  # dropout (bat) and batch statistics aside, it is timm's own computation
                        torch.testing.assert_close(y, official(x))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_type_fails_as_its_reason_says(name: str) -> None:
    reason = REFUSED[name]
    with pytest.raises(ValueError, match=rf"TimmAttn: timm attention type {name!r} is refused|TimmAttn\({name!r}\)"):
        TimmAttn(64, name)
    if name == "bottleneck":
        assert "feat_size" in reason
        with pytest.raises(AssertionError, match="feature size"):
            create_attn(name, 64)
        fixed = create_attn(name, 64, feat_size=(20, 20)).eval()
        with torch.no_grad():
            fixed(torch.randn(1, 64, 20, 20))  # works at the size it was built for ...
            with pytest.raises(AssertionError):  # timm's _assert on the size
                fixed(torch.randn(1, 64, 40, 40))  # ... and no other
    elif name in ("halo", "bat"):
        block = re.search(r"block_size \((\d+) by default\)", reason)
        assert block, reason
        m = create_attn(name, 64).eval()
        size = 20 if name == "halo" else 40  # 20 % 8 != 0 (P5 at 640); 40 % 7 != 0 (P4 at 640)
        with torch.no_grad(), pytest.raises(AssertionError):  # timm's _assert(H % block_size == 0)
            m(torch.randn(1, 64, size, size))
    else:  # refused by the probe: building or running it with its defaults fails, as the reason quotes
        assert "with its defaults" in reason
        with pytest.raises(Exception) as info:
            m = create_attn(name, 32)
            for shape in ((2, 32, 13, 21), (2, 32, 10, 6)):
                for train in (False, True):
                    y = m.train(train)(torch.randn(shape))
                    assert y.shape == shape
        assert str(info.value).split("\n")[0][:40] in reason


# ---------------------------------------------------------------------------------------------------- arguments
def test_extra_args_become_keyword_arguments() -> None:
    by_name = TimmAttn(64, "se", rd_ratio=0.25)
    trailing_dict = TimmAttn(64, "se", {"rd_ratio": 0.25})
    positional = TimmAttn(64, "se", 0.25)  # SEModule(channels, rd_ratio=1/16, ...): the first parameter after channels
    default = TimmAttn(64, "se")
    assert by_name.kwargs == trailing_dict.kwargs == positional.kwargs == {"rd_ratio": 0.25}
    for m in (by_name, trailing_dict, positional):
        assert m.attn.fc1.out_channels == create_attn("se", 64, rd_ratio=0.25).fc1.out_channels == 16
    assert default.attn.fc1.out_channels == create_attn("se", 64).fc1.out_channels == 8
    assert TimmAttn(64, "SE").name == "se"  # case-insensitive like timm
    assert "rd_ratio=0.25" in repr(by_name)


@pytest.mark.parametrize(
    "build, pattern",
    [
        (lambda: TimmAttn(64), r"TimmAttn: None is not a timm attention type; write the type first, e\.g\. "),
        (lambda: TimmAttn(64, "nope"), r"'nope' is not a timm attention type.*Usable with timm .*\bgc\b"),
        (lambda: TimmAttn(64, "se", 0.25, rd_ratio=0.5), r"rd_ratio given both by position and by name"),
        (lambda: TimmAttn(64, "se", {"rd_ratio": 0.5}, rd_ratio=0.5), r"rd_ratio given twice"),
        (lambda: TimmAttn(64, "eca", *range(1, 11)), r"10 extra positional args .* at most 9 after channels"),
        (lambda: TimmAttn(64, "se", {"no_such_option": 1}), r"TimmAttn\('se'\) at 64 channels .*timm .* raised"),
        (lambda: TimmAttn(64, "sk", {"stride": 2}), r"changes the shape: \(1, 64, 9, 13\) -> \(1, 64, 5, 7\)"),
        (lambda: TimmAttn(64, "splat", {"out_channels": 32}), r"changes the shape: .* -> \(1, 32, 9, 13\)"),
        (lambda: TimmAttn(0, "se"), r"TimmAttn: channels must be a positive int; got 0"),
    ],
)
def test_bad_arguments(build, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build()


def test_probe_does_not_change_state() -> None:
    """The constructor's shape check runs in eval mode: BN running statistics stay as built, train mode is kept."""
    m = TimmAttn(64, "coord")
    assert m.training and m.attn.training
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    assert bns
    for bn in bns:
        assert int(bn.num_batches_tracked) == 0
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))


# -------------------------------------------------------------------------------------------------- YAML rows
@pytest.mark.parametrize("name", ["gc", "eca", "cbam", "coord", "ela"])
def test_yaml_row_builds_with_true_channels(name: str, single_torch_thread) -> None:
    from yolo_attn.variants.edit import insert_layer

    model = _build(insert_layer(YOLOV8, "TimmAttn", [name], after=NECK))
    rows = [m for m in model.model if type(m).__name__ == "TimmAttn"]
    assert [m.c1 for m in rows] == NECK_CHANNELS_N and all(m.name == name for m in rows)
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o: seen.__setitem__(mod.i, (i[0].shape[1], o.shape[1]))) for m in rows
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 64, 96))
    for h in hooks:
        h.remove()
    assert [seen[m.i] for m in rows] == [(c, c) for c in NECK_CHANNELS_N]
    base = _build(YOLOV8)
    expected = sum(sum(p.numel() for p in create_attn(name, c).parameters()) for c in NECK_CHANNELS_N)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in base.parameters()) + expected


def test_yaml_row_with_positional_option(single_torch_thread) -> None:
    from yolo_attn.variants.edit import insert_layer

    model = _build(insert_layer(YOLOV8, "TimmAttn", ["se", 0.25], after=NECK))
    rows = [m for m in model.model if type(m).__name__ == "TimmAttn"]
    assert [m.attn.fc1.out_channels for m in rows] == [
        create_attn("se", c, rd_ratio=0.25).fc1.out_channels for c in NECK_CHANNELS_N
    ]


def test_yaml_row_with_keyword_mapping(single_torch_thread) -> None:
    from yolo_attn.variants.edit import insert_layer

    text = insert_layer(YOLOV8, "TimmAttn", ["se", {"rd_ratio": 0.25}], after=NECK)
    assert text.count("- [-1, 1, TimmAttn, [se, {rd_ratio: 0.25}]]") == 3
    model = _build(text)
    rows = [m for m in model.model if type(m).__name__ == "TimmAttn"]
    assert [m.kwargs for m in rows] == [{"rd_ratio": 0.25}] * 3


def test_yaml_row_with_refused_type_names_the_reason(single_torch_thread) -> None:
    from yolo_attn.plugin.integration import ModelYAMLError
    from yolo_attn.variants.edit import insert_layer

    with pytest.raises(ModelYAMLError, match=r"row 16 .*TimmAttn.*'halo' is refused: it needs H and W divisible by"):
        _build(insert_layer(YOLOV8, "TimmAttn", ["halo"], after=NECK))


# --------------------------------------------------------------------------------------------------- without timm
@pytest.fixture
def no_timm(monkeypatch):
    """Simulate timm not being installed: importing it fails like a missing package."""
    for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")]:
        monkeypatch.setitem(sys.modules, name, None)
    timm_bridge._type_names.cache_clear()
    timm_bridge._classified.cache_clear()
    yield
    timm_bridge._type_names.cache_clear()
    timm_bridge._classified.cache_clear()


def test_without_timm_the_row_fails_with_the_install_command(no_timm, single_torch_thread) -> None:
    from yolo_attn.plugin.integration import ModelYAMLError
    from yolo_attn.variants.edit import insert_layer

    with pytest.raises(ImportError) as info:
        import timm  # noqa: F401
    assert TIMM_INSTALL == "pip install 'yolo-attn[timm]'"
    with pytest.raises(ImportError, match=re.escape(TIMM_INSTALL)):
        TimmAttn(64, "gc")
    with pytest.raises(ImportError, match=re.escape(TIMM_INSTALL)):
        timm_attention_types()
    with pytest.raises(ModelYAMLError, match=r"row 16 .*TimmAttn needs timm.*" + re.escape(TIMM_INSTALL)):
        _build(insert_layer(YOLOV8, "TimmAttn", ["gc"], after=NECK))
    assert info.value is not None


def test_registry_import_does_not_need_timm(no_timm) -> None:
    """Registering TimmAttn (every start-up) must not import timm."""
    from yolo_attn.plugin import registry

    assert registry.get_layer("TimmAttn") is TimmAttn


# ------------------------------------------------------------------------------------------------- pickle, export
def test_pickle_roundtrip_and_checkpoint_of_a_model(single_torch_thread, tmp_path) -> None:
    from yolo_attn.variants.edit import insert_layer

    m = randomize_(TimmAttn(64, "gc"), seed=3).eval()
    x = torch.randn(2, 64, 13, 21)
    again = pickle.loads(pickle.dumps(m))
    with torch.no_grad():
        torch.testing.assert_close(again(x), m(x))
    model = _build(insert_layer(YOLOV8, "TimmAttn", ["cbam"], after=NECK)).eval()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model}, path)  # what Ultralytics checkpoints pickle
    loaded = torch.load(path, weights_only=False)["model"].eval()
    xi = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(xi)[0], model(xi)[0])


@pytest.mark.parametrize("name", USABLE)
def test_dynamic_onnx_two_shapes(name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = randomize_(TimmAttn(32, name), seed=5).eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(2, 32, 16, 16),),
            f,
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["output0"],
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "h", 3: "w"}},
        )
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    for shape in ((1, 32, 13, 21), (3, 32, 24, 17)):
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x)
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= 1e-4 * max(1.0, expected.abs().max().item()), name


def test_checkpoint_loads_under_restricted_loading(tmp_path, single_torch_thread) -> None:
    """ULTRALYTICS_SAFE_LOAD=1: the allow-list then includes timm's layer classes that TimmAttn pickles."""
    from conftest import load_in_fresh_process

    from yolo_attn.variants.edit import insert_layer

    model = _build(insert_layer(YOLOV8, "TimmAttn", ["gc"], after=NECK))
    report = "'LOADED', sum(type(x).__name__ == 'TimmAttn' for x in m.model)"
    assert load_in_fresh_process(model, tmp_path, report) == "LOADED 3"
