"""Where EMA's end-to-end cost goes inside yolov8s: per-layer wall time in the full model, interleaved.

yolov8s, yolov8s-ema (yolo-attn's EMA) and the same model with the official EMA code at the same rows are run
round-robin (rotated order) at the given size and batch, fused, under ``torch.inference_mode()``; forward pre/post
hooks on every top-level row record its wall time (``time.perf_counter``; CPU, so no sync needed). The variant rows
that are not EMA are aligned with the base model's rows (same modules in the same order), so one sees both the EMA
rows' own time and whether the layers *around* them got slower (cache, layout, allocation effects) -- the part of
the end-to-end cost a standalone layer benchmark cannot show.

Per row and model: median time over the rounds; per model: total, the sum over EMA rows, the sum over the other
rows and its paired ratio to the same rows of yolov8s (median of per-round ratios, bootstrap 95% CI).

Usage: python benchmarks/profile_ema_e2e.py [--imgsz 640] [--batch 1] [--rounds 30] [--threads 2] [--layers]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


class RowTimer:
    """Wall time of each top-level row of an Ultralytics model, per forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.rows = list(model.model)
        self.times: list[list[float]] = [[] for _ in self.rows]
        self._t0 = [0.0] * len(self.rows)
        for i, m in enumerate(self.rows):
            m.register_forward_pre_hook(self._pre(i))
            m.register_forward_hook(self._post(i))

    def _pre(self, i: int):
        def hook(module, args):
            self._t0[i] = time.perf_counter()

        return hook

    def _post(self, i: int):
        def hook(module, args, out):
            self.times[i].append(time.perf_counter() - self._t0[i])

        return hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", action="store_true", help="print every row, not only EMA rows and totals")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)

    from bench_ema_e2e import official_yaml

    from yolo_attn.bench import fuse_model, load_model
    from yolo_attn.bench.latency import bootstrap_ci, rotated_order

    with tempfile.TemporaryDirectory() as tmp:
        specs = ["yolov8s.yaml", "yolov8s-ema.yaml", str(official_yaml(Path(tmp)))]
        names = ["yolov8s", "yolov8s-ema (yolo-attn)", "yolov8s-ema (official code)"]
        models = []
        for s in specs:
            _, m, _ = load_model(s)
            fuse_model(m)
            models.append(m.eval())
    timers = [RowTimer(m) for m in models]
    x = torch.rand(opts.batch, 3, opts.imgsz, opts.imgsz, generator=torch.Generator().manual_seed(0))
    totals: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for r in range(opts.warmup + opts.rounds):
            for i in rotated_order(len(models), r):
                t0 = time.perf_counter()
                models[i](x)
                if r >= opts.warmup:
                    totals[i].append(time.perf_counter() - t0)
    for t in timers:  # drop warm-up calls
        t.times = [row[opts.warmup :] for row in t.times]

    def is_ema(row: torch.nn.Module) -> bool:
        return "EMA" in type(row).__name__

    base_rows = list(range(len(timers[0].rows)))
    print(
        f"imgsz {opts.imgsz}, batch {opts.batch}, {opts.rounds} interleaved rounds, {opts.threads} threads, "
        f"torch {torch.__version__}"
    )
    base_other = [sum(timers[0].times[j][k] for j in base_rows) for k in range(opts.rounds)]
    for name, t, tot in zip(names, timers, totals):
        ema_idx = [j for j, m in enumerate(t.rows) if is_ema(m)]
        other_idx = [j for j, m in enumerate(t.rows) if not is_ema(m)]
        ema_ms = [sum(t.times[j][k] for j in ema_idx) * 1e3 for k in range(opts.rounds)]
        other = [sum(t.times[j][k] for j in other_idx) for k in range(opts.rounds)]
        pr = [o / b for o, b in zip(other, base_other)]
        lo, hi = bootstrap_ci(pr)
        total_ms, other_ms = statistics.median(tot) * 1e3, statistics.median(other) * 1e3
        print(
            f"{name:<30} total p50 {total_ms:8.1f} ms | EMA rows {statistics.median(ema_ms):6.2f} ms"
            f" | other rows {other_ms:8.1f} ms, vs yolov8s's rows x{statistics.median(pr):.4f} [{lo:.4f}, {hi:.4f}]"
        )
        if ema_idx:
            per = ", ".join(f"row {j}: {statistics.median(t.times[j]) * 1e3:.2f}" for j in ema_idx)
            print(f"{'':<30} per EMA row (ms): {per}")
        # rows right after an EMA row, vs the aligned base row
        aligned = dict(zip(other_idx, base_rows))
        after = [j + 1 for j in ema_idx if j + 1 in aligned]
        if after:
            cells = []
            for j in after:
                b = aligned[j]
                ratio = statistics.median(v / w for v, w in zip(t.times[j], timers[0].times[b]))
                cells.append(f"row {j} ({type(t.rows[j]).__name__}) x{ratio:.3f}")
            print(f"{'':<30} the row after each EMA vs the same row in yolov8s: {', '.join(cells)}")
        if opts.layers:
            for j in other_idx:
                b = aligned[j]
                ratio = statistics.median(v / w for v, w in zip(t.times[j], timers[0].times[b]))
                row_ms = statistics.median(t.times[j]) * 1e3
                print(f"    row {j:>2} {type(t.rows[j]).__name__:<10} {row_ms:7.2f} ms x{ratio:.3f}")
    ratios = [statistics.median(a / b for a, b in zip(tot, totals[0])) for tot in totals[1:]]
    print(
        "end to end vs yolov8s (median of paired ratios): "
        + ", ".join(f"{n}: x{r:.4f}" for n, r in zip(names[1:], ratios))
    )


if __name__ == "__main__":
    main()
