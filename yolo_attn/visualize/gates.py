"""Gate maps: the tensor each attention layer multiplies its input by, read with forward hooks on its ``GateTap``.

Python API::

    from yolo_attn.visualize import collect_gates
    gates = collect_gates("runs/detect/train/weights/best.pt", "bus.jpg", imgsz=640)
    for name, g in gates.items():          # "row 16 EMA", "row 6 C2f_CBAM m.0.attn spatial", ...
        print(name, g.kind, tuple(g.gate.shape))

Every ``GateTap`` found in ``model.named_modules()`` is read, so layers inside blocks (``C2f_EMA``'s
``<row>.m.<k>.attn``) and layers registered by users are covered without a list to maintain. A gate is named by
its YAML row, the module path inside the row and, for layers with several gates, the gate's label.

Figures (``yolo-attn attn``): one PNG per image, one row per model, the letterboxed input first, then every gate:
spatial gates (CBAM, EMA -- the mean over its G group maps --, TripletAttention) overlaid on the image, CoordAtt's h
and w strips and their product, per-element gates (SimAM, NAM, ShuffleAttention) as a map and per-channel bars,
per-channel gates (SE, ECA) as bar charts. One colour scale for the
whole figure, with a colour bar. ``save_maps=True`` also writes every gate at feature resolution as ``.npy``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from yolo_attn.layers._gate import GateTap
from yolo_attn.visualize._common import (
    LoadedModel,
    letterbox,
    list_images,
    load_model,
    matplotlib_pyplot,
    model_stride,
    row_label,
    rows_of,
    safe_filename,
)

__all__ = [
    "GateMap",
    "GateRecorder",
    "collect_gates",
    "display_maps",
    "layer_gate",
    "plot_gate_figure",
    "render_gate_maps",
]


@dataclass
class GateMap:
    """One gate read from one forward pass.

    Attributes:
        name: Unique display name: ``"row 16 EMA"``, ``"row 16 CBAM spatial"``, ``"row 6 C2f_EMA m.0.attn"``.
        layer: Name of the attention layer that owns the gate (``"row 16 CBAM"``).
        layer_type: Class name of that layer (``"CBAM"``).
        path: Module path of the ``GateTap`` in the model (``"model.16.SpatialGate.gate"``).
        kind: The tap's kind (:data:`yolo_attn.layers._gate.GATE_KINDS`).
        groups: Number of group maps of a grouped spatial gate (EMA), else 1.
        label: The tap's label within its layer (``"spatial"``), or None.
        gate: The gate tensor exactly as the layer multiplies it (detached): (B, 1|G, H, W), (B, C, 1, 1), ...
        input_shape: Shape (B, C, H, W) of the owning layer's input.
        combine: How the layer combines its gates, from the layer's ``gate_combine`` attribute: ``"product"``
            (default: ``output = input * g1 * g2 ...``) or ``"mean"`` (TripletAttention: ``input * mean(g)``).
        output_shuffle: The layer's ``output_channel_shuffle`` (ShuffleAttention: the output is
            ``channel_shuffle(input * gates, 2)``), or None.
    """

    name: str
    layer: str
    layer_type: str
    path: str
    kind: str
    groups: int
    label: str | None
    gate: Tensor
    input_shape: tuple[int, ...]
    combine: str = "product"
    output_shuffle: int | None = None

    def broadcast(self) -> Tensor:
        """The gate shaped to multiply the layer's (B, C, H, W) input (group maps repeated over their channels)."""
        return GateTap.broadcast(self.gate, self.input_shape[1])

    def numpy(self, index: int = 0) -> np.ndarray:
        """The gate of image ``index`` of the batch at feature resolution (what ``save_maps`` writes)."""
        return self.gate[index].float().cpu().numpy()


def layer_gate(gates: Sequence[GateMap]) -> Tensor:
    """The whole gate one layer applies, from its gates: their product (or mean, per the layer's ``gate_combine``).

    ``output == input * layer_gate(...)`` for most layers; ShuffleAttention then shuffles the channels
    (:attr:`GateMap.output_shuffle`).
    """
    if not gates:
        raise ValueError("layer_gate: no gates given")
    parts = [g.broadcast() for g in gates]
    if gates[0].combine == "mean":
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total / len(parts)
    product = parts[0]
    for part in parts[1:]:
        product = product * part
    return product


def _owner_path(path: str, layer_paths: set[str]) -> str:
    """Nearest ancestor of a tap that is a registered layer (the tap's parent when none is)."""
    parts = path.split(".")
    for i in range(len(parts) - 1, -1, -1):
        candidate = ".".join(parts[:i])
        if candidate in layer_paths:
            return candidate
    return ".".join(parts[:-1])


def _registered_classes() -> tuple[type, ...]:
    from yolo_attn.plugin import registry

    return tuple(spec.cls for spec in registry.specs())


class GateRecorder:
    """Context manager that records every gate of ``model`` during the forward passes run inside it.

    Example:
        >>> layer = CBAM(64)
        >>> with GateRecorder(layer) as rec:
        ...     y = layer(x)
        >>> torch.allclose(y, x * rec.gates["CBAM channel"].broadcast() * rec.gates["CBAM spatial"].broadcast())
        True

    Attributes:
        gates: ``name -> GateMap`` of the last forward pass (in module order).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.gates: dict[str, GateMap] = {}
        self._handles: list[Any] = []
        modules = dict(model.named_modules())  # in module order
        self._taps = [(path, m) for path, m in modules.items() if isinstance(m, GateTap)]
        classes = _registered_classes()
        layer_paths = {path for path, m in modules.items() if isinstance(m, classes)}
        rows = rows_of(model)
        prefix = next((p + "." for p, m in modules.items() if rows is not None and m is rows), "")
        self._meta: dict[str, dict[str, Any]] = {}
        by_owner: dict[str, list[str]] = {}
        for path, _tap in self._taps:
            owner = _owner_path(path, layer_paths)
            by_owner.setdefault(owner, []).append(path)
        for owner, paths in by_owner.items():
            owner_module = modules[owner]
            rel = owner[len(prefix) :] if prefix and owner.startswith(prefix) else owner
            layer = row_label(model, rel)  # without rows: the owner's path, or the model's class name for the root
            for path in paths:
                tap = modules[path]
                label = tap.label or path[len(owner) :].strip(".").replace("_gate", "").replace("gate_", "")
                name = layer if len(paths) == 1 else f"{layer} {label}"
                shuffle = getattr(owner_module, "output_channel_shuffle", None)
                self._meta[path] = {
                    "name": name,
                    "layer": layer,
                    "layer_type": type(owner_module).__name__,
                    "owner": owner_module,
                    "label": tap.label,
                    "combine": str(getattr(owner_module, "gate_combine", "product")),
                    "output_shuffle": int(shuffle) if shuffle else None,
                }
        self._inputs: dict[int, tuple[int, ...]] = {}

    @property
    def names(self) -> list[str]:
        """Names of every gate the model declares (known before any forward pass)."""
        return [self._meta[p]["name"] for p, _ in self._taps]

    def __enter__(self) -> GateRecorder:
        self.gates = {}
        owners = {id(meta["owner"]): meta["owner"] for meta in self._meta.values()}
        for owner in owners.values():
            self._handles.append(owner.register_forward_pre_hook(self._record_input))
        for path, tap in self._taps:
            self._handles.append(tap.register_forward_hook(self._make_hook(path, tap)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        order = {self._meta[p]["name"]: i for i, (p, _) in enumerate(self._taps)}
        self.gates = dict(sorted(self.gates.items(), key=lambda kv: order[kv[0]]))  # module order, not call order

    def _record_input(self, module: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        if isinstance(x, Tensor):
            self._inputs[id(module)] = tuple(x.shape)

    def _make_hook(self, path: str, tap: GateTap):
        meta = self._meta[path]

        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            input_shape = self._inputs.get(id(meta["owner"]), ())
            self.gates[meta["name"]] = GateMap(
                name=meta["name"],
                layer=meta["layer"],
                layer_type=meta["layer_type"],
                path=path,
                kind=tap.kind,
                groups=tap.groups,
                label=meta["label"],
                gate=output.detach().clone(),
                input_shape=input_shape,
                combine=meta["combine"],
                output_shuffle=meta["output_shuffle"],
            )

        return hook


def collect_gates(
    model: str | os.PathLike | nn.Module | LoadedModel,
    image: str | os.PathLike | np.ndarray | Tensor,
    imgsz: int = 640,
) -> dict[str, GateMap]:
    """Run one forward pass and return every gate of every attention layer in the model.

    Args:
        model: ``.pt`` checkpoint, model YAML (random init), or an ``nn.Module`` (a single layer works too).
        image: Image path or BGR array (letterboxed to ``imgsz`` with Ultralytics' ``LetterBox``), or a tensor
            used as it is (``(B, 3, H, W)`` for a detector, any input the module takes otherwise).
        imgsz: Square letterbox size for image inputs.

    Returns:
        ``name -> GateMap`` in module order, e.g. ``{"row 16 EMA": GateMap(gate=(1, 32, 8, 8)), ...}``; empty when
        the model has no gate-declaring layer.
    """
    loaded = load_model(model)
    net = loaded.model
    if isinstance(image, Tensor):
        x = image
    else:
        _, x = letterbox(image, imgsz, model_stride(net))
    with GateRecorder(net) as recorder, torch.no_grad():
        net(x)
    return recorder.gates


# ------------------------------------------------------------------------------------------------------- display
@dataclass
class DisplayMap:
    """One panel of a gate figure: a spatial map (H, W) to overlay, or per-channel weights (C,) for a bar chart."""

    title: str
    style: str  # "spatial" or "channel"
    values: np.ndarray


def _gated_channels(g: Tensor) -> Tensor:
    """Channels a (C, ...) gate acts on: a channel whose gate is exactly 1 everywhere is left alone by it.

    ShuffleAttention's two gates each act on half of the channels and hold 1.0 on the other half; a sigmoid gate
    that really gates a channel is never exactly 1 everywhere in float32 unless saturated.
    """
    keep = (g != 1.0).flatten(1).any(1)
    return keep if keep.any() else torch.ones_like(keep)


def display_maps(gates: dict[str, GateMap], index: int = 0) -> list[DisplayMap]:
    """Panels for a figure, per layer in module order.

    * ``channel`` gates (SE, ECA, CBAM's M_c): a bar per channel.
    * ``spatial`` gates (CBAM's M_s, EMA, TripletAttention's H-W): the map, the mean over EMA's G group maps.
    * ``strip_h`` / ``strip_w`` (CoordAtt, TripletAttention): the strip, mean over channels, spread over the image.
    * ``element`` gates (SimAM, NAM, ShuffleAttention's spatial half): the mean over channels as a map and the
      mean over H x W per channel as bars.
    * A layer with two or more non-channel gates also gets the gate it applies as a whole (CoordAtt's
      ``a_h * a_w``, TripletAttention's mean of three), mean over channels.

    The .npy files of ``save_maps`` keep every map at full resolution.
    """
    panels: list[DisplayMap] = []
    by_layer: dict[str, list[GateMap]] = {}
    for gate in gates.values():
        by_layer.setdefault(gate.layer, []).append(gate)
    for layer, members in by_layer.items():
        for gate in members:
            g = gate.gate[index].float().cpu()
            k, size = g.shape[0], f"{g.shape[-2]}x{g.shape[-1]}"
            flat_hw = g.shape[-2] == 1 and g.shape[-1] == 1
            if gate.kind == "channel" or (gate.kind not in ("spatial", "strip_h", "strip_w", "element") and flat_hw):
                keep = _gated_channels(g)
                note = f" ({int(keep.sum())} of {k} gated)" if int(keep.sum()) < k else ""
                values = g.flatten(1).mean(1)[keep].numpy()
                panels.append(DisplayMap(f"{gate.name}: {values.size} channel weights{note}", "channel", values))
                continue
            if gate.kind == "element":
                keep = _gated_channels(g)
                n = int(keep.sum())
                of = f"{n} of {k}" if n < k else f"{k}"
                panels.append(
                    DisplayMap(f"{gate.name} ({size}, mean of {of} channels)", "spatial", g[keep].mean(0).numpy())
                )
                panels.append(
                    DisplayMap(f"{gate.name}: mean over {size} per channel", "channel", g[keep].mean((1, 2)).numpy())
                )
                continue
            what = " strip" if gate.kind in ("strip_h", "strip_w") else ""
            extra = f", mean of {k} {'group maps' if gate.kind == 'spatial' else 'channels'}" if k > 1 else ""
            panels.append(DisplayMap(f"{gate.name}{what} ({size}{extra})", "spatial", g.mean(0).numpy()))
        maps = [m for m in members if m.kind != "channel"]
        if len(maps) >= 2:
            whole = layer_gate(maps)[index].float().cpu()
            c, h, w = whole.shape
            if members[0].combine == "mean":
                what = f"mean of its {len(maps)} gates"
            elif all(m.kind in ("strip_h", "strip_w") for m in maps):
                what = "h x w"
            else:
                what = "product of its gates"
            panels.append(
                DisplayMap(
                    f"{layer} {what} ({h}x{w}" + (f", mean of {c} channels)" if c > 1 else ")"),
                    "spatial",
                    whole.mean(0).numpy(),
                )
            )
    return panels


#: Panels per line of a gate figure; a model with more gates continues on the next line.
MAX_PANELS_PER_LINE = 8


def figure_layout(panel_counts: Sequence[int]) -> tuple[int, int]:
    """(lines, columns) of a gate figure whose models have these many panels (plus the image column)."""
    per_line = [max(1, -(-n // MAX_PANELS_PER_LINE)) for n in panel_counts]
    return sum(per_line), 1 + min(MAX_PANELS_PER_LINE, max(panel_counts, default=0))


def figure_pixels(n_rows: int, n_cols: int, panel_inches: float = 2.2, dpi: int = 72) -> tuple[int, int]:
    """(width, height) in pixels of a gate figure with this many lines and columns (see :func:`figure_layout`)."""
    width = (panel_inches + 0.1) * n_cols + 1.0  # + colour bar
    height = (panel_inches + 0.55) * n_rows + 0.4  # + panel titles, figure title
    return int(round(width * dpi)), int(round(height * dpi))


def plot_gate_figure(
    image_rgb: np.ndarray,
    rows: Sequence[tuple[str, list[DisplayMap]]],
    path: str | os.PathLike,
    title: str = "",
    panel_inches: float = 2.2,
    dpi: int = 72,
    cmap: str = "jet",
) -> Path:
    """Draw one figure: a row per model (letterboxed image, then its panels), one colour scale, a colour bar.

    Args:
        image_rgb: The letterboxed input image (H, W, 3) every model saw.
        rows: ``(row title, panels)`` per model.
        path: PNG to write.
        title: Figure title.
        panel_inches: Size of one panel.
        dpi: Resolution (small by default: figures go into reports and READMEs).
        cmap: Matplotlib colour map.
    """
    plt = matplotlib_pyplot()
    from matplotlib import colors

    values = [p.values for _, panels in rows for p in panels if p.values.size]
    lo = float(min(v.min() for v in values)) if values else 0.0
    hi = float(max(v.max() for v in values)) if values else 1.0
    if hi - lo < 1e-6:  # a constant gate (e.g. 0.5 everywhere) still gets a readable bar
        lo, hi = lo - 0.01, hi + 0.01
    norm = colors.Normalize(vmin=lo, vmax=hi)
    colormap = plt.get_cmap(cmap)
    n_lines, n_cols = figure_layout([len(panels) for _, panels in rows])
    width_px, height_px = figure_pixels(n_lines, n_cols, panel_inches, dpi)
    fig_w, fig_h = width_px / dpi, height_px / dpi
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    grid_right = 1.0 - 0.95 / fig_w
    grid = fig.add_gridspec(
        n_lines,
        n_cols,
        left=0.05 / fig_w,
        right=grid_right,
        top=1 - 0.75 / fig_h,
        bottom=0.08 / fig_h,
        wspace=0.1 / panel_inches,
        hspace=0.55 / panel_inches,
    )
    h, w = image_rgb.shape[:2]
    line = 0
    for row_title, panels in rows:
        ax = fig.add_subplot(grid[line, 0])
        ax.imshow(image_rgb)
        ax.set_title(row_title, fontsize=7, loc="left")
        ax.set_axis_off()
        for k, panel in enumerate(panels):
            ax = fig.add_subplot(grid[line + k // MAX_PANELS_PER_LINE, 1 + k % MAX_PANELS_PER_LINE])
            if panel.style == "channel":
                x = np.arange(panel.values.size)
                ax.bar(x, panel.values, width=1.0, color=colormap(norm(panel.values)))
                ax.set_ylim(lo, hi)
                ax.set_xlim(-0.5, panel.values.size - 0.5)
                ax.tick_params(labelsize=5)
                ax.set_xlabel("channel", fontsize=6, labelpad=1)
            else:
                values = np.atleast_2d(panel.values)
                ax.imshow(image_rgb)
                ax.imshow(values, cmap=colormap, norm=norm, alpha=0.55, extent=(0, w, h, 0), interpolation="bilinear")
                ax.set_xlim(0, w)
                ax.set_ylim(h, 0)
                ax.set_axis_off()
            ax.set_title(_wrap(panel.title), fontsize=6)
        line += max(1, -(-len(panels) // MAX_PANELS_PER_LINE))
    cax = fig.add_axes((grid_right + 0.15 / fig_w, 0.1, 0.15 / fig_w, 0.75))
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=colormap), cax=cax)
    bar.set_label("gate value (shared scale)", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=8, x=0.05 / fig_w, y=1 - 0.08 / fig_h, ha="left", va="top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _wrap(text: str, width: int = 40) -> str:
    words, lines, line = text.split(" "), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)


def save_gate_maps(gates: dict[str, GateMap], folder: str | os.PathLike, index: int = 0) -> dict[str, str]:
    """Write every gate of image ``index`` as ``<folder>/<name>.npy`` at feature resolution, plus ``gates.json``.

    Returns:
        ``gate name -> file name``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files, index_rows = {}, []
    for name, gate in gates.items():
        file = safe_filename(name) + ".npy"
        np.save(folder / file, gate.numpy(index))
        files[name] = file
        index_rows.append(
            {
                "name": name,
                "file": file,
                "layer": gate.layer,
                "layer_type": gate.layer_type,
                "module": gate.path,
                "kind": gate.kind,
                "groups": gate.groups,
                "shape": list(gate.gate.shape[1:]),
                "input_shape": list(gate.input_shape[1:]),
            }
        )
    (folder / "gates.json").write_text(json.dumps(index_rows, indent=2), encoding="utf-8")
    return files


def render_gate_maps(
    models: Sequence[str | os.PathLike | nn.Module | LoadedModel] | str,
    source: str | os.PathLike | Sequence[str | os.PathLike],
    imgsz: int = 640,
    out: str | os.PathLike = "runs/attn",
    save_maps: bool = False,
    names: Sequence[str] | None = None,
    max_images: int | None = None,
    verbose: bool = True,
) -> list[Path]:
    """Gate-map figures, one PNG per image (``<out>/<image stem>.png``), one row per model.

    Args:
        models: Checkpoints / YAMLs (random init, said in the figure) / modules.
        source: Image file, folder or list.
        imgsz: Square letterbox size (the same input for every model).
        out: Output folder.
        save_maps: Also write each gate as ``.npy`` to ``<out>/maps/<image stem>/<model>/``.
        names: Display names for the models (default: file stems).
        max_images: Use at most this many images of ``source``.
        verbose: Print one line per figure.

    Returns:
        The figure paths.
    """
    specs = [models] if isinstance(models, (str, os.PathLike, nn.Module)) else list(models)
    loaded = [load_model(m, names[i] if names else None) for i, m in enumerate(specs)]
    images = list_images(source, max_images)
    out = Path(out)
    stride = max(model_stride(m.model) for m in loaded)
    written = []
    for image in images:
        t0 = time.perf_counter()
        rgb, x = letterbox(image, imgsz, stride)
        rows = []
        for m in loaded:
            gates = collect_gates(m, x)
            panels = display_maps(gates)
            rows.append((m.title + ("" if gates else ": no gate-declaring attention layer"), panels))
            if save_maps:
                save_gate_maps(gates, out / "maps" / image.stem / safe_filename(m.name))
        title = f"gate maps  {image.name}  letterboxed to {x.shape[-1]}x{x.shape[-2]}"
        path = plot_gate_figure(rgb, rows, out / f"{image.stem}.png", title=title)
        written.append(path)
        if verbose:
            print(f"[yolo-attn attn] {path} ({time.perf_counter() - t0:.2f} s)")
    return written
