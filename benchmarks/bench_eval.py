"""Time pycocotools vs faster-coco-eval on a synthetic 500-image x 300-detection case, in one process.

Both backends run through the harness' own wrapper (COCO objects built from dicts, loadRes, evaluate, accumulate;
no summarize) on identical inputs; the script then checks that every reported number and the full precision /
recall arrays agree.

Usage:
    python benchmarks/bench_eval.py [--images 500] [--dets 300] [--repeats 1] [--max-dets 1 10 100]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from yolo_attn.evaluation import evaluate_coco
from yolo_attn.evaluation.coco_metrics import COCO_BINS, _run_cocoeval


def synthetic_case(n_images: int, n_dets: int, n_cats: int = 80, seed: int = 0) -> tuple[dict, list[dict]]:
    """COCO-like GT (about 7 objects per image, mixed sizes) and exactly ``n_dets`` detections per image."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        w, h = 640, 480
        images.append({"id": i, "width": w, "height": h, "file_name": f"{i:012d}.jpg"})
        gts = []
        for _ in range(int(rng.integers(1, 15))):
            side = float(np.exp(rng.uniform(np.log(4), np.log(300))))  # small, medium and large objects
            bw, bh = side * rng.uniform(0.6, 1.4), side * rng.uniform(0.6, 1.4)
            x, y = rng.uniform(0, w - min(bw, w - 1)), rng.uniform(0, h - min(bh, h - 1))
            box = [x, y, min(bw, w - x), min(bh, h - y)]
            cat = int(rng.integers(1, n_cats + 1))
            gts.append((box, cat))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(rng.random() < 0.01),
                }
            )
        for k in range(n_dets):
            if k < 3 * len(gts):  # jittered copies of the GT (some relabelled)
                (x, y, bw, bh), cat = gts[k % len(gts)]
                j = rng.normal(0, 0.1, 4)
                box = [x + j[0] * bw, y + j[1] * bh, bw * (1 + j[2]), bh * (1 + j[3])]
                cat = cat if rng.random() > 0.1 else int(rng.integers(1, n_cats + 1))
                score = float(rng.uniform(0.3, 1.0))
            else:  # background clutter, low scores
                bw, bh = rng.uniform(4, 200, 2)
                box = [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh]
                cat = int(rng.integers(1, n_cats + 1))
                score = float(rng.uniform(0.001, 0.5))
            dets.append({"image_id": i, "category_id": cat, "bbox": [float(v) for v in box], "score": score})
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, n_cats + 1)],
    }
    return gt, dets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--dets", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--max-dets", type=int, nargs="+", default=[1, 10, 100])
    args = ap.parse_args()

    gt, dets = synthetic_case(args.images, args.dets)
    print(
        f"case: {args.images} images x {args.dets} detections = {len(dets)} detections, {len(gt['annotations'])} "
        f"GT, 80 categories, maxDets={args.max_dets}"
    )
    from importlib.metadata import version

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pycocotools {version('pycocotools')}, "
        f"faster-coco-eval {version('faster-coco-eval')}, CPUs {os.cpu_count()}"
    )
    area_lbl = ["all", *COCO_BINS]
    area_rng = [[0, 1e5**2], *[list(v) for v in COCO_BINS.values()]]
    img_ids = [im["id"] for im in gt["images"]]
    times: dict[str, list[float]] = {"pycocotools": [], "faster-coco-eval": []}
    evals = {}
    for _ in range(args.repeats):
        for backend in times:
            t = time.perf_counter()
            evals[backend] = _run_cocoeval(gt, dets, args.max_dets, area_rng, area_lbl, img_ids, backend)
            times[backend].append(time.perf_counter() - t)
    tp, tf = min(times["pycocotools"]), min(times["faster-coco-eval"])
    print(f"pycocotools      {tp:8.2f} s  (loadRes + evaluate + accumulate, best of {args.repeats})")
    print(f"faster-coco-eval {tf:8.2f} s")
    print(f"speed-up         {tp / tf:8.2f} x")

    pe, fe = evals["pycocotools"].eval, evals["faster-coco-eval"].eval
    dp = np.abs(np.asarray(pe["precision"]) - np.asarray(fe["precision"])).max()
    dr = np.abs(np.asarray(pe["recall"]) - np.asarray(fe["recall"])).max()
    a = evaluate_coco(gt, dets, max_dets=args.max_dets, backend="pycocotools")
    b = evaluate_coco(gt, dets, max_dets=args.max_dets, backend="faster-coco-eval")
    keys = [k for k, v in a.items() if isinstance(v, float)]
    dstats = max(abs(a[k] - b[k]) for k in keys)
    print(
        f"max |diff|: precision array {dp:.3g}, recall array {dr:.3g}, reported stats {dstats:.3g} "
        f"({len(keys)} numbers)"
    )
    print("  ".join(f"{k} {a[k]:.4f}" for k in keys[:9]))
    print("identical stats: " + ("yes" if dstats < 1e-12 else "NO"))


if __name__ == "__main__":
    main()
