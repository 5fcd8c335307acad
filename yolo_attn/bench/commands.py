"""``yolo-attn bench``: params, GFLOPs (official and executed), latency per runtime and training cost of models.

Python API: :func:`benchmark_models`. CLI: ``yolo-attn bench model=yolov8s.yaml,yolov8s-ema.yaml imgsz=640`` calls
:func:`bench_command` with the values already parsed; ``runtime=torch,onnxruntime,openvino`` adds exported runtimes
(:mod:`yolo_attn.bench.runtimes`), ``train=True`` the training cost (:mod:`yolo_attn.bench.train_cost`).

JSON report (``save=path``), ``schema_version`` 2 (times in ms; GFLOPs = 2 x MACs / 1e9; ``gflops``/``macs``/
``elementwise_ops`` count plugin layers by their official formulation, ``executed_*`` what the model runs)::

    {
      "schema_version": 2,
      "tool": "yolo-attn bench",
      "environment": {date, device, device_name, cpu_model, cpu_count, cpu_affinity, torch_threads,
                      torch_interop_threads, python, platform, torch, ultralytics, yolo_attn, thop,
                      loadavg (1/5/15 min, at the end), loadavg_start, cuda, cudnn, runtimes: {runtime: version}},
      "settings": {imgsz: [h, w], batch, throughput_batch, device, half, fuse, warmup, repeats, throughput_warmup,
                   throughput_repeats, nms: {enabled, conf, iou, max_det}, input, interleaved: true,
                   percentile_method, flops_convention, runtimes: [...], runtime_repeats, runtime_protocol,
                   runtime_skipped: {runtime: reason}, runtime_details: {runtime: {status, reason, version, settings
                   (threads, providers/config), tolerance: {precision, max_rel_l2}}},
                   train: {batch, warmup, repeats, memory, step, half} | null},
      "models": [
        {"name", "source", "params", "fused", "fused_plugin_modules": [...],
         "flops": {gflops, executed_gflops, macs, executed_macs, elementwise_ops, executed_elementwise_ops,
                   elementwise_gops, executed_elementwise_gops, params, input_shape, thop_gflops,
                   thop_disagreement_pct (vs executed), thop_notes, ultralytics_get_flops, functional_conv_macs,
                   by_op: {op: {calls, macs, elementwise_ops}} (executed), uncounted_ops: {op: calls},
                   layers: [{index, name, from, type, params, macs, gflops, elementwise_ops, executed_macs,
                             executed_gflops, executed_elementwise_ops, output_shape}],
                   plugin_modules: [{name, layer, layer_index, class, params, macs, gflops, elementwise_ops,
                                     executed_*, output_shape, formulation, thop_gflops}],
                   official_formulations: [{name, class, formulation, calls, input_shapes, macs, elementwise_ops,
                                            executed_macs, executed_elementwise_ops, max_rel_diff}], notes} | null,
         "latency": {"batch": {batch, forward, forward_nms, nms, fps, samples_ms, samples_nms_ms, rounds_first},
                     "throughput": {same keys, at throughput_batch} | null, "peak_memory_mb", "nms_applicable"}
                    | null,
           (forward/forward_nms/nms = {n, mean_ms, std_ms, min_ms, p50_ms, p90_ms, max_ms, ms_per_img, img_per_s})
         "runtimes": {runtime: {status, forward, samples_ms, check: {passed, rel_l2: {boxes, scores}, tolerance,
                                max_abs_diff, shape, reference_max_abs} | null (torch), export_seconds, file,
                                weights}} | null,
         "train": {batch, imgsz, step (summary), samples_ms, memory: {method, step_memory_mb, peak_total_mb,
                   before_mb} | null} | null,
         "ratios": {vs, params, gflops, executed_gflops, elementwise_ops,
                    latency_p50: {paired_median, paired_ci95, ratio_of_medians, ratio_of_minimums, n},
                    latency_p50_nms: {same}, throughput, runtimes: {runtime: {same}}, train_step: {same},
                    train_memory} | null (first model)}
      ],
      "notes": [...]
    }
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolo_attn.bench.flops import (
    FLOPS_CONVENTION,
    as_hw,
    count_flops,
    fuse_model,
    input_channels,
    thop_cross_check,
    ultralytics_get_flops,
)
from yolo_attn.bench.latency import (
    LatencySettings,
    default_throughput_batch,
    make_nms,
    measure_interleaved,
    ratio_summary,
    sync_fn,
)
from yolo_attn.bench.runtimes import (
    measure_runtimes,
    parse_runtimes,
    runtime_availability,
    runtime_versions,
)

__all__ = [
    "SCHEMA_VERSION",
    "bench_command",
    "benchmark_models",
    "environment_info",
    "format_report",
    "load_model",
    "parse_device",
]

SCHEMA_VERSION = 2
RUNTIME_PROTOCOL = (
    "each model exported with Ultralytics' exporter (static shape), output checked against the fused PyTorch model "
    "(relative L2 error per box/score part <= tolerance), then timed forward-only with the same warm-up and "
    "interleaved rotated rounds as PyTorch, one runtime after another; ratios = median of per-round paired ratios vs "
    "the first model, bootstrap 95% CI; threads fixed (see runtime_details)"
)
TRAIN_STEP = (
    "zero_grad + train-mode forward + Ultralytics detection loss on synthetic targets (3 boxes/image) + backward; no "
    "optimizer update; unfused; step time interleaved; memory: see train.memory.method"
)
PERCENTILE_METHOD = "linear interpolation between order statistics (numpy default, Hyndman-Fan type 7)"
INPUT_KINDS = ("image", "zeros", "random")


# ------------------------------------------------------------------------------------------------------------ inputs
def parse_device(device: str | int | torch.device | None) -> torch.device:
    """``"cpu"``, ``0``/``"0"``/``"cuda:0"``/``"cuda"``, ``"mps"`` -> ``torch.device``; CUDA must be available.

    Raises:
        ValueError: Unknown spelling, or a CUDA/MPS device that this machine does not have.
    """
    if device is None or device == "":
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, int) and not isinstance(device, bool):
        dev = torch.device("cuda", device)
    else:
        text = str(device).strip().lower()
        if text.isdigit():
            dev = torch.device("cuda", int(text))
        elif "," in text:
            raise ValueError(f"device={device!r}: benchmark one device at a time (e.g. device=0)")
        else:
            try:
                dev = torch.device(text)
            except RuntimeError as exc:
                raise ValueError(f"device={device!r} is not a device (use cpu, 0, cuda:0 or mps)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} asks for CUDA but torch.cuda.is_available() is False")
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        dev = torch.device("cuda", index)
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r} asks for MPS but it is not available")
    elif dev.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"device={device!r}: unsupported device type {dev.type!r}")
    return dev


def _display_name(spec: str | Path) -> str:
    return Path(str(spec)).stem


def load_model(spec: str | Path | nn.Module, name: str | None = None) -> tuple[str, nn.Module, str]:
    """Build or load one model for benchmarking, without ever downloading anything.

    Args:
        spec: A model YAML name or path (``yolov8s.yaml``, ``yolov8s-ema.yaml``: built with random weights, which do
            not change the cost), an existing ``.pt`` checkpoint path, or an ``nn.Module`` (deep-copied, so the
            caller's module is not fused in place).
        name: Display name; defaults to the file stem or the class name.

    Returns:
        ``(name, fp32 eval model, source description)``.

    Raises:
        FileNotFoundError: A ``.pt`` path that does not exist (Ultralytics would try to download a bare name).
        ValueError: Anything else that is not a YAML, a ``.pt`` or a module.
    """
    if isinstance(spec, nn.Module):
        model = copy.deepcopy(spec).float().eval()
        return name or type(spec).__name__, model, f"nn.Module {type(spec).__module__}.{type(spec).__qualname__}"
    text = str(spec)
    suffix = Path(text).suffix.lower()
    if suffix in {".yaml", ".yml"}:
        from ultralytics import YOLO

        model = YOLO(text, verbose=False).model
        if model is None:  # pragma: no cover - Ultralytics raises on a bad YAML
            raise ValueError(f"model={text!r}: Ultralytics built no model from this YAML")
        return name or _display_name(text), model.float().eval(), f"yaml {text}"
    if suffix == ".pt":
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"model={text!r}: no such checkpoint file (bench never downloads weights; pass a path to a .pt)"
            )
        from ultralytics.nn.tasks import load_checkpoint

        model, _ = load_checkpoint(str(path.resolve()), device="cpu", fuse=False)
        return name or _display_name(text), model.float().eval(), f"checkpoint {path.resolve()}"
    raise ValueError(f"model={text!r}: expected a model YAML (.yaml), a checkpoint (.pt) or an nn.Module")


def _make_input(kind: str, batch: int, channels: int, hw: tuple[int, int]) -> tuple[torch.Tensor, str]:
    h, w = hw
    if kind == "image" and channels == 3:
        try:
            import cv2
            from ultralytics.utils import ASSETS

            img = cv2.imread(str(ASSETS / "bus.jpg"))
            if img is not None:
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].copy()  # BGR -> RGB
                x = torch.from_numpy(img).permute(2, 0, 1).float().div_(255).unsqueeze(0)
                return x.repeat(batch, 1, 1, 1).contiguous(), f"ultralytics/assets/bus.jpg resized to {h}x{w}, /255"
        except Exception:  # noqa: BLE001 - fall through to noise, and say so in the description
            pass
        kind = "random"
    if kind == "zeros":
        return torch.zeros(batch, channels, h, w), "zeros"
    gen = torch.Generator().manual_seed(0)
    return torch.rand(batch, channels, h, w, generator=gen), "uniform noise in [0, 1), seed 0"


# ------------------------------------------------------------------------------------------------------- environment
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # not available on Windows
        return None


def environment_info(device: torch.device) -> dict[str, Any]:
    """Machine and software versions that a latency figure depends on."""
    import ultralytics

    try:
        import thop

        thop_version = getattr(thop, "__version__", "unknown")
    except ImportError:
        thop_version = None
    try:
        from yolo_attn import __version__ as yolo_attn_version
    except Exception:  # noqa: BLE001 - the version is informative only
        yolo_attn_version = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "yolo_attn": yolo_attn_version,
        "thop": thop_version,
        "loadavg": _loadavg(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
    }
    return info


# ---------------------------------------------------------------------------------------------------------- the bench
def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _latency_block(res: dict[str, Any], batch: int) -> dict[str, Any]:
    block = {
        "batch": batch,
        "forward": res["forward"],
        "forward_nms": res["forward_nms"],
        "nms": res["nms"],
        "fps": 1e3 * batch / res["forward"]["p50_ms"],
        "samples_ms": [t * 1e3 for t in res["forward_s"]],
        "samples_nms_ms": [t * 1e3 for t in res["nms_s"]] if res["nms_s"] else None,
        "rounds_first": res["order_first"],
        "minor_faults_p50": res.get("minor_faults_p50"),
    }
    return block


def benchmark_models(
    models: Sequence[str | Path | nn.Module] | str | nn.Module,
    imgsz: int | Sequence[int] = 640,
    batch: int = 1,
    device: str | int | torch.device | None = "cpu",
    half: bool = False,
    *,
    names: Sequence[str] | None = None,
    fuse: bool = True,
    flops: bool = True,
    cross_check: bool = True,
    latency: bool = True,
    warmup: int = 10,
    repeats: int = 100,
    throughput_batch: int | None = None,
    throughput_warmup: int = 2,
    throughput_repeats: int | None = None,
    nms: bool = True,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    runtime: str | Sequence[str] | None = "torch",
    runtime_repeats: int | None = None,
    export_dir: str | Path | None = None,
    train: bool = False,
    train_batch: int | None = None,
    train_warmup: int = 2,
    train_repeats: int = 10,
    train_memory: bool = True,
    threads: int | None = None,
    input: str = "image",  # noqa: A002 - the CLI key users type
    save: str | Path | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Benchmark one or several models: params, FLOPs (official and executed), latency per runtime, training cost.

    Args:
        models: YAML names/paths, ``.pt`` paths or ``nn.Module`` s; ratios are reported against the first.
        imgsz: Square size or (h, w); FLOPs are counted at exactly this size.
        batch: Batch of the latency measurement (1 for the p50/p90 figures).
        device: ``"cpu"``, ``0``/``"cuda:0"``, ``"mps"``.
        half: fp16 weights and inputs (CUDA only; a ``ValueError`` on CPU, where fp16 is emulated and meaningless).
        names: Display names (default: file stems / class names).
        fuse: Fuse Conv+BN (and plugin layers' own ``fuse()``) before measuring; the published figures are fused.
        flops: Count FLOPs. ``cross_check``: also run thop at the real size and Ultralytics' ``get_flops``.
        latency: Measure latency (and throughput).
        warmup: Untimed iterations per model before the batch-``batch`` timing.
        repeats: Timed interleaved rounds at batch ``batch``.
        throughput_batch: Batch of the throughput run (default 8 on CPU, 32 on CUDA; 0 disables it).
        throughput_warmup: Untimed throughput iterations per model.
        throughput_repeats: Timed throughput rounds (default ``max(3, repeats // 10)``).
        nms: Also time Ultralytics NMS on the raw output (detection models).
        conf: NMS confidence threshold (``yolo predict`` default 0.25).
        iou: NMS IoU threshold (``yolo predict`` default 0.7).
        max_det: NMS maximum detections per image.
        runtime: Runtimes to time, comma-separated or a list: ``torch`` (always, the reference), ``onnxruntime``,
            ``openvino``, ``tensorrt`` (CUDA only; skipped with the reason elsewhere). Each model is exported with
            Ultralytics' exporter, checked against PyTorch, then timed interleaved (:mod:`yolo_attn.bench.runtimes`).
        runtime_repeats: Timed rounds per exported runtime (default ``repeats``).
        export_dir: Keep the exported files here (default: a temporary folder).
        train: Also measure the training cost: step time (interleaved) and peak step memory
            (:mod:`yolo_attn.bench.train_cost`).
        train_batch: Batch of the training step (default 8 on CPU, 16 on CUDA).
        train_warmup: Untimed training steps per model.
        train_repeats: Timed interleaved training rounds.
        train_memory: Measure the peak step memory (CPU: one fresh process per model).
        threads: ``torch.set_num_threads`` for the run (restored afterwards) and the thread count of every runtime;
            default: leave torch's setting (and give runtimes the same number).
        input: ``"image"`` (Ultralytics' bus.jpg resized; realistic NMS load for trained weights), ``"zeros"`` or
            ``"random"``.
        save: Write the JSON report here.
        verbose: Print the tables.

    Returns:
        The report dict (see the module docstring for the schema).

    Raises:
        ValueError: Bad arguments (e.g. ``half=True`` on CPU).
        FlopCountError: FLOPs could not be counted for a model (never reported as 0).
        RuntimeUnavailableError: A requested runtime is not installed (the message names the install command).
        RuntimeMismatchError: An exported model's output differs from PyTorch beyond the stated tolerance.
    """
    specs = [models] if isinstance(models, (str, Path, nn.Module)) else list(models)
    if not specs:
        raise ValueError("no models given")
    if names is not None and len(names) != len(specs):
        raise ValueError(f"{len(names)} names for {len(specs)} models")
    dev = parse_device(device)
    if half and dev.type != "cuda":
        raise ValueError(f"half=True needs a CUDA device (got device={device!r}); fp16 on CPU is not benchmarked")
    hw = as_hw(imgsz)
    if min(hw) < 1:
        raise ValueError(f"imgsz must be positive; got {imgsz!r}")
    if input not in INPUT_KINDS:
        raise ValueError(f"input={input!r}: choose one of {', '.join(INPUT_KINDS)}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1; got {batch!r}")
    runtimes = parse_runtimes(runtime)
    if len(runtimes) > 1 and not latency:
        raise ValueError(f"runtime={','.join(runtimes)} times models: it needs latency=True")
    runtime_skips = runtime_availability(runtimes, dev)  # fails now, with the install command, if one is missing
    if train_batch is None:
        train_batch = 16 if dev.type == "cuda" else 8
    if not isinstance(train_batch, int) or train_batch < 1:
        raise ValueError(f"train_batch must be an int >= 1; got {train_batch!r}")
    tb = default_throughput_batch(dev) if throughput_batch is None else int(throughput_batch)
    tr = max(3, repeats // 10) if throughput_repeats is None else int(throughput_repeats)
    batch_settings = LatencySettings(warmup=warmup, repeats=repeats, batch=batch, nms=nms)
    tp_settings = None
    if tb:
        tp_settings = LatencySettings(warmup=throughput_warmup, repeats=max(tr, 1), batch=max(tb, 1), nms=nms)

    load_start = _loadavg()  # other work on the machine is the main source of CPU timing noise: record it
    old_threads = torch.get_num_threads()
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1; got {threads!r}")
        torch.set_num_threads(threads)
    try:
        loaded = [load_model(s, names[i] if names else None) for i, s in enumerate(specs)]
        display = _unique([n for n, _, _ in loaded])
        entries: list[dict[str, Any]] = []
        built: list[nn.Module] = []
        for name, (_, model, source) in zip(display, loaded):
            fused_plugins = fuse_model(model) if fuse else []
            entries.append(
                {
                    "name": name,
                    "source": source,
                    "params": sum(p.numel() for p in model.parameters()),
                    "fused": fuse,
                    "fused_plugin_modules": fused_plugins,
                    "flops": None,
                    "latency": None,
                    "runtimes": None,
                    "train": None,
                    "ratios": None,
                }
            )
            built.append(model)

        if flops:
            for entry, model in zip(entries, built):
                entry["flops"] = _flops_entry(model, entry["name"], hw, cross_check)

        input_desc = None
        runtime_info: dict[str, Any] = {}
        if latency:
            input_desc = _run_latency(entries, built, dev, half, hw, input, batch_settings, tp_settings,
                                      conf, iou, max_det)  # fmt: skip
            runtime_info = _run_runtimes(entries, built, runtimes, dev, hw, input, batch_settings, runtime_repeats,
                                         export_dir)  # fmt: skip
        if train:
            _run_train(entries, specs, dev, hw, train_batch, train_warmup, train_repeats, half, train_memory)
        _add_ratios(entries)
        result = {
            "schema_version": SCHEMA_VERSION,
            "tool": "yolo-attn bench",
            "environment": {
                **environment_info(dev),
                "loadavg_start": load_start,
                "runtimes": runtime_versions(runtimes),
            },
            "settings": {
                "imgsz": list(hw),
                "batch": batch,
                "throughput_batch": tb if (latency and tb) else None,
                "device": str(dev),
                "half": bool(half),
                "fuse": fuse,
                "warmup": warmup if latency else None,
                "repeats": repeats if latency else None,
                "throughput_warmup": throughput_warmup if (latency and tb) else None,
                "throughput_repeats": tr if (latency and tb) else None,
                "nms": {"enabled": bool(nms), "conf": conf, "iou": iou, "max_det": max_det},
                "input": input_desc,
                "interleaved": True,
                "percentile_method": PERCENTILE_METHOD,
                "flops_convention": FLOPS_CONVENTION,
                "runtimes": runtimes if latency else [],
                "runtime_repeats": (runtime_repeats or repeats) if len(runtimes) > 1 and latency else None,
                "runtime_protocol": RUNTIME_PROTOCOL if len(runtimes) > 1 and latency else None,
                "runtime_skipped": {k: v for k, v in runtime_skips.items() if v},
                "runtime_details": runtime_info,
                "train": (
                    {
                        "batch": train_batch,
                        "warmup": train_warmup,
                        "repeats": train_repeats,
                        "memory": train_memory,
                        "step": TRAIN_STEP,
                        "half": bool(half),
                    }
                    if train
                    else None
                ),  # fmt: skip
            },
            "models": entries,
            "notes": _global_notes(entries, dev, latency, load_start),
        }
    finally:
        torch.set_num_threads(old_threads)

    if verbose:
        print(format_report(result))
    if save:
        path = Path(save)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        if verbose:
            print(f"\nsaved {path}")
    return result


def _flops_entry(model: nn.Module, name: str, hw: tuple[int, int], cross_check: bool) -> dict[str, Any]:
    report = count_flops(model, hw, name=name)
    entry: dict[str, Any] = {
        "gflops": report.gflops,
        "thop_gflops": None,
        "thop_disagreement_pct": None,
        "thop_notes": [],
        "ultralytics_get_flops": None,
    }
    if cross_check:
        check = thop_cross_check(model, report)
        entry["thop_gflops"] = check["thop_gflops"]
        entry["thop_disagreement_pct"] = check["disagreement_pct"]
        entry["thop_notes"] = check["notes"] + ([check["error"]] if "error" in check else [])
        try:
            entry["ultralytics_get_flops"] = ultralytics_get_flops(model, hw)
        except Exception as exc:  # noqa: BLE001 - shown for comparison only
            report.notes.append(f"Ultralytics get_flops raised {exc!r}")
        if entry["ultralytics_get_flops"] is None:
            report.notes.append("Ultralytics get_flops returned 0.0 (its silent failure value); shown as null")
    entry.update(report.to_dict())
    return entry


def _run_latency(
    entries: list[dict[str, Any]],
    built: list[nn.Module],
    dev: torch.device,
    half: bool,
    hw: tuple[int, int],
    input_kind: str,
    batch_settings: LatencySettings,
    tp_settings: LatencySettings | None,
    conf: float,
    iou: float,
    max_det: int,
) -> str:
    dtype = torch.float16 if half else torch.float32
    runnable = [m.to(dev, dtype).eval() for m in built]
    channels = [input_channels(m) for m in runnable]
    nms_fns = [make_nms(m, conf, iou, max_det) for m in runnable]
    sync = sync_fn(dev)

    def inputs(batch: int) -> tuple[list[torch.Tensor], str]:
        cache: dict[int, torch.Tensor] = {}
        desc = ""
        for c in set(channels):
            x, desc = _make_input(input_kind, batch, c, hw)
            cache[c] = x.to(dev, dtype)
        return [cache[c] for c in channels], desc

    xs, desc = inputs(batch_settings.batch)
    res1 = measure_interleaved(runnable, xs, batch_settings, nms=nms_fns, sync=sync)
    peak = _peak_memory(runnable, xs, dev)
    res_tp = None
    if tp_settings is not None:
        xs_tp, _ = inputs(tp_settings.batch)
        res_tp = measure_interleaved(runnable, xs_tp, tp_settings, nms=nms_fns, sync=sync)
        del xs_tp
    for i, entry in enumerate(entries):
        entry["latency"] = {
            "batch": _latency_block(res1[i], batch_settings.batch),
            "throughput": _latency_block(res_tp[i], tp_settings.batch) if res_tp else None,
            "peak_memory_mb": peak[i],
            "nms_applicable": nms_fns[i] is not None,
        }
    return desc


def _run_runtimes(
    entries: list[dict[str, Any]],
    built: list[nn.Module],
    runtimes: list[str],
    dev: torch.device,
    hw: tuple[int, int],
    input_kind: str,
    batch_settings: LatencySettings,
    runtime_repeats: int | None,
    export_dir: str | Path | None,
) -> dict[str, Any]:
    """PyTorch's figures (already measured) plus every exported runtime, per model, into ``entry["runtimes"]``.

    Ultralytics' export log (dozens of lines per model) is silenced: the bench's own tables say what was run."""
    for e in entries:
        b = e["latency"]["batch"]
        e["runtimes"] = {"torch": {"status": "ok", "forward": b["forward"], "samples_ms": b["samples_ms"],
                                   "check": None, "export_seconds": None}}  # fmt: skip
    if len(runtimes) == 1:
        return {}
    x, _ = _make_input(input_kind, batch_settings.batch, input_channels(built[0]), hw)
    settings = LatencySettings(batch_settings.warmup, runtime_repeats or batch_settings.repeats, batch_settings.batch,
                               nms=False)  # fmt: skip
    reference = [copy.deepcopy(m).float() for m in built]  # runtimes are checked against fp32 PyTorch
    res = measure_runtimes(reference, [e["name"] for e in entries], runtimes, x.to(dev), dev, settings,
                           torch.get_num_threads(), export_dir=export_dir, verbose=False)  # fmt: skip
    info: dict[str, Any] = {}
    for rt, block in res.items():
        info[rt] = {k: v for k, v in block.items() if k != "models"}
        for e, row in zip(entries, block["models"]):
            e["runtimes"][rt] = {"status": block["status"], **{k: v for k, v in row.items() if k != "name"}}
        for e in entries[len(block["models"]) :]:
            e["runtimes"][rt] = {"status": block["status"], "reason": block.get("reason")}
    return info


def _run_train(
    entries: list[dict[str, Any]],
    specs: list[Any],
    dev: torch.device,
    hw: tuple[int, int],
    batch: int,
    warmup: int,
    repeats: int,
    half: bool,
    memory: bool,
) -> None:
    from yolo_attn.bench.train_cost import measure_train_cost

    rows = measure_train_cost(specs, [e["name"] for e in entries], hw, batch, dev, warmup=warmup, repeats=repeats,
                              threads=torch.get_num_threads(), half=half, memory=memory)  # fmt: skip
    for e, row in zip(entries, rows):
        e["train"] = {k: v for k, v in row.items() if k not in {"name", "ratio_step", "ratio_memory"}}
        e["_train_ratios"] = (row["ratio_step"], row["ratio_memory"])


def _peak_memory(models: list[nn.Module], xs: list[torch.Tensor], dev: torch.device) -> list[float | None]:
    if dev.type != "cuda":
        return [None] * len(models)  # no allocator statistics worth reporting on CPU
    out = []
    with torch.inference_mode():
        for m, x in zip(models, xs):
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            m(x)
            torch.cuda.synchronize(dev)
            out.append(torch.cuda.max_memory_allocated(dev) / 2**20)
    return out


def _add_ratios(entries: list[dict[str, Any]]) -> None:
    train_ratios = [e.pop("_train_ratios", None) for e in entries]
    if len(entries) < 2:
        return
    base = entries[0]
    for e, tr in zip(entries[1:], train_ratios[1:]):
        ratios: dict[str, Any] = {"vs": base["name"]}
        ratios["params"] = e["params"] / base["params"] if base["params"] else None
        if e["flops"] and base["flops"]:
            ratios["gflops"] = e["flops"]["gflops"] / base["flops"]["gflops"]
            ratios["executed_gflops"] = e["flops"]["executed_gflops"] / base["flops"]["executed_gflops"]
            b_el = base["flops"]["elementwise_ops"]
            ratios["elementwise_ops"] = e["flops"]["elementwise_ops"] / b_el if b_el else None
        if e["latency"] and base["latency"]:
            lb, bb = e["latency"]["batch"], base["latency"]["batch"]
            ratios["latency_p50"] = ratio_summary(lb["samples_ms"], bb["samples_ms"])
            if lb["samples_nms_ms"] and bb["samples_nms_ms"]:
                with_e = [a + b for a, b in zip(lb["samples_ms"], lb["samples_nms_ms"])]
                with_b = [a + b for a, b in zip(bb["samples_ms"], bb["samples_nms_ms"])]
                ratios["latency_p50_nms"] = ratio_summary(with_e, with_b)
            if e["latency"]["throughput"] and base["latency"]["throughput"]:
                tp_e = e["latency"]["throughput"]["forward"]["img_per_s"]
                ratios["throughput"] = tp_e / base["latency"]["throughput"]["forward"]["img_per_s"]
        if e.get("runtimes") and base.get("runtimes"):
            ratios["runtimes"] = {}
            for rt, block in e["runtimes"].items():
                b = base["runtimes"].get(rt) or {}
                if block.get("samples_ms") and b.get("samples_ms"):
                    ratios["runtimes"][rt] = ratio_summary(block["samples_ms"], b["samples_ms"])
        if tr is not None:
            ratios["train_step"], ratios["train_memory"] = tr
        e["ratios"] = ratios


def _global_notes(
    entries: list[dict[str, Any]], dev: torch.device, latency: bool, load_start: list[float] | None
) -> list[str]:
    notes = [
        "GFLOPs = 2 x conv+matmul MACs at the real input size on the fused model, plugin layers counted as their "
        "official formulation computes them (the published convention); exec GFLOPs = what this implementation "
        "runs; elementwise ops are separate.",
    ]
    if latency:
        notes.append(
            "Latency = model forward on a pre-made tensor (no preprocessing); 'with NMS' adds Ultralytics "
            "non_max_suppression on the raw output. Models were timed interleaved (rotated round-robin)."
        )
        notes.append(
            "NMS time depends on how many boxes pass the confidence threshold: randomly initialised YAML models "
            "produce almost none, so their NMS figures are a lower bound."
        )
    if dev.type == "cpu" and latency:
        notes.append(f"CPU timings use {torch.get_num_threads()} torch threads; other load on the machine adds noise.")
    faults = {e["name"]: ((e.get("latency") or {}).get("batch") or {}).get("minor_faults_p50") for e in entries}
    known = {k: v for k, v in faults.items() if v is not None}
    if dev.type == "cpu" and len(known) > 1 and max(known.values()) - min(known.values()) > 1000:
        notes.append(
            "minor page faults per forward differ between the models ("
            + ", ".join(f"{k}: {v:.0f}" for k, v in known.items())
            + "): freed activations re-faulted from the kernel cost ~1-3 us per 4 KiB page and depend on the heap "
            "layout of the process, so part of a latency difference here may be an allocator effect (an allocator "
            "that keeps freed memory, e.g. jemalloc, removes it)"
        )
    cpus = os.cpu_count() or 1
    # Only the load before the run says something about other processes: during it this process adds its own.
    if latency and load_start and load_start[0] > 0.5 * cpus:
        notes.append(
            f"the machine was busy before the run (1-min load average {load_start[0]:.1f} on {cpus} CPUs): absolute "
            "times may be inflated and noisy; interleaved ratios are less affected but their intervals widen"
        )
    return notes


# ------------------------------------------------------------------------------------------------------------ output
def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _ci_text(summary: dict[str, Any] | None) -> str:
    ci = (summary or {}).get("paired_ci95")
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"


def _short_version(version: str | None) -> str:
    """``2026.4.1-22982-e213a1...`` -> ``2026.4.1`` (the JSON keeps the full string)."""
    return (str(version).split("-")[0] if version else "-")[:15]


def _runtime_lines(result: dict[str, Any]) -> list[str]:
    """One row per (runtime, model): p50/p90, ratio vs the first model with its CI, the output check."""
    s = result["settings"]
    runtimes = s.get("runtimes") or []
    if len(runtimes) < 2:
        return []
    details = s.get("runtime_details") or {}
    versions = result["environment"].get("runtimes") or {}
    base = result["models"][0]["name"]
    lines = [
        "",
        f"runtimes (batch {s['batch']}, forward only, {s.get('runtime_repeats')} interleaved rounds per runtime, "
        f"threads {result['environment']['torch_threads']}; ratio vs {base}: median of paired ratios, 95% CI):",
    ]
    head = (
        f"{'runtime':<13}{'version':<16}{'model':<22}{'p50 ms':>9}{'p90 ms':>9}{'ratio':>8}{'CI95':>18}"
        f"{'rel L2 vs torch':>17}"
    )
    lines += [head, "-" * len(head)]
    for rt in runtimes:
        info = details.get(rt, {})
        if info.get("status") == "skipped":
            lines.append(f"{rt:<13}{_short_version(versions.get(rt)):<16}skipped: {info.get('reason')}")
            continue
        for e in result["models"]:
            block = (e.get("runtimes") or {}).get(rt) or {}
            fwd = block.get("forward") or {}
            ratio = ((e.get("ratios") or {}).get("runtimes") or {}).get(rt)
            check = block.get("check")
            lines.append(
                f"{rt:<13}{_short_version(versions.get(rt)):<16}{e['name']:<22.22}"
                f"{_fmt(fwd.get('p50_ms'), '.1f'):>9}{_fmt(fwd.get('p90_ms'), '.1f'):>9}"
                f"{_fmt((ratio or {}).get('paired_median'), '.3f'):>8}{_ci_text(ratio):>18}"
                f"{'reference' if check is None else format(max(check['rel_l2'].values()), '.1e'):>17}"
            )
    tol = {rt: d.get("tolerance") for rt, d in details.items() if d.get("tolerance")}
    if tol:
        lines.append(
            "output check before timing: ||runtime - torch|| / ||torch|| over boxes and over scores <= "
            + "; ".join(f"{t['max_rel_l2']:g} ({rt}, {t['precision']})" for rt, t in tol.items())
        )
    return lines


def _train_lines(result: dict[str, Any]) -> list[str]:
    t = result["settings"].get("train")
    if not t:
        return []
    base = result["models"][0]["name"]
    methods = {((e.get("train") or {}).get("memory") or {}).get("method") for e in result["models"]} - {None}
    lines = [
        "",
        f"training step (batch {t['batch']}, {t['warmup']} warm-up + {t['repeats']} interleaved rounds; forward + "
        f"loss + backward; ratio vs {base}):",
    ]
    head = (
        f"{'model':<22}{'step p50 ms':>12}{'p90 ms':>9}{'ratio':>8}{'CI95':>18}{'step mem MB':>13}{'ratio':>8}"
        f"{'peak total MB':>15}"
    )
    lines += [head, "-" * len(head)]
    for e in result["models"]:
        tr = e.get("train") or {}
        step = tr.get("step") or {}
        mem = tr.get("memory") or {}
        r = e.get("ratios") or {}
        lines.append(
            f"{e['name']:<22.22}{_fmt(step.get('p50_ms'), '.1f'):>12}{_fmt(step.get('p90_ms'), '.1f'):>9}"
            f"{_fmt((r.get('train_step') or {}).get('paired_median'), '.3f'):>8}{_ci_text(r.get('train_step')):>18}"
            f"{_fmt(mem.get('step_memory_mb'), '.1f'):>13}{_fmt(r.get('train_memory'), '.3f'):>8}"
            f"{_fmt(mem.get('peak_total_mb'), '.1f'):>15}"
        )
    if methods:
        from yolo_attn.bench.train_cost import MEMORY_METHODS

        lines += [f"memory: {MEMORY_METHODS.get(m, m)}" for m in sorted(methods)]
    return lines


def format_report(result: dict[str, Any]) -> str:
    """Human-readable tables of a :func:`benchmark_models` result."""
    s = result["settings"]
    env = result["environment"]
    tb = s["throughput_batch"]
    lines = [
        f"yolo-attn bench | imgsz {s['imgsz'][0]}x{s['imgsz'][1]} | device {env['device']} ({env['device_name']}) | "
        f"threads {env['torch_threads']} | torch {env['torch']} | ultralytics {env['ultralytics']}",
        (
            f"batch {s['batch']}: {s['warmup']} warm-up + {s['repeats']} interleaved repeats; "
            if s["repeats"]
            else "latency not measured; "
        )
        + (f"throughput batch {tb}: {s['throughput_repeats']} repeats; " if tb else "")
        + f"half={s['half']} fused={s['fuse']}",
        "",
    ]
    head = (
        f"{'model':<22}{'params(M)':>10}{'GFLOPs':>9}{'exec GFLOPs':>12}{'elem GOPs':>10}{'thop GFLOPs':>12}"
        f"{'thop Δ%':>9}{'get_flops':>10}{'p50 ms':>9}{'p90 ms':>9}{'FPS':>7}{'img/s@B':>10}{'p50+NMS':>9}"
    )
    lines += [head, "-" * len(head)]
    for e in result["models"]:
        f = e["flops"] or {}
        lat = e["latency"] or {}
        b = lat.get("batch") or {}
        fwd = b.get("forward") or {}
        tp = lat.get("throughput") or {}
        lines.append(
            f"{e['name']:<22.22}{e['params'] / 1e6:>10.3f}{_fmt(f.get('gflops'), '.2f'):>9}"
            f"{_fmt(f.get('executed_gflops'), '.2f'):>12}"
            f"{_fmt(f.get('elementwise_gops'), '.3f'):>10}{_fmt(f.get('thop_gflops'), '.2f'):>12}"
            f"{_fmt(f.get('thop_disagreement_pct'), '+.1f'):>9}{_fmt(f.get('ultralytics_get_flops'), '.2f'):>10}"
            f"{_fmt(fwd.get('p50_ms'), '.1f'):>9}{_fmt(fwd.get('p90_ms'), '.1f'):>9}"
            f"{_fmt(b.get('fps'), '.1f'):>7}{_fmt((tp.get('forward') or {}).get('img_per_s'), '.2f'):>10}"
            f"{_fmt((b.get('forward_nms') or {}).get('p50_ms'), '.1f'):>9}"
        )
    plugin_rows = [(e["name"], r) for e in result["models"] if e["flops"] for r in e["flops"]["plugin_modules"]]
    if plugin_rows:
        lines += ["", "plugin layers (per module, at the real input size; MFLOPs = official formulation):"]
        head = (
            f"{'model':<22}{'module':<14}{'layer':<10}{'output':<16}{'params':>10}{'MFLOPs':>10}{'exec MFLOPs':>12}"
            f"{'thop MFLOPs':>12}{'elem MOPs':>11}  counted as"
        )
        lines += [head, "-" * len(head)]
        for model_name, r in plugin_rows:
            shape = "x".join(str(v) for v in (r["output_shape"] or [])[1:]) or "-"
            thop_m = r.get("thop_gflops")
            exec_m = r.get("executed_gflops")
            how = r.get("formulation", "as executed")
            how = "as executed" if how == "as executed" else "official formulation"
            lines.append(
                f"{model_name:<22.22}{r['name']:<14}{r['layer']:<10}{shape:<16}{r['params']:>10,}"
                f"{r['gflops'] * 1e3:>10.3f}{_fmt(None if exec_m is None else exec_m * 1e3, '.3f'):>12}"
                f"{_fmt(None if thop_m is None else thop_m * 1e3, '.3f'):>12}"
                f"{r['elementwise_ops'] / 1e6:>11.3f}  {how}"
            )
    ratio_rows = [e for e in result["models"] if e.get("ratios")]
    if ratio_rows:
        base = result["models"][0]["name"]
        lines += ["", f"ratios vs {base} (latency: median of per-round paired ratios, bootstrap 95% CI):"]
        head = (
            f"{'model':<22}{'params':>8}{'GFLOPs':>8}{'exec':>8}{'elem':>8}{'p50':>8}{'CI95':>18}{'p50+NMS':>9}"
            f"{'img/s':>8}"
        )
        lines += [head, "-" * len(head)]
        for e in ratio_rows:
            r = e["ratios"]
            lat = r.get("latency_p50") or {}
            lines.append(
                f"{e['name']:<22.22}{_fmt(r.get('params'), '.3f'):>8}{_fmt(r.get('gflops'), '.3f'):>8}"
                f"{_fmt(r.get('executed_gflops'), '.3f'):>8}"
                f"{_fmt(r.get('elementwise_ops'), '.3f'):>8}{_fmt(lat.get('paired_median'), '.3f'):>8}"
                f"{_ci_text(lat):>18}"
                f"{_fmt((r.get('latency_p50_nms') or {}).get('paired_median'), '.3f'):>9}"
                f"{_fmt(r.get('throughput'), '.3f'):>8}"
            )
    lines += _runtime_lines(result)
    lines += _train_lines(result)
    notes = [n for e in result["models"] if e["flops"] for n in (f"{e['name']}: {x}" for x in e["flops"]["notes"])]
    notes += [f"{e['name']}: thop: {x}" for e in result["models"] if e["flops"] for x in e["flops"]["thop_notes"]]
    if notes or result["notes"]:
        lines += ["", "notes:"] + [f"  - {n}" for n in notes + result["notes"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------- CLI
_PARAMS = inspect.signature(benchmark_models).parameters
VALID_KEYS: tuple[str, ...] = ("model", *[k for k in _PARAMS if k != "models"])


def bench_command(*positional: str, **kwargs: Any) -> dict[str, Any]:
    """``yolo-attn bench model=<yaml|pt>[,<yaml|pt>...] imgsz=640 batch=1 device=cpu half=False [save=out.json]``.

    Values arrive parsed (ints, floats, bools, None, lists). ``model`` may be one name or a list (several models are
    measured interleaved and compared with the first); bare positional arguments are models too. Every keyword of
    :func:`yolo_attn.bench.benchmark_models` is accepted under the same name (``models`` is an alias of ``model``).

    Raises:
        ValueError: Unknown keys (the message lists the valid ones) or no model.
    """
    unknown = sorted(set(kwargs) - set(VALID_KEYS) - {"models"})
    if unknown:
        raise ValueError(f"bench: unknown argument(s) {', '.join(unknown)}; valid: {', '.join(VALID_KEYS)}")
    if "model" in kwargs and "models" in kwargs:
        raise ValueError("bench: give model= or models=, not both")
    value = kwargs.pop("model", kwargs.pop("models", None))
    specs: list[Any] = list(positional)
    if value is not None:
        specs += list(value) if isinstance(value, (list, tuple)) else [value]
    flat: list[str] = []
    for s in specs:  # "a.yaml,b.yaml" from Python (the CLI already split it)
        flat += [p.strip() for p in str(s).split(",") if p.strip()]
    if not flat:
        raise ValueError("bench: no model given; e.g. yolo-attn bench model=yolov8s.yaml,yolov8s-ema.yaml")
    if isinstance(kwargs.get("names"), str):
        kwargs["names"] = [kwargs["names"]]
    return benchmark_models(flat, **kwargs)
