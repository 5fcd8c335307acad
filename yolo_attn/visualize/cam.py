"""Class-activation heatmaps of several detectors side by side, built on pytorch-grad-cam (``pip install grad-cam``).

``yolo-attn cam model=a.pt,b.pt source=images/ [layers=15,18,21] [method=eigencam] [class=person]`` writes one grid
PNG per image: rows = models, columns = layers, the model's detections drawn, **one colour scale for the whole
grid** so models compare fairly.

* Methods: pytorch-grad-cam's own classes -- ``eigencam`` (default: the first principal component of the layer's
  activations, needs no gradients and no target), ``gradcam``, ``gradcam++``, ``hirescam``, ``layercam``.
* Target (gradient methods): the sum of the scores of the model's own detections after NMS (``conf``, ``iou``, and
  optionally one ``class``), read at the anchors NMS kept -- what the model itself reports, not a made-up label.
* Layers: by default the rows that feed the detection head (``Detect``'s ``from``: P3, P4, P5 of the neck); any
  rows by index (``layers=15,18``) or module paths inside rows (``layers=6.m.0``).

Why the library's ``__call__`` is not used as it is: it min-max scales every map to [0, 1] on its own, which hides
exactly what a side-by-side comparison needs (one map being much weaker than another). The maps here are the
library's ``get_cam_image`` output (its weights, projections and sums) with the library's ReLU; only the scaling to
one colour scale across the grid is done here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolo_attn.visualize._common import (
    LoadedModel,
    letterbox,
    list_images,
    load_model,
    matplotlib_pyplot,
    model_stride,
    row_choices,
    row_label,
    rows_of,
)

__all__ = ["CAM_METHODS", "CamGrid", "Detections", "compute_cams", "grid_pixels", "render_cam_grids", "resolve_layers"]

#: method name -> pytorch_grad_cam class name
CAM_METHODS: dict[str, str] = {
    "eigencam": "EigenCAM",
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
}
SCALES = ("grid", "layer")


def _method_key(method: str) -> str:
    """The CAM_METHODS key a spelling names (``Grad-CAM++`` -> ``gradcam++``); unknown spellings unchanged."""
    key = str(method).lower().replace("_", "").replace("-", "")
    return {"gradcamplusplus": "gradcam++", "gradcampp": "gradcam++"}.get(key, key)


def _cam_class(method: str) -> type:
    key = _method_key(method)
    if key not in CAM_METHODS:
        raise ValueError(f"cam: method={method!r} is not one of {', '.join(CAM_METHODS)}")
    try:
        import pytorch_grad_cam
    except ImportError as exc:  # pragma: no cover - grad-cam is in the dev extras
        raise ImportError("cam needs pytorch-grad-cam: pip install 'yolo-attn[cam]'") from exc
    return getattr(pytorch_grad_cam, CAM_METHODS[key])


@dataclass
class Detections:
    """A model's detections after NMS on the letterboxed input.

    Attributes:
        boxes: (N, 4) xyxy in letterboxed pixels.
        scores: (N,) confidences.
        classes: (N,) class indices.
        anchors: (N,) indices into the model's raw output that NMS kept (where the target scores are read).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    anchors: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


class _RawOutput(nn.Module):
    """The detector's inference tensor (B, 4 + nc, anchors) without the training-branch outputs next to it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, (list, tuple)) else out


def _end2end(output: torch.Tensor) -> bool:
    return output.dim() == 3 and output.shape[-1] == 6


class DetectionScoreTarget:
    """pytorch-grad-cam target: the sum of the scores of the given detections in one image's raw output."""

    def __init__(self, detections: Detections) -> None:
        self.anchors = torch.as_tensor(detections.anchors, dtype=torch.long)
        self.classes = torch.as_tensor(detections.classes, dtype=torch.long)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if len(self.anchors) == 0:
            return output.sum() * 0.0  # no detection: nothing to explain (the map comes out empty, and says so)
        if output.dim() == 2 and output.shape[-1] == 6:  # end-to-end head: (300, 6) rows, score in column 4
            return output[self.anchors, 4].sum()
        return output[4 + self.classes, self.anchors].sum()


def _resolve_class(cls: int | str | None, names: dict[int, str]) -> int | None:
    if cls is None:
        return None
    if isinstance(cls, int) or (isinstance(cls, str) and cls.isdigit()):
        index = int(cls)
        if names and index not in names:
            raise ValueError(f"cam: class={cls!r} is not a class index of this model (0..{max(names)})")
        return index
    by_name = {v.lower(): k for k, v in names.items()}
    if str(cls).lower() not in by_name:
        raise ValueError(f"cam: class={cls!r} is not one of the model's classes: {', '.join(names.values())}")
    return by_name[str(cls).lower()]


def _nms(raw: torch.Tensor, conf: float, iou: float, cls: int | None) -> Detections:
    """Ultralytics' own NMS on a (1, 4 + nc, anchors) output, keeping the anchor indices."""
    from ultralytics.utils.nms import non_max_suppression

    classes = None if cls is None else [cls]
    out, keep = non_max_suppression(
        raw.detach(), conf, iou, classes=classes, return_idxs=True, end2end=_end2end(raw), max_det=300
    )
    det, idx = out[0], keep[0]
    return Detections(
        boxes=det[:, :4].cpu().numpy(),
        scores=det[:, 4].cpu().numpy(),
        classes=det[:, 5].long().cpu().numpy(),
        anchors=idx.long().view(-1).cpu().numpy(),
    )


def default_layers(model: nn.Module) -> list[int]:
    """The rows that feed the detection head (its ``from`` indices)."""
    rows = rows_of(model)
    if rows is None:
        raise ValueError("cam: the model has no YAML rows (model.model); give layers= as module paths")
    head = rows[-1]
    f = head.f if isinstance(head.f, (list, tuple)) else [head.f]
    return [int(i) if i >= 0 else len(rows) - 1 + int(i) for i in f]


def resolve_layers(model: nn.Module, layers: Sequence[int | str] | int | str | None) -> list[tuple[str, nn.Module]]:
    """``(label, module)`` for each requested layer.

    Args:
        model: An Ultralytics model.
        layers: None (the rows that feed the head), row indices (``15``), or module paths inside a row (``6.m.0``).

    Raises:
        ValueError: An unknown row or path; the message lists the rows (index and type) to choose from.
    """
    rows = rows_of(model)
    if layers is None or layers == [] or layers == "head":
        specs: list[int | str] = list(default_layers(model))
    else:
        specs = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    out = []
    for spec in specs:
        text = str(spec).strip()
        try:
            if rows is None:
                module = model.get_submodule(text)
            else:
                head, _, rest = text.partition(".")
                if not head.lstrip("-").isdigit():
                    raise AttributeError(text)
                index = int(head)
                if not -len(rows) <= index < len(rows):
                    raise AttributeError(text)
                index %= len(rows)
                module = rows[index].get_submodule(rest) if rest else rows[index]
                text = f"{index}.{rest}" if rest else str(index)
        except AttributeError:
            choices = "; ".join(row_choices(model)) or "module paths of the model"
            default = ", ".join(map(str, default_layers(model))) if rows is not None else "?"
            raise ValueError(
                f"cam: layers={spec!r}: no such row or module in this model. Choices (row index, type): {choices}. "
                f"A module inside a row is <row>.<path>, e.g. 6.m.0. Default: {default} (the rows that feed the head)"
            ) from None
        if rows is not None and module is rows[-1]:
            raise ValueError(f"cam: layers={spec!r} is the detection head itself; pick a row that feeds it")
        out.append((row_label(model, text) if rows is not None else text, module))
    return out


def compute_cams(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[tuple[str, nn.Module]],
    method: str = "eigencam",
    conf: float = 0.25,
    iou: float = 0.7,
    cls: int | None = None,
) -> tuple[list[np.ndarray], Detections]:
    """Raw (not normalised) CAMs of one (1, 3, H, W) input at input resolution, one per layer, and the detections.

    One pytorch-grad-cam object per layer, all hooked into the same forward (and backward) pass: each object
    records only its own layer, so nothing depends on the order in which hooks fire.
    """
    import cv2

    cam_class = _cam_class(method)
    wrapper = _RawOutput(model).eval()
    cams = [cam_class(model=wrapper, target_layers=[module]) for _, module in layers]
    uses_gradients = bool(cams and cams[0].uses_gradients)
    h, w = x.shape[-2:]
    try:
        inp = x.detach().clone().requires_grad_(uses_gradients)
        with torch.set_grad_enabled(uses_gradients):
            output = wrapper(inp)
            detections = _nms(output, conf, iou, cls)
            targets = [DetectionScoreTarget(detections)]
            if uses_gradients:
                wrapper.zero_grad()
                sum(t(o) for t, o in zip(targets, output)).backward()
        maps = []
        for cam, (label, module) in zip(cams, layers):
            acts = cam.activations_and_grads.activations
            if len(acts) != 1 or acts[0].dim() != 4:
                raise ValueError(f"cam: {label} does not output one (B, C, H, W) feature map; pick another row")
            activations = acts[0].numpy()
            grads = cam.activations_and_grads.gradients
            gradients = grads[0].numpy() if grads else np.zeros_like(activations)
            raw = cam.get_cam_image(inp, module, targets, activations, gradients, False)
            raw = np.maximum(np.asarray(raw, dtype=np.float32)[0], 0)  # the library's ReLU on the map
            maps.append(cv2.resize(raw, (w, h), interpolation=cv2.INTER_LINEAR))
    finally:
        for cam in cams:
            cam.activations_and_grads.release()
    return maps, detections


@dataclass
class CamGrid:
    """One rendered grid.

    Attributes:
        path: The PNG.
        image: The source image.
        heatmaps: (models, layers, H, W) raw CAMs at letterboxed resolution.
        models: Row titles.
        layers: Per model, the label of each column's layer (``row 16 EMA``).
        detections: Per model.
        vmax: Upper end of the colour scale (per column when ``scale="layer"``).
        seconds: Time to compute and draw this grid.
    """

    path: Path
    image: Path
    heatmaps: np.ndarray
    models: list[str]
    layers: list[list[str]]
    detections: list[Detections]
    vmax: list[float] = field(default_factory=list)
    seconds: float = 0.0


def grid_pixels(n_models: int, n_layers: int, cell_inches: float = 2.2, dpi: int = 72) -> tuple[int, int]:
    """(width, height) in pixels of a CAM grid PNG."""
    width = (cell_inches + 0.1) * n_layers + 1.3  # + model labels and colour bar
    height = (cell_inches + 0.45) * n_models + 0.95  # + cell titles, column headers, a 3-line figure title
    return int(round(width * dpi)), int(round(height * dpi))


def _draw_grid(
    rgb: np.ndarray,
    grid: CamGrid,
    columns: list[str],
    names: list[dict[int, str]],
    title: str,
    scale: str,
    cell_inches: float = 2.2,
    dpi: int = 72,
) -> None:
    plt = matplotlib_pyplot()
    from matplotlib import colors, patches

    n_models, n_layers = grid.heatmaps.shape[:2]
    width_px, height_px = grid_pixels(n_models, n_layers, cell_inches, dpi)
    fig_w, fig_h = width_px / dpi, height_px / dpi
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    left, right = 0.3 / fig_w, 1 - 1.0 / fig_w
    spec = fig.add_gridspec(
        n_models,
        n_layers,
        left=left,
        right=right,
        top=1 - 0.95 / fig_h,
        bottom=0.1 / fig_h,
        wspace=0.1 / cell_inches,
        hspace=0.45 / cell_inches,
    )
    cmap = plt.get_cmap("jet")
    norms = [colors.Normalize(0.0, v if v > 0 else 1.0) for v in grid.vmax]
    for r in range(n_models):
        det = grid.detections[r]
        for c in range(n_layers):
            ax = fig.add_subplot(spec[r, c])
            ax.imshow(rgb)
            norm = norms[c] if scale == "layer" else norms[0]
            ax.imshow(grid.heatmaps[r, c], cmap=cmap, norm=norm, alpha=0.5)
            for box, score, k in zip(det.boxes, det.scores, det.classes):
                x1, y1, x2, y2 = box
                ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.0, ec="white"))
                label = names[r].get(int(k), str(int(k)))
                ax.text(
                    x1,
                    y1,
                    f"{label} {score:.2f}",
                    fontsize=5,
                    color="black",
                    va="bottom",
                    bbox={"facecolor": "white", "alpha": 0.7, "pad": 0.5, "lw": 0},
                )
            peak = float(grid.heatmaps[r, c].max())
            ax.set_title(f"{grid.layers[r][c]}  peak {peak:.3g}", fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{grid.models[r]}\n{len(det)} detections", fontsize=6)
            if r == 0:
                ax.annotate(
                    columns[c], (0.5, 1.22), xycoords="axes fraction", ha="center", fontsize=7, fontweight="bold"
                )
    if scale == "grid":
        norm, label = norms[0], "CAM (one scale for the whole grid)"
    else:
        norm, label = colors.Normalize(0, 1), "CAM / column max (one scale per column)"
    cax = fig.add_axes((right + 0.2 / fig_w, 0.12, 0.15 / fig_w, 0.7))
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.set_label(label, fontsize=6)
    bar.ax.tick_params(labelsize=5)
    import textwrap

    title = "\n".join(textwrap.wrap(title, width=int((fig_w - 0.4) * 16), max_lines=3, placeholder=" ..."))
    fig.suptitle(title, fontsize=7, x=left, y=1 - 0.05 / fig_h, ha="left", va="top")
    grid.path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(grid.path, dpi=dpi)
    plt.close(fig)


def render_cam_grids(
    models: Sequence[str | os.PathLike | nn.Module | LoadedModel] | str,
    source: str | os.PathLike | Sequence[str | os.PathLike],
    layers: Sequence[int | str] | int | str | None = None,
    method: str = "eigencam",
    cls: int | str | None = None,
    imgsz: int = 640,
    conf: float = 0.25,
    iou: float = 0.7,
    out: str | os.PathLike = "runs/cam",
    scale: str = "grid",
    names: Sequence[str] | None = None,
    max_images: int | None = None,
    verbose: bool = True,
) -> list[CamGrid]:
    """One CAM grid PNG per image (``<out>/<image stem>.png``): rows = models, columns = layers.

    Args:
        models: Checkpoints, YAMLs (random init: the figure says so) or modules.
        source: Image file, folder or list.
        layers: Rows (``15``) or module paths (``6.m.0``), the same for every model; None = the rows that feed each
            model's head (column k = the k-th head input, so P3/P4/P5 line up even when row numbers differ).
        method: ``eigencam``, ``gradcam``, ``gradcam++``, ``hirescam`` or ``layercam``.
        cls: Keep only detections of this class (index or name) as the target.
        imgsz: Square letterbox size (the same input for every model).
        conf: NMS confidence threshold for the detections (drawn, and the target of gradient methods).
        iou: NMS IoU threshold.
        out: Output folder.
        scale: ``grid`` (one colour scale for the whole grid, default) or ``layer`` (one per column, shared by the
            models; for layers whose magnitudes differ a lot).
        names: Display names for the models.
        max_images: Use at most this many images.
        verbose: Print one line per grid.

    Raises:
        ValueError: Unknown method, layer, class or scale (the message lists the choices).
    """
    _cam_class(method)  # fail before loading anything
    if scale not in SCALES:
        raise ValueError(f"cam: scale={scale!r} is not one of {', '.join(SCALES)}")
    specs = [models] if isinstance(models, (str, os.PathLike, nn.Module)) else list(models)
    loaded = [load_model(m, names[i] if names else None) for i, m in enumerate(specs)]
    resolved = [resolve_layers(m.model, layers) for m in loaded]
    n_layers = {len(r) for r in resolved}
    if len(n_layers) != 1:
        counts = ", ".join(f"{m.name}: {len(r)}" for m, r in zip(loaded, resolved))
        raise ValueError(f"cam: the models feed their heads from different numbers of rows ({counts}); give layers=")
    classes = [_resolve_class(cls, m.class_names) for m in loaded]
    images = list_images(source, max_images)
    stride = max(model_stride(m.model) for m in loaded)
    if layers is None:
        strides = getattr(loaded[0].model, "stride", None)
        columns = [
            f"head input {k + 1}" + (f" (stride {int(strides[k])})" if strides is not None and len(strides) > k else "")
            for k in range(len(resolved[0]))
        ]
    else:
        columns = [f"layers={spec}" for spec in (layers if isinstance(layers, (list, tuple)) else [layers])]
    if _method_key(method) == "eigencam":  # any spelling _cam_class accepts
        target = "no target (EigenCAM: first principal component of the activations)"
    else:
        target = f"target: sum of the detections' scores after NMS (conf {conf}, IoU {iou}"
        target += f", class {cls})" if cls is not None else ")"
    class_names = [m.class_names for m in loaded]
    out = Path(out)
    grids = []
    for image in images:
        t0 = time.perf_counter()
        rgb, x = letterbox(image, imgsz, stride)
        heat, dets = [], []
        for m, lay, k in zip(loaded, resolved, classes):
            maps, d = compute_cams(m.model, x, lay, method, conf, iou, k)
            dets.append(d)
            heat.append(maps)
        heatmaps = np.asarray(heat, dtype=np.float32)
        if scale == "grid":
            vmax = [float(heatmaps.max())]
        else:
            vmax = [float(heatmaps[:, c].max()) for c in range(heatmaps.shape[1])]
        grid = CamGrid(
            path=out / f"{image.stem}.png",
            image=image,
            heatmaps=heatmaps,
            models=[m.title for m in loaded],
            layers=[[label for label, _ in lay] for lay in resolved],
            detections=dets,
            vmax=vmax,
        )
        empty = "" if heatmaps.max() > 0 else "; all maps are 0 (no detection to explain)"
        title = (
            f"{method}, {image.name} letterboxed to {x.shape[-1]}x{x.shape[-2]}; {target}; "
            f"{'one colour scale for the grid' if scale == 'grid' else 'one colour scale per column'}{empty}"
        )
        _draw_grid(rgb, grid, columns, class_names, title, scale)
        grid.seconds = time.perf_counter() - t0
        grids.append(grid)
        if verbose:
            print(f"[yolo-attn cam] {grid.path} ({grid.seconds:.2f} s)")
    return grids
