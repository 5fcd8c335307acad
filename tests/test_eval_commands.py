"""eval_command / convert_command: argument checking, the gt=+pred= path, and ONE end-to-end model= run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from eval_fixtures import (
    COCO8,
    COCO128_JSON,
    STAT_KEYS,
    make_visdrone_split,
    perturbed_detections,
    pycocotools_direct,
    require,
)

from yolo_attn.evaluation import EVAL_KEYS, eval_command, load_coco_gt

REQUIRED_KEYS = {
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR@1",
    "AR@10",
    "AR@100",
    "ARs",
    "ARm",
    "ARl",
    "per_class",
    "gt_counts",
    "protocol",
    "max_dets",
    "area_source",
    "backend",
}


def test_unknown_and_missing_keys():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['gtt'\].*Valid keys") as e:
        eval_command(gtt="a.json")
    assert all(k in str(e.value) for k in EVAL_KEYS)
    with pytest.raises(ValueError, match="give gt= and pred=, or model= and data="):
        eval_command()
    with pytest.raises(ValueError, match="go together"):
        eval_command(pred="d.json")
    with pytest.raises(ValueError, match="needs data="):
        eval_command(model="best.pt")
    with pytest.raises(ValueError, match="protocol="):
        eval_command(gt="a.json", pred="b.json", protocol="voc")


def test_gt_pred_path_writes_json_and_table(tmp_path, capsys):
    gt = load_coco_gt(require(COCO128_JSON))
    pred = tmp_path / "dets.json"
    pred.write_text(json.dumps(perturbed_detections(gt, seed=5)))
    out = tmp_path / "m.json"
    r = eval_command(gt=str(COCO128_JSON), pred=str(pred), save=str(out), max_dets=[1, 10, 100])
    table = capsys.readouterr().out
    assert "APs" in table and "mask area (COCO JSON)" in table and "per class:" in table
    saved = json.loads(out.read_text())
    assert REQUIRED_KEYS <= set(saved) and saved["AP"] == r["AP"]
    assert set(saved["per_class"][0]) >= {"name", "id", "AP", "AP50", "n_gt"}
    stats, _ = pycocotools_direct(gt, json.loads(pred.read_text()))
    assert [saved[k] for k in STAT_KEYS] == stats.tolist()
    r = eval_command(
        gt=str(COCO128_JSON), pred=str(pred), save=False, verbose=False, backend="faster-coco-eval", max_dets=300
    )
    assert r["files"] == {} and r["max_dets"] == [1, 10, 300] and r["backend"] == "faster-coco-eval"


def _untrained_checkpoint(path: Path, names: dict[int, str]) -> Path:
    """A real Ultralytics checkpoint built from the stock yolov8n.yaml (no download), classes named as the data.

    The class-logit biases are raised so that the untrained head emits scores above conf=0.001: predictions are
    garbage, which is fine for checking the plumbing (ids, schema, metrics equal to a direct pycocotools call).
    """
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")
    with torch.no_grad():
        for seq in model.model.model[-1].cv3:
            seq[-1].bias += 9.0
    model.model.names = names
    model.save(str(path))
    return path


def test_model_path_end_to_end(tmp_path, monkeypatch, capsys):
    import ultralytics.data.utils
    from ultralytics.data.converter import coco80_to_coco91_class

    monkeypatch.setattr(ultralytics.data.utils, "check_font", lambda *a, **k: None)  # no font download
    root = tmp_path / "coco8"
    shutil.copytree(require(COCO8), root, ignore=shutil.ignore_patterns("*.cache"))
    cfg = yaml.safe_load((root / "coco8.yaml").read_text())
    (root / "plain.yaml").write_text(yaml.safe_dump({**cfg, "path": str(root)}))
    (root / "json.yaml").write_text(
        yaml.safe_dump({**cfg, "path": str(root), "coco_json": {"val": "annotations/instances_val_coco8.json"}})
    )
    ckpt = _untrained_checkpoint(tmp_path / "untrained.pt", cfg["names"])

    # 1) dataset with its official COCO JSON: 80 classes -> 91 ids, image ids from the JSON by file name
    r = eval_command(
        model=str(ckpt), data=str(root / "json.yaml"), imgsz=64, save_dir=str(tmp_path / "a"), ultralytics_val=True
    )
    assert "Ultralytics val" in capsys.readouterr().out
    assert r["category_mapping"].startswith("COCO 80 -> 91") and r["n_pred"] > 100
    assert REQUIRED_KEYS <= set(json.loads(Path(r["files"]["metrics"]).read_text()))
    assert set(r["ultralytics"]) >= {"mAP50", "mAP50-95"}
    dets = json.loads(Path(r["files"]["predictions"]).read_text())
    gt = load_coco_gt(root / "annotations" / "instances_val_coco8.json")
    assert {d["image_id"] for d in dets} <= {36, 42, 49, 61} == {im["id"] for im in gt["images"]}
    assert {d["category_id"] for d in dets} <= set(coco80_to_coco91_class())
    assert all(len(d["bbox"]) == 4 and d["bbox"][2] >= 0 and isinstance(d["score"], float) for d in dets)
    stats, _ = pycocotools_direct(gt, dets)
    assert [r[k] for k in STAT_KEYS] == stats.tolist()

    # 2) plain YOLO dataset: GT derived from labels (class-index ids, box areas), saved next to the predictions
    r = eval_command(
        model=str(ckpt),
        data=str(root / "plain.yaml"),
        imgsz=64,
        save_dir=str(tmp_path / "b"),
        verbose=False,
        max_det=50,
    )
    assert r["area_source"] == "box w*h (YOLO labels)" and r["category_mapping"].startswith("category_id = class")
    gt = json.loads(Path(r["files"]["gt"]).read_text())
    dets = json.loads(Path(r["files"]["predictions"]).read_text())
    assert len(gt["annotations"]) == 17 and {d["category_id"] for d in dets} <= set(range(80))
    assert max(sum(d["image_id"] == i for d in dets) for i in (36, 42, 49, 61)) <= 50
    stats, _ = pycocotools_direct(gt, dets)
    assert [r[k] for k in STAT_KEYS] == stats.tolist()

    # 3) VisDrone protocols need the ignored regions, which YOLO labels no longer have
    with pytest.raises(ValueError, match="ignored regions"):
        eval_command(model=str(ckpt), data=str(root / "plain.yaml"), protocol="visdrone", verbose=False)


def test_model_path_visdrone_protocols(tmp_path, monkeypatch):
    import ultralytics.data.utils

    from yolo_attn.evaluation import convert_visdrone, evaluate
    from yolo_attn.evaluation.visdrone import VISDRONE_NAMES

    monkeypatch.setattr(ultralytics.data.utils, "check_font", lambda *a, **k: None)  # no font download
    root = tmp_path / "VisDrone"
    convert_visdrone(make_visdrone_split(tmp_path), root, split="val")
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "datasets" / "VisDrone.yaml").read_text())
    cfg = {k: v for k, v in cfg.items() if k != "download"}
    (root / "vd.yaml").write_text(yaml.safe_dump({**cfg, "path": str(root), "train": "images/val"}))
    ckpt = _untrained_checkpoint(tmp_path / "vd.pt", VISDRONE_NAMES)
    results = {}
    for protocol in ("visdrone", "visdrone-coco"):
        r = eval_command(
            model=str(ckpt),
            data=str(root / "vd.yaml"),
            protocol=protocol,
            imgsz=64,
            verbose=False,
            save_dir=str(tmp_path / protocol),
        )
        assert r["category_mapping"].startswith("class name") and r["n_images"] == 40
        assert r["inference"]["max_det"] == 500
        dets = json.loads(Path(r["files"]["predictions"]).read_text())
        assert dets and {d["category_id"] for d in dets} <= set(range(1, 11))
        gt = json.loads((root / "annotations" / "val_coco.json").read_text())
        again = evaluate(gt, dets, protocol=protocol)
        assert {k: again[k] for k in ("AP", "AP50", "AR@500")} == {k: r[k] for k in ("AP", "AP50", "AR@500")}
        results[protocol] = r
    assert results["visdrone"]["APs"] is None and results["visdrone-coco"]["APs"] is not None
    assert results["visdrone"]["gt_counts"]["removed_by_ignored_regions"] > 0
