"""COCO-protocol metrics: hand-computable cases, real coco128 data against direct pycocotools, backend equality."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_fixtures import (
    COCO128,
    COCO128_JSON,
    STAT_KEYS,
    coco_gt,
    det,
    perturbed_detections,
    pycocotools_direct,
    require,
)

from yolo_attn.evaluation import (
    coco_gt_from_yolo,
    evaluate,
    format_table,
    load_coco_gt,
    load_detections,
    visdrone_coco_gt,
)

BACKENDS = ["pycocotools", "faster-coco-eval"]


# ---------------------------------------------------------------- hand-built cases (AP computable on paper)
@pytest.mark.parametrize("backend", BACKENDS)
def test_crowd_absorbs_detection(backend):
    # One normal GT and one crowd region; the highest-scoring detection lies inside the crowd region.
    # With the crowd it is ignored -> AP 1. Without it (plain GT) it is a FP ranked first -> precision 1/2 at
    # recall 1 on all 101 recall points -> AP 0.5.
    gt = coco_gt(
        [(1, 200, 200)],
        [
            {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
            {"image_id": 1, "category_id": 1, "bbox": [100, 100, 80, 80], "iscrowd": 1},
        ],
    )
    dets = [det(1, [120, 120, 20, 20], 0.95), det(1, [10, 10, 20, 20], 0.9)]
    assert evaluate(gt, dets, backend=backend)["AP"] == pytest.approx(1.0)
    plain = {**gt, "annotations": gt["annotations"][:1]}
    assert evaluate(plain, dets, backend=backend)["AP"] == pytest.approx(0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_detection_in_ignored_region_visdrone_coco(backend):
    # Ignored regions (category 0) only work when copied into every class as crowd boxes.
    gt = coco_gt(
        [(1, 200, 200)],
        [
            {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
            {"image_id": 1, "category_id": 0, "bbox": [100, 100, 80, 80], "iscrowd": 1},
        ],
        cats=[1, 2],
    )
    gt["yolo_attn"] = {"ignored_region_category_id": 0}
    dets = [det(1, [120, 120, 20, 20], 0.95), det(1, [10, 10, 20, 20], 0.9)]
    assert evaluate(gt, dets, protocol="coco", backend=backend)["AP"] == pytest.approx(0.5)
    r = evaluate(gt, dets, protocol="visdrone-coco", backend=backend)
    assert r["AP"] == pytest.approx(1.0) and r["max_dets"] == [1, 10, 100, 500]
    crowd = [a for a in visdrone_coco_gt(gt)["annotations"] if a.get("ignored_region")]
    assert sorted(a["category_id"] for a in crowd) == [1, 2] and all(a["iscrowd"] == 1 for a in crowd)


@pytest.mark.parametrize("backend", BACKENDS)
def test_more_than_100_detections_read_at_last_maxdet(backend):
    # 149 FPs outscore the single TP (rank 150). At maxDets 100 the TP is cut: AP 0. At 500 it counts:
    # precision 1/150 at recall 1 -> AP = 1/150. pycocotools' summarize() still prints the maxDets=100 value.
    gt = coco_gt([(1, 2000, 2000)], [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}])
    dets = [det(1, [20 + 12 * (i % 100), 20 + 12 * (i // 100), 10, 10], 1.0 - i / 1000) for i in range(149)]
    dets.append(det(1, [0, 0, 10, 10], 0.5))
    assert evaluate(gt, dets, backend=backend)["AP"] == 0.0
    r = evaluate(gt, dets, max_dets=[1, 10, 100, 500], backend=backend)
    assert r["AP"] == pytest.approx(1 / 150) and r["AR@500"] == 1.0 and r["AR@100"] == 0.0
    assert r["APs"] == pytest.approx(1 / 150)  # bins also read at maxDets[-1]
    stats, _ = pycocotools_direct(gt, dets, max_dets=[1, 10, 100, 500])
    assert stats[0] == 0.0  # the summarize() bug this harness avoids


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_predictions(backend):
    gt = coco_gt(
        [(1, 100, 100), (2, 100, 100)], [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}], cats=[1, 2]
    )
    r = evaluate(gt, [], backend=backend)
    assert r["AP"] == 0.0 and r["AR@100"] == 0.0 and r["n_pred"] == 0
    assert r["APm"] == -1 and r["APl"] == -1  # no GT in those bins: undefined, as pycocotools
    assert [c["AP"] for c in r["per_class"]] == [0.0, -1.0]
    assert "n/a" in format_table(r)


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_without_gt_and_class_never_predicted(backend):
    # Image 2 has no GT; its detection (score 0.95) is a FP ranked above image 1's TP -> class 1 AP 0.5.
    # Class 2 has GT but is never predicted -> AP 0; class 3 has neither GT nor detections -> -1, excluded.
    gt = coco_gt(
        [(1, 100, 100), (2, 100, 100), (3, 100, 100)],
        [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]},
            {"image_id": 1, "category_id": 2, "bbox": [50, 50, 40, 40]},
        ],
        cats=[1, 2, 3],
    )
    dets = [det(2, [0, 0, 40, 40], 0.95), det(1, [0, 0, 40, 40], 0.9)]
    r = evaluate(gt, dets, backend=backend)
    per = {c["id"]: c for c in r["per_class"]}
    assert per[1]["AP"] == pytest.approx(0.5) and per[2]["AP"] == 0.0 and per[3]["AP"] == -1.0
    assert r["AP"] == pytest.approx(0.25)
    assert per[2]["n_gt"] == 1 and per[2]["n_pred"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_size_bins_and_counts(backend):
    # small GT found, large GT missed, no medium GT; 32x32 = 1024 sits in both small and medium (inclusive limits).
    gt = coco_gt(
        [(1, 500, 500)],
        [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
            {"image_id": 1, "category_id": 1, "bbox": [100, 100, 200, 200]},
        ],
    )
    r = evaluate(gt, [det(1, [0, 0, 10, 10], 0.9)], backend=backend)
    assert (r["APs"], r["APm"], r["APl"]) == pytest.approx((1.0, -1.0, 0.0))
    assert r["gt_counts"] == {"all": 2, "small": 1, "medium": 0, "large": 1, "crowd_or_ignore": 0}
    edge = coco_gt([(1, 100, 100)], [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 32, 32]}])
    assert evaluate(edge, [], backend=backend)["gt_counts"]["medium"] == 1


def test_aitod_bins():
    gt = coco_gt(
        [(1, 500, 500)],
        [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 6, 6]},  # very tiny (36)
            {"image_id": 1, "category_id": 1, "bbox": [50, 50, 12, 12]},  # tiny (144)
            {"image_id": 1, "category_id": 1, "bbox": [100, 100, 20, 20]},  # AI-TOD small (400)
        ],
    )
    r = evaluate(gt, [det(1, [50, 50, 12, 12], 0.9)], bins="aitod")
    assert (r["APvt"], r["APt"], r["APs_aitod"], r["APm_aitod"]) == pytest.approx((0.0, 1.0, 0.0, -1.0))
    assert r["gt_counts"]["verytiny"] == 1 and r["gt_counts"]["small"] == 3  # COCO small keeps its definition


def test_detection_validation_errors():
    gt = coco_gt([(1, 100, 100)], [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}])
    with pytest.raises(ValueError, match="image_id"):
        load_detections([det(7, [0, 0, 1, 1], 0.5)], gt)
    with pytest.raises(ValueError, match="not in the GT categories"):
        load_detections([det(1, [0, 0, 1, 1], 0.5, category_id=0)], gt)
    with pytest.raises(ValueError, match="negative box size"):
        load_detections([det(1, [5, 5, -1, 1], 0.5)], gt)
    with pytest.raises(ValueError, match="missing"):
        load_detections([{"image_id": 1, "bbox": [0, 0, 1, 1]}], gt)
    with pytest.raises(ValueError, match="list"):
        load_detections(gt, gt)  # GT given as detections
    # Ultralytics' predictions.json uses the file stem when it is not numeric: matched by file name
    assert load_detections([det("000001", [0, 0, 1, 1], 0.5)], gt)[0]["image_id"] == 1
    with pytest.raises(ValueError, match="no 'id'|not in images"):
        load_coco_gt({"images": [{}], "categories": [], "annotations": []})


# ---------------------------------------------------------------- real data: coco128 with its original COCO JSON
@pytest.fixture(scope="module")
def coco128_gt():
    return load_coco_gt(require(COCO128_JSON))


@pytest.mark.parametrize("backend", BACKENDS)
def test_coco128_gt_as_predictions_is_perfect(coco128_gt, backend):
    dets = [det(a["image_id"], a["bbox"], 1.0, a["category_id"]) for a in coco128_gt["annotations"] if not a["iscrowd"]]
    r = evaluate(coco128_gt, dets, backend=backend)
    assert r["AP"] == 1.0 and r["AP50"] == 1.0 and r["APs"] == 1.0
    assert r["area_source"] == "mask area (COCO JSON)"
    assert r["gt_counts"]["all"] == 929 and r["gt_counts"]["crowd_or_ignore"] == 10


def test_coco128_perturbed_equals_direct_pycocotools(coco128_gt):
    dets = perturbed_detections(coco128_gt, seed=0)
    stats, ev = pycocotools_direct(coco128_gt, dets)
    r = evaluate(coco128_gt, dets)
    assert [r[k] for k in STAT_KEYS] == stats.tolist()  # exactly equal, not approximately
    assert 0.3 < r["AP"] < 0.9  # a realistic, non-trivial case
    # per-class AP equals the precision array of the direct call
    k = ev.params.catIds.index(1)
    s = ev.eval["precision"][:, :, k, 0, -1]
    assert r["per_class"][k]["AP"] == float(np.mean(s[s > -1]))
    # with a larger maxDets the numbers come from maxDets[-1], i.e. from the direct call's arrays at index -1
    r300 = evaluate(coco128_gt, dets, max_dets=[1, 10, 100, 300])
    _, ev300 = pycocotools_direct(coco128_gt, dets, max_dets=[1, 10, 100, 300])
    p = ev300.eval["precision"][:, :, :, 0, -1]
    assert r300["AP"] == float(np.mean(p[p > -1])) and r300["AR@300"] >= r300["AR@100"]


def test_faster_backend_identical_on_coco128(coco128_gt):
    dets = perturbed_detections(coco128_gt, seed=1)
    a = evaluate(coco128_gt, dets, backend="pycocotools", bins="aitod", max_dets=[1, 10, 100, 500])
    b = evaluate(coco128_gt, dets, backend="faster-coco-eval", bins="aitod", max_dets=[1, 10, 100, 500])
    keys = [k for k, v in a.items() if isinstance(v, float)]
    assert len(keys) >= 20
    for k in keys:
        assert b[k] == pytest.approx(a[k], abs=1e-12), k
    for ca, cb in zip(a["per_class"], b["per_class"]):
        assert cb["AP"] == pytest.approx(ca["AP"], abs=1e-12)
    assert a["gt_counts"] == b["gt_counts"]


def test_coco128_yolo_labels_agree_with_original_json(coco128_gt):
    from ultralytics.data.converter import coco80_to_coco91_class

    data = {"path": COCO128, "train": str(COCO128 / "images" / "train2017"), "names": _coco_names()}
    yolo_gt = coco_gt_from_yolo(data, split="train")
    assert yolo_gt["yolo_attn"]["area_source"] == "box w*h (YOLO labels)"
    # numeric stems -> image ids are the COCO ids
    assert {im["id"] for im in yolo_gt["images"]} == {im["id"] for im in coco128_gt["images"]}
    to80 = {c91: i for i, c91 in enumerate(coco80_to_coco91_class())}
    groups: dict[tuple[int, int], list] = {}
    for a in coco128_gt["annotations"]:
        if not a["iscrowd"]:
            groups.setdefault((a["image_id"], to80[a["category_id"]]), []).append(a["bbox"])
    mine: dict[tuple[int, int], list] = {}
    for a in yolo_gt["annotations"]:
        mine.setdefault((a["image_id"], a["category_id"]), []).append(a["bbox"])
    assert sum(map(len, groups.values())) == len(yolo_gt["annotations"]) == 929
    assert {k: len(v) for k, v in groups.items()} == {k: len(v) for k, v in mine.items()}
    worst = 0.0
    for key, boxes in groups.items():  # nearest-box matching within (image, class): labels are 6-decimal rounded
        d = np.abs(np.array(boxes)[:, None, :] - np.array(mine[key])[None, :, :]).max(axis=2)
        assert len(set(d.argmin(axis=1))) == len(boxes)
        worst = max(worst, float(d.min(axis=1).max()))
    assert worst < 2e-3  # px
    # the original non-crowd boxes as detections on the label-derived GT: perfect
    dets = [det(k[0], b, 1.0, k[1]) for k, boxes in groups.items() for b in boxes]
    assert evaluate(yolo_gt, dets)["AP"] == 1.0


def _coco_names() -> dict[int, str]:
    import yaml

    return yaml.safe_load((COCO128 / "coco128.yaml").read_text())["names"]


def test_coco128_results_json_roundtrip(coco128_gt, tmp_path):
    dets = perturbed_detections(coco128_gt, seed=2)
    (tmp_path / "d.json").write_text(json.dumps(dets))
    r = evaluate(str(COCO128_JSON), str(tmp_path / "d.json"))
    assert r["AP"] == evaluate(coco128_gt, dets)["AP"]
