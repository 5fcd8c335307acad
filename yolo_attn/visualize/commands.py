"""The functions behind ``yolo-attn attn``, ``cam`` and ``report`` (values arrive parsed, like ``yolo``'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_attn.visualize._common import as_list

__all__ = ["attn_command", "cam_command", "report_command"]


def _models(kwargs: dict[str, Any], command: str) -> list[str]:
    models = as_list(kwargs.pop("model", None) or kwargs.pop("models", None))
    if not models:
        raise ValueError(f"{command}: model= is required (a .pt or .yaml, several comma-separated)")
    return [str(m) for m in models]


def _source(kwargs: dict[str, Any], command: str) -> Any:
    source = kwargs.pop("source", None)
    if source is None:
        raise ValueError(f"{command}: source= is required (an image, a folder of images, or a comma-separated list)")
    return source


def _no_more(kwargs: dict[str, Any], command: str, valid: str) -> None:
    if kwargs:
        raise ValueError(f"{command}: unknown key(s) {sorted(kwargs)}; valid keys: {valid}")


def attn_command(**kwargs: Any) -> list[Path]:
    """``yolo-attn attn model=a.pt[,b.yaml] source=<image|folder> [imgsz=640] [out=runs/attn] [save_maps=False]``.

    One figure per image with every attention layer's gate (see :func:`yolo_attn.visualize.render_gate_maps`).
    """
    from yolo_attn.visualize.gates import render_gate_maps

    models = _models(kwargs, "attn")
    source = _source(kwargs, "attn")
    options = {k: kwargs.pop(k) for k in ("imgsz", "out", "save_maps", "max_images") if k in kwargs}
    _no_more(kwargs, "attn", "model, source, imgsz, out, save_maps, max_images")
    return render_gate_maps(models, source, **options)


def cam_command(**kwargs: Any) -> list[Path]:
    """``yolo-attn cam model=a.pt[,b.pt] source=... [layers=15,18,21] [method=eigencam] [class=person] [imgsz=640]``.

    Also ``conf=``, ``iou=`` (NMS of the detections that are drawn and targeted), ``scale=grid|layer``, ``out=``,
    ``max_images=``. One grid PNG per image (see :func:`yolo_attn.visualize.render_cam_grids`).
    """
    from yolo_attn.visualize.cam import render_cam_grids

    models = _models(kwargs, "cam")
    source = _source(kwargs, "cam")
    cls = kwargs.pop("class", kwargs.pop("cls", None))
    layers = kwargs.pop("layers", None)
    keys = ("method", "imgsz", "conf", "iou", "out", "scale", "max_images")
    options = {k: kwargs.pop(k) for k in keys if k in kwargs}
    _no_more(kwargs, "cam", "model, source, layers, method, class, " + ", ".join(keys[1:]))
    grids = render_cam_grids(models, source, None if layers is None else as_list(layers), cls=cls, **options)
    return [g.path for g in grids]


def report_command(folder: str | None = None, **kwargs: Any) -> Path:
    """``yolo-attn report <compare run folder> [cam=<images>] [seed=0] [method=eigencam]``: rebuild report.html.

    With ``cam=`` the CAM grids and gate maps of every model are rendered first (already rendered ones are kept).
    """
    from yolo_attn.visualize.report import render_compare_figures, write_report

    folder = folder or kwargs.pop("folder", None)
    if not folder:
        raise ValueError("report: give the compare run folder, e.g. yolo-attn report runs/compare/exp")
    cam = kwargs.pop("cam", None)
    options = {k: kwargs.pop(k) for k in ("seed", "method", "imgsz", "layers", "scale", "max_images") if k in kwargs}
    _no_more(kwargs, "report", "cam, seed, method, imgsz, layers, scale, max_images")
    if cam is not None:
        render_compare_figures(folder, cam, **options)
    elif options:
        raise ValueError(f"report: {sorted(options)} only apply together with cam=<images>")
    path = write_report(folder)
    print(f"[yolo-attn report] {path}")
    return path
