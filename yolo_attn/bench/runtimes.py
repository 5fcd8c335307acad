"""Latency in the runtimes deployers use: ONNX Runtime, OpenVINO, TensorRT, beside PyTorch eager.

Attention layers (GroupNorm, softmax, strip pools) cost differently in a graph runtime than in PyTorch, so each model
is exported with **Ultralytics' own exporter** (``ultralytics.engine.exporter.Exporter``, the code behind
``yolo export``; the model is the one built from YAML or loaded from a local checkpoint, nothing is downloaded), then:

1. **Checked**: the runtime's raw output on the benchmark input must equal the fused PyTorch model's: relative L2
   error ``||runtime - torch|| / ||torch|| <= 1e-3`` (fp32; TensorRT fp16: 2e-2, :data:`TOLERANCES`), separately over
   the box and the class-score channels of a detection output (:func:`check_outputs`). A runtime that computes
   something else is not timed: :class:`RuntimeMismatchError`.
   A model built from YAML outputs the same tensor whatever its input (at Ultralytics' initialisation the signal
   fades through the layers until the output is the head's biases), which would make the check vacuous: its
   exported copy gets re-drawn weights first (recorded in ``weights``; the cost of a dense fp32 graph does not
   depend on the values). Trained weights are used as given.
2. **Timed** with the protocol of :mod:`yolo_attn.bench.latency`: warm-up, interleaved rotated rounds over the models
   *within one runtime*, p50/p90, and the ratio to the baseline model as the median of per-round paired ratios with
   a bootstrap 95% interval. Runtimes are timed one after another (their thread pools would compete if mixed).
   Forward only, on a pre-made input (no pre/post-processing; NMS is the same CPU code for every runtime).

Threads are fixed and recorded: ONNX Runtime ``intra_op_num_threads = threads``, ``inter_op_num_threads = 1``,
sequential execution, intra-op spinning off (an idle session's spinning threads would steal the cores of the next
model in the round); OpenVINO ``INFERENCE_NUM_THREADS = threads``, ``PERFORMANCE_HINT = LATENCY``,
``INFERENCE_PRECISION_HINT = f32`` on CPU (OpenVINO would otherwise pick bf16 on CPUs that have it). PyTorch uses
``torch.set_num_threads(threads)``. TensorRT (fp16 engine, CUDA only) runs through Ultralytics' ``AutoBackend``; on a
machine without CUDA it is skipped with the reason. A runtime that is not installed is an error naming the install
command (:data:`INSTALL`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yolo_attn.bench.latency import LatencySettings, measure_interleaved, ratio_summary, sync_fn

__all__ = [
    "EXPORT_FORMATS",
    "INSTALL",
    "RUNTIMES",
    "TOLERANCES",
    "RuntimeMismatchError",
    "RuntimeUnavailableError",
    "check_outputs",
    "export_for_runtime",
    "load_runner",
    "measure_runtimes",
    "parse_runtimes",
    "runtime_availability",
    "runtime_versions",
]

RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime", "openvino", "tensorrt")
ALIASES = {"pytorch": "torch", "ort": "onnxruntime", "onnx": "onnxruntime", "ov": "openvino", "trt": "tensorrt",
           "engine": "tensorrt"}  # fmt: skip
#: Ultralytics export format per runtime.
EXPORT_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "engine"}
#: How to install each optional runtime.
INSTALL = {
    "onnxruntime": "pip install 'yolo-attn[onnx]'",
    "openvino": "pip install 'yolo-attn[openvino]'",
    "tensorrt": "pip install tensorrt (NVIDIA TensorRT matching your CUDA version; needs a CUDA GPU)",
}
#: Largest relative L2 error of a runtime's output vs PyTorch's (per part, see :func:`check_outputs`), by precision.
#: fp32: float reassociation measured here stays below 1.1e-4 even for yolov8s-ema at 640 with large random
#: activations (1e-5 at imgsz 64), so 1e-3 leaves a 10x margin and still rejects a wrong branch. fp16: 2e-2.
TOLERANCES = {"fp32": 1e-3, "fp16": 2e-2}
_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


class RuntimeUnavailableError(RuntimeError):
    """A requested runtime is not installed (the message names the install command)."""


class RuntimeMismatchError(RuntimeError):
    """A runtime's output differs from PyTorch's beyond the stated tolerance; it is not timed."""


def parse_runtimes(value: str | Sequence[str] | None) -> list[str]:
    """``"torch,onnxruntime"`` / a list -> canonical runtime names (``torch`` first, duplicates dropped).

    Raises:
        ValueError: An unknown runtime (the message lists the valid ones).
    """
    if value is None or value == "":
        return ["torch"]
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    out: list[str] = []
    for item in items:
        key = item.strip().lower()
        if not key:
            continue
        key = ALIASES.get(key, key)
        if key not in RUNTIMES:
            raise ValueError(f"runtime={item!r} is not one of {', '.join(RUNTIMES)}")
        if key not in out:
            out.append(key)
    if "torch" in out:
        out.remove("torch")
    return ["torch", *out]  # PyTorch is the reference every runtime is checked against


def runtime_availability(runtimes: Sequence[str], device: torch.device) -> dict[str, str | None]:
    """Runtime -> None (usable) or the reason it is skipped (TensorRT without CUDA).

    Raises:
        RuntimeUnavailableError: A requested runtime's package is not installed.
    """
    out: dict[str, str | None] = {}
    for rt in runtimes:
        if rt == "torch":
            out[rt] = None
            continue
        if rt == "tensorrt" and device.type != "cuda":
            out[rt] = f"TensorRT needs a CUDA device (this run uses device={device}, cuda available: " \
                      f"{torch.cuda.is_available()}); skipped"  # fmt: skip
            continue
        try:
            __import__(_MODULES[rt])
        except ImportError as exc:
            raise RuntimeUnavailableError(f"runtime={rt} needs the {_MODULES[rt]} package ({exc}); install it: "
                                          f"{INSTALL[rt]}") from exc  # fmt: skip
        out[rt] = None
    return out


def runtime_versions(runtimes: Sequence[str]) -> dict[str, str | None]:
    """Installed version of each runtime (None when not importable)."""
    out: dict[str, str | None] = {}
    for rt in runtimes:
        if rt == "torch":
            out[rt] = torch.__version__
            continue
        try:
            mod = __import__(_MODULES[rt])
        except ImportError:
            out[rt] = None
            continue
        version = getattr(mod, "__version__", None)
        if rt == "openvino" and hasattr(mod, "get_version"):  # the full build string
            version = mod.get_version() or version
        out[rt] = str(version) if version is not None else "unknown"
    return out


# ------------------------------------------------------------------------------------------------------------ export
@contextlib.contextmanager
def _quiet_ultralytics(verbose: bool) -> Iterator[None]:
    """Silence Ultralytics' export log (dozens of lines per model) unless ``verbose``."""
    if verbose:
        yield
        return
    logger = logging.getLogger("ultralytics")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"


def export_for_runtime(
    model: nn.Module,
    name: str,
    runtime: str,
    imgsz: tuple[int, int],
    batch: int,
    device: torch.device,
    out_dir: Path,
    *,
    verbose: bool = False,
) -> Path:
    """Export one Ultralytics model for ``runtime`` with Ultralytics' own ``Exporter`` into ``out_dir``.

    The model is deep-copied (the exporter fuses and edits the head in place). Static shape ``(batch, C, *imgsz)``,
    Ultralytics' defaults otherwise (ONNX: onnxslim simplification, the exporter's opset; OpenVINO: fp32 IR;
    TensorRT: fp16 engine on ``device``).

    Raises:
        ValueError: ``model`` is not an Ultralytics model (the exporter needs its YAML, stride and head).
    """
    from ultralytics.engine.exporter import Exporter
    from ultralytics.nn.tasks import BaseModel

    if not isinstance(model, BaseModel) or not isinstance(getattr(model, "yaml", None), dict):
        raise ValueError(f"runtime={runtime}: {name} is not an Ultralytics model; only YAML-built or checkpoint "
                         "models can be exported by Ultralytics' exporter")  # fmt: skip
    fmt = EXPORT_FORMATS[runtime]
    m = copy.deepcopy(model).float().cpu()
    out_dir.mkdir(parents=True, exist_ok=True)
    m.pt_path = str(out_dir / f"{_safe_stem(name)}.pt")  # the exporter names its output after this path
    if not getattr(m, "task", None):  # YOLO() sets it; a bare DetectionModel built from YAML has none
        from ultralytics.nn.tasks import guess_model_task

        m.task = guess_model_task(m)
    overrides: dict[str, Any] = {"format": fmt, "imgsz": list(imgsz), "batch": batch, "verbose": verbose}
    if fmt == "engine":
        overrides.update(device=device.index or 0, quantize=16)
    else:
        overrides["device"] = "cpu"
    with _quiet_ultralytics(verbose):
        path = Exporter(overrides=overrides)(model=m)
    if not path:
        raise RuntimeError(f"runtime={runtime}: Ultralytics' exporter returned no file for {name}")
    path = Path(path)
    if runtime == "openvino" and path.is_dir():
        path = next(path.glob("*.xml"))
    return path


# ----------------------------------------------------------------------------------------------------------- runners
class _OrtRunner:
    def __init__(self, path: Path, threads: int, device: torch.device) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), so, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.settings = {
            "providers": self.session.get_providers(),
            "intra_op_num_threads": threads,
            "inter_op_num_threads": 1,
            "execution_mode": "sequential",
            "intra_op_spinning": False,
            "graph_optimization_level": str(so.graph_optimization_level),
        }

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class _OpenVINORunner:
    def __init__(self, path: Path, threads: int) -> None:
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.settings = {
            "device": "CPU",
            **config,
            "NUM_STREAMS": str(self.compiled.get_property("NUM_STREAMS")),
        }

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x})
        return self.request.get_output_tensor(0).data


class _TensorRTRunner:
    def __init__(self, path: Path, device: torch.device) -> None:
        from ultralytics.nn.autobackend import AutoBackend

        self.backend = AutoBackend(str(path), device=device, fp16=True, verbose=False)
        self.settings = {"backend": "ultralytics AutoBackend", "precision": "fp16", "device": str(device)}

    def __call__(self, x: torch.Tensor) -> Any:
        return self.backend(x)


def load_runner(runtime: str, path: Path, threads: int, device: torch.device) -> Callable[[Any], Any]:
    """A callable that runs an exported model in ``runtime`` (input: numpy for ONNX Runtime/OpenVINO, a CUDA fp16
    tensor for TensorRT); it has a ``settings`` dict describing how it was configured."""
    if runtime == "onnxruntime":
        return _OrtRunner(path, threads, device)
    if runtime == "openvino":
        return _OpenVINORunner(path, threads)
    if runtime == "tensorrt":
        return _TensorRTRunner(path, device)
    raise ValueError(f"runtime={runtime!r} has no exported runner")


# ------------------------------------------------------------------------------------------------------------- check
def _first_array(out: Any) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        return out.detach().float().cpu().numpy()
    if isinstance(out, np.ndarray):
        return out
    if isinstance(out, (tuple, list)) and out:
        return _first_array(out[0])
    if isinstance(out, dict) and out:
        return _first_array(next(iter(out.values())))
    raise TypeError(f"no array in a model output of type {type(out).__name__}")


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.linalg.norm(b))
    err = float(np.linalg.norm(a - b))
    return err / scale if scale > 0 else err


def check_outputs(got: Any, want: Any, precision: str = "fp32") -> dict[str, Any]:
    """Compare a runtime's output with PyTorch's by relative L2 error, per part of a detection output.

    ``||got - want|| / ||want|| <= TOLERANCES[precision]`` over the box channels (the first 4 of a
    (B, 4 + nc, anchors) detection output) and over the class-score channels separately (boxes are in pixels, scores
    in [0, 1]: one norm over both would hide a wrong score branch), or over the whole output for other heads.
    A relative norm, not an elementwise bound: with weights whose activations are large, a few box coordinates
    computed through a near-argmax DFL softmax move by a pixel under float reassociation while the whole output
    agrees to 1e-4.

    Returns:
        ``passed``, ``rel_l2`` ({part: error}), ``tolerance``, ``max_abs_diff``, ``shape``, ``reference_max_abs``
        (and ``reason`` when the shapes differ or the output is not finite).
    """
    a, b = _first_array(got).astype(np.float64), _first_array(want).astype(np.float64)
    tol = TOLERANCES[precision]
    base = {"tolerance": tol, "shape": list(b.shape)}
    if a.shape != b.shape:
        return {**base, "passed": False, "reason": f"shape {list(a.shape)} vs torch {list(b.shape)}"}
    if not np.all(np.isfinite(a)):
        return {**base, "passed": False, "reason": "non-finite values in the runtime's output"}
    if b.ndim == 3 and b.shape[1] > 4:
        parts = {"boxes": (a[:, :4], b[:, :4]), "scores": (a[:, 4:], b[:, 4:])}
    else:
        parts = {"output": (a, b)}
    rel = {name: _rel_l2(x, y) for name, (x, y) in parts.items()}
    return {
        **base,
        "passed": all(v <= tol for v in rel.values()),
        "rel_l2": rel,
        "max_abs_diff": float(np.abs(a - b).max()) if a.size else 0.0,
        "reference_max_abs": float(np.abs(b).max()) if b.size else 0.0,
    }


def _redraw_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Copy of ``model`` with every weight tensor re-drawn from N(0, 3/fan_in) (biases and norms kept, DFL's fixed
    integral kernel kept). The gain 3 keeps the signal alive through the SiLU stack up to the head (with 1/fan_in
    it decays until the output is again the head's biases)."""
    from ultralytics.nn.modules.block import DFL

    m = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    fixed = {id(p) for mod in m.modules() if isinstance(mod, DFL) for p in mod.parameters()}
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() < 2 or id(p) in fixed:
                continue
            fan_in = math.prod(p.shape[1:]) if p.dim() <= 4 else math.prod(p.shape[-3:])  # ODConv bank: per kernel
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p) * math.sqrt(3.0 / fan_in))
    return m


def _checkable(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, str]:
    """The model to export and check: as given, unless its output does not depend on its input.

    At Ultralytics' initialisation the signal fades through the SiLU stack, so a model built from YAML outputs its
    head's biases for every input: comparing runtimes on it would prove nothing. Such a model is
    replaced, for the exported runtimes, by a copy with re-drawn weights (:func:`_redraw_weights`); the cost of a
    dense fp32 graph does not depend on the weight values.
    """
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(1)
    other = torch.rand(x.shape, generator=gen).to(dev, x.dtype)
    with torch.inference_mode():
        y1, y2 = _first_array(model(x.to(dev))), _first_array(model(other))
    if not check_outputs(y2, y1)["passed"]:
        return model, "as given"
    return _redraw_weights(model), (
        "re-drawn, N(0, 3/fan_in), seed 0: the given weights' output does not depend on the input (a freshly "
        "initialised model outputs its head's biases), so a check on them would prove nothing"
    )


# ------------------------------------------------------------------------------------------------------------ timing
def measure_runtimes(
    models: Sequence[nn.Module],
    names: Sequence[str],
    runtimes: Sequence[str],
    x: torch.Tensor,
    device: torch.device,
    settings: LatencySettings,
    threads: int,
    *,
    export_dir: str | Path | None = None,
    verbose: bool = False,
) -> dict[str, dict[str, Any]]:
    """Export, check and time every model in every runtime other than ``torch``.

    Args:
        models: Fused fp32 eval Ultralytics models (the PyTorch reference).
        names: Display names.
        runtimes: Canonical names (:func:`parse_runtimes`); ``torch`` is skipped here (timed by the main bench).
        x: The benchmark input (batch, C, H, W), on CPU or the device.
        device: Device of the run (TensorRT and ONNX Runtime's CUDA provider use it).
        settings: Warm-up/repeats/batch (NMS is not timed here).
        threads: Threads given to each runtime.
        export_dir: Keep the exported files here (default: a temporary folder, deleted afterwards).
        verbose: Show Ultralytics' export log.

    Returns:
        Runtime -> ``{"status": "ok" | "skipped", "reason", "version", "settings", "tolerance", "models": [
        {"name", "export_seconds", "file", "weights" (as given, or why they were re-drawn), "check", "forward"
        (summary), "samples_ms", "ratio" (vs the first model, or None)}]}``.

    Raises:
        RuntimeUnavailableError: A runtime is not installed.
        RuntimeMismatchError: A runtime's output differs from PyTorch beyond the tolerance.
    """
    avail = runtime_availability(runtimes, device)
    versions = runtime_versions(runtimes)
    out: dict[str, dict[str, Any]] = {}
    x_cpu = x.detach().float().cpu().contiguous()
    if not any(v is None for k, v in avail.items() if k != "torch"):
        models = []  # every exported runtime is skipped: nothing to export or check
    checked = [_checkable(m, x) for m in models]
    models = [m for m, _ in checked]
    weights = [w for _, w in checked]
    with torch.inference_mode():
        refs = [_first_array(m(x.to(next(m.parameters()).device))) for m in models]
    tmp = None if export_dir else tempfile.TemporaryDirectory(prefix="yolo_attn_rt_")
    root = Path(export_dir) if export_dir else Path(tmp.name)
    try:
        for rt in runtimes:
            if rt == "torch":
                continue
            if avail[rt] is not None:
                out[rt] = {"status": "skipped", "reason": avail[rt], "version": versions[rt], "models": []}
                continue
            precision = "fp16" if rt == "tensorrt" else "fp32"
            runners, rows = [], []
            for model, name in zip(models, names):
                t0 = time.perf_counter()
                path = export_for_runtime(model, name, rt, tuple(x.shape[2:]), x.shape[0], device, root / rt,
                                          verbose=verbose)  # fmt: skip
                export_s = time.perf_counter() - t0
                runner = load_runner(rt, path, threads, device)
                runners.append(runner)
                rows.append(
                    {
                        "name": name,
                        "export_seconds": export_s,
                        "file": str(path) if export_dir else None,
                        "weights": weights[len(rows)],
                    }
                )
            feed = x.to(device).half() if rt == "tensorrt" else x_cpu.numpy()
            for row, runner, ref in zip(rows, runners, refs):
                row["check"] = check_outputs(runner(feed), ref, precision)
                if not row["check"]["passed"]:
                    c = row["check"]
                    raise RuntimeMismatchError(
                        f"runtime={rt}: {row['name']} output differs from PyTorch beyond the tolerance (relative L2 "
                        f"<= {c['tolerance']}): " + (c.get("reason") or f"relative L2 {c['rel_l2']}") + "; not timed"
                    )
            sync = sync_fn(device) if rt == "tensorrt" else (lambda: None)
            res = measure_interleaved(runners, feed, LatencySettings(settings.warmup, settings.repeats,
                                                                     settings.batch, nms=False), sync=sync)  # fmt: skip
            base = res[0]["forward_s"]
            for i, (row, r) in enumerate(zip(rows, res)):
                row["forward"] = r["forward"]
                row["samples_ms"] = [t * 1e3 for t in r["forward_s"]]
                row["ratio"] = ratio_summary(r["forward_s"], base) if i else None
            out[rt] = {
                "status": "ok",
                "reason": None,
                "version": versions[rt],
                "settings": runners[0].settings,
                "tolerance": {"precision": precision, "max_rel_l2": TOLERANCES[precision]},  # fmt: skip
                "models": rows,
            }
            del runners
    finally:
        if tmp is not None:
            tmp.cleanup()
    return out
