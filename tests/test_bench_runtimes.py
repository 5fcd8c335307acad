"""``yolo-attn bench runtime=...``: Ultralytics' exporter, the output check against PyTorch, per-runtime timing.

Tiny models at imgsz 64 (real exports, real onnxruntime/OpenVINO sessions). Timing values are not asserted (no
timed assertions), only that the protocol's fields are there and consistent.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from yolo_attn.bench import RuntimeMismatchError, RuntimeUnavailableError, benchmark_models, parse_runtimes
from yolo_attn.bench import runtimes as rt_module
from yolo_attn.bench.runtimes import TOLERANCES, check_outputs, runtime_availability

MODELS = ["yolov8n.yaml", "yolov8n-ema.yaml"]


@pytest.fixture(scope="module")
def runtime_run(tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'yolo-attn[onnx]'")
    pytest.importorskip("openvino", reason="needs openvino: pip install 'yolo-attn[openvino]'")
    from ultralytics.nn.tasks import DetectionModel

    tmp = tmp_path_factory.mktemp("runtimes")
    torch.manual_seed(0)
    ema = DetectionModel("yolov8n-ema.yaml", verbose=False)  # kept: the test re-checks the exported files against it
    with torch.no_grad():  # at Ultralytics' init the signal dies before the head: draw weights that reach the output
        for m in ema.modules():
            if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad:  # DFL's fixed kernel has no grad
                torch.nn.init.normal_(m.weight, std=(3 / m.weight[0].numel()) ** 0.5)
    result = benchmark_models(
        [MODELS[0], ema],
        names=["yolov8n", "yolov8n-ema"],
        imgsz=64,
        runtime="torch,onnxruntime,openvino,tensorrt",
        warmup=1,
        repeats=3,
        throughput_batch=0,
        cross_check=False,
        threads=1,
        export_dir=tmp / "exports",
        save=tmp / "bench.json",
        verbose=False,
    )
    return result, json.loads((tmp / "bench.json").read_text()), tmp, ema


def test_json_has_per_runtime_latency_ratios_and_versions(runtime_run) -> None:
    result, saved, _, _ = runtime_run
    assert saved["settings"]["runtimes"] == ["torch", "onnxruntime", "openvino", "tensorrt"]
    versions = saved["environment"]["runtimes"]
    import onnxruntime
    import openvino

    assert versions["onnxruntime"] == onnxruntime.__version__
    assert versions["openvino"] == openvino.get_version()
    assert versions["torch"] == torch.__version__
    details = saved["settings"]["runtime_details"]
    assert details["onnxruntime"]["settings"]["intra_op_num_threads"] == 1  # threads fixed and reported
    assert details["openvino"]["settings"]["INFERENCE_NUM_THREADS"] == 1
    assert details["onnxruntime"]["tolerance"] == {"precision": "fp32", "max_rel_l2": 1e-3}
    for entry in saved["models"]:
        for rt in ("torch", "onnxruntime", "openvino"):
            block = entry["runtimes"][rt]
            assert block["status"] == "ok"
            assert len(block["samples_ms"]) == 3 and block["forward"]["p50_ms"] > 0
            assert block["forward"]["p50_ms"] == pytest.approx(float(np.percentile(block["samples_ms"], 50)))
    variant = saved["models"][1]
    for rt in ("torch", "onnxruntime", "openvino"):
        ratio = variant["ratios"]["runtimes"][rt]
        paired = [
            a / b
            for a, b in zip(variant["runtimes"][rt]["samples_ms"], saved["models"][0]["runtimes"][rt]["samples_ms"])
        ]
        assert ratio["paired_median"] == pytest.approx(float(np.median(paired)))
        assert ratio["paired_ci95"][0] <= ratio["paired_median"] <= ratio["paired_ci95"][1]
    # torch's row is the main bench's own measurement, not a second one
    assert variant["runtimes"]["torch"]["samples_ms"] == variant["latency"]["batch"]["samples_ms"]


def test_tensorrt_is_skipped_with_a_reason_without_cuda(runtime_run) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: TensorRT is measured, not skipped")
    _, saved, _, _ = runtime_run
    reason = saved["settings"]["runtime_skipped"]["tensorrt"]
    assert "CUDA" in reason
    assert saved["settings"]["runtime_details"]["tensorrt"]["status"] == "skipped"
    assert all(e["runtimes"]["tensorrt"]["status"] == "skipped" for e in saved["models"])


def test_outputs_equal_pytorch_within_the_stated_tolerance(runtime_run) -> None:
    """The bench's own check passed, and independent sessions on the exported files agree with PyTorch."""
    import copy

    import onnxruntime as ort
    import openvino as ov

    _, saved, tmp, ema = runtime_run
    tol = TOLERANCES["fp32"]
    for entry in saved["models"]:
        for rt in ("onnxruntime", "openvino"):
            check = entry["runtimes"][rt]["check"]
            assert check["passed"] and check["shape"] == [1, 84, 84]
            assert sorted(check["rel_l2"]) == ["boxes", "scores"] and max(check["rel_l2"].values()) <= tol
    assert saved["models"][1]["runtimes"]["onnxruntime"]["weights"] == "as given"
    assert saved["models"][0]["runtimes"]["onnxruntime"]["weights"].startswith("re-drawn")  # zero head from YAML
    # independent: the exported files of the EMA model against its PyTorch weights, on an input the bench never saw
    reference = copy.deepcopy(ema).float().fuse().eval()
    rng = np.random.default_rng(1)
    x, x2 = rng.random((1, 3, 64, 64), dtype=np.float32), rng.random((1, 3, 64, 64), dtype=np.float32)
    with torch.inference_mode():
        want = reference(torch.from_numpy(x))[0].numpy()
        assert not check_outputs(reference(torch.from_numpy(x2))[0], want)["passed"]  # the output depends on x
    session = ort.InferenceSession(str(tmp / "exports" / "onnxruntime" / "yolov8n-ema.onnx"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    got_ort = session.run(None, {session.get_inputs()[0].name: x})[0]
    xml = next((tmp / "exports" / "openvino").rglob("yolov8n-ema.xml"))
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got_ov = compiled(x)[0]
    for got in (got_ort, got_ov):
        assert got.shape == want.shape
        for part in (slice(0, 4), slice(4, None)):  # boxes (pixels), class scores
            assert np.linalg.norm(got[:, part] - want[:, part]) <= tol * np.linalg.norm(want[:, part])
    # negative control: other weights give another output, which the same check rejects
    other = copy.deepcopy(reference)
    with torch.no_grad():
        other.model[-1].cv3[0][-1].weight.mul_(1.5)
        assert not check_outputs(got_ort, other(torch.from_numpy(x))[0])["passed"]


def test_check_outputs_can_fail() -> None:
    rng = np.random.default_rng(0)
    want = np.concatenate((rng.uniform(0, 64, (1, 4, 84)), rng.uniform(0, 1, (1, 80, 84))), 1).astype(np.float32)
    assert check_outputs(want * (1 + 1e-5), want)["passed"]  # float reassociation scale
    bad_scores = want.copy()
    bad_scores[:, 4:] = 1 - bad_scores[:, 4:]  # a wrong score branch, invisible in one norm dominated by pixels
    result = check_outputs(bad_scores, want)
    assert not result["passed"] and result["rel_l2"]["boxes"] == 0 and result["rel_l2"]["scores"] > 0.1
    assert not check_outputs(want[:, :80], want)["passed"]  # shape
    assert not check_outputs(np.full_like(want, np.nan), want)["passed"]


def test_a_runtime_that_disagrees_is_not_timed(monkeypatch, tmp_path) -> None:
    pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'yolo-attn[onnx]'")
    real = rt_module.load_runner

    def skewed(runtime, path, threads, device):
        runner = real(runtime, path, threads, device)

        class Skewed:
            settings = runner.settings

            def __call__(self, x):
                return runner(x) + 1.0  # a different computation

        return Skewed()

    monkeypatch.setattr(rt_module, "load_runner", skewed)
    with pytest.raises(RuntimeMismatchError, match="differs from PyTorch"):
        benchmark_models(["yolov8n.yaml"], imgsz=64, runtime="onnxruntime", warmup=0, repeats=1, throughput_batch=0,
                         flops=False, threads=1, verbose=False)  # fmt: skip


def test_missing_runtime_fails_with_the_install_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'yolo-attn\[onnx\]'"):
        runtime_availability(["torch", "onnxruntime"], torch.device("cpu"))
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'yolo-attn\[openvino\]'"):
        benchmark_models(["yolov8n.yaml"], imgsz=64, runtime="openvino", verbose=False)  # before any model is built


def test_parse_runtimes() -> None:
    assert parse_runtimes("onnx,ov,torch") == ["torch", "onnxruntime", "openvino"]
    assert parse_runtimes(["trt"]) == ["torch", "tensorrt"]
    assert parse_runtimes(None) == ["torch"]
    with pytest.raises(ValueError, match="not one of"):
        parse_runtimes("tflite")
    with pytest.raises(ValueError, match="needs latency=True"):
        benchmark_models(["yolov8n.yaml"], imgsz=64, runtime="onnxruntime", latency=False, verbose=False)
