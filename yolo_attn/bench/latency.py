"""Latency and throughput of several models, measured interleaved so that ratios between them are fair.

Protocol (MMDetection's ``InferenceBenchmark``, plus interleaving):

* Models are fused eval models; inputs are pre-made tensors on the device (no decoding, letterboxing or copies are
  timed); every timed call runs under ``torch.inference_mode()``.
* Warm-up: ``warmup`` untimed iterations per model (default 10), also round-robin.
* Timing: ``time.perf_counter`` with ``torch.cuda.synchronize()`` before the start and after the end on CUDA (kernels
  are asynchronous; without the sync one measures the launch). The garbage collector is paused while timing.
* Interleaving: ``for r in range(repeats): for model in rotate(models, r): time one iteration``. Slow drift of the
  machine (thermal state, other processes, frequency scaling) then hits every model alike, and the rotation removes
  the bias of always running first or after the same neighbour.
* One timed iteration measures the forward pass and, separately, NMS on its raw output (Ultralytics
  ``non_max_suppression``); "with NMS" is their sum, so both figures come from the same runs.
* Summaries: median (p50) and p90 by linear interpolation between order statistics (numpy's default ``linear``
  method, Hyndman & Fan type 7): position ``(n - 1) * q / 100`` in the sorted sample. FPS = 1000 / p50 (batch 1).
  Throughput = batch / median time of a batch iteration.
* Ratios against the first model: ratio of medians, plus the median of per-round paired ratios (each round times all
  models back to back) with a bootstrap 95% interval (fixed seed, so reproducible).
* Minor page faults per timed forward are recorded where the OS reports them (``getrusage``): on CPU, freed
  activations handed back to the kernel are faulted in again on the next forward, and how many depends on the
  process's heap -- an allocator effect that can be larger than a layer's cost (see ``benchmarks/bench_ema_e2e.py``).
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "LatencySettings",
    "bootstrap_ci",
    "default_throughput_batch",
    "make_nms",
    "measure_interleaved",
    "paired_ratios",
    "percentile",
    "ratio_summary",
    "rotated_order",
    "summarize",
    "sync_fn",
]

Clock = Callable[[], float]


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile (0..100) by linear interpolation between order statistics (numpy's default, H&F type 7).

    Args:
        values: Non-empty sample.
        q: Percentile in [0, 100].

    Returns:
        ``s[k] + (s[k+1] - s[k]) * f`` where ``s`` is sorted, ``k + f = (n - 1) * q / 100``.

    Example:
        >>> percentile([1, 2, 3, 4], 90)
        3.7
    """
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100]; got {q}")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(seconds: Sequence[float], batch: int = 1) -> dict[str, float]:
    """Summary of per-iteration times (seconds in, milliseconds out).

    Returns:
        ``n, mean_ms, std_ms, min_ms, p50_ms, p90_ms, max_ms, ms_per_img`` (p50 / batch) and ``img_per_s``
        (batch / p50).
    """
    ms = [t * 1e3 for t in seconds]
    p50 = percentile(ms, 50)
    return {
        "n": len(ms),
        "mean_ms": statistics.fmean(ms),
        "std_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0,
        "min_ms": min(ms),
        "p50_ms": p50,
        "p90_ms": percentile(ms, 90),
        "max_ms": max(ms),
        "ms_per_img": p50 / batch,
        "img_per_s": 1e3 * batch / p50 if p50 > 0 else float("inf"),
    }


def _minor_faults() -> Callable[[], int] | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def rotated_order(n_models: int, round_index: int) -> list[int]:
    """Model order of one interleaved round: ``[r, r+1, ..., n-1, 0, ..., r-1]`` with ``r = round_index mod n``.

    Example:
        >>> [rotated_order(3, r) for r in range(4)]
        [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    """
    r = round_index % n_models if n_models else 0
    return list(range(r, n_models)) + list(range(r))


def paired_ratios(times: Sequence[Sequence[float]], base: Sequence[float]) -> list[float]:
    """Per-round ratios ``times[r] / base[r]`` (rounds are the interleaved repeats, so neighbours in time)."""
    if len(times) != len(base):
        raise ValueError(f"paired samples differ in length: {len(times)} vs {len(base)}")
    return [t / b for t, b in zip(times, base)]


def bootstrap_ci(
    values: Sequence[float], stat: Callable[[Sequence[float]], float] = statistics.median, n: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap 95% interval of ``stat`` (deterministic: fixed ``seed``)."""
    if not values:
        raise ValueError("bootstrap of an empty sample")
    rng = random.Random(seed)
    k = len(values)
    stats = sorted(stat([values[rng.randrange(k)] for _ in range(k)]) for _ in range(n))
    return percentile(stats, 2.5), percentile(stats, 97.5)


def default_throughput_batch(device: torch.device) -> int:
    """8 on CPU (a batch-8 640 image pass already saturates a few cores), 32 on CUDA."""
    return 32 if device.type == "cuda" else 8


def sync_fn(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def make_nms(model: nn.Module, conf: float = 0.25, iou: float = 0.7, max_det: int = 300) -> Callable[[Any], Any] | None:
    """NMS for an Ultralytics detection-style model's raw eval output, or None where NMS does not apply.

    Uses the thresholds of ``yolo predict`` (conf 0.25, iou 0.7). End-to-end heads (YOLOv10/26) get Ultralytics'
    ``end2end`` path (confidence filter only), which is what their predictor runs.
    """
    head = None
    seq = getattr(model, "model", None)
    if isinstance(seq, nn.Sequential) and len(seq):
        head = seq[-1]
    try:
        from ultralytics.nn.modules.head import Detect
    except ImportError:  # pragma: no cover - ultralytics is a dependency
        return None
    if not isinstance(head, Detect):
        return None
    try:
        from ultralytics.utils.nms import non_max_suppression
    except ImportError:  # pragma: no cover - older Ultralytics kept it in ops
        from ultralytics.utils.ops import non_max_suppression
    nc = int(getattr(head, "nc", 0))
    end2end = bool(getattr(head, "end2end", False))

    def nms(pred: Any) -> Any:
        return non_max_suppression(pred, conf, iou, max_det=max_det, nc=nc, end2end=end2end)

    return nms


@dataclass
class LatencySettings:
    """What :func:`measure_interleaved` does; recorded verbatim in reports.

    Attributes:
        warmup: Untimed iterations per model before timing.
        repeats: Timed rounds (each round times every model once).
        batch: Batch size of the input (the timed figure is per iteration; ``ms_per_img`` divides by it).
        nms: Time NMS after each forward (when the model has a detection head).
    """

    warmup: int = 10
    repeats: int = 100
    batch: int = 1
    nms: bool = True

    def __post_init__(self) -> None:
        for key in ("warmup", "batch"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < (1 if key == "batch" else 0):
                raise ValueError(f"{key} must be an int >= {1 if key == 'batch' else 0}; got {getattr(self, key)!r}")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be an int >= 1; got {self.repeats!r}")


def measure_interleaved(
    models: Sequence[Callable[[torch.Tensor], Any]],
    inputs: Sequence[torch.Tensor] | torch.Tensor,
    settings: LatencySettings,
    *,
    nms: Sequence[Callable[[Any], Any] | None] | None = None,
    sync: Callable[[], None] = lambda: None,
    clock: Clock = time.perf_counter,
    inference: bool = True,
) -> list[dict[str, Any]]:
    """Time several models round-robin; return raw per-iteration times and summaries per model.

    Args:
        models: Callables (eval, fused ``nn.Module`` s) taking one input tensor.
        inputs: One pre-made input per model, or one shared input.
        settings: Warm-up/repeat counts and batch size.
        nms: Per-model NMS callables (None entries: no NMS for that model); ignored unless ``settings.nms``.
        sync: Device synchronisation called before reading the clock (``torch.cuda.synchronize`` on CUDA).
        clock: Timer (seconds); injectable so the bookkeeping can be tested without timing.
        inference: Run under ``torch.inference_mode()`` (forward latency). False for callables that need autograd
            (training steps).

    Returns:
        Per model: ``{"forward_s": [...], "nms_s": [...] | None, "forward": summary, "forward_nms": summary | None,
        "nms": summary | None, "order_first": count of rounds the model ran first, "minor_faults_p50": median minor
        page faults per timed forward (None where the OS does not report them)}``.
    """
    n = len(models)
    if n == 0:
        raise ValueError("no models to time")
    xs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs] * n
    if len(xs) != n:
        raise ValueError(f"{len(xs)} inputs for {n} models")
    nms_fns = list(nms) if (nms is not None and settings.nms) else [None] * n
    if len(nms_fns) != n:
        raise ValueError(f"{len(nms_fns)} NMS functions for {n} models")
    fwd: list[list[float]] = [[] for _ in range(n)]
    post: list[list[float]] = [[] for _ in range(n)]
    faults: list[list[int]] = [[] for _ in range(n)]
    first = [0] * n
    read_faults = _minor_faults()
    last_faults = [0]

    def step(i: int) -> tuple[float, float | None]:
        sync()
        f0 = read_faults() if read_faults else 0
        t0 = clock()
        pred = models[i](xs[i])
        sync()
        t1 = clock()
        last_faults[0] = (read_faults() - f0) if read_faults else 0
        if nms_fns[i] is None:
            return t1 - t0, None
        nms_fns[i](pred)
        sync()
        return t1 - t0, clock() - t1

    gc_was_enabled = gc.isenabled()
    try:
        with torch.inference_mode(inference):
            for r in range(settings.warmup):
                for i in rotated_order(n, r):
                    step(i)
            gc.collect()
            gc.disable()  # a collection inside one model's iteration would be charged to that model alone
            for r in range(settings.repeats):
                order = rotated_order(n, r)
                first[order[0]] += 1
                for i in order:
                    t_fwd, t_nms = step(i)
                    fwd[i].append(t_fwd)
                    faults[i].append(last_faults[0])
                    if t_nms is not None:
                        post[i].append(t_nms)
    finally:
        if gc_was_enabled:
            gc.enable()

    results = []
    for i in range(n):
        with_nms = [a + b for a, b in zip(fwd[i], post[i])] if post[i] else None
        results.append(
            {
                "forward_s": fwd[i],
                "nms_s": post[i] or None,
                "forward": summarize(fwd[i], settings.batch),
                "forward_nms": summarize(with_nms, settings.batch) if with_nms else None,
                "nms": summarize(post[i], settings.batch) if post[i] else None,
                "order_first": first[i],
                "minor_faults_p50": statistics.median(faults[i]) if read_faults else None,
            }
        )
    return results


def ratio_summary(times: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    """Ratio of ``times`` to ``base`` (same rounds).

    Returns:
        ``paired_median`` (median of per-round ratios: the headline, robust to rounds hit by other load) with its
        bootstrap ``paired_ci95``, ``ratio_of_medians``, ``ratio_of_minimums`` (best case: least disturbed runs)
        and ``n``.
    """
    pr = paired_ratios(times, base)
    lo, hi = bootstrap_ci(pr)
    return {
        "ratio_of_medians": statistics.median(times) / statistics.median(base),
        "ratio_of_minimums": min(times) / min(base),
        "paired_median": statistics.median(pr),
        "paired_ci95": [lo, hi],
        "n": len(pr),
    }
