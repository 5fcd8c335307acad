"""The two functions behind ``yolo-attn eval ...`` and ``yolo-attn convert <kind> ...``.

Arguments arrive as keyword arguments already parsed the way the ``yolo`` CLI parses ``key=value`` tokens (numbers,
lists, booleans, None via ``ast.literal_eval``; anything else a string). Unknown or missing keys raise ``ValueError``
listing the valid ones.

Examples:
    yolo-attn eval gt=instances_val2017.json pred=dets.json max_dets=[1,10,100,300]
    yolo-attn eval model=runs/detect/train/weights/best.pt data=VisDrone.yaml protocol=visdrone
    yolo-attn convert visdrone src=VisDrone2019-DET-val out=datasets/VisDrone
    yolo-attn convert yolo data=my.yaml split=val out=my_val_gt.json
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .groundtruth import coco_gt_from_yolo, gt_for_split, list_split_images, load_coco_gt, resolve_dataset
from .predictions import class_to_category_map, match_images, predict_coco_detections
from .protocols import PROTOCOLS, evaluate, normalize_max_dets
from .report import format_table, save_json
from .visdrone import convert_visdrone

__all__ = ["CONVERT_KEYS", "EVAL_KEYS", "convert_command", "eval_command"]

LOGGER = logging.getLogger(__name__)

# key -> (default, help)
EVAL_KEYS: dict[str, tuple[Any, str]] = {
    "gt": (None, "COCO GT JSON (with pred=, or to override the dataset's GT with model=)"),
    "pred": (None, "COCO detections JSON to evaluate (needs gt=)"),
    "model": (None, "Ultralytics checkpoint to run over a dataset split (needs data=)"),
    "data": (None, "dataset YAML (optional key coco_json: {split: path} names an official COCO GT JSON)"),
    "split": ("val", "dataset split for model="),
    "protocol": ("coco", f"one of {', '.join(PROTOCOLS)}"),
    "max_dets": (None, "int N (-> [1, 10, N]) or list; default [1,10,100], visdrone protocols [1,10,100,500]"),
    "bins": ("coco", "coco or aitod (adds AI-TOD tiny-object bins)"),
    "backend": ("pycocotools", "pycocotools or faster-coco-eval"),
    "save": (None, "metrics JSON path (default <save_dir>/metrics_...json; False: do not write)"),
    "save_dir": ("runs/yolo-attn-eval", "folder for the metrics, predictions and derived GT JSON files"),
    "conf": (0.001, "model=: confidence threshold"),
    "iou": (0.7, "model=: NMS IoU threshold"),
    "max_det": (None, "model=: detections per image after NMS (default 300; 500 for visdrone protocols)"),
    "imgsz": (None, "model=: inference size (default: the checkpoint's)"),
    "device": (None, "model=: device, e.g. cpu or 0"),
    "batch": (1, "model=: inference batch size"),
    "half": (False, "model=: FP16 inference"),
    "ultralytics_val": (False, "model=: also run Ultralytics val and show its mAP separately"),
    "verbose": (True, "print the table"),
}
CONVERT_KEYS: dict[str, dict[str, tuple[Any, str]]] = {
    "visdrone": {
        "src": (None, "VisDrone split folder with images/ and annotations/ (or a folder of such split folders)"),
        "out": (None, "dataset root to write labels/<split>, images/<split>, annotations/<split>_coco.json"),
        "split": (None, "split name (default from src, e.g. VisDrone2019-DET-val -> val)"),
        "images": ("copy", "copy, move, link or none"),
        "verbose": (True, "print the report"),
    },
    "yolo": {
        "data": (None, "dataset YAML"),
        "split": ("val", "split"),
        "out": (None, "output COCO GT JSON path"),
        "verbose": (True, "print a summary"),
    },
}


def _check_keys(given: dict[str, Any], valid: dict[str, tuple[Any, str]], what: str) -> dict[str, Any]:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        listing = "\n  ".join(f"{k}={v[0]!r}  {v[1]}" for k, v in valid.items())
        raise ValueError(f"{what}: unknown key(s) {unknown}. Valid keys:\n  {listing}")
    return {k: given.get(k, v[0]) for k, v in valid.items()}


def _path_or_none(v: Any) -> str | None:
    return None if v in (None, "", False) else str(v)


def eval_command(**kwargs: Any) -> dict[str, Any]:
    """``yolo-attn eval``: metrics from ``gt=`` + ``pred=`` JSON files, or from ``model=`` on ``data=`` ``split=``.

    Args:
        **kwargs: keys of :data:`EVAL_KEYS` (gt, pred, model, data, split, protocol, max_dets, bins, backend, save,
            save_dir, conf, iou, max_det, imgsz, device, batch, half, ultralytics_val, verbose).

    Returns:
        (dict): the metrics (see :func:`~yolo_attn.evaluation.evaluate`) plus ``files`` (paths written) and, for
            ``model=``, the inference settings and category mapping used.

    Raises:
        ValueError: unknown keys, or neither ``gt``+``pred`` nor ``model``+``data`` given.
    """
    a = _check_keys(kwargs, EVAL_KEYS, "yolo-attn eval")
    protocol = str(a["protocol"])
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    md = normalize_max_dets(a["max_dets"], protocol)
    gt_path, pred_path, model, data = (_path_or_none(a[k]) for k in ("gt", "pred", "model", "data"))
    save_dir = Path(str(a["save_dir"]))
    files: dict[str, str] = {}

    if model and pred_path:
        raise ValueError("yolo-attn eval: give either pred= (with gt=) or model= (with data=), not both")
    if model:
        if not data:
            raise ValueError("yolo-attn eval: model= needs data=<dataset.yaml> (and optionally split=, gt=)")
        split = str(a["split"])
        result = _eval_model(model, data, split, gt_path, protocol, md, a, save_dir, files)
        default_save = save_dir / f"metrics_{split}_{protocol}.json"
    elif pred_path or gt_path:
        if not (pred_path and gt_path):
            raise ValueError("yolo-attn eval: gt= and pred= go together (or use model= with data=)")
        result = evaluate(gt_path, pred_path, protocol=protocol, max_dets=md, bins=a["bins"], backend=a["backend"])
        result["gt"], result["pred"] = gt_path, pred_path
        default_save = save_dir / f"metrics_{protocol}.json"
    else:
        listing = ", ".join(EVAL_KEYS)
        raise ValueError(f"yolo-attn eval: give gt= and pred=, or model= and data=. Valid keys: {listing}")

    if a["save"] is not False:
        save = Path(str(a["save"])) if a["save"] not in (None, "", True) else default_save
        files["metrics"] = str(save)
        result["files"] = files
        save_json(result, save)
    else:
        result["files"] = files
    if a["verbose"]:
        print(format_table(result))
    return result


def _eval_model(
    model: str,
    data_arg: str,
    split: str,
    gt_path: str | None,
    protocol: str,
    md: list[int],
    a: dict[str, Any],
    save_dir: Path,
    files: dict[str, str],
) -> dict[str, Any]:
    from ultralytics import YOLO

    data = resolve_dataset(data_arg)
    images = list_split_images(data, split)
    gt = load_coco_gt(gt_path) if gt_path else gt_for_split(data, split, images)
    if protocol != "coco" and (gt.get("yolo_attn") or {}).get("ignored_region_category_id") is None:
        raise ValueError(
            f"protocol={protocol} needs a GT JSON that keeps VisDrone's ignored regions: name it in the dataset YAML "
            "(coco_json: {val: annotations/val_coco.json}, written by `yolo-attn convert visdrone`) or pass gt="
        )
    matched, unmatched = match_images(images, gt)
    if not matched:
        raise ValueError(f"none of the {len(images)} '{split}' images has a GT entry with the same file name")
    if unmatched:
        LOGGER.warning(f"{len(unmatched)} '{split}' images have no GT entry and are not evaluated, e.g. {unmatched[0]}")
    names = data["names"] if isinstance(data["names"], dict) else dict(enumerate(data["names"]))
    class_map, rule = class_to_category_map(names, gt)
    yolo = YOLO(str(model))
    model_names = dict(yolo.names)
    if len(model_names) != len(names):
        raise ValueError(f"model has {len(model_names)} classes, dataset {len(names)}: wrong model or data?")
    if [model_names[i] for i in sorted(model_names)] != [names[i] for i in sorted(names)]:
        LOGGER.warning("model class names differ from the dataset's; class indices are mapped with the dataset names")
    max_det = int(a["max_det"]) if a["max_det"] is not None else (300 if protocol == "coco" else max(300, md[-1]))
    settings = {
        "conf": a["conf"],
        "iou": a["iou"],
        "max_det": max_det,
        "imgsz": a["imgsz"],
        "device": a["device"],
        "batch": a["batch"],
        "half": a["half"],
    }
    dets = predict_coco_detections(yolo, matched, class_map, **settings)
    pred_file = save_json(dets, save_dir / f"predictions_{split}.json")
    files["predictions"] = str(pred_file)
    if (gt.get("yolo_attn") or {}).get("category_id_convention"):  # derived from labels: save it for gt= reuse
        files["gt"] = str(save_json(gt, save_dir / f"gt_{split}.json"))
    result = evaluate(
        gt, dets, protocol=protocol, max_dets=md, bins=a["bins"], backend=a["backend"], img_ids=list(matched.values())
    )
    result.update(model=model, data=str(data.get("yaml_file", data_arg)), split=split, inference=settings)
    result["category_mapping"] = rule
    if unmatched:
        result.setdefault("notes", []).append(f"{len(unmatched)} split images without a GT entry were not evaluated")
    if a["ultralytics_val"]:
        kw = {k: v for k, v in settings.items() if v is not None and k != "half"}
        m = yolo.val(
            data=data_arg,
            split=split,
            plots=False,
            save_json=False,
            verbose=False,
            workers=0,
            project=str(save_dir.resolve()),
            name="ultralytics_val",
            exist_ok=True,
            **kw,
        )
        result["ultralytics"] = {
            "mAP50": float(m.box.map50),
            "mAP50-95": float(m.box.map),
            "note": "Ultralytics' own matcher/interpolation, no crowd or ignore handling; not comparable",
        }
    return result


def convert_command(kind: str, **kwargs: Any) -> dict[str, Any]:
    """``yolo-attn convert <kind>``: ``visdrone`` (labels + COCO GT with ignored regions) or ``yolo`` (GT JSON).

    Args:
        kind (str): ``visdrone`` or ``yolo``.
        **kwargs: keys of :data:`CONVERT_KEYS` ``[kind]`` -- visdrone: src, out, split, images, verbose;
            yolo: data, split, out, verbose.

    Returns:
        (dict): for visdrone the report (``counts``, ``per_class``, ``issues``, ``outputs``; one entry per split
            under ``splits`` when ``src`` holds several); for yolo the output path and counts.
    """
    if kind not in CONVERT_KEYS:
        raise ValueError(f"yolo-attn convert: unknown kind {kind!r}; expected one of {', '.join(CONVERT_KEYS)}")
    a = _check_keys(kwargs, CONVERT_KEYS[kind], f"yolo-attn convert {kind}")
    missing = [k for k in ("src", "out", "data") if k in a and a[k] in (None, "")]
    if missing:
        raise ValueError(f"yolo-attn convert {kind}: missing required key(s) {missing}; valid: {list(a)}")
    if kind == "visdrone":
        src = Path(str(a["src"]))
        split_dirs = [src] if (src / "annotations").is_dir() or not src.is_dir() else []
        split_dirs = split_dirs or sorted(p for p in src.iterdir() if (p / "annotations").is_dir())
        if not split_dirs:
            raise ValueError(f"{src}: no annotations/ folder (expected a VisDrone split folder or a parent of them)")
        reports = {}
        for d in split_dirs:
            split = str(a["split"]) if a["split"] and len(split_dirs) == 1 else None
            r = convert_visdrone(d, str(a["out"]), split=split, images=str(a["images"]), verbose=bool(a["verbose"]))
            reports[d.name] = r.to_dict()
        return next(iter(reports.values())) if len(reports) == 1 else {"splits": reports}
    gt = coco_gt_from_yolo(str(a["data"]), split=str(a["split"]))
    out = save_json(gt, str(a["out"]))
    summary = {
        "outputs": {"coco_json": str(out)},
        "counts": {"images": len(gt["images"]), "annotations": len(gt["annotations"])},
        "issues": gt["yolo_attn"]["issues"],
    }
    if a["verbose"]:
        n_img, n_box = len(gt["images"]), len(gt["annotations"])
        print(f"wrote {out}: {n_img} images, {n_box} boxes ({gt['yolo_attn']['area_source']})")
        for issue in summary["issues"]:
            print(f"  {issue}")
    return summary
