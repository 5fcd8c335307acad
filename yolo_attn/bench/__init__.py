"""Benchmarks that papers' "+x mAP for +y FLOPs at z FPS" tables can trust.

* :mod:`yolo_attn.bench.flops` -- conv+matmul GFLOPs (2 x MACs) and elementwise ops at the real input size, counted
  per aten op and attributed to modules; thop cross-check; Ultralytics' extrapolated figure shown beside it.
* :mod:`yolo_attn.bench.official_flops` -- how a layer declares its official formulation (the headline GFLOPs
  convention) and the formulations of the built-in layers that need one (EMA, ODConv).
* :mod:`yolo_attn.bench.latency` -- warm-up, device sync, interleaved rounds, p50/p90, paired ratios.
* :mod:`yolo_attn.bench.runtimes` -- export with Ultralytics' exporter, check against PyTorch, time in ONNX Runtime,
  OpenVINO, TensorRT.
* :mod:`yolo_attn.bench.train_cost` -- training step time and peak step memory.
* :mod:`yolo_attn.bench.commands` -- :func:`benchmark_models` (Python) and :func:`bench_command` (``yolo-attn bench``).

Example:
    >>> from yolo_attn.bench import benchmark_models
    >>> result = benchmark_models(["yolov8s.yaml", "yolov8s-ema.yaml"], imgsz=640, repeats=200)  # doctest: +SKIP
    >>> result["models"][1]["ratios"]["latency_p50"]["paired_median"]  # doctest: +SKIP
"""

from yolo_attn.bench.commands import (
    SCHEMA_VERSION,
    bench_command,
    benchmark_models,
    environment_info,
    format_report,
    load_model,
    parse_device,
)
from yolo_attn.bench.flops import (
    FLOPS_CONVENTION,
    FlopCountError,
    FlopReport,
    OpCounter,
    count_flops,
    fuse_model,
    plugin_layer_types,
    thop_cross_check,
    ultralytics_get_flops,
)
from yolo_attn.bench.latency import (
    LatencySettings,
    measure_interleaved,
    percentile,
    ratio_summary,
    rotated_order,
    summarize,
)
from yolo_attn.bench.official_flops import (
    official_formulation_of,
    register_official_formulation,
    unregister_official_formulation,
)
from yolo_attn.bench.runtimes import (
    RUNTIMES,
    RuntimeMismatchError,
    RuntimeUnavailableError,
    measure_runtimes,
    parse_runtimes,
)
from yolo_attn.bench.train_cost import measure_train_cost

__all__ = [
    "FLOPS_CONVENTION",
    "RUNTIMES",
    "RuntimeMismatchError",
    "RuntimeUnavailableError",
    "measure_runtimes",
    "measure_train_cost",
    "official_formulation_of",
    "parse_runtimes",
    "register_official_formulation",
    "unregister_official_formulation",
    "SCHEMA_VERSION",
    "FlopCountError",
    "FlopReport",
    "LatencySettings",
    "OpCounter",
    "bench_command",
    "benchmark_models",
    "count_flops",
    "environment_info",
    "format_report",
    "fuse_model",
    "load_model",
    "measure_interleaved",
    "parse_device",
    "percentile",
    "plugin_layer_types",
    "ratio_summary",
    "rotated_order",
    "summarize",
    "thop_cross_check",
    "ultralytics_get_flops",
]
