"""``yolo-attn compare``: train every model x seed under identical settings, evaluate, benchmark, tabulate.

Run folder (``<project>/<name>/``), written as it goes so nothing is lost:

* ``config.json`` -- the settings every run shares (a re-run with different settings is refused; models and seeds
  may be added);
* ``runs/<model>-seed<k>/`` -- Ultralytics' own training folder (weights, results.csv) plus ``eval.json``;
* ``results/<model>-seed<k>.json`` -- one JSON per run, written atomically when the run ends (``status`` ok/failed);
* ``bench.json`` -- params, FLOPs and latency per model, measured once per architecture, interleaved;
* ``table.md``, ``table.csv``, ``table.json``, ``table.tex``, ``pareto.png`` -- see :mod:`yolo_attn.compare.table`.

Re-running the same command skips runs whose result JSON says ``ok``, resumes an interrupted run from its
``last.pt`` (Ultralytics' own resume), retries failed runs, and re-renders the same table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yolo_attn.compare.worker import write_json_atomic

# Settings that must be identical across every run of a comparison (models and seeds may grow).
SHARED_KEYS = ("data", "epochs", "imgsz", "protocol", "pretrained", "train_args", "bench_imgsz", "split")
# Ultralytics train arguments compare sets itself; passing them is an error, not a silent override.
RESERVED_TRAIN_ARGS = {"model", "data", "epochs", "imgsz", "seed", "project", "name", "exist_ok", "resume"}


def model_label(model: str) -> str:
    """Display/folder name of a model spec: the file stem (``yolov8s-ema.yaml`` -> ``yolov8s-ema``)."""
    return Path(str(model)).stem


def run_name(model: str, seed: int) -> str:
    return f"{model_label(model)}-seed{seed}"


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def _check_config(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Write config.json on the first call; afterwards refuse changed shared settings, merge models/seeds."""
    path = folder / "config.json"
    if not path.is_file():
        write_json_atomic(config, path)
        return config
    old = json.loads(path.read_text(encoding="utf-8"))
    changed = [
        k for k in SHARED_KEYS if json.dumps(old.get(k), sort_keys=True) != json.dumps(config.get(k), sort_keys=True)
    ]
    if changed:
        details = "; ".join(f"{k}: was {old.get(k)!r}, now {config.get(k)!r}" for k in changed)
        raise ValueError(
            f"{folder} holds a comparison made with different settings ({details}). Runs are only comparable under "
            "identical settings: use a new name=, or repeat the original settings."
        )
    merged = dict(old)
    merged["models"] = old["models"] + [m for m in config["models"] if m not in old["models"]]
    merged["seeds"] = old["seeds"] + [s for s in config["seeds"] if s not in old["seeds"]]
    merged["baseline"] = config["baseline"]
    write_json_atomic(merged, path)
    return merged


def _run_worker(spec: dict[str, Any], spec_path: Path) -> int:
    write_json_atomic(spec, spec_path)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return subprocess.call([sys.executable, "-m", "yolo_attn.compare.worker", str(spec_path)], env=env)


def _benchmark(folder: Path, config: dict[str, Any], results: dict[str, dict], verbose: bool) -> dict[str, Any]:
    """Params/FLOPs/latency per model (trained weights of its first successful seed), measured interleaved."""
    from yolo_attn.bench import benchmark_models

    path = folder / "bench.json"
    labels = [model_label(m) for m in config["models"]]
    weights: dict[str, str] = {}
    for label in labels:
        for seed in config["seeds"]:
            rec = results.get(f"{label}-seed{seed}")
            if rec and rec.get("status") == "ok":
                best = Path(rec["run_dir"]) / "weights" / "best.pt"
                weights[label] = str(best if best.is_file() else Path(rec["run_dir"]) / "weights" / "last.pt")
                break
    settings = {"imgsz": config["bench_imgsz"], "device": config["bench_device"], "models": sorted(weights)}
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("settings") == settings:
            return old
    if not weights:
        return {"settings": settings, "models": {}}
    names = [label for label in labels if label in weights]
    report = benchmark_models(
        [weights[n] for n in names],
        imgsz=config["bench_imgsz"],
        device=config["bench_device"],
        names=names,
        repeats=config["bench_repeats"],
        verbose=verbose,
    )
    per_model = {}
    for name, entry in zip(names, report["models"]):
        per_model[name] = entry
    bench = {"settings": settings, "models": per_model, "environment": report.get("environment")}
    write_json_atomic(bench, path)
    return bench


def _eval_args(train_args: dict[str, Any]) -> dict[str, Any]:
    """Evaluation runs on one device: the first of a DDP training's ``device=0,1``."""
    device = train_args.get("device")
    if isinstance(device, (list, tuple)):
        device = device[0] if device else None
    elif isinstance(device, str) and "," in device:
        device = device.split(",")[0].strip()
    return {} if device is None else {"device": device}


def load_results(folder: Path) -> dict[str, dict[str, Any]]:
    """All per-run result JSONs of a run folder, keyed by run name."""
    out = {}
    for path in sorted((folder / "results").glob("*.json")):
        out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return out


def compare(
    models: Sequence[str] | str,
    data: str,
    epochs: int = 100,
    imgsz: int = 640,
    seeds: Sequence[int] | int = (0, 1, 2),
    *,
    baseline: str | None = None,
    pretrained: str | None = None,
    protocol: str = "coco",
    split: str = "val",
    name: str = "exp",
    project: str = "runs/compare",
    bench: bool = True,
    bench_imgsz: int | None = None,
    bench_device: str = "cpu",
    bench_repeats: int = 30,
    verbose: bool = True,
    **train_args: Any,
) -> Path:
    """Train, evaluate and benchmark every model x seed; write the run folder and the tables.

    Args:
        models: Model YAMLs/checkpoints (first = baseline unless ``baseline`` names another).
        data: Dataset YAML (for VisDrone protocols it must name the GT JSON that keeps ignored regions).
        epochs: Training epochs, identical for every run.
        imgsz: Training and evaluation image size.
        seeds: Seeds; every model is trained once per seed (Ultralytics ``seed=``, ``deterministic`` as configured).
        baseline: Which model the deltas are relative to (default: the first).
        pretrained: A baseline ``.pt`` whose weights initialise every model (renumbered layers included).
        protocol: ``coco``, ``visdrone-coco`` or ``visdrone`` (evaluation harness).
        split: Dataset split evaluated.
        name: Run folder name under ``project``; re-use it to resume.
        project: Parent folder of run folders.
        bench: Measure params/FLOPs/latency (``bench.json``).
        bench_imgsz: Benchmark input size (default: ``imgsz``).
        bench_device: Benchmark device (default cpu).
        bench_repeats: Timed interleaved rounds per model.
        verbose: Print progress and the table.
        **train_args: Any other Ultralytics train argument (batch, workers, device, lr0, ...), identical for all runs.

    Returns:
        The run folder.
    """
    from yolo_attn.compare.table import render_tables

    model_list = [models] if isinstance(models, str) else [str(m) for m in models]
    seed_list = [seeds] if isinstance(seeds, int) else [int(s) for s in seeds]
    if not model_list:
        raise ValueError("compare: models= is empty; give at least a baseline and one variant, comma-separated")
    labels = [model_label(m) for m in model_list]
    if len(set(labels)) != len(labels):
        raise ValueError(f"compare: models have duplicate names {labels}; rename the files")
    if baseline is not None and model_label(baseline) not in labels:
        raise ValueError(f"compare: baseline={baseline!r} is not one of the models {labels}")
    reserved = sorted(RESERVED_TRAIN_ARGS & set(train_args))
    if reserved:
        raise ValueError(f"compare: {reserved} are set by compare itself (one value per run); remove them")
    if pretrained and not Path(pretrained).is_file():
        raise FileNotFoundError(f"compare: pretrained={pretrained} does not exist")
    data_path = Path(data)
    data_ref = str(data_path.resolve()) if data_path.is_file() else str(data)
    train_args.setdefault("plots", False)  # plots need a font download; the tables here replace them

    folder = Path(project) / name
    folder.mkdir(parents=True, exist_ok=True)
    config = _check_config(
        folder,
        {
            "models": model_list,
            "seeds": seed_list,
            "baseline": model_label(baseline) if baseline else labels[0],
            "data": data_ref,
            "epochs": epochs,
            "imgsz": imgsz,
            "protocol": protocol,
            "split": split,
            "pretrained": str(Path(pretrained).resolve()) if pretrained else None,
            "train_args": train_args,
            "bench_imgsz": bench_imgsz or imgsz,
            "bench_device": bench_device,
            "bench_repeats": bench_repeats,
        },
    )
    jobs = [(m, s) for s in config["seeds"] for m in config["models"]]  # seed-major: early tables cover all models
    results = load_results(folder)
    todo = [(m, s) for m, s in jobs if results.get(run_name(m, s), {}).get("status") != "ok"]
    if verbose:
        print(f"[yolo-attn compare] {folder}: {len(jobs)} runs ({len(jobs) - len(todo)} done, {len(todo)} to do)")
    durations: list[float] = []
    for k, (model, seed) in enumerate(todo, 1):
        run = run_name(model, seed)
        if verbose:
            done = len(jobs) - len(todo) + k - 1
            eta = _format_seconds(sum(durations) / len(durations) * (len(todo) - k + 1)) if durations else "?"
            print(f"\n[yolo-attn compare] run {done + 1}/{len(jobs)}: {run}   (ETA {eta})", flush=True)
        spec = {
            "run": run,
            "model": model,
            "seed": seed,
            "data": config["data"],
            "epochs": config["epochs"],
            "imgsz": config["imgsz"],
            "protocol": config["protocol"],
            "split": config["split"],
            "pretrained": config["pretrained"],
            "train_args": config["train_args"],
            "eval_args": _eval_args(config["train_args"]),
            "run_dir": str((folder / "runs" / run).resolve()),
            "result_path": str((folder / "results" / f"{run}.json").resolve()),
        }
        t0 = time.time()
        rc = _run_worker(spec, folder / "specs" / f"{run}.json")
        durations.append(time.time() - t0)
        result_path = Path(spec["result_path"])
        if rc != 0 and (not result_path.is_file() or json.loads(result_path.read_text())["status"] == "ok"):
            write_json_atomic(
                {"run": run, "model": model, "seed": seed, "status": "failed", "error": f"worker exited with {rc}"},
                result_path,
            )
        status = json.loads(result_path.read_text()).get("status") if result_path.is_file() else "missing"
        if verbose:
            print(f"[yolo-attn compare] {run}: {status} in {_format_seconds(durations[-1])}", flush=True)
    results = load_results(folder)
    if bench:
        _benchmark(folder, config, results, verbose)
    table = render_tables(folder)
    if verbose:
        print()
        print(table)
        print(f"\n[yolo-attn compare] tables and plots in {folder}")
    return folder
