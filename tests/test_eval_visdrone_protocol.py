"""protocol=visdrone: one hand-computable test per rule of the official toolkit (see visdrone_metrics docstring)."""

from __future__ import annotations

import numpy as np
import pytest
from eval_fixtures import VISDRONE_SAMPLE, coco_gt, det, make_visdrone_split, perturbed_detections, require

from yolo_attn.evaluation import convert_visdrone, evaluate, ignore_filter, load_coco_gt, match_detections, voc_ap
from yolo_attn.evaluation.visdrone_metrics import round_half_away


def vd_gt(images, anns, cats=(1, 2)):
    """COCO GT with the VisDrone metadata: category 0 = ignored regions, 11 = others (both outside categories)."""
    gt = coco_gt(images, anns, cats=list(cats))
    gt["yolo_attn"] = {
        "ignored_region_category_id": 0,
        "extra_categories": [{"id": 0, "name": "ignored-regions"}, {"id": 11, "name": "others"}],
    }
    return gt


REGION = {"category_id": 0, "iscrowd": 1}


# ---------------------------------------------------------------- rule 1: the ignored-region filter
def test_mask_is_painted_inclusive_and_half_covered_is_removed():
    # Region x=y=5, w=h=4 paints rows/cols 5..9 (5x5 pixels, 1-based inclusive). Box x=7 covers cols 8..11 of which
    # 8..9 are painted: 2x4 = 8 of 16 pixels = exactly 0.5 -> removed (an exclusive 4x4 paint would give 0.25, kept).
    boxes = [[5, 5, 4, 4], [7, 5, 4, 4], [8, 5, 4, 4], [-10, -10, 30, 30]]
    assert ignore_filter(boxes, [[5, 5, 4, 4]], 20, 20).tolist() == [False, False, True, True]
    # a region running past the border is clipped to the image, not an error
    assert ignore_filter([[16, 16, 3, 3]], [[15, 15, 10, 10]], 20, 20).tolist() == [False]
    assert ignore_filter([[16, 16, 3, 3]], np.zeros((0, 4)), 20, 20).tolist() == [True]


def test_rounding_is_half_away_from_zero():
    assert round_half_away(np.array([0.5, 1.5, 2.5, -0.5, -2.5, 2.49])).tolist() == [1, 2, 3, -1, -3, 2]
    # w = 4.5 -> 5 (half away): cols 8..12 hold 2 painted columns -> 8 / 20 = 0.4, kept.
    # numpy's half-to-even would give w = 4 -> 8 / 16 = 0.5, removed.
    assert ignore_filter([[7, 5, 4.5, 4]], [[5, 5, 4, 4]], 20, 20).tolist() == [True]


def test_detection_inside_ignored_region_is_removed_not_a_false_positive():
    gt = vd_gt(
        [(1, 100, 100)],
        [
            {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
            {"image_id": 1, "bbox": [50, 50, 40, 40], **REGION},
        ],
    )
    dets = [det(1, [60, 60, 10, 10], 0.95), det(1, [10, 10, 20, 20], 0.9)]
    r = evaluate(gt, dets, protocol="visdrone")
    assert r["AP"] == 1.0 and r["n_pred_removed_by_ignored_regions"] == 1
    assert evaluate(gt, dets, protocol="coco")["AP"] == pytest.approx(0.5)  # plain COCO: a FP ranked first


# ---------------------------------------------------------------- rule 2: first N detections across classes
def test_max_dets_cut_across_classes_removed_rows_take_no_slot_others_take_one():
    anns = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
        {"image_id": 1, "category_id": 2, "bbox": [50, 0, 10, 10]},
        {"image_id": 1, "bbox": [0, 50, 40, 40], **REGION},
    ]
    gt = vd_gt([(1, 100, 100)], anns)
    dets = [
        det(1, [5, 55, 10, 10], 0.99, 1),  # inside the region: removed, takes no slot
        det(1, [50, 0, 10, 10], 0.9, 2),
        det(1, [0, 0, 10, 10], 0.8, 1),
    ]
    r = evaluate(gt, dets, protocol="visdrone")
    assert r["AR@1"] == 0.5 and r["AR@10"] == 1.0  # slot 1 = the class-2 detection; pycocotools would say 1.0
    # pycocotools cuts per class: both classes keep their best detection at maxDets=1
    assert evaluate(gt, dets[1:], protocol="visdrone")["AR@1"] == 0.5
    assert evaluate(gt, dets[1:], protocol="visdrone-coco")["AR@1"] == 1.0
    r = evaluate(gt, [det(1, [80, 0, 10, 10], 0.999, 11), *dets], protocol="visdrone")  # "others" det: slot 1
    assert r["AR@1"] == 0.0 and r["AR@10"] == 1.0 and r["AP"] == 1.0


def test_at_most_500_detections_per_image():
    gt = vd_gt([(1, 4000, 4000)], [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}])
    fps = [det(1, [20 + 12 * (i % 300), 20 + 12 * (i // 300), 10, 10], 1 - i / 1e4) for i in range(500)]
    assert evaluate(gt, [*fps, det(1, [0, 0, 10, 10], 0.5)], protocol="visdrone")["AR@500"] == 0.0
    assert evaluate(gt, [*fps[:499], det(1, [0, 0, 10, 10], 0.5)], protocol="visdrone")["AR@500"] == 1.0


# ---------------------------------------------------------------- rule 3: greedy matching
def test_tie_goes_to_the_later_gt():
    # det1 has IoU 90/110 with both GTs -> the later GT (b) wins; det2 = b then only fits a (IoU 80/120).
    # thr 0.50-0.65: TP, TP -> 1; thr 0.70-0.80: TP, FP -> 0.5; thr 0.85-0.95: FP, TP -> 0.25.
    gt_boxes = np.array([[0, 0, 10, 10], [2, 0, 10, 10]], float)
    flags = match_detections(np.array([[1, 0, 10, 10], [2, 0, 10, 10]], float), gt_boxes, np.zeros(2, bool))
    assert flags[:, 0].tolist() == [1] * 7 + [0] * 3 and flags[:, 1].tolist() == [1] * 4 + [0] * 3 + [1] * 3
    gt = vd_gt([(1, 100, 100)], [{"image_id": 1, "category_id": 1, "bbox": b} for b in gt_boxes.tolist()])
    r = evaluate(gt, [det(1, [1, 0, 10, 10], 0.9), det(1, [2, 0, 10, 10], 0.8)], protocol="visdrone")
    assert (r["AP"], r["AP50"], r["AP75"]) == pytest.approx((0.625, 1.0, 0.5))  # earlier-wins would give 0.775


def test_ignore_flagged_gt_absorbs_several_detections_and_counts_in_recall_denominator():
    # A score-0 box of class 1 (iscrowd=1 in the JSON) absorbs detections by intersection / detection area, but
    # the toolkit's recall denominator numel(gtMatch) still counts it: recall 1/2.
    gt = vd_gt(
        [(1, 100, 100)],
        [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
            {"image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "iscrowd": 1},
        ],
    )
    dets = [det(1, [55, 55, 5, 5], 0.95), det(1, [52, 52, 5, 5], 0.94), det(1, [0, 0, 10, 10], 0.9)]
    r = evaluate(gt, dets, protocol="visdrone")
    assert r["AR@500"] == 0.5 and r["AP"] == 0.5


def test_detection_on_others_box_is_a_false_positive():
    gt = vd_gt(
        [(1, 100, 100)],
        [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
            {"image_id": 1, "category_id": 11, "bbox": [50, 50, 20, 20], "iscrowd": 1},
        ],
    )
    r = evaluate(gt, [det(1, [50, 50, 20, 20], 0.95), det(1, [0, 0, 10, 10], 0.9)], protocol="visdrone")
    assert r["AP"] == 0.5


# ---------------------------------------------------------------- rule 4: VOC all-point AP
def test_voc_all_point_ap():
    # TP, FP, TP with 3 GT: envelope 1 up to recall 1/3, 2/3 up to 2/3 -> AP = 1/3 + 2/9 = 5/9.
    assert voc_ap([1 / 3, 1 / 3, 2 / 3], [1, 0.5, 2 / 3]) == pytest.approx(5 / 9)
    assert voc_ap([], []) == 0.0
    gt = vd_gt([(1, 100, 100)], [{"image_id": 1, "category_id": 1, "bbox": [20 * i, 0, 10, 10]} for i in range(3)])
    dets = [det(1, [0, 0, 10, 10], 0.9), det(1, [0, 50, 10, 10], 0.8), det(1, [20, 0, 10, 10], 0.7)]
    assert evaluate(gt, dets, protocol="visdrone")["AP"] == pytest.approx(5 / 9)
    assert evaluate(gt, dets, protocol="coco")["AP"] == pytest.approx(56 / 101)  # COCO's 101-point interpolation


# ---------------------------------------------------------------- rule 5: weighted class average
def test_class_average_weighted_by_images_containing_the_class():
    anns = [{"image_id": i, "category_id": 1, "bbox": [0, 0, 10, 10]} for i in (1, 2, 3)]
    anns.append({"image_id": 4, "category_id": 2, "bbox": [0, 0, 10, 10]})
    gt = vd_gt([(i, 100, 100) for i in (1, 2, 3, 4, 5)], anns, cats=(1, 2, 3))
    r = evaluate(gt, [det(i, [0, 0, 10, 10], 0.9) for i in (1, 2, 3)], protocol="visdrone")
    assert r["AP"] == pytest.approx(0.75)  # (3 * 1 + 1 * 0) / 4; a plain class mean would be 0.5
    per = {c["id"]: c for c in r["per_class"]}
    assert (per[1]["n_images"], per[2]["n_images"], per[3]["n_images"], per[3]["AP"]) == (3, 1, 0, -1.0)


def test_empty_predictions_and_images_without_gt():
    gt = vd_gt([(1, 100, 100), (2, 100, 100)], [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}])
    r = evaluate(gt, [], protocol="visdrone")
    assert r["AP"] == 0.0 and r["AR@500"] == 0.0 and r["APs"] is None
    assert evaluate(gt, [det(2, [0, 0, 10, 10], 0.9)], protocol="visdrone")["AP"] == 0.0


# ---------------------------------------------------------------- real VisDrone val annotations
@pytest.fixture(scope="module")
def real_gt(tmp_path_factory):
    require(VISDRONE_SAMPLE)
    tmp = tmp_path_factory.mktemp("vdp")
    report = convert_visdrone(make_visdrone_split(tmp), tmp / "out", images="none")
    return load_coco_gt(report.outputs["coco_json"])


def test_real_gt_as_detections(real_gt):
    dets = [
        det(a["image_id"], a["bbox"], 1.0, a["category_id"])
        for a in real_gt["annotations"]
        if 1 <= a["category_id"] <= 10 and not a["iscrowd"]
    ]
    r = evaluate(real_gt, dets, protocol="visdrone")
    assert r["AP"] == 1.0 and r["AR@500"] == 1.0 and r["AR@1"] < r["AR@10"] < r["AR@100"] <= 1.0
    assert r["gt_counts"]["removed_by_ignored_regions"] == r["n_pred_removed_by_ignored_regions"] > 0
    per = {c["name"]: c for c in r["per_class"]}
    assert per["bus"]["n_gt"] <= 8 and per["pedestrian"]["n_images"] >= per["bus"]["n_images"]
    assert evaluate(real_gt, dets, protocol="visdrone-coco")["AP"] == 1.0


def test_real_perturbed_protocols_differ_but_stay_close(real_gt):
    dets = perturbed_detections(
        {**real_gt, "annotations": [a for a in real_gt["annotations"] if 1 <= a["category_id"] <= 10]}, seed=3
    )
    r = {p: evaluate(real_gt, dets, protocol=p)["AP"] for p in ("coco", "visdrone-coco", "visdrone")}
    assert 0.2 < r["visdrone"] < 0.95 and abs(r["visdrone"] - r["visdrone-coco"]) < 0.1
    assert r["visdrone-coco"] >= r["coco"]  # crowd regions can only absorb false positives
