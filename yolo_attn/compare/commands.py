"""The functions behind ``yolo-attn compare`` and ``yolo-attn table`` (values arrive parsed, like ``yolo``)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from yolo_attn.compare.runner import compare
from yolo_attn.compare.table import render_tables

__all__ = ["compare_command", "table_command"]


def _as_list(value: Any, key: str) -> list:
    if value is None:
        raise ValueError(f"compare: {key}= is required (comma-separated, e.g. {key}=yolov8n.yaml,yolov8n-ema.yaml)")
    return list(value) if isinstance(value, (list, tuple)) else [value]


def compare_command(**kwargs: Any) -> Path:
    """``yolo-attn compare models=a.yaml,b.yaml data=d.yaml epochs=.. imgsz=.. seeds=0,1,2 [...]``.

    Keys of :func:`yolo_attn.compare.compare` (models, data, epochs, imgsz, seeds, baseline, pretrained, protocol,
    split, name, project, bench, bench_imgsz, bench_device, bench_repeats, verbose; where runs execute: jobs,
    executor, threads, gpus_per_run, cpus_per_run, ray_address, ray_num_cpus, ray_storage, max_retries; figures:
    cam, cam_seed, report); every other
    key is passed to Ultralytics' trainer unchanged (batch, workers, device, lr0, ...), identically for all runs.

    Examples:
        ``yolo-attn compare models=a.yaml,b.yaml data=d.yaml seeds=0,1,2 device=0,1,2,3 jobs=4`` (a GPU server);
        the same with ``executor=ray ray_address=auto`` (a Ray cluster).
    """
    if "data" not in kwargs:
        raise ValueError("compare: data=<dataset.yaml> is required")
    models = [str(m) for m in _as_list(kwargs.pop("models", kwargs.pop("model", None)), "models")]
    seeds = [int(s) for s in _as_list(kwargs.pop("seeds", [0, 1, 2]), "seeds")]
    known = set(inspect.signature(compare).parameters) - {"models", "seeds", "train_args"}
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in known}
    return compare(models, seeds=seeds, **options, **kwargs)


def table_command(folder: str | None = None, **kwargs: Any) -> str:
    """``yolo-attn table <run folder>``: re-render table.md/.csv/.json/.tex and pareto.png from the saved JSONs."""
    folder = folder or kwargs.pop("folder", None) or kwargs.pop("run", None)
    if kwargs:
        raise ValueError(f"table: unknown key(s) {sorted(kwargs)}; usage: yolo-attn table <run folder>")
    if not folder:
        raise ValueError("table: give the run folder, e.g. yolo-attn table runs/compare/exp")
    markdown = render_tables(Path(folder))
    print(markdown)
    return markdown
