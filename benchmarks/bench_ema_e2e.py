"""End-to-end EMA cost: yolov8s vs yolov8s-ema (yolo-attn's EMA) vs the same model with the official EMA code.

The official-style EMA (``tests/reference_layers.py``, written from the official repository: the (B*G, C/G, H, W)
reshape, adaptive pools, separate 1x1/3x3 convs) is registered as ``EMAOfficial`` and placed at exactly the rows of
``yolov8-ema.yaml``; all three models are measured interleaved in one process by :func:`benchmark_models`, at 640,
batch 1, fused, so the two overheads are directly comparable.

Usage: python benchmarks/bench_ema_e2e.py [--repeats 200] [--imgsz 640] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true")
    opts = parser.parse_args()

    sys.path.insert(0, str(REPO / "tests"))
    from reference_layers import RefEMA as OfficialEMA

    from yolo_attn import register_layer
    from yolo_attn.bench import benchmark_models
    from yolo_attn.yaml_edit import find_rows, replace_layer

    class EMAOfficial(OfficialEMA):
        """The official EMA under its own YAML name (same constructor: channels, factor)."""

    EMAOfficial.__module__ = "__main__"
    register_layer(EMAOfficial, kind="attention")
    text = (REPO / "model_yamls" / "yolov8-ema.yaml").read_text()
    official = replace_layer(text, "EMAOfficial", find_rows(text, "EMA"), note="official EMA code at the same rows")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "yolov8s-emaofficial.yaml"
        path.write_text(official)
        benchmark_models(
            ["yolov8s.yaml", "yolov8s-ema.yaml", str(path)],
            names=["yolov8s", "yolov8s-ema (yolo-attn)", "yolov8s-ema (official code)"],
            imgsz=opts.imgsz,
            device=opts.device,
            half=opts.half,
            repeats=opts.repeats,
            threads=opts.threads,
            throughput_batch=0,
            cross_check=False,
            save=REPO / "runs" / "bench" / "bench_ema_e2e.json",
        )


if __name__ == "__main__":
    main()
