"""Speed of each production layer vs its official-style reference (``tests/reference_layers.py``).

Both modules get the same weights (``load_state_dict(strict=True)``) and are timed INTERLEAVED in one process
(reference, production, reference, production, ... after a warm-up), so drifting machine load, CPU frequency or
allocator state affects both alike. Reported: medians, and the ratio reference / production (> 1 = production is
faster) for

* train-mode forward + backward (input requires grad, a fixed random output gradient), and
* eval-mode forward only (``torch.inference_mode``).

Run: ``python benchmarks/bench_layers.py`` (about 30 s on 2 idle CPU cores), ``--quick`` for a smoke run,
``--threads N`` to change the intra-op thread count (default 2), ``--layers EMA ODConv`` to select layers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the official-style references
sys.path.insert(0, str(ROOT))

import reference_layers as ref  # noqa: E402

from yolo_attn.layers import CBAM, ECA, EMA, SE, CoordAtt, ODConv  # noqa: E402

COMMON_SHAPES = [(1, 128, 80, 80), (1, 256, 40, 40)]
EMA_SHAPES = [(1, 128, 80, 80), (8, 128, 80, 80), (1, 256, 40, 40)]

# name -> (production factory, reference factory, shapes, fwd+bwd target ratio per shape)
LAYERS: dict[str, tuple[Callable[[int], nn.Module], Callable[[int], nn.Module], list, dict]] = {
    "SE": (SE, ref.RefSE, COMMON_SHAPES, {}),
    "CBAM": (CBAM, ref.RefCBAM, COMMON_SHAPES, {}),
    "ECA": (ECA, lambda c: ref.RefECA(c, ref.ref_eca_kernel_size(c)), COMMON_SHAPES, {}),
    "CoordAtt": (CoordAtt, ref.RefCoordAtt, COMMON_SHAPES, {}),
    "EMA": (EMA, ref.RefEMA, EMA_SHAPES, {(1, 128, 80, 80): 2.0, (8, 128, 80, 80): 2.0, (1, 256, 40, 40): 1.3}),
    "ODConv": (lambda c: ODConv(c, c, 3), lambda c: ref.RefODConv(c, c, 3), COMMON_SHAPES, {}),
}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fwd_bwd(m: nn.Module, x: torch.Tensor, gout: torch.Tensor) -> float:
    xx = x.detach().requires_grad_(True)
    t0 = time.perf_counter()
    m(xx).backward(gout)
    dt = time.perf_counter() - t0
    m.zero_grad(set_to_none=True)
    return dt


def _fwd_eval(m: nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode():
        t0 = time.perf_counter()
        m(x)
        return time.perf_counter() - t0


def _interleaved(
    fn_a: Callable[[], float], fn_b: Callable[[], float], warmup: int, repeats: int
) -> tuple[float, float]:
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for i in range(repeats):
        if i % 2:  # alternate who goes first, so neither always runs right after the other's frees
            tb.append(fn_b())
            ta.append(fn_a())
        else:
            ta.append(fn_a())
            tb.append(fn_b())
    return statistics.median(ta), statistics.median(tb)


def bench_layer(name: str, shape: tuple[int, int, int, int], warmup: int, repeats: int, budget_s: float) -> dict:
    make_fast, make_ref, _, targets = LAYERS[name]
    torch.manual_seed(0)
    c = shape[1]
    reference, fast = make_ref(c), make_fast(c)
    fast.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(shape)
    with torch.no_grad():
        gout = torch.randn(reference.eval()(x).shape)

    reference.train()
    fast.train()
    if name == "ODConv" and shape[0] == 1:
        # The official module cannot train at batch 1 (its attention BN raises); time both with that BN in eval
        # mode, which is what yolo_attn's ODConv does by itself at batch 1.
        reference.conv.attention.bn.eval()
        fast.conv.attention.bn.eval()
    # Fewer repeats for slow cases so the whole run stays a few minutes.
    probe = _fwd_bwd(reference, x, gout) + _fwd_bwd(fast, x, gout)
    n = max(5, min(repeats, int(budget_s / max(probe, 1e-6))))
    t_ref, t_fast = _interleaved(lambda: _fwd_bwd(reference, x, gout), lambda: _fwd_bwd(fast, x, gout), warmup, n)

    reference.eval()
    fast.eval()
    e_ref, e_fast = _interleaved(lambda: _fwd_eval(reference, x), lambda: _fwd_eval(fast, x), warmup, max(n, 9))
    return {
        "layer": name,
        "shape": shape,
        "n": n,
        "ref": t_ref,
        "fast": t_fast,
        "ratio": t_ref / t_fast,
        "eval_ref": e_ref,
        "eval_fast": e_fast,
        "eval_ratio": e_ref / e_fast,
        "target": targets.get(shape, 1.0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="short smoke run (few repeats)")
    parser.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    # Allocate and free one 30 MB buffer first: glibc then serves later allocations up to that size from its heap
    # instead of fresh mmap'd (page-faulted) memory, the steady state of a long-running training process. Without
    # this the first cases measure page faults (several us each on a VM) for both implementations alike.
    torch.empty(30 * 2**20 // 4).fill_(0)  # freed at once
    warmup, repeats, budget = (1, 5, 2.0) if args.quick else (3, 31, 12.0)
    print(
        f"torch {torch.__version__} | threads {torch.get_num_threads()} | CPU {_cpu_name()} x{os.cpu_count()} | "
        f"python {platform.python_version()} | mkldnn {torch.backends.mkldnn.is_available()}"
    )
    print(f"interleaved A/B medians; warm-up {warmup}, up to {repeats} repeats per case; ratio = reference / yolo_attn")
    header = (
        f"{'layer':<9} {'input (B,C,H,W)':<18} {'n':>3} | {'fwd+bwd ref':>11} {'yolo_attn':>10} {'ratio':>6} "
        f"{'target':>7} | {'eval fwd ref':>12} {'yolo_attn':>10} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    misses = []
    for name in args.layers:
        for shape in LAYERS[name][2]:
            r = bench_layer(name, shape, warmup, repeats, budget)
            ok = r["ratio"] >= r["target"]
            if not ok:
                misses.append(f"{name} {shape}")
            print(
                f"{name:<9} {str(shape):<18} {r['n']:>3} | {r['ref'] * 1e3:>9.2f}ms {r['fast'] * 1e3:>8.2f}ms "
                f"{r['ratio']:>5.2f}x {'>=' + format(r['target'], '.1f'):>6}{' ' if ok else '!'} | "
                f"{r['eval_ref'] * 1e3:>10.2f}ms {r['eval_fast'] * 1e3:>8.2f}ms {r['eval_ratio']:>5.2f}x",
                flush=True,
            )
    if "ODConv" in args.layers:
        print("ODConv = ODConv(c, c, 3) + BN + SiLU; at batch 1 both attention BNs run in eval mode (see source).")
    print("all fwd+bwd targets met" if not misses else f"fwd+bwd targets missed (!): {', '.join(misses)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
