"""End-to-end cost of the plugin layers: yolov8s vs yolov8s-<layer> at 640, batch 1, fused, interleaved.

Reproduces the figures of ``yolo-attn bench``:

1. FLOPs of every model by four counters -- ours (per aten op, real size, fused; the headline counts plugin layers
   by their official formulation, "exec" what yolo-attn runs), thop at the real size, torch's ``FlopCounterMode``,
   and Ultralytics' ``get_flops`` (stride-proxy extrapolation) -- fused and unfused, so the published 28.6 (fused) /
   28.8 (unfused, thop counts BN) and the extrapolation error are visible side by side. thop, FlopCounterMode and
   get_flops see what runs, so compare them with the "exec" column.
2. The per-layer cost of each plugin layer standing alone at (128, 80, 80) by the same counters.
3. Latency (p50/p90, with and without NMS) and throughput, all models timed interleaved, with the overhead of each
   model over the first as the median of per-round paired ratios and a bootstrap 95% interval.

Usage:
    python benchmarks/bench_models.py --quick          # yolov8s, -ema, -ca; 40 rounds (~2-3 min on 2 cores)
    python benchmarks/bench_models.py                  # all shipped yolov8s variants; 300 rounds
    python benchmarks/bench_models.py --models yolov8s.yaml,yolov8s-ema.yaml --repeats 500 --device 0
    python benchmarks/bench_models.py --quick --runtime torch,onnxruntime,openvino --train   # deployment, training

The JSON report (``yolo-attn bench`` schema plus a ``counters`` section) goes to ``runs/bench/`` unless ``--save``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

QUICK_MODELS = ["yolov8s.yaml", "yolov8s-ema.yaml", "yolov8s-ca.yaml"]
FULL_MODELS = [
    "yolov8s.yaml",
    "yolov8s-ema.yaml",
    "yolov8s-ca.yaml",
    "yolov8s-se.yaml",
    "yolov8s-eca.yaml",
    "yolov8s-cbam.yaml",
    "yolov8s-odconv.yaml",
]
LAYER_PROBE = (128, 80, 80)  # (C, H, W): the P3 neck output of yolov8s at 640


def torch_flop_counter_gflops(model: nn.Module, x: torch.Tensor) -> float:
    """torch's own FlopCounterMode (conv + matmul, reports FLOPs = 2 x MACs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def counter_table(specs: list[str], imgsz: int) -> list[dict[str, Any]]:
    """Every counter on every model, fused and unfused."""
    from yolo_attn.bench import count_flops, fuse_model, load_model, thop_cross_check, ultralytics_get_flops

    rows = []
    for spec in specs:
        name, unfused, _ = load_model(spec)
        fused = copy.deepcopy(unfused)
        fuse_model(fused)
        x = torch.zeros(1, 3, imgsz, imgsz)
        row: dict[str, Any] = {"model": name}
        for tag, model in (("fused", fused), ("unfused", unfused)):
            report = count_flops(model, imgsz, name=name)
            row[f"ours_{tag}"] = report.gflops
            row[f"ours_exec_{tag}"] = report.executed_gflops
            row[f"elementwise_gops_{tag}"] = report.elementwise_gops
            row[f"thop_{tag}"] = thop_cross_check(model, report)["thop_gflops"]
            row[f"flop_counter_mode_{tag}"] = torch_flop_counter_gflops(model, x)
            row[f"get_flops_{tag}"] = ultralytics_get_flops(model, imgsz)
        rows.append(row)
    return rows


def _none_or(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def layer_table(layer_names: list[str]) -> list[dict[str, Any]]:
    """Each registered attention layer alone at LAYER_PROBE, by three counters plus Ultralytics' extrapolation."""
    from yolo_attn.bench import count_flops, thop_cross_check, ultralytics_get_flops
    from yolo_attn.plugin import registry

    c, h, w = LAYER_PROBE
    rows = []
    for name in layer_names:
        spec = registry.get_spec(name)
        if spec.kind != "attention":
            continue  # conv-kind layers (ODConv) replace a Conv; their cost is in the model table
        layer = spec.cls(c).eval()
        report = count_flops(layer, (h, w), channels=c, name=name)
        x = torch.zeros(1, c, h, w)
        rows.append(
            {
                "layer": name,
                "params": report.params,
                "macs_m": report.macs / 1e6,
                "exec_macs_m": report.executed_macs / 1e6,
                "elementwise_mops": report.elementwise_ops / 1e6,
                "thop_macs_m": _none_or(thop_cross_check(layer, report)["thop_gflops"], 1e3 / 2),
                "flop_counter_mode_mflops": torch_flop_counter_gflops(layer, x) * 1e3,
                "get_flops_macs_m": _none_or(ultralytics_get_flops(layer, (h, w)), 1e3 / 2),  # None: it returned 0.0
            }
        )
    return rows


def print_counter_table(rows: list[dict[str, Any]], imgsz: int) -> None:
    print(f"\n== GFLOPs at {imgsz}x{imgsz}, batch 1, by counter (conv+matmul, 2 x MACs) ==")
    head = (
        f"{'model':<20}{'ours fused':>11}{'exec fused':>11}{'ours unf.':>10}{'elem GOPs':>10}{'thop fused':>11}"
        f"{'thop unf.':>10}{'FCM fused':>10}{'get_flops f.':>13}{'get_flops u.':>13}"
    )
    print(head + "\n" + "-" * len(head))
    for r in rows:

        def f(key: str, r: dict[str, Any] = r) -> str:
            return "-" if r[key] is None else f"{r[key]:.3f}"

        print(
            f"{r['model']:<20}{f('ours_fused'):>11}{f('ours_exec_fused'):>11}{f('ours_unfused'):>10}"
            f"{f('elementwise_gops_fused'):>10}"
            f"{f('thop_fused'):>11}{f('thop_unfused'):>10}{f('flop_counter_mode_fused'):>10}"
            f"{f('get_flops_fused'):>13}{f('get_flops_unfused'):>13}"
        )
    base = rows[0]
    for r in rows[1:]:
        print(
            f"  {r['model']}: +{r['ours_fused'] - base['ours_fused']:.4f} GFLOPs over {base['model']} (official "
            f"formulation), +{r['ours_exec_fused'] - base['ours_exec_fused']:.4f} (executed), "
            f"+{(r['get_flops_fused'] or 0) - (base['get_flops_fused'] or 0):.4f} by get_flops"
        )


def print_layer_table(rows: list[dict[str, Any]]) -> None:
    c, h, w = LAYER_PROBE
    print(f"\n== one plugin layer alone at (C, H, W) = ({c}, {h}, {w}), millions ==")
    head = (
        f"{'layer':<10}{'params':>8}{'MACs':>9}{'exec MACs':>10}{'elem ops':>10}{'thop MACs':>11}{'FCM FLOPs':>11}"
        f"{'get_flops MACs':>16}"
    )
    print(head + "\n" + "-" * len(head))
    for r in rows:
        thop_m = "-" if r["thop_macs_m"] is None else f"{r['thop_macs_m']:.3f}"
        gf = "0.0 (failed)" if r["get_flops_macs_m"] is None else f"{r['get_flops_macs_m']:.3f}"
        print(
            f"{r['layer']:<10}{r['params']:>8}{r['macs_m']:>9.3f}{r['exec_macs_m']:>10.3f}{r['elementwise_mops']:>10.3f}"
            f"{thop_m:>11}{r['flop_counter_mode_mflops']:>11.3f}{gf:>16}"
        )


def print_overheads(result: dict[str, Any]) -> None:
    models = result["models"]
    base = models[0]
    print(f"\n== overhead vs {base['name']} ==")
    for m in models[1:]:
        r = m["ratios"]
        lat = r.get("latency_p50")
        dg = m["flops"]["gflops"] - base["flops"]["gflops"] if m["flops"] and base["flops"] else None
        parts = [f"{m['name']:<20}"]
        if lat:
            lo, hi = lat["paired_ci95"]
            ci = f"95% CI {100 * (lo - 1):+.2f}..{100 * (hi - 1):+.2f}%"
            ratio = (
                f"ratio of medians {100 * (lat['ratio_of_medians'] - 1):+.2f}%, "
                f"of minimums {100 * (lat['ratio_of_minimums'] - 1):+.2f}%"
            )
            parts.append(f"latency {100 * (lat['paired_median'] - 1):+.2f}% ({ci}, {ratio})")
        if r.get("latency_p50_nms"):
            parts.append(f"with NMS {100 * (r['latency_p50_nms']['paired_median'] - 1):+.2f}%")
        if r.get("throughput"):
            parts.append(f"throughput x{r['throughput']:.3f}")
        if dg is not None:
            dx = m["flops"]["executed_gflops"] - base["flops"]["executed_gflops"]
            parts.append(f"GFLOPs {dg:+.4f} ({100 * (r['gflops'] - 1):+.2f}%), executed {dx:+.4f}")
        parts.append(f"params {m['params'] - base['params']:+,}")
        print(" | ".join(parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 models, 40 rounds, 3 throughput rounds")
    parser.add_argument("--models", help="comma-separated YAMLs/.pt (first = baseline)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true", help="fp16 (CUDA only)")
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--throughput-batch", type=int)
    parser.add_argument("--throughput-repeats", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--skip-counters", action="store_true", help="skip the FLOPs counter comparison tables")
    parser.add_argument("--runtime", default="torch", help="runtimes to time, e.g. torch,onnxruntime,openvino")
    parser.add_argument("--train", action="store_true", help="also measure the training step time and memory")
    parser.add_argument("--train-batch", type=int)
    parser.add_argument("--save", help="JSON path (default runs/bench/bench_models[-quick].json)")
    args = parser.parse_args(argv)

    from yolo_attn.bench import benchmark_models, format_report

    specs = args.models.split(",") if args.models else (QUICK_MODELS if args.quick else FULL_MODELS)
    warmup = args.warmup if args.warmup is not None else (5 if args.quick else 10)
    repeats = args.repeats if args.repeats is not None else (40 if args.quick else 300)
    tp_repeats = args.throughput_repeats if args.throughput_repeats is not None else (3 if args.quick else 10)
    save = Path(args.save or f"runs/bench/bench_models{'-quick' if args.quick else ''}.json")
    t0 = time.perf_counter()

    counters: dict[str, Any] = {}
    if not args.skip_counters:
        counters["models"] = counter_table(specs, args.imgsz)
        print_counter_table(counters["models"], args.imgsz)
        try:
            from yolo_attn.plugin import registry

            counters["layers"] = layer_table(registry.list_layers())
            print_layer_table(counters["layers"])
        except ImportError as exc:
            print(f"(plugin layer table skipped: {exc})")

    print("\n== interleaved latency ==")
    result = benchmark_models(
        specs,
        imgsz=args.imgsz,
        batch=1,
        device=args.device,
        half=args.half,
        warmup=warmup,
        repeats=repeats,
        throughput_batch=args.throughput_batch,
        throughput_repeats=tp_repeats,
        threads=args.threads,
        runtime=args.runtime,
        train=args.train,
        train_batch=args.train_batch,
        verbose=False,
    )
    print(format_report(result))
    print_overheads(result)
    result["counters"] = counters
    result["script"] = {"argv": sys.argv[1:], "wall_s": time.perf_counter() - t0}
    save.parent.mkdir(parents=True, exist_ok=True)
    save.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nsaved {save} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
