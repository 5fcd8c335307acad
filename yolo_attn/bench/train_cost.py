"""Training cost per model: time of a training step and the memory it needs, measured the way a batch size is chosen.

**Step** = ``zero_grad(set_to_none=True)`` + forward in train mode + Ultralytics' own detection loss
(``model.loss(batch)``: v8DetectionLoss, task-aligned assigner, on synthetic targets: three boxes per image, fixed
seed) + backward. No optimizer update (its cost is proportional to the parameter count, not to the layers).
Unfused models, fp32 (``amp=False``; CUDA with ``half=True`` uses ``torch.autocast`` fp16 like Ultralytics' AMP).

**Step time**: the models are timed interleaved (rotated rounds, :func:`yolo_attn.bench.latency.measure_interleaved`
with autograd on), p50/p90, and the ratio to the baseline as the median of per-round paired ratios with a bootstrap
95% interval.

**Peak memory of a step** (``step_memory_mb``, the headline: what one step adds on top of the model and its input):

* CUDA: ``torch.cuda.max_memory_allocated`` during one step minus the allocated memory before it (after a warm-up
  step, gradients freed); ``peak_total_mb`` is the absolute peak, weights included. Allocator statistics are exact.
* CPU: there is no allocator statistic, so each model is measured in a **fresh Python process** (no other model's
  buffers, caches or allocator state): build the model, run one warm-up step, free the gradients, return free heap to
  the OS (``malloc_trim``), read the resident set size, reset the kernel's peak-RSS counter (``/proc/self/clear_refs``
  = 5), run one step and read the peak (``VmHWM``). ``step_memory_mb`` = peak - resident before; ``peak_total_mb`` =
  the process's peak RSS during the step (interpreter and libraries included). Resident memory counts pages touched,
  so it is what the machine must provide; allocator caching can make it a little larger than the bytes in live
  tensors. Where ``/proc/self/clear_refs`` is not available (not Linux), the lifetime peak (``ru_maxrss``) minus the
  resident set before the step is used and ``method`` says so.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolo_attn.bench.latency import LatencySettings, measure_interleaved, ratio_summary, sync_fn

__all__ = [
    "MEMORY_METHODS",
    "make_train_batch",
    "measure_train_cost",
    "peak_step_memory",
    "train_step_fn",
]

MEMORY_METHODS = {
    "cuda": "torch.cuda.max_memory_allocated during one step minus allocated before it (after a warm-up step)",
    "cpu-hwm": "fresh process per model: VmHWM after resetting it via /proc/self/clear_refs, minus VmRSS before the "
    "step (after a warm-up step, gradients freed, malloc_trim)",
    "cpu-maxrss": "fresh process per model: ru_maxrss after the step minus VmRSS before it (lifetime peak: an upper "
    "bound)",
}


def make_train_batch(
    batch: int, channels: int, imgsz: tuple[int, int], nc: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A synthetic detection batch in Ultralytics' trainer format: ``img`` in [0, 1), three boxes per image.

    Box positions and classes are drawn with a fixed seed, so every model sees the same targets (the assigner's and
    the loss's work depends on them).
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = imgsz
    img = torch.rand(batch, channels, h, w, generator=gen)
    per_image = 3
    n = batch * per_image
    centre = 0.2 + 0.6 * torch.rand(n, 2, generator=gen)
    size = 0.1 + 0.3 * torch.rand(n, 2, generator=gen)
    return {
        "img": img.to(device),
        "cls": torch.randint(0, max(nc, 1), (n, 1), generator=gen).float().to(device),
        "bboxes": torch.cat((centre, size), 1).to(device),  # normalised xywh, as the trainer's collate gives
        "batch_idx": torch.arange(batch).repeat_interleave(per_image).float().to(device),
    }


def _prepare(model: nn.Module) -> nn.Module:
    """Train mode, gradients on, and the default hyperparameters the loss reads (``model.args``)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG

    if not hasattr(model, "loss"):
        raise ValueError(f"train=True needs an Ultralytics detection model with .loss(); got {type(model).__name__}")
    model.args = get_cfg(DEFAULT_CFG)  # loss gains (box, cls, dfl): values do not change the cost
    model.criterion = None
    for p in model.parameters():
        p.requires_grad_(True)
    return model.train()


def train_step_fn(model: nn.Module, batch: dict[str, torch.Tensor], half: bool = False) -> Callable[[Any], None]:
    """One training step as a callable (its argument is ignored: the batch is bound)."""
    _prepare(model)
    device_type = batch["img"].device.type

    def step(_: Any = None) -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.float16, enabled=half):
            loss, _items = model.loss(batch)
        loss.sum().backward()

    return step


# ------------------------------------------------------------------------------------------------------------ memory
def _proc_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_step_memory(step: Callable[[], None], device: torch.device) -> dict[str, Any]:
    """Memory of one training step in this process (call after a warm-up step). See the module docstring."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        gc.collect()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {
            "method": "cuda",
            "step_memory_mb": (peak - before) / 2**20,
            "peak_total_mb": peak / 2**20,
            "before_mb": before / 2**20,
        }
    gc.collect()
    _malloc_trim()
    before_kb = _proc_status_kb("VmRSS")
    if before_kb is not None and _reset_hwm():
        step()
        peak_kb = _proc_status_kb("VmHWM") or 0
        method = "cpu-hwm"
    else:
        import resource

        step()
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux (bytes on macOS)
        if sys.platform == "darwin":
            peak_kb //= 1024
        method = "cpu-maxrss"
        before_kb = before_kb or 0
    return {
        "method": method,
        "step_memory_mb": (peak_kb - before_kb) / 1024,
        "peak_total_mb": peak_kb / 1024,
        "before_mb": before_kb / 1024,
    }


def _training_step(
    model: nn.Module, batch: int, imgsz: tuple[int, int], device: torch.device, half: bool = False
) -> tuple[nn.Module, Callable[[Any], None]]:
    """The model in fp32 on ``device`` and its training step on the synthetic batch (same targets for every model)."""
    from yolo_attn.bench.flops import input_channels

    model = model.to(device).float()
    targets = make_train_batch(batch, input_channels(model), imgsz, _num_classes(model), device)
    return model, train_step_fn(model, targets, half)


def child_main(spec_path: str) -> int:
    """Fresh-process measurement of one model (``python -m yolo_attn.bench._memory_child spec.json``)."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    torch.set_num_threads(int(spec["threads"]))
    from yolo_attn.bench.commands import load_model

    if spec.get("pickled"):
        model = torch.load(spec["model"], map_location="cpu", weights_only=False)
    else:
        _, model, _ = load_model(spec["model"])
    device = torch.device(spec["device"])
    model, step = _training_step(model, spec["batch"], tuple(spec["imgsz"]), device)
    for _ in range(int(spec.get("warmup", 1))):
        step()
    model.zero_grad(set_to_none=True)
    result = peak_step_memory(step, device)
    Path(spec["out"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


def _num_classes(model: nn.Module) -> int:
    seq = getattr(model, "model", None)
    head = seq[-1] if isinstance(seq, nn.Sequential) and len(seq) else None
    return int(getattr(head, "nc", 80))


def _fresh_process_memory(
    spec: str | Path | nn.Module, batch: int, imgsz: tuple[int, int], threads: int, device: torch.device, tmp: Path
) -> dict[str, Any]:
    spec_path = tmp / f"spec-{os.getpid()}-{id(spec)}-{batch}.json"
    out_path = spec_path.with_suffix(".out.json")
    payload: dict[str, Any] = {"batch": batch, "imgsz": list(imgsz), "threads": threads, "device": str(device),
                               "out": str(out_path), "warmup": 1}  # fmt: skip
    if isinstance(spec, nn.Module):
        pickled = spec_path.with_suffix(".pt")
        torch.save(copy.deepcopy(spec).cpu(), pickled)
        payload.update(model=str(pickled), pickled=True)
    else:
        payload.update(model=str(spec), pickled=False)
    spec_path.write_text(json.dumps(payload), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "yolo_attn.bench._memory_child", str(spec_path)], capture_output=True,
                         text=True, env=dict(os.environ))  # fmt: skip
    if run.returncode != 0 or not out_path.is_file():
        raise RuntimeError(f"training-memory measurement of {spec} (batch {batch}) failed in its fresh process "
                           f"(exit {run.returncode}): {run.stderr[-2000:]}")  # fmt: skip
    return json.loads(out_path.read_text(encoding="utf-8"))


def measure_train_cost(
    specs: Sequence[str | Path | nn.Module],
    names: Sequence[str],
    imgsz: tuple[int, int],
    batch: int,
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 10,
    threads: int | None = None,
    half: bool = False,
    memory: bool = True,
) -> list[dict[str, Any]]:
    """Step time (interleaved) and peak step memory per model.

    Args:
        specs: What :func:`yolo_attn.bench.commands.load_model` accepts (YAML, ``.pt``, ``nn.Module``); built afresh
            here (unfused, train mode).
        names: Display names.
        imgsz: (h, w) of the training input.
        batch: Training batch size.
        device: Device.
        warmup: Untimed steps per model (round-robin).
        repeats: Timed interleaved rounds.
        threads: CPU threads (recorded; the fresh processes use the same number).
        half: CUDA only: fp16 autocast (like Ultralytics' AMP).
        memory: Also measure the peak step memory.

    Returns:
        Per model: ``{"batch", "imgsz", "step": summary (ms), "samples_ms", "memory": {method, step_memory_mb,
        peak_total_mb, before_mb} | None, "ratio_step": paired ratio summary vs the first model | None,
        "ratio_memory": step_memory ratio | None}``.
    """
    from yolo_attn.bench.commands import load_model

    threads = threads or torch.get_num_threads()
    models, steps = [], []
    for spec, name in zip(specs, names):
        model, step = _training_step(load_model(spec, name)[1], batch, imgsz, device, half)
        models.append(model)
        steps.append(step)
    res = measure_interleaved(steps, [None] * len(steps), LatencySettings(warmup, repeats, batch, nms=False),
                              sync=sync_fn(device), inference=False)  # fmt: skip
    mems: list[dict[str, Any] | None] = [None] * len(models)
    if memory:
        if device.type == "cuda":
            for i, step in enumerate(steps):
                models[i].zero_grad(set_to_none=True)
                mems[i] = peak_step_memory(step, device)
        else:
            del steps, models  # (the batches go with their steps)
            gc.collect()
            with tempfile.TemporaryDirectory(prefix="yolo_attn_train_") as tmp:
                mems = [_fresh_process_memory(s, batch, imgsz, threads, device, Path(tmp)) for s in specs]
    out = []
    base_mem = mems[0]["step_memory_mb"] if mems[0] else None
    for i, (name, r) in enumerate(zip(names, res)):
        mem = mems[i]
        out.append(
            {
                "name": name,
                "batch": batch,
                "imgsz": list(imgsz),
                "step": r["forward"],
                "samples_ms": [t * 1e3 for t in r["forward_s"]],
                "memory": mem,
                "ratio_step": ratio_summary(r["forward_s"], res[0]["forward_s"]) if i else None,
                "ratio_memory": (mem["step_memory_mb"] / base_mem) if (i and mem and base_mem) else None,
            }
        )
    return out
