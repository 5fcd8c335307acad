"""COCO-protocol box metrics with pycocotools (the reference) or faster-coco-eval (same numbers, faster).

Every reported number is read from ``COCOeval.eval['precision']`` / ``['recall']`` at ``maxDets[-1]``:
pycocotools' ``summarize()`` hard-codes ``maxDets=100`` for its AP lines, so with ``maxDets=[1, 10, 100, 500]`` it
would print numbers computed at 100 while claiming the larger limit. ``summarize()`` is never called here.

Undefined values (no GT in a size bin, or a category without GT) are ``-1`` exactly as in pycocotools; the table
printer shows them as ``n/a``. Size-bin limits are inclusive at both ends (pycocotools' ``area < lo or area > hi``
test), so a GT of area exactly 32**2 is counted in both ``small`` and ``medium``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import numpy as np

from .groundtruth import area_source

__all__ = ["AITOD_BINS", "BACKENDS", "COCO_BINS", "evaluate_coco"]

LOGGER = logging.getLogger(__name__)

# label -> (lo, hi) in px², and the result-key suffix.
COCO_BINS: dict[str, tuple[float, float]] = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, 1e5**2)}
AITOD_BINS: dict[str, tuple[float, float]] = {
    "verytiny": (0, 8**2),
    "tiny": (8**2, 16**2),
    "aitod_small": (16**2, 32**2),
    "aitod_medium": (32**2, 1e5**2),
}
_SUFFIX = {
    "small": "s",
    "medium": "m",
    "large": "l",
    "verytiny": "vt",
    "tiny": "t",
    "aitod_small": "s_aitod",
    "aitod_medium": "m_aitod",
}
BACKENDS = ("pycocotools", "faster-coco-eval")


def _silent(*args: Any, **kwargs: Any) -> None:
    """print_function for faster-coco-eval: it logs progress on every call."""


def _mean_valid(a: np.ndarray) -> float:
    """Mean over entries > -1 (pycocotools' rule); -1 when none is defined."""
    v = a[a > -1]
    return float(np.mean(v)) if v.size else -1.0


def _run_cocoeval(
    gt: dict[str, Any],
    dets: list[dict[str, Any]],
    max_dets: list[int],
    area_rng: list[list[float]],
    area_lbl: list[str],
    img_ids: list[Any],
    backend: str,
) -> Any:
    """Build the COCO objects from dicts (no temp files), run evaluate + accumulate, return the COCOeval."""
    # Both libraries write into the annotation dicts (loadRes adds id/area/segmentation, _prepare sets 'ignore'):
    # hand them copies so the caller's GT and detections stay untouched.
    dets = [dict(d) for d in dets]
    gt = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on every step
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            if dets:
                coco_dt = coco_gt.loadRes(dets)
            else:  # loadRes([]) raises IndexError: an empty result set is built by hand
                coco_dt = COCO()
                coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
                coco_dt.createIndex()
            ev = COCOeval(coco_gt, coco_dt, "bbox")
            _set_params(ev.params, max_dets, area_rng, area_lbl, img_ids)
            ev.evaluate()
            ev.accumulate()
        return ev
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        coco_gt = COCO(gt, print_function=_silent)
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=_silent)
        _set_params(ev.params, max_dets, area_rng, area_lbl, img_ids)
        ev.evaluate()
        ev.accumulate()
        return ev
    raise ValueError(f"backend={backend!r}: expected one of {BACKENDS}")


def _set_params(p: Any, max_dets: list[int], area_rng: list[list[float]], area_lbl: list[str], img_ids: list) -> None:
    p.maxDets = list(max_dets)
    p.areaRng = [list(r) for r in area_rng]
    p.areaRngLbl = list(area_lbl)
    p.imgIds = list(img_ids)


def evaluate_coco(
    gt: dict[str, Any],
    dets: list[dict[str, Any]],
    max_dets: list[int] | tuple[int, ...] = (1, 10, 100),
    bins: str = "coco",
    backend: str = "pycocotools",
    img_ids: list[Any] | None = None,
    protocol: str = "coco",
) -> dict[str, Any]:
    """COCO box AP/AR (incl. APs/APm/APl) read at ``maxDets[-1]``, per-class AP and GT counts per size bin.

    Args:
        gt (dict): validated COCO ground truth (see :func:`~yolo_attn.evaluation.load_coco_gt`).
        dets (list[dict]): validated COCO detections (see :func:`~yolo_attn.evaluation.load_detections`).
        max_dets (list[int]): per image **per class** limits (pycocotools semantics); numbers use the last one.
        bins (str): ``coco`` (small/medium/large) or ``aitod`` (adds AI-TOD very tiny/tiny/small/medium, keys
            ``APvt``, ``APt``, ``APs_aitod``, ``APm_aitod``; ``APs/APm/APl`` keep the COCO definition).
        backend (str): ``pycocotools`` or ``faster-coco-eval``.
        img_ids (list, optional): images to evaluate; all GT images by default.
        protocol (str): label stored in the result.

    Returns:
        (dict): ``AP, AP50, AP75, APs, APm, APl, AR@<m> for each maxDet, ARs, ARm, ARl, per_class, gt_counts,
            area_ranges, max_dets, backend, protocol, area_source, n_images, n_gt, n_pred``.
    """
    if bins not in {"coco", "aitod"}:
        raise ValueError(f"bins={bins!r}: expected 'coco' or 'aitod'")
    max_dets = sorted(int(m) for m in max_dets)
    if not max_dets or max_dets[0] < 1:
        raise ValueError(f"max_dets must be positive integers, got {max_dets}")
    ranges = dict(COCO_BINS)
    if bins == "aitod":
        ranges.update(AITOD_BINS)
    area_lbl = ["all", *ranges]
    area_rng = [[0, 1e5**2], *[list(v) for v in ranges.values()]]
    img_ids = sorted({img["id"] for img in gt["images"]}) if img_ids is None else sorted(set(img_ids))
    ev = _run_cocoeval(gt, dets, max_dets, area_rng, area_lbl, img_ids, backend)
    p = ev.params
    cat_ids = [c.item() if hasattr(c, "item") else c for c in p.catIds]  # np.unique made them numpy scalars
    precision = np.asarray(ev.eval["precision"], dtype=float)  # [T, R, K, A, M]
    recall = np.asarray(ev.eval["recall"], dtype=float)  # [T, K, A, M]
    iou = np.asarray(p.iouThrs)
    t50, t75 = int(np.argmin(np.abs(iou - 0.5))), int(np.argmin(np.abs(iou - 0.75)))

    res: dict[str, Any] = {
        "protocol": protocol,
        "backend": backend,
        "max_dets": max_dets,
        "bins": bins,
        "area_source": area_source(gt),
        "AP": _mean_valid(precision[:, :, :, 0, -1]),
        "AP50": _mean_valid(precision[t50, :, :, 0, -1]),
        "AP75": _mean_valid(precision[t75, :, :, 0, -1]),
    }
    for a, lbl in enumerate(area_lbl[1:], 1):
        res[f"AP{_SUFFIX[lbl]}"] = _mean_valid(precision[:, :, :, a, -1])
    for m, md in enumerate(max_dets):
        res[f"AR@{md}"] = _mean_valid(recall[:, :, 0, m])
    for a, lbl in enumerate(area_lbl[1:], 1):
        res[f"AR{_SUFFIX[lbl]}"] = _mean_valid(recall[:, :, a, -1])

    # GT counts as COCOeval sees them: listed categories, evaluated images, non-crowd, inclusive bin limits.
    img_set, cat_set = set(img_ids), set(cat_ids)
    gts = [a for a in gt["annotations"] if a["image_id"] in img_set and a["category_id"] in cat_set]
    normal = [a for a in gts if not a.get("iscrowd", 0)]
    areas = np.array([a["area"] for a in normal], dtype=float)
    res["gt_counts"] = {"all": len(normal)}
    for lbl, (lo, hi) in ranges.items():
        res["gt_counts"][lbl] = int(((areas >= lo) & (areas <= hi)).sum())
    res["gt_counts"]["crowd_or_ignore"] = len(gts) - len(normal)
    res["area_ranges"] = {lbl: [lo, hi] for lbl, (lo, hi) in ranges.items()}

    n_gt_cat: dict[Any, int] = {}
    for a in normal:
        n_gt_cat[a["category_id"]] = n_gt_cat.get(a["category_id"], 0) + 1
    dets_eval = [d for d in dets if d["image_id"] in img_set and d["category_id"] in cat_set]
    n_pred_cat: dict[Any, int] = {}
    for d in dets_eval:
        n_pred_cat[d["category_id"]] = n_pred_cat.get(d["category_id"], 0) + 1
    names = {c["id"]: c.get("name", str(c["id"])) for c in gt["categories"]}
    res["per_class"] = [
        {
            "id": cid,
            "name": names.get(cid, str(cid)),
            "AP": _mean_valid(precision[:, :, k, 0, -1]),
            "AP50": _mean_valid(precision[t50, :, k, 0, -1]),
            "n_gt": n_gt_cat.get(cid, 0),
            "n_pred": n_pred_cat.get(cid, 0),
        }
        for k, cid in enumerate(cat_ids)
    ]
    res["n_images"] = len(img_ids)
    res["n_gt"] = len(normal)
    res["n_pred"] = len(dets_eval)
    return res
