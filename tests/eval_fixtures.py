"""Shared helpers for the evaluation tests (imported by tests/test_eval_*.py; conftest.py belongs to the lead).

Real data lives in ``../shared/data`` next to the repository; tests that need it skip with a reason when absent.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
COCO128 = DATA / "coco128"
COCO128_JSON = COCO128 / "annotations" / "instances_train2017_coco128.json"
# coco8 also ships in the repository (datasets/coco8, with its COCO JSON): usable when ../shared is absent
COCO8 = DATA / "coco8" if (DATA / "coco8").is_dir() else Path(__file__).resolve().parents[1] / "datasets" / "coco8"
VISDRONE_SAMPLE = DATA / "visdrone2019_val_sample"


def require(path: Path) -> Path:
    """Skip the calling test when a shared real-data folder is missing."""
    if not path.exists():
        pytest.skip(f"real test data not available: {path} (expected ../shared/data next to the repo)")
    return path


def visdrone_sizes() -> dict[str, tuple[int, int]]:
    """``stem -> (width, height)`` from the sample's image_sizes.csv."""
    with open(require(VISDRONE_SAMPLE) / "image_sizes.csv", newline="") as f:
        return {r["image"]: (int(r["width"]), int(r["height"])) for r in csv.DictReader(f)}


def make_visdrone_split(dst: Path, name: str = "VisDrone2019-DET-val") -> Path:
    """Copy the 40 real annotation files and write blank JPEGs of the real image sizes: a VisDrone split folder."""
    from PIL import Image

    split = dst / name
    (split / "images").mkdir(parents=True)
    shutil.copytree(require(VISDRONE_SAMPLE) / "annotations", split / "annotations")
    for stem, (w, h) in visdrone_sizes().items():
        Image.new("L", (w, h)).save(split / "images" / f"{stem}.jpg", quality=50)
    return split


def coco_gt(images: list[tuple[int, int, int]], anns: list[dict[str, Any]], cats: list[int] = (1,)) -> dict[str, Any]:
    """Tiny COCO GT: ``images`` as (id, width, height); ``anns`` need bbox/category_id/image_id (+ iscrowd)."""
    out = []
    for i, a in enumerate(anns, 1):
        a = {"iscrowd": 0, **a}
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
        a["id"] = i
        out.append(a)
    return {
        "images": [{"id": i, "width": w, "height": h, "file_name": f"{i:06d}.jpg"} for i, w, h in images],
        "annotations": out,
        "categories": [{"id": c, "name": f"c{c}"} for c in cats],
    }


def det(image_id: int, bbox: list[float], score: float, category_id: int = 1) -> dict[str, Any]:
    return {"image_id": image_id, "category_id": category_id, "bbox": list(bbox), "score": score}


def pycocotools_direct(
    gt: dict[str, Any], dets: list[dict[str, Any]], max_dets: list[int] | None = None
) -> tuple[np.ndarray, Any]:
    """A plain pycocotools call, written out as a user would: returns (summarize() stats, COCOeval)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        res = coco.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco, res, "bbox")
        if max_dets is not None:
            ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats), ev


STAT_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR@1", "AR@10", "AR@100", "ARs", "ARm", "ARl"]


def perturbed_detections(gt: dict[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """Deterministic, realistic-looking detections: jittered GT boxes (some dropped or relabelled) plus FPs."""
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 0.15:
            continue
        x, y, w, h = a["bbox"]
        j = rng.normal(0, 0.08, 4)
        box = [x + j[0] * w, y + j[1] * h, max(1.0, w * (1 + j[2])), max(1.0, h * (1 + j[3]))]
        cat = a["category_id"] if rng.random() > 0.07 else int(rng.choice(cats))
        dets.append(det(a["image_id"], [round(v, 2) for v in box], round(float(rng.random()), 4), cat))
    for img_id, (w, h) in sizes.items():
        for _ in range(int(rng.integers(0, 6))):
            bw, bh = rng.uniform(4, w / 3), rng.uniform(4, h / 3)
            box = [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh]
            dets.append(
                det(
                    img_id,
                    [round(float(v), 2) for v in box],
                    round(float(rng.random()) * 0.6, 4),
                    int(rng.choice(cats)),
                )
            )
    return dets
