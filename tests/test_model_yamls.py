"""Every shipped model YAML: builds at n and s, wiring, channels, parameter accounting, generator drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from yolo_attn.plugin import integration, registry

integration.register_ultralytics()

from ultralytics.nn.tasks import DetectionModel  # noqa: E402
from ultralytics.utils.torch_utils import model_info  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # model builds on 2 shared cores

SHIPPED = sorted(p.name for p in (REPO / "model_yamls").glob("*.yaml"))
PLUGIN = set(registry.list_layers())
NECK_OUTPUTS = {"yolov8": [15, 18, 21], "yolo11": [16, 19, 22]}


def family(name: str) -> str:
    return name.split("-")[0]


def scaled(name: str, scale: str) -> str:
    fam, rest = name.split("-", 1)
    return f"{fam}{scale}-{rest}"


def test_twelve_yamls_shipped():
    expected = {f"{f}-{v}.yaml" for f in ("yolov8", "yolo11") for v in ("se", "cbam", "eca", "ema", "ca", "odconv")}
    assert set(SHIPPED) == expected


def _generator():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import generate_model_yamls
    finally:
        sys.path.pop(0)
    return generate_model_yamls


def test_committed_yamls_match_generator():
    import ultralytics

    generator = _generator()
    files = generator.render_all()
    assert set(files) == set(SHIPPED)  # nothing shipped that the generator does not make, and the reverse
    same_release = ultralytics.__version__ == generator.GENERATED_WITH_ULTRALYTICS
    for name, text in files.items():
        committed_text = (REPO / "model_yamls" / name).read_text(encoding="utf-8")
        if same_release:  # byte-identical (the body is the installed release's own base YAML text)
            assert committed_text == text, f"{name} drifted: run python scripts/generate_model_yamls.py"
        committed, generated = yaml.safe_load(committed_text), yaml.safe_load(text)
        assert committed["backbone"] == generated["backbone"] and committed["head"] == generated["head"], name
    if same_release:
        run = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "generate_model_yamls.py"), "--check"],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stdout + run.stderr


def test_shipped_yamls_are_what_their_names_generate():
    """A shipped file is the variant its name describes, rendered by the same code as every other variant name."""
    from yolo_attn.variants.families import parse_variant_name, render_variant, resolve_variant_yaml

    for name in SHIPPED:
        variant = parse_variant_name(name, skip_existing=False)
        assert variant is not None and f"{variant.stem}.yaml" == name
        assert render_variant(variant) == _generator().render_all()[name]
        assert resolve_variant_yaml(scaled(name, "s")) is None  # the shipped file wins, as a local file would


@pytest.mark.parametrize("scale", ["n", "s"])
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_yaml_builds_and_is_wired(name, scale):
    variant = DetectionModel(scaled(name, scale), verbose=False)
    base = DetectionModel(f"{family(name)}{scale}.yaml", verbose=False)
    assert variant.yaml["scale"] == scale  # scale letter from the file name honoured
    plugin = [m for m in variant.model if type(m).__name__ in PLUGIN]
    detect = variant.model[-1]

    # channels: record what each plugin layer receives and what its producer emits in a real forward pass
    seen: dict[int, tuple[int, int]] = {}
    produced: dict[int, int] = {}

    def record(mod, inp, out):
        produced[mod.i] = out.shape[1]
        if type(mod).__name__ in PLUGIN:
            seen[mod.i] = (inp[0].shape[1], out.shape[1])

    hooks = [m.register_forward_hook(record) for m in variant.model[:-1]]
    variant.eval()
    with torch.no_grad():
        variant(torch.zeros(1, 3, 64, 96))
    for h in hooks:
        h.remove()

    if name.endswith("odconv.yaml"):
        assert len(plugin) == 2
        base_convs = [base.model[i] for i in (m.i for m in plugin)]
        assert all(type(c).__name__ == "Conv" for c in base_convs)
        for od, conv in zip(plugin, base_convs):
            assert od.bn.num_features == conv.bn.num_features  # c2 width-scaled exactly like the Conv it replaces
            assert seen[od.i][0] == produced[od.i - 1]
        assert [m.f for m in variant.model] == [m.f for m in base.model]  # wiring untouched
        replaced = sum(sum(p.numel() for p in c.parameters()) for c in base_convs)
        added = sum(m.np for m in plugin)
        assert (
            sum(p.numel() for p in variant.parameters()) == sum(p.numel() for p in base.parameters()) - replaced + added
        )
        return

    necks = NECK_OUTPUTS[family(name)]
    assert [m.i for m in plugin] == [t + k + 1 for k, t in enumerate(necks)]
    assert detect.f == [m.i for m in plugin]  # Detect reads the attention outputs
    for m in plugin:
        assert m.f == -1
        c_in, c_out = seen[m.i]
        assert c_in == produced[m.i - 1] == c_out  # true input channels, channel-preserving
    # consumers rewired exactly: no row but the attention row reads a neck output directly any more
    neck_rows = {m.i - 1 for m in plugin}
    for m in variant.model:
        if m not in plugin:
            srcs = [m.f] if isinstance(m.f, int) else m.f
            assert not {s if s >= 0 else m.i + s for s in srcs} & neck_rows, (m.i, m.f)
    # every non-plugin layer reads the same producer as in the stock model (indices mapped through the insertion)
    to_base = {}
    k = 0
    for m in variant.model:
        if type(m).__name__ in PLUGIN:
            to_base[m.i] = to_base[m.i - 1]  # an attention layer stands for its producer
        else:
            to_base[m.i] = k
            k += 1
    stock = [m for m in variant.model if type(m).__name__ not in PLUGIN]
    for m, b in zip(stock, base.model):
        assert type(m) is type(b)
        srcs = [m.f] if isinstance(m.f, int) else m.f
        bsrcs = [b.f] if isinstance(b.f, int) else b.f
        mapped = [to_base[s if s >= 0 else m.i + s] if (s if s >= 0 else m.i + s) >= 0 else -1 for s in srcs]
        expected = [s if s >= 0 else b.i + s for s in bsrcs]
        assert mapped == expected, (m.i, m.f, b.i, b.f)
    # parameters: stock + exactly the attention layers' own parameters
    n_variant = sum(p.numel() for p in variant.parameters())
    n_base = sum(p.numel() for p in base.parameters())
    assert n_variant == n_base + sum(sum(p.numel() for p in m.parameters()) for m in plugin)
    assert all(m.np == sum(p.numel() for p in m.parameters()) for m in plugin)


def ema_params(c: int, groups: int = 32) -> int:
    """EMA's parameters from the paper's structure: per group of cg = C/G channels, a shared 1x1 conv (cg^2 + cg),
    a 3x3 conv (9 cg^2 + cg) and a per-channel GroupNorm affine (2 cg) -- independent of the implementation."""
    cg = c // groups
    return 10 * cg * cg + 4 * cg


def test_model_info_counts_plugin_layers():
    variant = DetectionModel("yolov8s-ema.yaml", verbose=False)
    base = DetectionModel("yolov8s.yaml", verbose=False)
    n_layers_v, n_params_v, _, gflops_v = model_info(variant, imgsz=640)
    n_layers_b, n_params_b, _, gflops_b = model_info(base, imgsz=640)
    assert n_params_v - n_params_b == sum(ema_params(c) for c in (128, 256, 512))
    assert n_layers_v > n_layers_b
    assert gflops_v > gflops_b > 0


@pytest.mark.parametrize("scale,channels", [("n", (64, 128, 256)), ("s", (128, 256, 512)), ("x", (320, 640, 640))])
def test_ema_param_deltas_match_analytic_count(scale, channels):
    v = sum(p.numel() for p in DetectionModel(f"yolov8{scale}-ema.yaml", verbose=False).parameters())
    b = sum(p.numel() for p in DetectionModel(f"yolov8{scale}.yaml", verbose=False).parameters())
    assert v - b == sum(ema_params(c) for c in channels)


def test_all_scales_build_for_one_yaml_per_layer():
    for name in ("yolov8-ema.yaml", "yolo11-cbam.yaml", "yolov8-odconv.yaml"):
        for scale in "mlx":
            model = DetectionModel(scaled(name, scale), verbose=False)
            assert model.yaml["scale"] == scale


def test_shipped_yaml_resolves_from_any_folder(tmp_path):
    code = (
        "from ultralytics.nn.tasks import yaml_model_load as y; d = y('yolo11m-eca.yaml');"
        "print(d['scale'], d['yaml_file'])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["m", "yolo11m-eca.yaml"]


def test_local_file_shadows_shipped_yaml(tmp_path):
    """A user's own yolov8-ema.yaml in the working folder wins over the shipped one (like Ultralytics' own lookup)."""
    text = (REPO / "model_yamls" / "yolov8-ema.yaml").read_text().replace("EMA, []", "EMA, [16]")
    Path(tmp_path / "yolov8-ema.yaml").write_text(text)
    code = (
        "from ultralytics.nn.tasks import DetectionModel as D; print(D('yolov8n-ema.yaml', verbose=False).model[16].gn)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "GroupNorm(4, 4" in run.stdout  # 64 channels / 16 groups
