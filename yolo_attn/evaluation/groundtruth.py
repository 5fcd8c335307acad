"""Ground truth as COCO JSON dicts: from a COCO annotation file, from any Ultralytics YOLO dataset, or from VisDrone.

Conventions (stated in every JSON this module writes, under the top-level ``yolo_attn`` key):

- **COCO annotation file**: used as is (category ids stay in the file's space, e.g. COCO's 91-id space). Missing
  ``iscrowd`` is filled with 0 and missing ``area`` with box w*h (then ``area_source`` says so).
- **YOLO labels**: ``category_id`` = Ultralytics class index (0-based), ``area`` = box w*h in pixels
  (``area_source = "box w*h (YOLO labels)"``), image ``id`` = ``int(stem)`` when every stem is numeric and unique
  (the ids Ultralytics' own ``predictions.json`` uses), else 1..N in sorted file order; ``file_name`` = base name.
  Rows are read as Ultralytics reads them: polygon rows become their bounding box, exact duplicate rows are dropped,
  and a label file Ultralytics would reject as corrupt drops its image (reported).
- **VisDrone**: see :mod:`yolo_attn.evaluation.visdrone`.

A dataset YAML may name an official COCO JSON per split with the key ``coco_json`` (paths relative to the dataset
root), e.g. ``coco_json: {val: annotations/instances_val2017.json}`` (a bare string means the val split);
:func:`gt_for_split` then uses that file.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .visdrone import convert_visdrone, visdrone_to_coco

__all__ = [
    "AREA_SOURCE_COCO",
    "AREA_SOURCE_YOLO",
    "COCO_JSON_KEY",
    "area_source",
    "coco_gt_from_yolo",
    "convert_visdrone",
    "gt_for_split",
    "list_split_images",
    "load_coco_gt",
    "resolve_dataset",
    "visdrone_to_coco",
]

LOGGER = logging.getLogger(__name__)
AREA_SOURCE_COCO = "mask area (COCO JSON)"
AREA_SOURCE_YOLO = "box w*h (YOLO labels)"
COCO_JSON_KEY = "coco_json"
_IMG_SUFFIXES = {"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpeg2000", "jpg", "mpo", "png", "tif", "tiff"}
_IMG_SUFFIXES |= {"webp", "pfm"}


def _read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSON file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def load_coco_gt(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Load and validate a COCO ground-truth dict (deep copy; the input is never modified).

    Args:
        source (str | Path | dict): path to a COCO annotation JSON, or the dict itself.

    Returns:
        (dict): the GT with ``iscrowd`` / ``area`` / ``id`` filled where missing.

    Raises:
        ValueError: with the first problems listed, when required keys or fields are missing or inconsistent.
    """
    gt = copy.deepcopy(source) if isinstance(source, dict) else _read_json(source)
    name = "GT dict" if isinstance(source, dict) else str(source)
    if not isinstance(gt, dict):
        raise ValueError(f"{name}: a COCO GT JSON must be an object with images/annotations/categories")
    missing = [k for k in ("images", "categories") if not isinstance(gt.get(k), list)]
    if missing:
        raise ValueError(f"{name}: missing or non-list key(s) {missing}; is this a detections file rather than GT?")
    gt.setdefault("annotations", [])
    problems: list[str] = []
    image_ids = set()
    for i, img in enumerate(gt["images"]):
        if not isinstance(img, dict) or "id" not in img:
            problems.append(f"images[{i}]: no 'id'")
            continue
        image_ids.add(img["id"])
    if len(image_ids) != len(gt["images"]):
        problems.append("image ids are not unique")
    cat_ids = [c.get("id") for c in gt["categories"] if isinstance(c, dict)]
    if len(cat_ids) != len(gt["categories"]) or None in cat_ids or len(set(cat_ids)) != len(cat_ids):
        problems.append("every category needs a unique 'id'")
    filled_area = 0
    ann_ids = set()
    for i, ann in enumerate(gt["annotations"]):
        if not isinstance(ann, dict):
            problems.append(f"annotations[{i}]: not an object")
            continue
        if ann.get("image_id") not in image_ids:
            problems.append(f"annotations[{i}]: image_id {ann.get('image_id')!r} not in images")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)):
            problems.append(f"annotations[{i}]: bbox must be [x, y, w, h] numbers, got {bbox!r}")
            continue
        if "category_id" not in ann:
            problems.append(f"annotations[{i}]: no category_id")
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(bbox[2]) * float(bbox[3])
            filled_area += 1
        if "id" not in ann or ann["id"] in ann_ids:
            ann["id"] = None  # renumbered below: pycocotools indexes annotations by id
        ann_ids.add(ann["id"])
        if len(problems) > 20:
            break
    if problems:
        shown = "\n  ".join(problems[:10])
        raise ValueError(f"{name}: invalid COCO ground truth ({len(problems)} problem(s)):\n  {shown}")
    if any(a.get("id") is None for a in gt["annotations"]):
        for i, ann in enumerate(gt["annotations"], 1):
            ann["id"] = i
    if filled_area:
        meta = gt.setdefault("yolo_attn", {})
        meta["area_source"] = f"box w*h (filled in: {filled_area} GT annotations had no 'area')"
    return gt


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def area_source(gt: dict[str, Any]) -> str:
    """Say where the GT ``area`` values (which decide the size bins) come from."""
    meta = gt.get("yolo_attn") or {}
    if meta.get("area_source"):
        return str(meta["area_source"])
    info = gt.get("info") if isinstance(gt.get("info"), dict) else {}
    if info.get("area_source"):
        return str(info["area_source"])
    if any(a.get("segmentation") for a in gt.get("annotations", [])[:1000]):
        return AREA_SOURCE_COCO
    return "'area' field of the GT JSON"


def resolve_dataset(data: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Resolve a dataset YAML with Ultralytics' own ``check_det_dataset`` (a dict is returned unchanged)."""
    if isinstance(data, dict):
        return data
    from ultralytics.data.utils import check_det_dataset

    return check_det_dataset(str(data))


def list_split_images(data: dict[str, Any], split: str = "val") -> list[Path]:
    """Image files of a split exactly as Ultralytics lists them (folders recursively, ``.txt`` lists, lists of both).

    Args:
        data (dict): dataset dict from :func:`resolve_dataset`.
        split (str): ``train``, ``val`` or ``test``.

    Returns:
        (list[Path]): sorted image paths.
    """
    src = data.get(split)
    if not src:
        raise ValueError(f"dataset has no '{split}' split (keys: {sorted(k for k in data if isinstance(k, str))})")
    files: list[str] = []
    for p in src if isinstance(src, list) else [src]:
        p = Path(p)
        if p.is_dir():
            files += [str(q) for q in p.rglob("*.*")]
        elif p.is_file():
            parent = str(p.parent) + os.sep
            lines = p.read_text(encoding="utf-8-sig").strip().splitlines()
            files += [x.replace("./", parent, 1) if x.startswith("./") else x for x in lines]
        else:
            raise FileNotFoundError(f"split '{split}' path does not exist: {p}")
    images = sorted(Path(f) for f in files if f.rpartition(".")[-1].lower() in _IMG_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no images found for split '{split}' in {src}")
    return images


def _label_path(img: Path) -> Path:
    """Ultralytics' rule: replace the last ``/images/`` with ``/labels/`` and the suffix with ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(str(img).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def _read_yolo_labels(path: Path, nc: int) -> tuple[np.ndarray | None, str]:
    """Rows ``cls cx cy w h`` (normalised) as Ultralytics' ``verify_image_label`` reads them.

    Returns:
        (tuple): ``(array (N, 5) float32 | None if corrupt, message)``.
    """
    if not path.is_file():
        return np.zeros((0, 5), np.float32), ""
    try:
        rows = [x.split() for x in path.read_text(encoding="utf-8-sig").strip().splitlines() if x.strip()]
        if any(len(x) > 6 for x in rows):  # polygon rows -> their bounding box, as Ultralytics does
            if any(len(x) == 5 for x in rows):
                return None, "labels mix segment and detection rows"
            boxes = []
            for x in rows:
                xy = np.array(x[1:], dtype=np.float32).reshape(-1, 2)
                x0, y0, x1, y1 = xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()
                boxes.append([float(x[0]), (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])
            lb = np.array(boxes, dtype=np.float32).reshape(-1, 5)
        else:
            lb = np.array(rows, dtype=np.float32)
        if not len(lb):
            return np.zeros((0, 5), np.float32), ""
        if lb.ndim != 2 or lb.shape[1] != 5:
            return None, f"labels require 5 columns, got {lb.shape[-1] if lb.ndim == 2 else 'ragged rows'}"
        if lb[:, 1:].max() > 1.01:
            return None, "non-normalized or out of bounds coordinates"
        if lb.min() < 0 and not (lb.min() >= -0.01 and lb[:, 3:5].min() >= 0):
            return None, "negative label values"
        if (lb[:, 0] % 1 != 0).any():
            return None, "non-integer class labels"
        if lb[:, 0].max() >= nc:
            return None, f"label class {int(lb[:, 0].max())} exceeds dataset class count {nc}"
        _, keep = np.unique(lb, axis=0, return_index=True)
        msg = ""
        if len(keep) < len(lb):
            msg = f"{len(lb) - len(keep)} duplicate labels removed"
            lb = lb[np.sort(keep)]
        return lb, msg
    except (ValueError, UnicodeDecodeError, OSError) as e:
        return None, str(e)


def coco_gt_from_yolo(
    data: str | Path | dict[str, Any], split: str = "val", images: list[Path] | None = None
) -> dict[str, Any]:
    """Build COCO ground truth from an Ultralytics YOLO-format dataset split.

    Args:
        data (str | Path | dict): dataset YAML (resolved with Ultralytics' ``check_det_dataset``) or resolved dict.
        split (str): split to read.
        images (list[Path], optional): image files to use instead of listing the split.

    Returns:
        (dict): COCO GT; ``category_id`` = class index, ``area`` = box w*h in pixels, see the module docstring.
    """
    from PIL import Image

    data = resolve_dataset(data)
    names = data["names"]
    names = names if isinstance(names, dict) else dict(enumerate(names))
    images = list_split_images(data, split) if images is None else [Path(p) for p in images]
    stems = [p.stem for p in images]
    numeric = all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems)
    base_names = [p.name for p in images]
    unique_names = len(set(base_names)) == len(base_names)
    root = Path(data.get("path") or Path(os.path.commonpath([str(p) for p in images])))
    out_images, annotations, problems = [], [], []
    for i, img_path in enumerate(images, 1):
        try:
            with Image.open(img_path) as im:
                width, height = im.size
                if im.format in {"JPEG", "MPO", "PNG"} and im.getexif().get(274) in {5, 6, 7, 8}:
                    width, height = height, width  # cv2 applies EXIF orientation when Ultralytics reads the image
        except Exception as e:  # Ultralytics also skips images it cannot open
            problems.append(f"{img_path}: cannot open image ({e}); image skipped")
            continue
        lb, msg = _read_yolo_labels(_label_path(img_path), len(names))
        if lb is None:
            problems.append(f"{_label_path(img_path)}: {msg}; image skipped (Ultralytics marks it corrupt)")
            continue
        if msg:
            problems.append(f"{_label_path(img_path)}: {msg}")
        image_id = int(img_path.stem) if numeric else i
        file_name = img_path.name if unique_names else _relative(img_path, root)
        out_images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        for cls, cx, cy, w, h in lb.tolist():
            bw, bh = w * width, h * height
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": [(cx - w / 2) * width, (cy - h / 2) * height, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    for p in problems:
        LOGGER.warning(p)
    return {
        "info": {"description": f"{data.get('yaml_file', 'dataset')} split={split} from YOLO labels (yolo-attn)"},
        "images": out_images,
        "annotations": annotations,
        "categories": [{"id": int(k), "name": str(v)} for k, v in sorted(names.items())],
        "yolo_attn": {
            "area_source": AREA_SOURCE_YOLO,
            "category_id_convention": "category_id = Ultralytics class index (0-based)",
            "image_id_convention": "int(file stem)" if numeric else "1-based index in sorted file order",
            "issues": problems,
        },
    }


def _relative(p: Path, root: Path) -> str:
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def gt_for_split(data: dict[str, Any], split: str = "val", images: list[Path] | None = None) -> dict[str, Any]:
    """Ground truth for a split: the ``coco_json`` file the dataset YAML names for it, else built from YOLO labels."""
    named = data.get(COCO_JSON_KEY)
    if isinstance(named, str):
        named = {"val": named}  # a bare path is taken to be the val split's JSON, never silently reused for others
    if isinstance(named, dict) and named.get(split):
        path = Path(named[split])
        if not path.is_absolute():
            path = Path(data["path"]) / path
        return load_coco_gt(path)
    return coco_gt_from_yolo(data, split, images=images)
