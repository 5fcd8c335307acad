"""Every shipped YAML exports through Ultralytics' own exporter (ONNX dynamic, TorchScript) and matches PyTorch.

The CLI chain (train -> checkpoint -> `yolo export`) is covered for one YAML in test_cli_e2e.py; this covers the
layers of every YAML through the same exporter, from an untrained model at a tiny size. ONNX runs in onnxruntime at
two input shapes (dynamic batch and size) and is compared with the fused PyTorch model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO

from yolo_attn.plugin import integration

integration.register_ultralytics()

SHIPPED = sorted(p.name for p in (REPO / "model_yamls").glob("*.yaml"))
ATOL = 1e-3  # same tolerance as test_cli_e2e.py: float reassociation in graph optimisations, boxes in pixels


def _n(name: str) -> str:
    family, rest = name.split("-", 1)
    return f"{family}n-{rest}"


@pytest.mark.parametrize("name", SHIPPED)
def test_export_dynamic_onnx_and_torchscript(name, tmp_path, monkeypatch):
    import onnxruntime as ort
    from ultralytics import YOLO

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = YOLO(_n(name))
    reference = YOLO(_n(name))
    reference.model.load_state_dict(model.model.state_dict())
    ref = reference.model.float().fuse().eval()

    onnx_path = Path(model.export(format="onnx", imgsz=64, dynamic=True, device="cpu", simplify=False))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in ((1, 3, 64, 64), (2, 3, 96, 64)):
        x = rng.random(shape, dtype=np.float32)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            want = ref(torch.from_numpy(x))[0].numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)

    ts_path = Path(model.export(format="torchscript", imgsz=64, device="cpu"))
    ts = torch.jit.load(str(ts_path))
    x = torch.from_numpy(rng.random((1, 3, 64, 64), dtype=np.float32))
    with torch.no_grad():
        out, want = ts(x), ref(x)[0]
    np.testing.assert_allclose((out[0] if isinstance(out, (list, tuple)) else out).numpy(), want.numpy(), atol=ATOL)
