"""Helpers shared by the layer equivalence suites (test_layers, test_layers_comparison_set)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn


def randomize_(module: nn.Module, seed: int, std: float = 0.5) -> nn.Module:
    """Random parameters and BN running stats: defaults like gamma=1, beta=0 (or SA's zero/one init) would hide
    ordering bugs, a swapped half or a missing term."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return module


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal to 1e-5, relative to the expected tensor's largest magnitude (at least 1)."""
    scale = max(1.0, expected.detach().abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{what}: {m}")


def onnx_roundtrip(
    model: nn.Module,
    export_shape: tuple[int, ...],
    run_shapes: list[tuple[int, ...]],
    make_input: Callable[[tuple[int, ...]], torch.Tensor] = torch.randn,
) -> None:
    """Export with dynamic batch/height/width as Ultralytics' exporter does; run onnxruntime at other shapes."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model.eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation chatter
        torch.onnx.export(
            model,
            (torch.randn(export_shape),),
            f,
            dynamo=False,  # what Ultralytics' exporter uses
            opset_version=17,
            input_names=["images"],
            output_names=["output0"],
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "h", 3: "w"}},
        )
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    for shape in run_shapes:
        x = make_input(shape)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape
        assert abs(got - expected).max() <= 1e-4, f"ONNX mismatch at input {shape}"
