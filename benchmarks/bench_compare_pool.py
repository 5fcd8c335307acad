"""Wall time of a ``yolo-attn compare`` sweep: sequential vs the local pool (``jobs=N``), optionally vs Ray.

End to end, as a user runs it: the real ``yolo-attn compare`` command (driver start-up, every worker's training and
evaluation, the tables), on the shipped coco8 sample, each sweep in a fresh run folder. The variants are interleaved
in one process, their order alternating every round, and the speed-up is the median of the per-round paired ratios
(sequential time / pool time), so a machine whose load changes between rounds biases both sides alike. Also checks
that every variant produced the same per-run losses (same numbers under every executor).

Usage:
    python benchmarks/bench_compare_pool.py                        # 2 models x 2 seeds, 1 epoch at 64, jobs=2, 2 rounds
    python benchmarks/bench_compare_pool.py --rounds 3 --epochs 2 --ray
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sweep(folder: Path, name: str, data: Path, opts: argparse.Namespace, extra: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the whole process tree) of one ``yolo-attn compare`` sweep."""
    command = [sys.executable, "-m", "yolo_attn.cli", "compare", f"models={opts.models}", f"data={data}"]
    command += [f"epochs={opts.epochs}", f"imgsz={opts.imgsz}", f"seeds={opts.seeds}", "batch=4", "workers=0"]
    command += ["device=cpu", "bench=False", f"project={folder}", f"name={name}", *extra]
    env = {**os.environ, "YOLO_OFFLINE": "1"}  # never reach the network (no font or asset downloads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # counts every waited-for descendant (the workers too)
    t0 = time.perf_counter()
    run = subprocess.run(command, cwd=folder, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return seconds, cpu


def losses(folder: Path) -> dict[str, dict[str, str]]:
    out = {}
    for path in sorted((folder / "results").glob("*.json")):
        last = json.loads(path.read_text())["train"]["ultralytics_last_epoch"]
        out[path.stem] = {k: v for k, v in last.items() if "loss" in k}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="yolov8n.yaml,yolov8n-ema.yaml")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ray", action="store_true", help="also time executor=ray (a local Ray, all cores)")
    opts = parser.parse_args()

    import torch
    import ultralytics

    cores = os.cpu_count() or 1
    print(
        f"machine: {platform.processor() or platform.machine()}, {cores} cores, python {platform.python_version()}, "
        f"torch {torch.__version__}, ultralytics {ultralytics.__version__}"
    )
    variants = {"sequential": [], f"jobs={opts.jobs}": [f"jobs={opts.jobs}"]}
    if opts.ray:
        import ray

        print(f"ray {ray.__version__}")
        variants["ray"] = ["executor=ray", f"ray_num_cpus={cores}"]
    runs = len(opts.models.split(",")) * len(opts.seeds.split(","))
    print(f"sweep: {opts.models} x seeds {opts.seeds} = {runs} runs, {opts.epochs} epoch(s) at imgsz {opts.imgsz}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share these cores)\n")
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    reference = None
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        work = Path(tmp)
        data_dir = work / "coco8"
        shutil.copytree(REPO / "datasets" / "coco8", data_dir)
        text = (data_dir / "coco8.yaml").read_text(encoding="utf-8")
        (data_dir / "coco8.yaml").write_text(f"path: {data_dir}\n{text}", encoding="utf-8")
        for r in range(opts.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                label = f"r{r}-{name.replace('=', '')}"
                seconds, cpu = sweep(work, label, data_dir / "coco8.yaml", opts, variants[name])
                times[name].append(seconds)
                cpus[name].append(cpu)
                got = losses(work / label)
                reference = reference or got
                same = "same losses as round 0's first" if got == reference else "LOSSES DIFFER"
                print(
                    f"round {r} {name:<12} {seconds:7.1f} s wall, {cpu:6.1f} s CPU ({cpu / seconds:.2f} cores busy)"
                    f"   ({same})",
                    flush=True,
                )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    base = times["sequential"]
    print(f"\n{'variant':<12} {'median s':>9} {'median CPU s':>13} {'speed-up (paired median)':>26}  per-round ratios")
    for name, values in times.items():
        ratios = [b / v for b, v in zip(base, values)]
        print(
            f"{name:<12} {statistics.median(values):9.1f} {statistics.median(cpus[name]):13.1f} "
            f"{statistics.median(ratios):25.2f}x  " + ", ".join(f"{x:.2f}" for x in ratios)
        )
    print(
        "\n(cores busy = CPU s / wall s of the sweep's own processes; with other jobs on the machine the pool cannot "
        "get more cores than are free, and the speed-up shrinks to what the free cores allow)"
    )


if __name__ == "__main__":
    main()
