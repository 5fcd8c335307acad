"""Readable tables and JSON files for evaluation results.

In the JSON, undefined values keep pycocotools' ``-1`` (no GT in a bin or class) and ``null`` for numbers a protocol
does not define (e.g. APs under ``protocol=visdrone``); the table prints both as ``n/a``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_table", "save_json", "to_jsonable"]

_DESCRIPTIONS = {
    "AP": "IoU=0.50:0.95",
    "AP50": "IoU=0.50",
    "AP75": "IoU=0.75",
}
_BIN_OF_KEY = {
    "s": "small",
    "m": "medium",
    "l": "large",
    "vt": "verytiny",
    "t": "tiny",
    "s_aitod": "aitod_small",
    "m_aitod": "aitod_medium",
}


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, (int, float)) and (v == -1 or (isinstance(v, float) and math.isnan(v)))):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _range(lo: float, hi: float) -> str:
    def side(v: float) -> str:
        r = math.sqrt(v)
        return "0" if v == 0 else "inf" if r >= 1e5 else (f"{int(r)}²" if r == int(r) else f"{v:g}")

    return f"[{side(lo)}, {side(hi)}]"


def format_table(result: dict[str, Any], per_class: bool = True) -> str:
    """Render a result dict (from :func:`~yolo_attn.evaluation.evaluate` or ``eval_command``) as text."""
    md = result.get("max_dets") or []
    last = md[-1] if md else "?"
    lines = [
        f"yolo-attn eval  protocol={result.get('protocol')}  backend={result.get('backend')}  "
        f"maxDets={md} (AP read at maxDets={last})",
        f"images {result.get('n_images')}  GT objects {result.get('n_gt')}  predictions {result.get('n_pred')}"
        + (f"  GT area: {result['area_source']}" if result.get("area_source") else ""),
        "",
        f"{'metric':<12}{'value':>9}   definition",
    ]
    ranges = result.get("area_ranges") or {}
    counts = result.get("gt_counts") or {}
    for key in ("AP", "AP50", "AP75"):
        lines.append(f"{key:<12}{_fmt(result.get(key)):>9}   {_DESCRIPTIONS[key]}, area=all, maxDets={last}")
    for prefix in ("AP", "AR"):
        for suffix, lbl in _BIN_OF_KEY.items():
            key = f"{prefix}{suffix}"
            if key not in result:
                continue
            if lbl in ranges:
                desc = f"IoU=0.50:0.95, {lbl} {_range(*ranges[lbl])} ({counts.get(lbl, '?')} GT), maxDets={last}"
            else:
                desc = "not defined by this protocol"
            lines.append(f"{key:<12}{_fmt(result.get(key)):>9}   {desc}")
        if prefix == "AP":
            for m in md:
                lines.append(f"{f'AR@{m}':<12}{_fmt(result.get(f'AR@{m}')):>9}   IoU=0.50:0.95, area=all, maxDets={m}")
    if result.get("protocol") == "visdrone":
        lines.append(
            f"GT rows removed by ignored regions: {counts.get('removed_by_ignored_regions', 0)}, "
            f"detections removed: {result.get('n_pred_removed_by_ignored_regions', 0)}; "
            "class mean weighted by images containing the class"
        )
    rows = result.get("per_class") or []
    if per_class and rows:
        extra = [k for k in rows[0] if k.startswith("AR@") or k == "AP75"]
        hdr = f"{'id':>4}  {'class':<20}{'AP':>8}{'AP50':>8}" + "".join(f"{k:>8}" for k in extra)
        hdr += f"{'n_gt':>8}{'n_pred':>8}" + (f"{'n_img':>7}" if "n_images" in rows[0] else "")
        shown = [r for r in rows if r["n_gt"] or r["n_pred"]]  # classes absent from GT and predictions: JSON only
        hidden = len(rows) - len(shown)
        lines += [
            "",
            "per class" + (f" ({hidden} classes with no GT and no predictions omitted):" if hidden else ":"),
            hdr,
        ]
        for r in shown:
            line = f"{r['id']!s:>4}  {str(r['name'])[:19]:<20}{_fmt(r['AP']):>8}{_fmt(r['AP50']):>8}"
            line += "".join(f"{_fmt(r[k]):>8}" for k in extra)
            line += f"{r['n_gt']:>8}{r['n_pred']:>8}" + (f"{r['n_images']:>7}" if "n_images" in r else "")
            lines.append(line)
    ul = result.get("ultralytics")
    if ul:
        lines += [
            "",
            "Ultralytics val -- its own matcher and PR interpolation, NOT the protocol above; for reference only:",
            "  " + "  ".join(f"{k} {_fmt(v)}" for k, v in ul.items() if isinstance(v, (int, float))),
        ]
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    for name, path in (result.get("files") or {}).items():
        lines.append(f"{name}: {path}")
    return "\n".join(lines)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and paths to plain JSON types (NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as JSON (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(obj), indent=1), encoding="utf-8")
    return path
