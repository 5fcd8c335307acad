"""Detections as COCO results JSON: from a trained Ultralytics model over a dataset split, or a user's own file.

A COCO detections JSON is a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` with boxes in
absolute pixels of the original image. Category ids must be in the GT's id space:

- GT from an official COCO JSON and a dataset with Ultralytics' 80 COCO names: class index -> 91-id space via
  ``ultralytics.data.converter.coco80_to_coco91_class()``;
- any other GT JSON: class index -> dataset class name -> the GT category with that name (case-insensitive);
- GT built from YOLO labels: ``category_id`` = class index.

Image ids come from the GT JSON, matched by file name.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from .groundtruth import _read_json

__all__ = [
    "class_to_category_map",
    "load_detections",
    "match_images",
    "predict_coco_detections",
]

LOGGER = logging.getLogger(__name__)


def _ultralytics_coco_names() -> list[str]:
    from ultralytics.utils import ROOT, YAML

    names = YAML.load(ROOT / "cfg" / "datasets" / "coco.yaml")["names"]
    return [names[i] for i in range(len(names))]


def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").split())


def class_to_category_map(names: dict[int, str] | list[str], gt: dict[str, Any]) -> tuple[dict[int, int], str]:
    """Map dataset class index -> GT ``category_id``.

    Args:
        names (dict[int, str] | list[str]): the dataset's class names (model output index -> name).
        gt (dict): COCO ground truth.

    Returns:
        (tuple[dict[int, int], str]): the mapping and a one-line description of the rule used.

    Raises:
        ValueError: when no class can be mapped (names and GT categories disagree).
    """
    names = names if isinstance(names, dict) else dict(enumerate(names))
    names = {int(k): str(v) for k, v in names.items()}
    gt_ids = {c["id"] for c in gt["categories"]}
    convention = (gt.get("yolo_attn") or {}).get("category_id_convention", "")
    if convention.startswith("category_id = Ultralytics class index"):
        missing = sorted(set(names) - gt_ids)
        if missing:
            raise ValueError(f"GT built from YOLO labels lacks class indices {missing[:10]}")
        return {i: i for i in names}, "category_id = class index (GT built from YOLO labels)"
    if len(names) == 80 and [names[i] for i in range(80)] == _ultralytics_coco_names():
        from ultralytics.data.converter import coco80_to_coco91_class

        mapping = dict(enumerate(coco80_to_coco91_class()))
        if set(mapping.values()) <= gt_ids:
            return mapping, "COCO 80 -> 91 ids (coco80_to_coco91_class)"
    by_name: dict[str, int] = {}
    for c in gt["categories"]:
        by_name.setdefault(_norm(c.get("name", "")), c["id"])
    mapping = {i: by_name[_norm(n)] for i, n in names.items() if _norm(n) in by_name}
    if not mapping:
        gt_names = [c.get("name") for c in gt["categories"]][:20]
        raise ValueError(
            f"no dataset class name matches a GT category name: dataset {list(names.values())[:20]}, GT {gt_names}"
        )
    unmapped = [n for i, n in names.items() if i not in mapping]
    if unmapped:
        LOGGER.warning(f"classes without a GT category of the same name, their detections are dropped: {unmapped}")
    return mapping, "class name -> GT category of the same name"


def match_images(images: list[Path], gt: dict[str, Any]) -> tuple[dict[Path, int], list[Path]]:
    """Match image files to GT image ids by file name (base name, or the longest matching path suffix).

    Returns:
        (tuple): ``({image path: GT image id}, [paths without a GT entry])``.
    """
    by_name: dict[str, list[tuple[str, int]]] = {}
    for img in gt["images"]:
        fname = str(img.get("file_name", "")).replace("\\", "/")
        by_name.setdefault(Path(fname).name, []).append((fname, img["id"]))
    matched, unmatched = {}, []
    for p in images:
        cands = by_name.get(p.name, [])
        if len(cands) > 1:  # same base name in several folders: use the longest path suffix that agrees
            posix = Path(p).as_posix()
            cands = [c for c in cands if posix.endswith("/" + c[0]) or posix == c[0]] or cands[:0]
        if len(cands) == 1:
            matched[p] = cands[0][1]
        else:
            unmatched.append(p)
    return matched, unmatched


def predict_coco_detections(
    model: Any,
    images: dict[Path, int],
    class_map: dict[int, int],
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    imgsz: int | list[int] | None = None,
    device: str | None = None,
    batch: int = 1,
    half: bool = False,
) -> list[dict[str, Any]]:
    """Run Ultralytics inference over images and return COCO detections.

    Args:
        model (str | Path | ultralytics.YOLO): checkpoint path or loaded model.
        images (dict[Path, int]): image path -> GT image id.
        class_map (dict[int, int]): model class index -> GT category id (unmapped classes are dropped).
        conf (float): confidence threshold (low, as for mAP: 0.001).
        iou (float): NMS IoU threshold (Ultralytics val default 0.7).
        max_det (int): maximum detections per image after NMS.
        imgsz (int | list[int], optional): inference size; the checkpoint's training size when omitted.
        device (str, optional): e.g. ``cpu`` or ``0``.
        batch (int): inference batch size.
        half (bool): FP16 inference.

    Returns:
        (list[dict]): COCO detections, boxes ``[x, y, w, h]`` in original-image pixels, score as float.
    """
    from ultralytics import YOLO

    yolo = model if hasattr(model, "predict") else YOLO(str(model))
    kwargs: dict[str, Any] = dict(conf=conf, iou=iou, max_det=max_det, verbose=False, stream=True, save=False)
    kwargs["batch"] = batch
    if half:  # only when asked: this Ultralytics version warns that 'half' is deprecated whenever it is passed
        kwargs["half"] = True
    if imgsz is not None:
        kwargs["imgsz"] = imgsz
    if device is not None:
        kwargs["device"] = device
    by_path = {str(Path(p).absolute()): i for p, i in images.items()}
    dets: list[dict[str, Any]] = []
    if not by_path:
        return dets
    with tempfile.TemporaryDirectory() as tmp:
        # A .txt source keeps each result's real file path (a Python list of paths would be loaded as in-memory
        # images named image0.jpg, ...), and Ultralytics batches it.
        source = Path(tmp) / "images.txt"
        source.write_text("\n".join(by_path) + "\n", encoding="utf-8")
        for r in yolo.predict(source=str(source), **kwargs):
            image_id = by_path.get(str(Path(r.path).absolute()))
            if image_id is None or r.boxes is None:
                continue
            xyxy = r.boxes.xyxy.cpu().double().tolist()
            scores = r.boxes.conf.cpu().double().tolist()
            classes = r.boxes.cls.cpu().int().tolist()
            for (x1, y1, x2, y2), s, c in zip(xyxy, scores, classes):
                if c in class_map:
                    dets.append(
                        {
                            "image_id": image_id,
                            "category_id": class_map[c],
                            "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                            "score": s,  # unrounded: at conf=0.001 rounding would create ties
                        }
                    )
    return dets


def load_detections(source: str | Path | list[dict[str, Any]], gt: dict[str, Any]) -> list[dict[str, Any]]:
    """Load and validate a COCO detections JSON against a GT (returns new, normalised dicts).

    String ``image_id`` values (Ultralytics' ``predictions.json`` uses the file stem when it is not numeric) are
    matched to GT images by file name or stem. Category ids must be GT categories (or, for VisDrone GT, the extra
    categories 0 / 11, which the official protocol counts for the per-image detection limit).

    Args:
        source (str | Path | list[dict]): detections file or list.
        gt (dict): COCO ground truth (from :func:`yolo_attn.evaluation.load_coco_gt`).

    Returns:
        (list[dict]): ``{"image_id", "category_id", "bbox", "score"}`` dicts.

    Raises:
        ValueError: listing the first problems (wrong schema, unknown image or category ids, bad boxes).
    """
    in_memory = isinstance(source, (list, dict))
    name = "detections" if in_memory else str(source)
    raw = source if in_memory else _read_json(source)
    if isinstance(raw, dict) and isinstance(raw.get("annotations"), list) and "images" not in raw:
        raw = raw["annotations"]
    if not isinstance(raw, list):
        hint = " (this looks like a GT file: it has 'images')" if isinstance(raw, dict) and "images" in raw else ""
        raise ValueError(f"{name}: a COCO detections JSON must be a list of objects{hint}")
    image_ids = {img["id"] for img in gt["images"]}
    by_file: dict[str, Any] = {}
    for img in gt["images"]:
        fname = Path(str(img.get("file_name", "")))
        by_file.setdefault(fname.name, img["id"])
        by_file.setdefault(fname.stem, img["id"])
    cat_ids = {c["id"] for c in gt["categories"]}
    extra = {c["id"] for c in (gt.get("yolo_attn") or {}).get("extra_categories", [])}
    problems: list[str] = []
    unknown_images, unknown_cats = set(), set()
    out = []
    for i, d in enumerate(raw):
        if not isinstance(d, dict):
            problems.append(f"[{i}]: not an object")
            continue
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in d]
        if missing:
            problems.append(f"[{i}]: missing {missing}")
            continue
        image_id = d["image_id"]
        if image_id not in image_ids:
            mapped = by_file.get(str(image_id)) if isinstance(image_id, str) else None
            if mapped is None:
                unknown_images.add(image_id)
                continue
            image_id = mapped
        cat = d["category_id"]
        if isinstance(cat, float) and cat.is_integer():
            cat = int(cat)
        if cat not in cat_ids and cat not in extra:
            unknown_cats.add(cat)
            continue
        bbox, score = d["bbox"], d["score"]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_finite(v) for v in bbox)):
            problems.append(f"[{i}]: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
            continue
        if bbox[2] < 0 or bbox[3] < 0:
            problems.append(f"[{i}]: negative box size {bbox!r} (expected [x, y, w, h], not [x1, y1, x2, y2]?)")
            continue
        if not _finite(score):
            problems.append(f"[{i}]: score must be a finite number, got {score!r}")
            continue
        out.append({"image_id": image_id, "category_id": cat, "bbox": [float(v) for v in bbox], "score": float(score)})
    if unknown_images:
        problems.append(
            f"{len(unknown_images)} image_id(s) not in the GT, e.g. {sorted(map(str, unknown_images))[:5]} "
            f"(GT ids e.g. {sorted(image_ids, key=str)[:5]})"
        )
    if unknown_cats:
        problems.append(
            f"category_id(s) {sorted(unknown_cats, key=str)[:10]} not in the GT categories {sorted(cat_ids)[:20]}"
            " (80-class indices given for a 91-id COCO GT, or an off-by-one class offset?)"
        )
    if problems:
        shown = "\n  ".join(problems[:10])
        raise ValueError(f"{name}: invalid detections ({len(problems)} problem(s)):\n  {shown}")
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
