"""Evaluation harness: COCO-protocol AP with small-object AP for any dataset, and VisDrone done right.

Stages, each importable on its own:

- ground truth as COCO JSON (:mod:`.groundtruth`, :mod:`.visdrone`): official COCO files, any Ultralytics YOLO
  dataset (box w*h areas, class-index ids), original VisDrone annotations (ignored regions, "others", truncation and
  occlusion kept);
- predictions (:mod:`.predictions`): an Ultralytics model over a split, or a user's detections JSON, validated;
- metrics (:mod:`.coco_metrics`, :mod:`.visdrone_metrics`, :mod:`.protocols`): pycocotools (or faster-coco-eval)
  read at ``maxDets[-1]``, and the official VisDrone toolkit rules;
- report (:mod:`.report`) and the CLI functions (:mod:`.commands`).

Example:
    >>> from yolo_attn.evaluation import evaluate, format_table
    >>> print(format_table(evaluate("instances_val2017.json", "dets.json", max_dets=[1, 10, 100, 300])))
"""

from .coco_metrics import AITOD_BINS, BACKENDS, COCO_BINS, evaluate_coco
from .commands import CONVERT_KEYS, EVAL_KEYS, convert_command, eval_command
from .groundtruth import (
    AREA_SOURCE_COCO,
    AREA_SOURCE_YOLO,
    COCO_JSON_KEY,
    area_source,
    coco_gt_from_yolo,
    gt_for_split,
    list_split_images,
    load_coco_gt,
    resolve_dataset,
)
from .predictions import class_to_category_map, load_detections, match_images, predict_coco_detections
from .protocols import DEFAULT_MAX_DETS, PROTOCOLS, evaluate, normalize_max_dets, visdrone_coco_gt
from .report import format_table, save_json
from .visdrone import (
    VISDRONE_CATEGORIES,
    VISDRONE_NAMES,
    ConversionReport,
    convert_visdrone,
    parse_visdrone_annotation,
    visdrone_to_coco,
)
from .visdrone_metrics import evaluate_visdrone, ignore_filter, match_detections, voc_ap

__all__ = [
    "AITOD_BINS",
    "AREA_SOURCE_COCO",
    "AREA_SOURCE_YOLO",
    "BACKENDS",
    "COCO_BINS",
    "COCO_JSON_KEY",
    "CONVERT_KEYS",
    "DEFAULT_MAX_DETS",
    "EVAL_KEYS",
    "PROTOCOLS",
    "VISDRONE_CATEGORIES",
    "VISDRONE_NAMES",
    "ConversionReport",
    "area_source",
    "class_to_category_map",
    "coco_gt_from_yolo",
    "convert_command",
    "convert_visdrone",
    "eval_command",
    "evaluate",
    "evaluate_coco",
    "evaluate_visdrone",
    "format_table",
    "gt_for_split",
    "ignore_filter",
    "list_split_images",
    "load_coco_gt",
    "load_detections",
    "match_detections",
    "match_images",
    "normalize_max_dets",
    "parse_visdrone_annotation",
    "predict_coco_detections",
    "resolve_dataset",
    "save_json",
    "visdrone_coco_gt",
    "visdrone_to_coco",
    "voc_ap",
]
