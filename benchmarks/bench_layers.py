"""Speed of each production layer vs its official-style reference (``tests/reference_layers.py``).

Both modules get the same weights (``load_state_dict(strict=True)``) and are timed INTERLEAVED in one process
(reference, production, reference, production, ... after a warm-up), so drifting machine load, CPU frequency or
allocator state affects both alike. Reported: medians (``--stat min``: minima), and the ratio reference / production
(> 1 = production is faster) for

* train-mode forward + backward (input requires grad, a fixed random output gradient), and
* eval-mode forward only (``torch.inference_mode``).

Run: ``python benchmarks/bench_layers.py`` (about 30 s on 2 idle CPU cores), ``--quick`` for a smoke run,
``--threads N`` to change the intra-op thread count (default 2), ``--layers EMA ODConv`` to select layers.
SimAM, SA (ShuffleAttention), NAM and Triplet (TripletAttention) run at the P3/P4/P5 neck outputs of yolov8s at
imgsz 640 and at P3 with batch 8; an eval ratio below 1 is flagged too.

``--e2e`` (those four layers) also times them end to end in the model: yolov8s with the layer after each neck output
(rows 15, 18, 21), the same model with the official-style references swapped in (weights copied), and the stock
yolov8s, interleaved: eval forward (batch 1, ``--e2e-imgsz``, default 640) and train-mode forward + backward (batch 2
at half that size). Reported: medians, each variant's overhead over the stock model, and official / production.
"""

from __future__ import annotations

import argparse
import copy
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

from yolo_attn.layers import (  # noqa: E402
    CBAM,
    ECA,
    EMA,
    NAM,
    SE,
    CoordAtt,
    ODConv,
    ShuffleAttention,
    SimAM,
    TripletAttention,
)

#: Statistic of the repeated timings: the median (default), or the minimum (``--stat min``: on a machine shared with
#: other jobs, the run least disturbed by them, closest to the intrinsic cost; ratios are then min / min).
STAT: Callable[[list[float]], float] = statistics.median

COMMON_SHAPES = [(1, 128, 80, 80), (1, 256, 40, 40)]
EMA_SHAPES = [(1, 128, 80, 80), (8, 128, 80, 80), (1, 256, 40, 40)]
# yolov8s at imgsz 640: the P3/P4/P5 neck outputs at batch 1, and P3 at batch 8 (training-like).
YOLOV8S_SHAPES = [(1, 128, 80, 80), (1, 256, 40, 40), (1, 512, 20, 20), (8, 128, 80, 80)]

# name -> (production factory, reference factory, shapes, fwd+bwd target ratio per shape)
LAYERS: dict[str, tuple[Callable[[int], nn.Module], Callable[[int], nn.Module], list, dict]] = {
    "SE": (SE, ref.RefSE, COMMON_SHAPES, {}),
    "CBAM": (CBAM, ref.RefCBAM, COMMON_SHAPES, {}),
    "ECA": (ECA, lambda c: ref.RefECA(c, ref.ref_eca_kernel_size(c)), COMMON_SHAPES, {}),
    "CoordAtt": (CoordAtt, ref.RefCoordAtt, COMMON_SHAPES, {}),
    "EMA": (EMA, ref.RefEMA, EMA_SHAPES, {(1, 128, 80, 80): 2.0, (8, 128, 80, 80): 2.0, (1, 256, 40, 40): 1.3}),
    "ODConv": (lambda c: ODConv(c, c, 3), lambda c: ref.RefODConv(c, c, 3), COMMON_SHAPES, {}),
    "SimAM": (SimAM, ref.RefSimAM, YOLOV8S_SHAPES, {}),
    "SA": (ShuffleAttention, ref.RefShuffleAttention, YOLOV8S_SHAPES, {}),  # official groups=64 fits C = 128k
    "NAM": (NAM, ref.RefNAM, YOLOV8S_SHAPES, {}),
    "Triplet": (TripletAttention, ref.RefTripletAttention, YOLOV8S_SHAPES, {}),
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
    return STAT(ta), STAT(tb)


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


# ----------------------------------------------------------------------------------------------- end to end
#: YAML name -> (production class, reference built like the production module m)
E2E_LAYERS: dict[str, tuple[type, Callable[[nn.Module], nn.Module]]] = {
    "SimAM": (SimAM, lambda m: ref.RefSimAM(m.c1, m.e_lambda)),
    "SA": (ShuffleAttention, lambda m: ref.RefShuffleAttention(m.c1, m.groups)),
    "NAM": (NAM, lambda m: ref.RefNAM(m.c1)),
    "Triplet": (TripletAttention, lambda m: ref.RefTripletAttention(m.c1, no_spatial=m.no_spatial)),
}


def _e2e_models(layer: str) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(stock yolov8s, yolov8s with the production layer after the neck outputs, the same with the references)."""
    import ultralytics
    import yaml

    from yolo_attn.plugin import integration
    from yolo_attn.variants.edit import insert_layer

    integration.register_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    text = (Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yolov8.yaml").read_text()
    yaml_name = {"Triplet": "TripletAttention"}.get(layer, layer)

    def build(t: str) -> nn.Module:
        cfg = yaml.safe_load(t)
        cfg["scale"] = "s"
        return DetectionModel(cfg, verbose=False)

    base, fast = build(text), build(insert_layer(text, yaml_name, [], after=[15, 18, 21]))
    official = copy.deepcopy(fast)
    cls, make_ref = E2E_LAYERS[layer]
    for i, m in enumerate(official.model):
        if isinstance(m, cls):
            r = make_ref(m)
            r.load_state_dict(m.state_dict(), strict=True)
            for attr in ("i", "f", "type", "np"):  # what Ultralytics' forward loop reads
                setattr(r, attr, getattr(m, attr))
            official.model[i] = r
    return base, fast, official


def _tensors(out: object) -> list[torch.Tensor]:
    """Every tensor in a model output (a tensor, or nested lists/tuples/dicts of them: Ultralytics' train output)."""
    if isinstance(out, torch.Tensor):
        return [out]
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else []
    return [t for item in items for t in _tensors(item)]


def bench_e2e(layer: str, imgsz: int, repeats: int) -> dict:
    base, fast, official = _e2e_models(layer)
    models = {"stock": base, "yolo_attn": fast, "official": official}
    x_eval = torch.randn(1, 3, imgsz, imgsz)
    x_train = torch.randn(2, 3, imgsz // 2, imgsz // 2)

    def eval_fwd(m: nn.Module) -> float:
        with torch.inference_mode():
            t0 = time.perf_counter()
            m(x_eval)
            return time.perf_counter() - t0

    def train_step(m: nn.Module) -> float:
        t0 = time.perf_counter()
        out = m(x_train)
        sum(t.float().sum() for t in _tensors(out)).backward()
        dt = time.perf_counter() - t0
        m.zero_grad(set_to_none=True)
        return dt

    result = {}
    for mode, fn in (("eval", eval_fwd), ("train", train_step)):
        for m in models.values():
            m.train(mode == "train")
            fn(m)  # warm-up
        times: dict[str, list[float]] = {k: [] for k in models}
        order = list(models)
        for i in range(repeats):
            for k in order[i % 3 :] + order[: i % 3]:  # rotate who goes first
                times[k].append(fn(models[k]))
        result[mode] = {k: STAT(v) for k, v in times.items()}
    return result


def main_e2e(layers: list[str], imgsz: int, repeats: int) -> None:
    print(
        f"\nend to end: yolov8s + layer after rows 15, 18, 21; eval batch 1 at {imgsz}, train batch 2 at {imgsz // 2}"
    )
    header = (
        f"{'layer':<8} {'mode':<6} | {'stock':>9} {'yolo_attn':>10} {'official':>10} | "
        f"{'+yolo_attn':>10} {'+official':>10} {'official/yolo_attn':>19}"
    )
    print(header)
    print("-" * len(header))
    for layer in layers:
        r = bench_e2e(layer, imgsz, repeats)
        for mode, t in r.items():
            print(
                f"{layer:<8} {mode:<6} | {t['stock'] * 1e3:>7.1f}ms {t['yolo_attn'] * 1e3:>8.1f}ms "
                f"{t['official'] * 1e3:>8.1f}ms | {100 * (t['yolo_attn'] / t['stock'] - 1):>+9.1f}% "
                f"{100 * (t['official'] / t['stock'] - 1):>+9.1f}% {t['official'] / t['yolo_attn']:>18.3f}x",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="short smoke run (few repeats)")
    parser.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    parser.add_argument("--stat", choices=("median", "min"), default="median", help="statistic of the repeats")
    parser.add_argument("--e2e", action="store_true", help="also time SimAM/SA/NAM/Triplet inside yolov8s")
    parser.add_argument("--e2e-only", action="store_true", help="only the end-to-end part")
    parser.add_argument("--e2e-imgsz", type=int, default=640, help="end-to-end eval image size (train: half)")
    parser.add_argument("--e2e-repeats", type=int, default=7, help="end-to-end interleaved rounds")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    global STAT
    STAT = min if args.stat == "min" else statistics.median
    # Allocate and free one 30 MB buffer first: glibc then serves later allocations up to that size from its heap
    # instead of fresh mmap'd (page-faulted) memory, the steady state of a long-running training process. Without
    # this the first cases measure page faults (several us each on a VM) for both implementations alike.
    torch.empty(30 * 2**20 // 4).fill_(0)  # freed at once
    warmup, repeats, budget = (1, 5, 2.0) if args.quick else (3, 31, 12.0)
    print(
        f"torch {torch.__version__} | threads {torch.get_num_threads()} | CPU {_cpu_name()} x{os.cpu_count()} | "
        f"python {platform.python_version()} | mkldnn {torch.backends.mkldnn.is_available()}"
    )
    e2e_layers = [name for name in args.layers if name in E2E_LAYERS] or list(E2E_LAYERS)
    if args.e2e_only:
        main_e2e(e2e_layers, args.e2e_imgsz, args.e2e_repeats)
        return 0
    print(
        f"interleaved A/B {args.stat}s; warm-up {warmup}, up to {repeats} repeats per case; "
        "ratio = reference / yolo_attn"
    )
    header = (
        f"{'layer':<9} {'input (B,C,H,W)':<18} {'n':>3} | {'fwd+bwd ref':>11} {'yolo_attn':>10} {'ratio':>6} "
        f"{'target':>7} | {'eval fwd ref':>12} {'yolo_attn':>10} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    misses, eval_misses = [], []
    for name in args.layers:
        for shape in LAYERS[name][2]:
            r = bench_layer(name, shape, warmup, repeats, budget)
            ok = r["ratio"] >= r["target"]
            if not ok:
                misses.append(f"{name} {shape}")
            eval_ok = r["eval_ratio"] >= 1.0  # inference must not be slower than the official form either
            if not eval_ok:
                eval_misses.append(f"{name} {shape}")
            print(
                f"{name:<9} {str(shape):<18} {r['n']:>3} | {r['ref'] * 1e3:>9.2f}ms {r['fast'] * 1e3:>8.2f}ms "
                f"{r['ratio']:>5.2f}x {'>=' + format(r['target'], '.1f'):>6}{' ' if ok else '!'} | "
                f"{r['eval_ref'] * 1e3:>10.2f}ms {r['eval_fast'] * 1e3:>8.2f}ms {r['eval_ratio']:>5.2f}x"
                f"{'' if eval_ok else '!'}",
                flush=True,
            )
    if "ODConv" in args.layers:
        print("ODConv = ODConv(c, c, 3) + BN + SiLU; at batch 1 both attention BNs run in eval mode (see source).")
    print("all fwd+bwd targets met" if not misses else f"fwd+bwd targets missed (!): {', '.join(misses)}")
    if eval_misses:
        print(f"eval slower than the official form (!): {', '.join(eval_misses)}")
    if args.e2e:
        main_e2e(e2e_layers, args.e2e_imgsz, args.e2e_repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
