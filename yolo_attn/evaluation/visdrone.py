"""VisDrone2019-DET annotations: parsing, a COCO ground-truth JSON that keeps what Ultralytics drops, YOLO labels.

VisDrone files hold one object per line, ``left,top,width,height,score,category,truncation,occlusion``. In ground
truth ``score`` 1 means evaluated and 0 ignored; category 0 is an *ignored region*, 1-10 the evaluated classes and 11
"others". Ultralytics' ``VisDrone.yaml`` keeps only score-1 rows and writes ``cls = category - 1``, so ignored regions,
truncation and occlusion are lost and every detection inside an ignored region later counts as a false positive.

:func:`convert_visdrone` writes both:

- Ultralytics labels, byte-identical to Ultralytics' ``visdrone2yolo`` on well-formed files (classes 1-10 -> 0-9,
  score-0 rows excluded), so models train exactly as with the stock YAML;
- a COCO GT JSON in which nothing is lost. Its layout (all ids are the original VisDrone ones):

  - ``categories``: the ten evaluated classes, ids 1-10, named as in Ultralytics' ``VisDrone.yaml``;
  - ``annotations``: every row. Category 0 (ignored regions) and 11 ("others") keep their ids although they are not in
    ``categories`` -- COCOeval only looks at listed categories, so plain COCO evaluation ignores them, while
    ``protocol=visdrone-coco`` / ``protocol=visdrone`` read them. ``iscrowd = ignore = 1`` marks score-0 rows.
    ``truncation`` and ``occlusion`` are kept; ``bbox`` is clipped to the image, and ``raw_bbox`` holds the original
    box when clipping changed it (the official toolkit sees raw boxes);
  - ``yolo_attn``: metadata (``area_source``, ``ignored_region_category_id``: 0, ``extra_categories``).

Nothing here raises on a bad file: problems are collected as ``file:line: reason`` in a :class:`ConversionReport`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "VISDRONE_CATEGORIES",
    "VISDRONE_NAMES",
    "ConversionReport",
    "VisDroneRow",
    "convert_visdrone",
    "parse_visdrone_annotation",
    "visdrone_to_coco",
]

# Official category ids -> names. 1-10 are evaluated; names follow Ultralytics' VisDrone.yaml.
VISDRONE_CATEGORIES: dict[int, str] = {
    0: "ignored-regions",
    1: "pedestrian",
    2: "people",
    3: "bicycle",
    4: "car",
    5: "van",
    6: "truck",
    7: "tricycle",
    8: "awning-tricycle",
    9: "bus",
    10: "motor",
    11: "others",
}
# Ultralytics class index (0-9) -> name, as in Ultralytics' VisDrone.yaml.
VISDRONE_NAMES: dict[int, str] = {i - 1: VISDRONE_CATEGORIES[i] for i in range(1, 11)}

IGNORED_REGION_ID = 0
OTHERS_ID = 11
AREA_SOURCE = "box w*h (VisDrone annotations)"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_SPLITS = {"VisDrone2019-DET-train": "train", "VisDrone2019-DET-val": "val", "VisDrone2019-DET-test-dev": "test"}


@dataclass
class VisDroneRow:
    """One parsed annotation row (values as in the file; ``line`` is 1-based)."""

    x: float
    y: float
    w: float
    h: float
    score: int
    category: int
    truncation: int
    occlusion: int
    line: int


@dataclass
class ConversionReport:
    """What a conversion did and every problem it met, as ``file:line: reason`` lines.

    Attributes:
        issues (list[str]): one line per malformed row or unreadable file, ``file:line: reason`` (``file: reason``
            for file-level problems).
        counts (Counter): named counters (files, rows, objects, ignored regions, clipped, dropped, ...).
        per_class (Counter): label rows written per class name.
        outputs (dict[str, str]): paths written.
    """

    issues: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    per_class: Counter = field(default_factory=Counter)
    outputs: dict[str, str] = field(default_factory=dict)

    def add(self, file: str, line: int | None, reason: str, counter: str = "malformed_lines") -> None:
        """Record one problem and bump its counter."""
        self.issues.append(f"{file}:{line}: {reason}" if line is not None else f"{file}: {reason}")
        self.counts[counter] += 1

    @property
    def n_malformed(self) -> int:
        """Number of malformed (skipped) rows."""
        return self.counts["malformed_lines"]

    def summary(self, max_issues: int = 20) -> str:
        """Readable multi-line summary: counts, per-class rows and the first ``max_issues`` issues."""
        c = self.counts
        lines = [
            f"VisDrone conversion: {c['annotation_files']} annotation files, {c['images']} images, {c['rows']} rows",
            f"  label rows written: {c['label_rows']}  ({', '.join(f'{k} {v}' for k, v in self._class_counts())})",
            f"  kept in COCO JSON only: ignored regions {c['ignored_regions']}, others {c['others']}, "
            f"score-0 objects of classes 1-10 {c['score0_objects']}",
            f"  boxes clipped to the image: {c['clipped']}; dropped: zero-size {c['dropped_zero_size']}, "
            f"outside image {c['dropped_outside']}",
            f"  malformed lines skipped: {c['malformed_lines']}; unreadable files: {c['unreadable_files']}; "
            f"annotation files without image: {c['missing_images']}; images without annotation file: "
            f"{c['images_without_annotations']}; odd attribute values (row kept): {c['odd_attributes']}",
        ]
        if c["others_score1"] or c["ignored_region_score1"]:
            lines.append(
                f"  note: {c['others_score1']} score-1 'others' rows and {c['ignored_region_score1']} score-1 "
                "category-0 rows are kept in the COCO JSON only (Ultralytics would write class 10 / -1)"
            )
        for issue in self.issues[:max_issues]:
            lines.append(f"  {issue}")
        if len(self.issues) > max_issues:
            lines.append(f"  ... {len(self.issues) - max_issues} more issues")
        return "\n".join(lines)

    def _class_counts(self) -> list[tuple[str, int]]:
        order = list(VISDRONE_CATEGORIES.values())
        return sorted(self.per_class.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "counts": dict(self.counts),
            "per_class": dict(self._class_counts()),
            "issues": list(self.issues),
            "outputs": dict(self.outputs),
        }


def _to_int(text: str) -> int | None:
    """Parse an integer field; integral floats such as ``12.0`` are accepted, anything else gives None."""
    try:
        return int(text)
    except ValueError:
        try:
            v = float(text)
        except ValueError:
            return None
        return int(v) if math.isfinite(v) and v == int(v) else None


def _to_float(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def parse_visdrone_annotation(path: str | Path, report: ConversionReport | None = None) -> list[VisDroneRow] | None:
    """Parse one VisDrone annotation file; malformed rows are reported and skipped.

    Blank lines and one trailing comma per line (present in some public copies) are tolerated silently.

    Args:
        path (str | Path): annotation ``.txt`` file.
        report (ConversionReport, optional): where issues go; a throw-away report is used if omitted.

    Returns:
        (list[VisDroneRow] | None): rows in file order, or None if the file could not be read or decoded.
    """
    report = report if report is not None else ConversionReport()
    path = Path(path)
    name = path.name
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        report.add(name, None, f"not UTF-8 text ({e.reason} at byte {e.start}); file skipped", "unreadable_files")
        return None
    except OSError as e:
        report.add(name, None, f"cannot read ({e.strerror or e}); file skipped", "unreadable_files")
        return None
    if "\x00" in text:
        report.add(name, None, "binary content (NUL bytes); file skipped", "unreadable_files")
        return None
    rows = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not s:
            continue
        report.counts["rows"] += 1
        fields = [f.strip() for f in s.split(",")]
        if len(fields) == 9 and fields[-1] == "":
            fields = fields[:8]
        if len(fields) != 8:
            report.add(name, lineno, f"expected 8 comma-separated fields, got {len(fields)}: {s[:60]!r}")
            continue
        box = [_to_float(f) for f in fields[:4]]
        ints = [_to_int(f) for f in fields[4:]]
        bad = [fields[i] for i, v in enumerate(box + ints) if v is None]
        if bad:
            report.add(name, lineno, f"non-numeric or non-integer field(s) {bad}: {s[:60]!r}")
            continue
        x, y, w, h = box
        score, category, truncation, occlusion = ints
        if category not in VISDRONE_CATEGORIES:
            report.add(name, lineno, f"category {category} not in 0-11")
            continue
        if score not in (0, 1):
            report.add(name, lineno, f"score {score} is neither 0 nor 1 (ground truth)")
            continue
        if w < 0 or h < 0:
            report.add(name, lineno, f"negative box size w={fields[2]} h={fields[3]}")
            continue
        if truncation not in (0, 1) or occlusion not in (0, 1, 2):
            reason = f"truncation {truncation} / occlusion {occlusion} out of range; row kept"
            report.add(name, lineno, reason, "odd_attributes")
        rows.append(VisDroneRow(x, y, w, h, score, category, truncation, occlusion, lineno))
    return rows


def _find_images(image_dir: Path | None) -> dict[str, Path]:
    """Map file stem -> image path (``.jpg`` preferred when several suffixes share a stem)."""
    if image_dir is None or not image_dir.is_dir():
        return {}
    found: dict[str, Path] = {}
    for p in sorted(image_dir.iterdir()):
        if p.suffix.lower() in _IMAGE_SUFFIXES and (p.stem not in found or p.suffix.lower() == ".jpg"):
            found[p.stem] = p
    return found


def _image_size(path: Path) -> tuple[int, int] | None:
    """EXIF-corrected (width, height), as Ultralytics reads it; None when the file is not an image."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.format in {"JPEG", "MPO", "PNG"} and im.getexif().get(274) in {5, 6, 7, 8}:
                w, h = h, w  # rotated by EXIF: cv2 (Ultralytics' reader) applies the orientation
            return int(w), int(h)
    except Exception:  # any decoder error means "not a usable image" here
        return None


def visdrone_to_coco(
    annotation_dir: str | Path,
    image_dir: str | Path | None = None,
    image_sizes: dict[str, tuple[int, int]] | None = None,
    report: ConversionReport | None = None,
    description: str = "VisDrone2019-DET",
) -> tuple[dict[str, Any], dict[str, list[str]], ConversionReport]:
    """Build the COCO GT JSON (and the matching Ultralytics label lines) from VisDrone annotation files.

    Args:
        annotation_dir (str | Path): folder of VisDrone ``.txt`` annotation files.
        image_dir (str | Path, optional): folder of the images, used for sizes and ``file_name``.
        image_sizes (dict[str, tuple[int, int]], optional): ``stem -> (width, height)``; overrides reading images.
        report (ConversionReport, optional): report to extend.
        description (str): ``info.description`` of the JSON.

    Returns:
        (tuple): ``(coco_gt, labels, report)`` where ``labels`` maps image stem -> Ultralytics label lines (with
            ``\\n``); images are sorted by stem and numbered from 1.
    """
    report = report if report is not None else ConversionReport()
    annotation_dir = Path(annotation_dir)
    images_found = _find_images(Path(image_dir) if image_dir is not None else None)
    sizes = dict(image_sizes or {})
    ann_files = {p.stem: p for p in sorted(annotation_dir.glob("*.txt"))} if annotation_dir.is_dir() else {}
    if not annotation_dir.is_dir():
        report.add(str(annotation_dir), None, "annotation folder not found", "unreadable_files")
    report.counts["annotation_files"] += len(ann_files)

    images, annotations, labels = [], [], {}
    stems = sorted(set(ann_files) | set(images_found))
    for stem in stems:
        size = sizes.get(stem)
        if size is None and stem in images_found:
            size = _image_size(images_found[stem])
            if size is None:
                report.add(images_found[stem].name, None, "image cannot be decoded; skipped", "unreadable_files")
                continue
        if size is None:
            report.add(f"{stem}.txt", None, "no image with this stem (size unknown); file skipped", "missing_images")
            continue
        width, height = size
        file_name = images_found[stem].name if stem in images_found else f"{stem}.jpg"
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        report.counts["images"] += 1
        lines: list[str] = []
        labels[stem] = lines
        if stem not in ann_files:
            report.counts["images_without_annotations"] += 1
            continue
        rows = parse_visdrone_annotation(ann_files[stem], report)
        for r in rows or []:
            # Clip to the image: Ultralytics' check rejects normalised coordinates > 1.01, and COCO areas should be
            # the visible part. The raw box is kept in raw_bbox because the official toolkit sees raw boxes.
            x1, y1 = max(0.0, r.x), max(0.0, r.y)
            x2, y2 = min(float(width), r.x + r.w), min(float(height), r.y + r.h)
            if r.w == 0 or r.h == 0:
                report.counts["dropped_zero_size"] += 1
                continue
            if x2 <= x1 or y2 <= y1:
                report.counts["dropped_outside"] += 1
                continue
            bbox = [_num(x1), _num(y1), _num(x2 - x1), _num(y2 - y1)]
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": r.category,
                "bbox": bbox,
                "area": _num((x2 - x1) * (y2 - y1)),
                "iscrowd": int(r.score == 0),
                "ignore": int(r.score == 0),
                "truncation": r.truncation,
                "occlusion": r.occlusion,
            }
            if bbox != [_num(r.x), _num(r.y), _num(r.w), _num(r.h)]:
                ann["raw_bbox"] = [_num(r.x), _num(r.y), _num(r.w), _num(r.h)]
                report.counts["clipped"] += 1
            if r.category == IGNORED_REGION_ID:
                # The toolkit treats category 0 as an ignored region whatever its score.
                ann["iscrowd"] = ann["ignore"] = 1
                report.counts["ignored_regions"] += 1
                report.counts["ignored_region_score1"] += r.score == 1
            elif r.category == OTHERS_ID:
                report.counts["others"] += 1
                report.counts["others_score1"] += r.score == 1
            elif r.score == 0:
                report.counts["score0_objects"] += 1
            else:
                # Same float expression as Ultralytics' visdrone2yolo so labels are byte-identical.
                dw, dh = 1.0 / width, 1.0 / height
                bw, bh = x2 - x1, y2 - y1
                xc, yc = (_num(x1) + _num(bw) / 2) * dw, (_num(y1) + _num(bh) / 2) * dh
                lines.append(f"{r.category - 1} {xc:.6f} {yc:.6f} {bw * dw:.6f} {bh * dh:.6f}\n")
                report.counts["label_rows"] += 1
                report.per_class[VISDRONE_CATEGORIES[r.category]] += 1
            annotations.append(ann)
    gt = {
        "info": {"description": f"{description} as COCO ground truth (yolo-attn)", "area_source": AREA_SOURCE},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": VISDRONE_CATEGORIES[i], "supercategory": "visdrone"} for i in range(1, 11)],
        "yolo_attn": {
            "dataset": "visdrone",
            "area_source": AREA_SOURCE,
            "ignored_region_category_id": IGNORED_REGION_ID,
            "extra_categories": [
                {"id": IGNORED_REGION_ID, "name": VISDRONE_CATEGORIES[IGNORED_REGION_ID]},
                {"id": OTHERS_ID, "name": VISDRONE_CATEGORIES[OTHERS_ID]},
            ],
            "note": "category 0 = ignored regions, 11 = others: stored as annotations, not listed in categories; "
            "iscrowd=ignore=1 marks VisDrone score-0 rows; raw_bbox = unclipped box when clipping changed it",
        },
    }
    return gt, labels, report


def _num(v: float) -> int | float:
    """Integers stay integers in the JSON (VisDrone boxes are integral)."""
    return int(v) if float(v).is_integer() else float(v)


def _split_name(src: Path) -> str:
    if src.name in _SPLITS:
        return _SPLITS[src.name]
    for key in ("test-challenge", "test-dev", "train", "val"):
        if src.name.lower().endswith(key):
            return "test" if key == "test-dev" else key
    return src.name


def convert_visdrone(
    src: str | Path,
    out: str | Path,
    split: str | None = None,
    images: str = "copy",
    verbose: bool = False,
) -> ConversionReport:
    """Convert one VisDrone split (``src/images``, ``src/annotations``) to Ultralytics labels plus a COCO GT JSON.

    Writes ``out/labels/<split>/<stem>.txt``, ``out/images/<split>/`` (per ``images``) and
    ``out/annotations/<split>_coco.json`` -- the layout the bundled ``datasets/VisDrone.yaml`` names in its
    ``coco_json`` key. Never raises on bad annotation files; see the returned report.

    Args:
        src (str | Path): split folder holding ``images/`` and ``annotations/`` (e.g. ``VisDrone2019-DET-val``).
        out (str | Path): dataset root to write into.
        split (str, optional): split name; derived from ``src`` (``VisDrone2019-DET-val`` -> ``val``) if omitted.
        images (str): ``copy``, ``move`` (what Ultralytics' download script does), ``link`` (symlink) or ``none``.
        verbose (bool): print the report summary.

    Returns:
        (ConversionReport): counts, per-class label rows, ``file:line: reason`` issues and output paths.

    Examples:
        >>> report = convert_visdrone("VisDrone2019-DET-val", "datasets/VisDrone")
        >>> print(report.summary())
    """
    if images not in {"copy", "move", "link", "none"}:
        raise ValueError(f"images={images!r}: expected one of copy, move, link, none")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"VisDrone source folder not found: {src}")
    split = split or _split_name(src)
    gt, labels, report = visdrone_to_coco(
        src / "annotations", src / "images", description=f"VisDrone2019-DET {split} ({src.name})"
    )
    labels_dir, images_dir, ann_dir = out / "labels" / split, out / "images" / split, out / "annotations"
    labels_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for stem, lines in labels.items():
        (labels_dir / f"{stem}.txt").write_text("".join(lines), encoding="utf-8")
    if images != "none":
        images_dir.mkdir(parents=True, exist_ok=True)
        for img in gt["images"]:
            s, d = src / "images" / img["file_name"], images_dir / img["file_name"]
            if not s.exists() or s.resolve() == d.resolve():
                continue
            if d.exists() or d.is_symlink():
                d.unlink()
            if images == "move":
                shutil.move(str(s), d)
            elif images == "link":
                os.symlink(s.resolve(), d)
            else:
                shutil.copy2(s, d)
        report.outputs["images"] = str(images_dir)
    json_path = ann_dir / f"{split}_coco.json"
    json_path.write_text(json.dumps(gt), encoding="utf-8")
    report.outputs["labels"] = str(labels_dir)
    report.outputs["coco_json"] = str(json_path)
    if verbose:
        print(report.summary())
    return report
