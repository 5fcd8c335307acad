"""VisDrone conversion on the 40 real val annotation files (blank images of the real sizes), broken copies, YAML."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from eval_fixtures import VISDRONE_SAMPLE, make_visdrone_split, require, visdrone_sizes

from yolo_attn.evaluation import VISDRONE_CATEGORIES, convert_command, convert_visdrone, gt_for_split

REPO = Path(__file__).resolve().parents[1]
# rows per category in the sample (README of ../shared/data/visdrone2019_val_sample)
README_COUNTS = {1: 703, 2: 442, 3: 57, 4: 704, 5: 112, 6: 77, 7: 78, 8: 59, 9: 8, 10: 382}


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    require(VISDRONE_SAMPLE)
    return make_visdrone_split(tmp_path_factory.mktemp("vd"))


@pytest.fixture(scope="module")
def converted(split, tmp_path_factory):
    out = tmp_path_factory.mktemp("vd_out")
    return convert_visdrone(split, out, images="link"), out


def raw_rows(path: Path) -> list[list[int]]:
    return [list(map(int, line.split(","))) for line in path.read_text().splitlines()]


def test_real_sample_counts_and_ignored_regions(converted, split):
    report, out = converted
    c = report.counts
    assert (c["annotation_files"], c["images"], c["rows"], c["label_rows"]) == (40, 40, 2722, 2622)
    assert (c["ignored_regions"], c["others"], c["malformed_lines"], c["clipped"]) == (96, 4, 0, 0)
    assert report.per_class == Counter({VISDRONE_CATEGORIES[k]: v for k, v in README_COUNTS.items()})
    assert report.issues == []
    # one label file per image, one line per score-1 row, in file order
    for ann in sorted((split / "annotations").glob("*.txt")):
        lines = (out / "labels" / "val" / ann.name).read_text().splitlines()
        kept = [r for r in raw_rows(ann) if r[4] != 0]
        assert [int(x.split()[0]) for x in lines] == [r[5] - 1 for r in kept]
    gt = json.loads(Path(report.outputs["coco_json"]).read_text())
    assert gt["yolo_attn"]["ignored_region_category_id"] == 0 and len(gt["categories"]) == 10
    assert len(gt["annotations"]) == 2722 and sum(a["iscrowd"] for a in gt["annotations"]) == 100
    cats = Counter(a["category_id"] for a in gt["annotations"])
    assert cats[0] == 96 and cats[11] == 4 and all(cats[k] == v for k, v in README_COUNTS.items())
    assert Counter(a["truncation"] for a in gt["annotations"]) == {0: 2653, 1: 69}
    assert Counter(a["occlusion"] for a in gt["annotations"]) == {0: 1119, 1: 1354, 2: 249}
    sizes = visdrone_sizes()
    assert {Path(im["file_name"]).stem: (im["width"], im["height"]) for im in gt["images"]} == sizes
    # spot checks against the README: an ignored region and the three "others" rows of one image
    ids = {Path(im["file_name"]).stem: im["id"] for im in gt["images"]}
    first = [a for a in gt["annotations"] if a["image_id"] == ids["0000081_00000_d_0000001"]][0]
    assert (first["bbox"], first["category_id"], first["iscrowd"]) == ([0, 126, 82, 386], 0, 1)
    others = [
        a["bbox"]
        for a in gt["annotations"]
        if a["image_id"] == ids["0000256_02173_d_0000030"] and a["category_id"] == 11
    ]
    assert others == [[891, 199, 85, 47], [946, 167, 55, 63], [996, 173, 63, 60]]
    assert (out / "images" / "val" / "0000081_00000_d_0000001.jpg").is_symlink()


def test_labels_byte_identical_to_ultralytics_visdrone2yolo(converted, split, tmp_path):
    from ultralytics.utils import ROOT, YAML

    script = YAML.load(ROOT / "cfg" / "datasets" / "VisDrone.yaml")["download"]
    ns: dict = {}
    exec(script.split("# Download")[0], ns)  # only the function definition: nothing is downloaded
    root = tmp_path / "ul"
    shutil.copytree(split, root / "VisDrone2019-DET-val")
    ns["visdrone2yolo"](root, "val", "VisDrone2019-DET-val")
    _, out = converted
    theirs = sorted((root / "labels" / "val").glob("*.txt"))
    assert len(theirs) == 40
    for f in theirs:
        assert (out / "labels" / "val" / f.name).read_bytes() == f.read_bytes(), f.name


def test_broken_files_are_reported_never_crash(split, tmp_path):
    src = tmp_path / "VisDrone2019-DET-val"
    shutil.copytree(split, src)
    ann = src / "annotations"
    name = "0000021_00000_d_0000001.txt"  # 960 x 540, 31 rows
    good = ann.joinpath(name).read_text()
    broken = [
        "1,2,3",  # 32: too few fields
        "a,b,c,d,1,4,0,0",  # 33: non-numeric
        "10,10,5,5,1,12,0,0",  # 34: unknown category
        "10,10,5,5,2,4,0,0",  # 35: GT score must be 0/1
        "10,10,-5,5,1,4,0,0",  # 36: negative width
        "10,10,0,5,1,4,0,0",  # 37: zero-size -> dropped, counted
        "950,500,50,80,1,4,0,0",  # 38: crosses the right/bottom edge -> clipped, counted
        "2000,2000,10,10,1,4,0,0",  # 39: outside the image -> dropped, counted
        "10,10,5,5,1,4,0,7",  # 40: odd occlusion, kept with a note
        "10,10,5,5,1,4,0,0,",  # 41: trailing comma, tolerated
        "",  # blank line, tolerated
    ]
    ann.joinpath(name).write_text(good + "\r\n".join(broken) + "\r\n")
    ann.joinpath("0000022_00500_d_0000005.txt").write_bytes(b"\xff\xfe\x00garbage\x00")  # binary
    ann.joinpath("0000023_00000_d_0000008.txt").write_text("")  # empty file: an image without objects
    ann.joinpath("9999999_00000_d_0000001.txt").write_text("1,1,5,5,1,4,0,0\n")  # no image
    report = convert_visdrone(src, tmp_path / "out", images="none")
    issues = "\n".join(report.issues)
    for line, reason in [
        (32, "expected 8"),
        (33, "non-numeric"),
        (34, "category 12"),
        (35, "score 2"),
        (36, "negative box size"),
        (40, "truncation 0 / occlusion 7"),
    ]:
        assert f"{name}:{line}: {reason}" in issues
    assert "0000022_00500_d_0000005.txt: not UTF-8 text" in issues
    assert "9999999_00000_d_0000001.txt: no image" in issues
    c = report.counts
    assert (c["malformed_lines"], c["dropped_zero_size"], c["dropped_outside"], c["clipped"]) == (5, 1, 1, 1)
    assert (c["unreadable_files"], c["missing_images"], c["odd_attributes"], c["images"]) == (1, 1, 1, 40)
    summary = report.summary()
    assert "malformed lines skipped: 5" in summary and f"{name}:32:" in summary
    labels = (tmp_path / "out" / "labels" / "val" / name).read_text().splitlines()
    assert len(labels) == 31 + 3  # clipped, odd-occlusion and trailing-comma rows
    dw, dh = 1 / 960, 1 / 540
    assert labels[31] == f"3 {(950 + 10 / 2) * dw:.6f} {(500 + 40 / 2) * dh:.6f} {10 * dw:.6f} {40 * dh:.6f}"
    gt = json.loads(Path(report.outputs["coco_json"]).read_text())
    clipped = [a for a in gt["annotations"] if "raw_bbox" in a]
    assert [(a["bbox"], a["raw_bbox"]) for a in clipped] == [([950, 500, 10, 40], [950, 500, 50, 80])]
    assert (tmp_path / "out" / "labels" / "val" / "0000023_00000_d_0000008.txt").read_text() == ""


def test_convert_command(split, tmp_path):
    r = convert_command("visdrone", src=str(split), out=str(tmp_path / "o"), images="none", verbose=False)
    assert r["counts"]["label_rows"] == 2622 and r["outputs"]["coco_json"].endswith("val_coco.json")
    with pytest.raises(ValueError, match="unknown key.*Valid keys"):
        convert_command("visdrone", src=str(split), out=str(tmp_path), bogus=1)
    with pytest.raises(ValueError, match="missing required"):
        convert_command("visdrone", out=str(tmp_path))
    with pytest.raises(ValueError, match="unknown kind"):
        convert_command("coco2yolo", src="x")


def test_visdrone_yaml_mirrors_ultralytics_and_converts(split, tmp_path, monkeypatch):
    from ultralytics.utils import ROOT

    ours = yaml.safe_load((REPO / "datasets" / "VisDrone.yaml").read_text())
    theirs = yaml.safe_load((ROOT / "cfg" / "datasets" / "VisDrone.yaml").read_text())
    for key in ("path", "train", "val", "test", "names"):
        assert ours[key] == theirs[key], key
    url = re.compile(r'f"\{ASSETS_URL\}/(VisDrone2019-DET-[\w-]+\.zip)"')
    assert url.findall(ours["download"]) == url.findall(theirs["download"]) and url.findall(ours["download"])
    assert set(ours["coco_json"]) == {"train", "val", "test"}

    # run the download script offline: download() is a no-op, the val split is already "extracted"
    import ultralytics.data.utils
    import ultralytics.utils.downloads

    monkeypatch.setattr(ultralytics.utils.downloads, "download", lambda *a, **k: None)
    monkeypatch.setattr(ultralytics.data.utils, "check_font", lambda *a, **k: None)
    root = tmp_path / "VisDrone"
    shutil.copytree(split, root / "VisDrone2019-DET-val")
    exec(ours["download"], {"yaml": {"path": root}})
    assert len(list((root / "images" / "val").glob("*.jpg"))) == 40
    assert len(list((root / "labels" / "val").glob("*.txt"))) == 40
    data_yaml = tmp_path / "vd.yaml"
    data_yaml.write_text(yaml.safe_dump({**{k: v for k, v in ours.items() if k != "download"}, "path": str(root)}))
    from ultralytics.data.utils import check_det_dataset

    gt = gt_for_split(check_det_dataset(str(data_yaml)), "val")
    assert len(gt["annotations"]) == 2722 and gt["yolo_attn"]["dataset"] == "visdrone"
