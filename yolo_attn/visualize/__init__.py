"""See what attention does: gate maps, class-activation heatmaps side by side, and a report page per comparison.

* :func:`collect_gates` / :class:`GateRecorder` -- every gate of every attention layer as tensors;
  :func:`render_gate_maps` -- the figures (``yolo-attn attn``).
* :func:`render_cam_grids` -- CAM grids, rows = models, columns = layers, one colour scale (``yolo-attn cam``).
* :func:`render_compare_figures` and :func:`write_report` -- the figures and ``report.html`` of a compare run folder
  (``yolo-attn report``).

Names resolve lazily: importing this package does not import matplotlib, Ultralytics or pytorch-grad-cam.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "GateMap": "yolo_attn.visualize.gates",
    "GateRecorder": "yolo_attn.visualize.gates",
    "collect_gates": "yolo_attn.visualize.gates",
    "layer_gate": "yolo_attn.visualize.gates",
    "render_gate_maps": "yolo_attn.visualize.gates",
    "CAM_METHODS": "yolo_attn.visualize.cam",
    "CamGrid": "yolo_attn.visualize.cam",
    "compute_cams": "yolo_attn.visualize.cam",
    "render_cam_grids": "yolo_attn.visualize.cam",
    "render_compare_figures": "yolo_attn.visualize.report",
    "write_report": "yolo_attn.visualize.report",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'yolo_attn.visualize' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
