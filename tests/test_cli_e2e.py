"""The real, unmodified ``yolo`` console script with a plugin YAML: train -> val -> predict -> resume -> export.

Runs from a temporary folder (no repo files on the path), on a private copy of coco8 (real COCO images), at a tiny
image size so the whole chain stays around a minute on 2 CPU cores.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import console_script, subprocess_env

IMGSZ = 64
# ONNX vs PyTorch tolerance on the raw Detect output (boxes in input pixels, class scores in [0, 1]) of an
# fp32 model: graph optimisations reorder float sums, so differences of ~1e-4 are normal; 1e-3 bounds them.
ONNX_ATOL = 1e-3


def yolo(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [console_script("yolo"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or subprocess_env(),
    )
    assert run.returncode == 0, f"yolo {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, coco8_copy) -> dict:
    """One real 2-epoch training run (save_period=1 keeps the epoch-0 checkpoint for the resume test)."""
    work = tmp_path_factory.mktemp("cli")
    yolo(
        "train",
        "model=yolov8n-ema.yaml",
        f"data={coco8_copy}",
        "epochs=2",
        f"imgsz={IMGSZ}",
        "batch=4",
        "workers=0",
        "device=cpu",
        "plots=False",
        "save_period=1",
        "seed=0",
        f"project={work / 'runs'}",
        "name=ema",
        "exist_ok=True",
        cwd=work,
    )
    run_dir = work / "runs" / "ema"
    return {"work": work, "run": run_dir, "data": coco8_copy}


def test_train_wrote_checkpoints_with_plugin_layers(trained):
    weights = trained["run"] / "weights"
    for name in ("last.pt", "best.pt", "epoch0.pt"):
        assert (weights / name).is_file(), name
    ckpt = torch.load(weights / "best.pt", map_location="cpu", weights_only=False)
    names = {type(m).__name__ for m in ckpt["model"].model}
    assert "EMA" in names
    assert ckpt["model"].yaml["scale"] == "n"


def test_val_and_predict(trained):
    best = trained["run"] / "weights" / "best.pt"
    run = yolo(
        "val",
        f"model={best}",
        f"data={trained['data']}",
        f"imgsz={IMGSZ}",
        "batch=4",
        "device=cpu",
        "plots=False",
        "workers=0",
        cwd=trained["work"],
    )
    assert "all" in run.stdout + run.stderr  # the per-class table's summary row
    images = Path(trained["data"]).parent / "images" / "val"
    yolo(
        "predict",
        f"model={best}",
        f"source={images}",
        f"imgsz={IMGSZ}",
        "device=cpu",
        "save=False",
        cwd=trained["work"],
    )


def test_resume_from_interrupted_checkpoint(trained, tmp_path):
    results = trained["run"] / "results.csv"
    rows_before = results.read_text().strip().splitlines()
    # epoch0.pt is what an interrupted run leaves: optimizer state and epoch=0 of 2; resume trains epoch 1 again
    run = yolo("train", "resume", f"model={trained['run'] / 'weights' / 'epoch0.pt'}", cwd=trained["work"])
    assert "Resuming training" in run.stdout + run.stderr
    rows_after = results.read_text().strip().splitlines()
    assert len(rows_after) >= 2 and rows_after[0] == rows_before[0]


def _torch_reference(weights: Path, x: np.ndarray) -> np.ndarray:
    from ultralytics import YOLO

    model = YOLO(str(weights)).model.float().fuse().eval()
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    return (y[0] if isinstance(y, (list, tuple)) else y).numpy()


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_onnx_export_matches_pytorch(trained, tmp_path, dynamic):
    import onnxruntime as ort

    best = trained["run"] / "weights" / "best.pt"
    copy = tmp_path / "best.pt"
    copy.write_bytes(best.read_bytes())
    yolo("export", f"model={copy}", "format=onnx", f"imgsz={IMGSZ}", f"dynamic={dynamic}", "device=cpu", cwd=tmp_path)
    session = ort.InferenceSession(str(tmp_path / "best.onnx"), providers=["CPUExecutionProvider"])
    shapes = [(1, 3, IMGSZ, IMGSZ)] + ([(2, 3, IMGSZ + 32, IMGSZ)] if dynamic else [])
    rng = np.random.default_rng(0)
    for shape in shapes:
        x = rng.random(shape, dtype=np.float32)
        onnx_out = session.run(None, {session.get_inputs()[0].name: x})[0]
        ref = _torch_reference(copy, x)
        assert onnx_out.shape == ref.shape
        np.testing.assert_allclose(onnx_out, ref, atol=ONNX_ATOL, rtol=0)


def test_torchscript_export_runs(trained, tmp_path):
    best = trained["run"] / "weights" / "best.pt"
    copy = tmp_path / "best.pt"
    copy.write_bytes(best.read_bytes())
    yolo("export", f"model={copy}", "format=torchscript", f"imgsz={IMGSZ}", "device=cpu", cwd=tmp_path)
    ts = torch.jit.load(str(tmp_path / "best.torchscript"))
    x = np.random.default_rng(1).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    out = ts(torch.from_numpy(x))
    out = out[0] if isinstance(out, (list, tuple)) else out
    np.testing.assert_allclose(out.numpy(), _torch_reference(copy, x), atol=ONNX_ATOL, rtol=0)


def test_safe_load_round_trip(trained, tmp_path):
    """ULTRALYTICS_SAFE_LOAD=1 (weights_only unpickling with an allow-list) loads plugin checkpoints."""
    best = trained["run"] / "weights" / "best.pt"
    code = (
        "import numpy as np; from ultralytics import YOLO;"
        f"m = YOLO(r'{best}'); r = m.predict(np.zeros(({IMGSZ}, {IMGSZ}, 3), dtype=np.uint8), imgsz={IMGSZ},"
        " device='cpu', verbose=False);"
        "print('OK', type(m.model.model[16]).__name__)"
    )
    env = subprocess_env(ULTRALYTICS_SAFE_LOAD="1")
    run = subprocess.run(
        [os.sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("OK EMA")
    # and the same checkpoint is refused when the plugin is disabled: proof that the allow-list entries are ours.
    # (Ultralytics 8.4.0's restricted mode still let unknown nn.Module classes through; the allow-list came later.)
    import ultralytics

    if tuple(int(p) for p in ultralytics.__version__.split(".")[:3]) < (8, 4, 100):
        return
    env_off = subprocess_env(ULTRALYTICS_SAFE_LOAD="1", YOLO_ATTN_DISABLE="1")
    off = subprocess.run(
        [os.sys.executable, "-c", code], capture_output=True, text=True, env=env_off, cwd=tmp_path, timeout=300
    )
    assert off.returncode != 0
