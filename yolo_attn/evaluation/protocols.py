"""One entry point for the three protocols: ``coco``, ``visdrone-coco`` and ``visdrone``.

- ``coco``: pycocotools COCOeval on the GT as given (default maxDets 1, 10, 100). On a VisDrone GT the ignored
  regions and "others" are *not* used (they are not listed categories): this is what plain COCO tooling computes.
- ``visdrone-coco``: every ignored region is copied into every evaluated class as an ``iscrowd=1`` box (a
  category-0 crowd box would do nothing: COCOeval matches crowds per class), default maxDets 1, 10, 100, 500, COCO
  size bins. Still differs from the toolkit: crowd boxes absorb a detection when intersection / detection area >=
  the IoU threshold (not a fixed 50% union coverage), detections are not removed beforehand, and maxDets is per
  class.
- ``visdrone``: the official toolkit rules, see :mod:`yolo_attn.evaluation.visdrone_metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .coco_metrics import BACKENDS, evaluate_coco
from .groundtruth import load_coco_gt
from .predictions import load_detections
from .visdrone_metrics import VISDRONE_MAX_DETS, evaluate_visdrone

__all__ = ["DEFAULT_MAX_DETS", "PROTOCOLS", "evaluate", "normalize_max_dets", "visdrone_coco_gt"]

PROTOCOLS = ("coco", "visdrone-coco", "visdrone")
DEFAULT_MAX_DETS = {"coco": [1, 10, 100], "visdrone-coco": [1, 10, 100, 500], "visdrone": list(VISDRONE_MAX_DETS)}


def normalize_max_dets(max_dets: int | list[int] | tuple[int, ...] | None, protocol: str) -> list[int]:
    """``None`` -> protocol default; ``N`` -> ``[1, 10, N]`` (``[1, N]`` / ``[N]`` for small N); a list is sorted."""
    if max_dets is None:
        return list(DEFAULT_MAX_DETS[protocol])
    if isinstance(max_dets, (int, float)) and not isinstance(max_dets, bool):
        n = int(max_dets)
        out = [m for m in (1, 10) if m < n] + [n]
    elif isinstance(max_dets, (list, tuple)) and max_dets:
        out = sorted({int(m) for m in max_dets})
    else:
        raise ValueError(f"max_dets={max_dets!r}: expected a positive integer or a list of them")
    if out[0] < 1:
        raise ValueError(f"max_dets={max_dets!r}: limits must be >= 1")
    return out


def visdrone_coco_gt(gt: dict[str, Any]) -> dict[str, Any]:
    """Copy every ignored region into every listed category as an ``iscrowd=1`` box (returns a new dict).

    The region category is ``gt["yolo_attn"]["ignored_region_category_id"]``; a GT without it is returned with an
    unchanged annotation list.
    """
    region_id = (gt.get("yolo_attn") or {}).get("ignored_region_category_id")
    anns = list(gt["annotations"])
    if region_id is None:
        return {**gt, "annotations": anns}
    next_id = max((a["id"] for a in anns), default=0) + 1
    for a in gt["annotations"]:
        if a["category_id"] != region_id:
            continue
        for c in gt["categories"]:
            anns.append(
                {
                    "id": next_id,
                    "image_id": a["image_id"],
                    "category_id": c["id"],
                    "bbox": list(a["bbox"]),
                    "area": a["area"],
                    "iscrowd": 1,
                    "ignore": 1,
                    "ignored_region": a["id"],
                }
            )
            next_id += 1
    return {**gt, "annotations": anns}


def evaluate(
    gt: str | Path | dict[str, Any],
    dets: str | Path | list[dict[str, Any]],
    protocol: str = "coco",
    max_dets: int | list[int] | None = None,
    bins: str = "coco",
    backend: str = "pycocotools",
    img_ids: list[Any] | None = None,
) -> dict[str, Any]:
    """Evaluate detections against ground truth under one protocol.

    Args:
        gt (str | Path | dict): COCO GT JSON path or dict (validated with :func:`load_coco_gt`).
        dets (str | Path | list): COCO detections JSON path or list (validated with :func:`load_detections`).
        protocol (str): ``coco``, ``visdrone-coco`` or ``visdrone``.
        max_dets (int | list[int], optional): detection limits; protocol default when omitted.
        bins (str): ``coco`` or ``aitod`` (COCO-style protocols only).
        backend (str): ``pycocotools`` (reference) or ``faster-coco-eval`` (COCO-style protocols only).
        img_ids (list, optional): restrict to these GT images (COCO-style protocols).

    Returns:
        (dict): metrics; see :func:`evaluate_coco` and :func:`evaluate_visdrone`.

    Examples:
        >>> from yolo_attn.evaluation import evaluate
        >>> r = evaluate("instances_val2017.json", "detections.json", max_dets=[1, 10, 100, 300])
        >>> r["AP"], r["APs"]
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if backend in {"faster", "faster_coco_eval"}:
        backend = "faster-coco-eval"
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    gt = load_coco_gt(gt)
    if not gt["images"]:
        raise ValueError("the GT has no images: nothing to evaluate")
    dets = load_detections(dets, gt)
    md = normalize_max_dets(max_dets, protocol)
    if protocol == "visdrone":
        if img_ids is not None:
            keep = set(img_ids)
            gt = {**gt, "images": [im for im in gt["images"] if im["id"] in keep]}
            dets = [d for d in dets if d["image_id"] in keep]
        res = evaluate_visdrone(gt, dets, max_dets=md)
    else:
        gt_eval = visdrone_coco_gt(gt) if protocol == "visdrone-coco" else gt
        res = evaluate_coco(gt_eval, dets, max_dets=md, bins=bins, backend=backend, img_ids=img_ids, protocol=protocol)
    if (gt.get("yolo_attn") or {}).get("dataset") == "visdrone" and protocol == "coco":
        res.setdefault("notes", []).append(
            "protocol=coco on VisDrone GT ignores the ignored regions (as Ultralytics does); use visdrone-coco or "
            "visdrone for the benchmark's rules"
        )
    return res
