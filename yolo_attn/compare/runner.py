"""``yolo-attn compare``: train every model x seed under identical settings, evaluate, benchmark, tabulate.

Run folder (``<project>/<name>/``), written as it goes so nothing is lost:

* ``config.json`` -- the settings every run shares (a re-run with different settings is refused; models and seeds
  may be added);
* ``runs/<model>-seed<k>/`` -- Ultralytics' own training folder (weights, results.csv) plus ``eval.json``;
* ``results/<model>-seed<k>.json`` -- one JSON per run, written atomically when the run ends (``status`` ok/failed);
* ``bench.json`` -- params, FLOPs and latency per model, measured once per architecture, interleaved;
* ``table.md``, ``table.csv``, ``table.json``, ``table.tex``, ``pareto.png`` -- see :mod:`yolo_attn.compare.table`;
* ``specs/`` (each run's spec, lock, progress, start count) and ``logs/<run>.log`` (worker output when several runs
  go at once).

Where runs execute (:mod:`yolo_attn.compare.executors`): one after another (default), ``jobs=N`` at once on this
machine (one GPU of ``device=`` each, or ``threads`` CPU threads each), or as Ray tasks (``executor=ray``). The
executor changes neither the numbers nor the table.

Re-running the same command skips runs whose result JSON says ``ok``, resumes an interrupted run from its
``last.pt`` (Ultralytics' own resume), retries failed runs, and re-renders the same table.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from yolo_attn.compare.executors import ExecutorError, LocalExecutor, RayExecutor, eval_device, gpu_list, plan_devices
from yolo_attn.compare.progress import PREFIX, Progress
from yolo_attn.compare.worker import read_json, write_json_atomic

# Settings that must be identical across every run of a comparison (models and seeds may grow).
SHARED_KEYS = (
    "data",
    "epochs",
    "imgsz",
    "protocol",
    "pretrained",
    "train_args",
    "bench_imgsz",
    "split",
    "threads",
    "gpus_per_run",
)
# Shared settings added after the first release: a folder made before has none and keeps its behaviour for them
# (runs used Ultralytics' own thread count; they are not compared, the value of the first re-run is recorded).
LEGACY_KEYS = {"threads": None, "gpus_per_run": None}
# Ultralytics train arguments compare sets itself; passing them is an error, not a silent override.
RESERVED_TRAIN_ARGS = {"model", "data", "epochs", "imgsz", "seed", "project", "name", "exist_ok", "resume"}
EXECUTORS = ("local", "ray")
# Torch threads per CPU run when a new comparison does not say: a constant, so that every executor (and every
# machine size) trains with the same count and therefore gives the same numbers. Parallelism comes from jobs=.
DEFAULT_THREADS = 1

# Steps run on the run folder after the tables are written (figures, report.html, ...): each is called as
# ``step(folder, verbose)``. The integration point for post-processing; see :func:`post_process`.
POST_PROCESSORS: list[Callable[[Path, bool], Any]] = []


def model_label(model: str) -> str:
    """Display/folder name of a model spec: the file stem (``yolov8s-ema.yaml`` -> ``yolov8s-ema``)."""
    return Path(str(model)).stem


def run_name(model: str, seed: int) -> str:
    return f"{model_label(model)}-seed{seed}"


def _check_config(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Write config.json on the first call; afterwards refuse changed shared settings, merge models/seeds."""
    path = folder / "config.json"
    if not path.is_file():
        write_json_atomic(config, path)
        return config
    old = json.loads(path.read_text(encoding="utf-8"))
    changed = [
        k
        for k in SHARED_KEYS
        if (k in old or k not in LEGACY_KEYS)
        and json.dumps(old.get(k), sort_keys=True) != json.dumps(config.get(k), sort_keys=True)
    ]
    if changed:
        details = "; ".join(f"{k}: was {old.get(k)!r}, now {config.get(k)!r}" for k in changed)
        hint = ""
        if "gpus_per_run" in changed:
            hint = " (the GPUs per run follow from device= and jobs=, or gpus_per_run=)"
        raise ValueError(
            f"{folder} holds a comparison made with different settings ({details}){hint}. Runs are only comparable "
            "under identical settings: use a new name=, or repeat the original settings."
        )
    merged = dict(old)
    merged["models"] = old["models"] + [m for m in config["models"] if m not in old["models"]]
    merged["seeds"] = old["seeds"] + [s for s in config["seeds"] if s not in old["seeds"]]
    merged["baseline"] = config["baseline"]
    for key in LEGACY_KEYS:
        merged.setdefault(key, config.get(key))
    write_json_atomic(merged, path)
    return merged


def _benchmark(
    folder: Path,
    config: dict[str, Any],
    results: dict[str, dict],
    verbose: bool,
    fetch: Callable[[dict[str, Any], Path], Path | None] | None = None,
) -> dict[str, Any]:
    """Params/FLOPs/latency per model (trained weights of its first successful seed), measured interleaved.

    ``fetch(record, weights_dir)`` copies a run's weights from the node it trained on when they are not on this
    filesystem (Ray without shared storage).
    """
    from yolo_attn.bench import SCHEMA_VERSION, benchmark_models

    path = folder / "bench.json"
    labels = [model_label(m) for m in config["models"]]
    weights: dict[str, Path] = {}
    records: dict[str, dict] = {}
    for label in labels:
        for seed in config["seeds"]:
            rec = results.get(f"{label}-seed{seed}")
            if rec and rec.get("status") == "ok":
                weights[label] = _weights_here(rec)
                records[label] = rec
                break
    settings = {
        "imgsz": config["bench_imgsz"],
        "device": config["bench_device"],
        "models": sorted(weights),
        "schema_version": SCHEMA_VERSION,  # an older bench.json (without executed GFLOPs) is measured again
    }
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("settings") == settings:
            return old
    for label in list(weights):
        if weights[label].is_file():
            continue
        fetched = fetch(records[label], weights[label].parent) if fetch else None
        if fetched is None:
            trained_on = (records[label].get("executor") or {}).get("host", "another machine")
            if verbose:
                print(f"{PREFIX} no weights of {label} here (they stay on {trained_on}); not benchmarked", flush=True)
            del weights[label]
        else:
            weights[label] = fetched
    settings["models"] = sorted(weights)
    if not weights:
        return {"settings": settings, "models": {}}
    names = [label for label in labels if label in weights]
    report = benchmark_models(
        [str(weights[n]) for n in names],
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


def _weights_here(record: dict[str, Any]) -> Path:
    """A run's best.pt (else last.pt) on this filesystem: in its run folder, else where its Ray node kept it
    (``ray_storage`` on a filesystem this machine sees). A path that does not exist when neither has it."""
    folders = [Path(record["run_dir"])]
    node_run_dir = (record.get("executor") or {}).get("node_run_dir")
    if node_run_dir:
        folders.append(Path(node_run_dir))
    for folder in folders:
        for name in ("best.pt", "last.pt"):
            if (folder / "weights" / name).is_file():
                return folder / "weights" / name
    return folders[0] / "weights" / "last.pt"


def _eval_args(train_args: dict[str, Any]) -> dict[str, Any]:
    """Evaluation runs on one device: the first of a DDP training's ``device=0,1``."""
    device = eval_device(train_args.get("device"))
    return {} if device is None else {"device": device}


def load_results(folder: Path) -> dict[str, dict[str, Any]]:
    """All per-run result JSONs of a run folder, keyed by run name."""
    out = {}
    for path in sorted((folder / "results").glob("*.json")):
        out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return out


def post_process(folder: Path, verbose: bool = True) -> None:
    """Steps after the tables (figures, reports): every callable in :data:`POST_PROCESSORS`, in order.

    This is the one place a compare run hands its finished folder on; it runs after every executor, also when a
    re-run had nothing left to train, and ``yolo-attn table`` does not call it.
    """
    for step in POST_PROCESSORS:
        step(folder, verbose)


def _resolve_threads(threads: int | None, old: dict[str, Any] | None) -> int | None:
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"compare: threads={threads}: give the torch threads per run (1 or more)")
        return int(threads)
    if old is None:
        return DEFAULT_THREADS
    return old.get("threads", LEGACY_KEYS["threads"])


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
    jobs: int | None = None,
    executor: str = "local",
    threads: int | None = None,
    gpus_per_run: int | None = None,
    cpus_per_run: int | None = None,
    ray_address: str | None = None,
    ray_num_cpus: int | None = None,
    ray_storage: str | None = None,
    max_retries: int = 3,
    cam: str | Sequence[str] | None = None,
    cam_seed: int = 0,
    report: bool = True,
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
        jobs: Runs at once (local: worker processes, default 1; Ray: tasks in flight, default all).
        executor: ``local`` (this machine) or ``ray`` (a Ray cluster, or a local Ray started for the sweep).
        threads: Torch threads of each run on CPU (a shared setting: it changes the numbers; default 1 for a new
            comparison). ``jobs`` x ``threads`` should not exceed the cores.
        gpus_per_run: GPUs of each run (local default: GPUs in ``device=`` // ``jobs``; Ray default 1, 0 with
            ``device=cpu``); more than one means DDP inside the run. A shared setting.
        cpus_per_run: Ray CPUs reserved per run (default: ``threads`` on CPU, 1 with GPUs).
        ray_address: ``auto`` or ``<host>:<port>`` of a running Ray cluster; none starts a local Ray.
        ray_num_cpus: CPUs of the local Ray (default: all cores).
        ray_storage: Folder on the Ray nodes where runs train and weights stay (default: this run folder's path).
        max_retries: Ray retries of a run whose worker process or node died.
        cam: Image file, folder or list: render the CAM grid and gate maps of every model (the weights of seed
            ``cam_seed``) into ``<run>/figures/``; up-to-date figures are not redone. Not a shared setting.
        cam_seed: Which seed's trained weights the figures use.
        report: Write ``<run>/report.html`` (table, Pareto plot, per-class AP, curves, figures, settings).
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
    if executor not in EXECUTORS:
        raise ValueError(f"compare: executor={executor!r}; expected one of {', '.join(EXECUTORS)}")
    ray_only = {"ray_address": ray_address, "ray_num_cpus": ray_num_cpus, "ray_storage": ray_storage}
    ray_only["cpus_per_run"] = cpus_per_run
    given = sorted(k for k, v in ray_only.items() if v is not None)
    if executor != "ray" and given:
        raise ValueError(f"compare: {given} only apply to executor=ray; add executor=ray or remove them")
    if ray_address and ray_num_cpus is not None:
        raise ValueError("compare: ray_num_cpus= sizes a local Ray; a cluster at ray_address= has its own CPUs")
    if jobs is not None and int(jobs) < 1:
        raise ValueError(f"compare: jobs={jobs}: give the number of runs at once (1 or more)")
    data_path = Path(data)
    data_ref = str(data_path.resolve()) if data_path.is_file() else str(data)
    train_args.setdefault("plots", False)  # plots need a font download; the tables here replace them

    folder = Path(project) / name
    old_config = read_json(folder / "config.json")
    threads = _resolve_threads(threads, old_config)
    device = train_args.get("device")
    try:
        if executor == "local":
            plan = plan_devices(device, int(jobs or 1), gpus_per_run)
            run_gpus = plan.gpus_per_run
        else:
            plan = None
            cpu = gpu_list(device) is None and str(device).strip().lower() == "cpu"
            run_gpus = int(gpus_per_run) if gpus_per_run is not None else (0 if cpu else 1)
            if cpu and run_gpus:
                raise ExecutorError(f"gpus_per_run={run_gpus} with device=cpu: drop one of them")
    except ExecutorError as exc:
        raise ValueError(f"compare: {exc}") from exc
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
            "threads": threads,
            "gpus_per_run": run_gpus,
        },
    )
    all_runs = [(m, s) for s in config["seeds"] for m in config["models"]]  # seed-major: early tables cover all
    results = load_results(folder)
    todo = [(m, s) for m, s in all_runs if results.get(run_name(m, s), {}).get("status") != "ok"]
    if verbose:
        print(f"{PREFIX} {folder}: {len(all_runs)} runs ({len(all_runs) - len(todo)} done, {len(todo)} to do)")
    specs = [_spec(folder, config, model, seed) for model, seed in todo]

    runner: LocalExecutor | RayExecutor | None = None
    if executor == "ray":  # started only when there is work (or weights to fetch for the benchmark)
        runner = RayExecutor(
            folder,
            address=ray_address,
            num_cpus=ray_num_cpus,
            cpus_per_run=cpus_per_run,
            gpus_per_run=run_gpus,
            threads=config["threads"],
            max_retries=max_retries,
            storage=ray_storage,
            jobs=int(jobs) if jobs else None,
        )
    elif specs:
        runner = LocalExecutor(plan, folder, threads=config["threads"], inline=len(plan.slots) == 1)
    try:
        if specs:
            notes = list(plan.notes) if plan else []
            cores = os.cpu_count() or 1
            if isinstance(runner, LocalExecutor) and run_gpus == 0 and runner.capacity * (threads or 1) > cores:
                notes.append(f"{runner.capacity} runs x {threads} threads > {cores} cores: runs will compete")
            if isinstance(runner, RayExecutor):
                _start(runner)
            if verbose:
                for note in notes:
                    print(f"{PREFIX} note: {note}", flush=True)
            mode = "quiet" if not verbose else "inline" if isinstance(runner, LocalExecutor) and runner.inline else None
            mode = mode or ("live" if sys.stdout.isatty() else "lines")
            progress = Progress(
                len(all_runs), len(all_runs) - len(todo), len(todo), capacity=runner.capacity, mode=mode
            )
            try:
                runner.run(specs, progress)
            finally:
                progress.close()
        results = load_results(folder)
        if bench:
            fetch = None
            if isinstance(runner, RayExecutor):

                def fetch(record: dict[str, Any], weights_dir: Path) -> Path | None:
                    _start(runner)
                    return runner.fetch_weights(record, weights_dir)

            _benchmark(folder, config, results, verbose, fetch=fetch)
    finally:
        if runner is not None:
            runner.shutdown()
    table = render_tables(folder)
    if verbose:
        print()
        print(table)
        print(f"\n{PREFIX} tables and plots in {folder}")
    if cam is not None:  # CAM grids and gate maps of every model (one seed's weights); up-to-date ones are skipped
        from yolo_attn.visualize import render_compare_figures

        render_compare_figures(folder, cam, seed=cam_seed, verbose=verbose)
    if report:
        from yolo_attn.visualize import write_report

        page = write_report(folder)
        if verbose:
            print(f"{PREFIX} report: {page}")
    post_process(folder, verbose)  # further steps of your own (POST_PROCESSORS)
    return folder


def _start(runner: RayExecutor) -> None:
    try:
        runner.start()
    except ExecutorError as exc:
        raise ValueError(f"compare: {exc}") from exc


def _spec(folder: Path, config: dict[str, Any], model: str, seed: int) -> dict[str, Any]:
    """The worker's spec of one run (the executor fills in its device)."""
    run = run_name(model, seed)
    return {
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
        "threads": config.get("threads"),
        "run_dir": str((folder / "runs" / run).resolve()),
        "result_path": str((folder / "results" / f"{run}.json").resolve()),
    }
