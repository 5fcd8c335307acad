"""End-to-end EMA cost: yolov8s vs yolov8s-ema (yolo-attn's EMA) vs the same model with the official EMA code.

The official-style EMA (``tests/reference_layers.py``, written from the official repository: the (B*G, C/G, H, W)
reshape, adaptive pools, separate 1x1/3x3 convs) is registered as ``EMAOfficial`` and placed at exactly the rows of
``yolov8-ema.yaml``. The three fused models run forward only (no NMS) on the same seeded input, interleaved
round-robin with the order rotated every round, in ``--runs`` independent runs of ``--repeats`` rounds per batch.

Two ways to run them, because on CPU part of a model's cost is its memory traffic with the C allocator (freed
activations handed back to the kernel and page-faulted in again on the next forward), which depends on everything
else in the process:

* ``--mode isolated`` (default): each model in its own fresh Python process (its own heap, as in a deployment);
  the parent steps the processes in lockstep, so only one computes at a time and rounds stay interleaved.
* ``--mode in-process``: the three models in one process via :func:`yolo_attn.bench.benchmark_models` (what
  ``yolo-attn bench`` does); their allocations then share one heap and affect each other's page faults.

Printed per run and pooled over the runs: the overhead over yolov8s as the median of per-round paired ratios of wall
time with a bootstrap 95% interval, the same for process CPU time (isolated mode; less sensitive to other load on the
machine than wall time), and minor page faults per forward.

Page faults are the catch: with glibc's default malloc, freed activations at the top of the heap go back to the
kernel and are faulted in again on the next forward, and how much depends on the process's heap layout -- measured
here, one yolov8s process faults 6,000 to 26,000 pages per forward, a per-process random effect of up to ~10% of the
latency, larger than EMA's cost. So pool over many runs (fresh processes each), and/or pass ``--malloc keep``
(workers get ``MALLOC_TRIM_THRESHOLD_``/``MALLOC_MMAP_THRESHOLD_`` that keep freed memory in the process, as jemalloc
or tcmalloc do): then no model faults after warm-up and the ratios measure the layers' compute.

Usage: python benchmarks/bench_ema_e2e.py [--batch 1 8] [--runs 3] [--repeats 60] [--imgsz 640] [--threads 2]
       [--mode isolated|in-process] [--malloc default|keep]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NAMES = ["yolov8s", "yolov8s-ema (yolo-attn)", "yolov8s-ema (official code)"]
#: glibc settings under which freed memory stays in the process (no trimming, no mmap for large blocks).
KEEP_MALLOC = {
    "MALLOC_TRIM_THRESHOLD_": str(2**40),
    "MALLOC_MMAP_THRESHOLD_": str(2**30),
    "MALLOC_TOP_PAD_": str(2**26),
}


@contextlib.contextmanager
def _environ(extra: dict[str, str]):
    """Environment for child processes started inside the block (glibc reads MALLOC_* at start-up)."""
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def register_official_ema() -> type:
    """Register the official-style EMA of ``tests/reference_layers.py`` as the YAML layer ``EMAOfficial``."""
    from yolo_attn import register_layer
    from yolo_attn.plugin import registry

    if registry.find_spec("EMAOfficial") is not None:
        return registry.get_layer("EMAOfficial")
    sys.path.insert(0, str(REPO / "tests"))
    from reference_layers import RefEMA

    class EMAOfficial(RefEMA):
        """The official EMA under its own YAML name (same constructor: channels, factor)."""

    register_layer(EMAOfficial, kind="attention")
    return EMAOfficial


def official_yaml(folder: Path) -> Path:
    from yolo_attn.variants.edit import find_rows, replace_layer

    register_official_ema()
    text = (REPO / "model_yamls" / "yolov8-ema.yaml").read_text()
    path = folder / "yolov8s-emaofficial.yaml"
    path.write_text(
        replace_layer(text, "EMAOfficial", find_rows(text, "EMA"), note="official EMA code at the same rows")
    )
    return path


def _minflt() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _worker(spec: str, imgsz: int, batch: int, threads: int, conn: Any) -> None:
    """One model in a fresh process: build, then time one forward per "run" message."""
    import torch

    torch.set_num_threads(threads)
    if "emaofficial" in spec:
        register_official_ema()
    from yolo_attn.bench import fuse_model, load_model

    _, model, _ = load_model(spec)
    fuse_model(model)
    model.eval()
    x = torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    conn.send("ready")
    with torch.inference_mode():
        while conn.recv() == "run":
            gc.disable()
            f0, c0, t0 = _minflt(), time.process_time(), time.perf_counter()
            model(x)
            wall, cpu, faults = time.perf_counter() - t0, time.process_time() - c0, _minflt() - f0
            gc.enable()
            conn.send((wall, cpu, faults))
    conn.close()


def run_isolated(specs: list[str], opts: argparse.Namespace, batch: int) -> dict[str, list[tuple[float, float, int]]]:
    from yolo_attn.bench.latency import rotated_order

    ctx = mp.get_context("spawn")
    procs, conns = [], []
    with _environ(KEEP_MALLOC if opts.malloc == "keep" else {}):
        for spec in specs:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(spec, opts.imgsz, batch, opts.threads, child), daemon=True)
            p.start()
            procs.append(p)
            conns.append(parent)
    try:
        for c in conns:
            if c.recv() != "ready":
                raise RuntimeError("a model process failed to start")
        samples: dict[str, list[tuple[float, float, int]]] = {n: [] for n in NAMES}
        for r in range(opts.warmup + opts.repeats):
            for i in rotated_order(len(specs), r):
                conns[i].send("run")
                result = conns[i].recv()
                if r >= opts.warmup:
                    samples[NAMES[i]].append(result)
        return samples
    finally:
        for c in conns:
            try:
                c.send("stop")
            except (BrokenPipeError, OSError):
                pass
        for p in procs:
            p.join(timeout=30)


def run_in_process(specs: list[str], opts: argparse.Namespace, batch: int) -> dict[str, list[tuple[float, float, int]]]:
    from yolo_attn.bench import benchmark_models

    result = benchmark_models(specs, names=NAMES, imgsz=opts.imgsz, batch=batch, device=opts.device, half=opts.half,
                              warmup=opts.warmup, repeats=opts.repeats, threads=opts.threads, throughput_batch=0,
                              nms=False, flops=False, input="random", verbose=False)  # fmt: skip
    return {
        e["name"]: [(t / 1e3, float("nan"), -1) for t in e["latency"]["batch"]["samples_ms"]] for e in result["models"]
    }


def _pct(r: float) -> str:
    return f"{100 * (r - 1):+.2f}%"


def _summary(values: list[float]) -> dict[str, Any]:
    from yolo_attn.bench.latency import bootstrap_ci

    lo, hi = bootstrap_ci(values)
    return {"paired_median": statistics.median(values), "ci95": [lo, hi], "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=["isolated", "in-process"], default="isolated")
    parser.add_argument(
        "--malloc", choices=["default", "keep"], default="default", help="isolated mode: glibc settings"
    )
    parser.add_argument("--device", default="cpu", help="in-process mode only")
    parser.add_argument("--half", action="store_true", help="in-process mode only (CUDA)")
    parser.add_argument("--save", default=str(REPO / "runs" / "bench" / "bench_ema_e2e.json"))
    opts = parser.parse_args()

    import torch

    report: dict[str, Any] = {"settings": vars(opts), "torch": torch.__version__, "batches": {}}
    print(f"bench_ema_e2e: mode {opts.mode}, malloc {opts.malloc}, imgsz {opts.imgsz}, threads {opts.threads}, "
          f"torch {torch.__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        specs = ["yolov8s.yaml", "yolov8s-ema.yaml", str(official_yaml(Path(tmp)))]
        for batch in opts.batch:
            pooled: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in NAMES[1:]}
            runs = []
            for run in range(opts.runs):
                load = list(os.getloadavg())
                samples = (run_isolated if opts.mode == "isolated" else run_in_process)(specs, opts, batch)
                base = samples[NAMES[0]]
                row: dict[str, Any] = {"loadavg_start": load, "p50_ms": {}, "faults_p50": {}, "wall": {}, "cpu": {}}
                for n in NAMES:
                    row["p50_ms"][n] = statistics.median(s[0] for s in samples[n]) * 1e3
                    row["faults_p50"][n] = statistics.median(s[2] for s in samples[n])
                for n in NAMES[1:]:
                    wall = [a[0] / b[0] for a, b in zip(samples[n], base)]
                    pooled[n]["wall"] += wall
                    row["wall"][n] = _summary(wall)
                    if opts.mode == "isolated":
                        cpu = [a[1] / b[1] for a, b in zip(samples[n], base)]
                        pooled[n]["cpu"] += cpu
                        row["cpu"][n] = _summary(cpu)
                runs.append(row)
                cells = []
                for n in NAMES[1:]:
                    w = row["wall"][n]
                    text = f"{n}: wall {_pct(w['paired_median'])} [{_pct(w['ci95'][0])}, {_pct(w['ci95'][1])}]"
                    if row["cpu"]:
                        c = row["cpu"][n]
                        text += f" cpu {_pct(c['paired_median'])} [{_pct(c['ci95'][0])}, {_pct(c['ci95'][1])}]"
                    cells.append(text + f" faults {row['faults_p50'][n]:.0f}")
                head = f"batch {batch} run {run + 1}/{opts.runs} (load {load[0]:.1f}): yolov8s p50 "
                head += f"{row['p50_ms'][NAMES[0]]:.1f} ms faults {row['faults_p50'][NAMES[0]]:.0f} | "
                print(head + " | ".join(cells), flush=True)
            summary = {n: {k: _summary(v) for k, v in d.items() if v} for n, d in pooled.items()}
            report["batches"][str(batch)] = {"runs": runs, "pooled": summary}
            cells = []
            for n, s in summary.items():
                text = f"{n}: wall {_pct(s['wall']['paired_median'])} [{_pct(s['wall']['ci95'][0])}, " \
                       f"{_pct(s['wall']['ci95'][1])}]"  # fmt: skip
                if "cpu" in s:
                    text += f" cpu {_pct(s['cpu']['paired_median'])} [{_pct(s['cpu']['ci95'][0])}, " \
                            f"{_pct(s['cpu']['ci95'][1])}]"  # fmt: skip
                cells.append(text)
            print(
                f"batch {batch} pooled over {opts.runs} runs x {opts.repeats} rounds: " + " | ".join(cells), flush=True
            )
    path = Path(opts.save)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
