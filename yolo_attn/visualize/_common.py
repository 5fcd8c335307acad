"""What gate maps, CAM grids and the report share: loading models, reading and letterboxing images, naming rows.

Nothing here downloads anything: a ``.yaml`` builds a randomly initialised model (figures say so), a ``.pt`` must be
an existing file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def matplotlib_pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend (no display, no font download)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class LoadedModel:
    """A model ready for visualisation.

    Attributes:
        name: Display name (file stem, or the name given).
        model: The fp32 model in eval mode (a private copy for ``.pt``/``.yaml``; the caller's module otherwise).
        source: Where it came from (``checkpoint <path>``, ``yaml <name>``, ``nn.Module``).
        random_init: True when built from a YAML: its weights are random, its heatmaps mean little.
        imgsz: Training image size stored in a checkpoint (None for YAMLs and modules).
    """

    name: str
    model: nn.Module
    source: str
    random_init: bool
    imgsz: int | None = None

    @property
    def title(self) -> str:
        """Name for figure titles; says "random init" for models built from a YAML."""
        return f"{self.name} (random init, built from YAML)" if self.random_init else self.name

    @property
    def class_names(self) -> dict[int, str]:
        names = getattr(self.model, "names", None)
        if isinstance(names, dict):
            return {int(k): str(v) for k, v in names.items()}
        if isinstance(names, (list, tuple)):
            return dict(enumerate(map(str, names)))
        return {}


def load_model(spec: str | os.PathLike | nn.Module | LoadedModel, name: str | None = None) -> LoadedModel:
    """Load a checkpoint, build a YAML (random init) or wrap a module, without downloading anything.

    Args:
        spec: ``.pt`` path, model YAML name/path (``yolov8n-ema.yaml``), an ``nn.Module`` or a :class:`LoadedModel`.
        name: Display name; default the file stem.

    Raises:
        FileNotFoundError: A ``.pt`` that does not exist (a bare name would make Ultralytics download it).
        ValueError: Anything that is not a ``.pt``, a YAML or a module.
    """
    if isinstance(spec, LoadedModel):
        return spec
    if isinstance(spec, nn.Module):
        return LoadedModel(name or type(spec).__name__, spec.float().eval(), "nn.Module", random_init=False)
    text = str(spec)
    suffix = Path(text).suffix.lower()
    if suffix in {".yaml", ".yml"}:
        from ultralytics import YOLO

        model = YOLO(text, verbose=False).model
        return LoadedModel(name or Path(text).stem, model.float().eval(), f"yaml {text}", random_init=True)
    if suffix == ".pt":
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model={text!r}: no such checkpoint (nothing is downloaded; give a path to a .pt)")
        from ultralytics.nn.tasks import load_checkpoint

        model, ckpt = load_checkpoint(str(path.resolve()), device="cpu", fuse=False)
        imgsz = (ckpt.get("train_args") or {}).get("imgsz")
        imgsz = int(imgsz) if isinstance(imgsz, int) else None
        return LoadedModel(
            name or checkpoint_name(path), model.float().eval(), f"checkpoint {path.resolve()}", False, imgsz
        )
    raise ValueError(f"model={text!r}: expected a checkpoint (.pt), a model YAML (.yaml) or an nn.Module")


def checkpoint_name(path: Path) -> str:
    """Display name of a checkpoint: the training run's folder for Ultralytics' ``<run>/weights/best.pt``."""
    if path.stem in ("best", "last") and path.parent.name == "weights" and path.parent.parent.name:
        return path.parent.parent.name + ("" if path.stem == "best" else " (last.pt)")
    return path.stem


def as_list(value: object) -> list:
    """``a,b`` CLI values arrive as lists already; a single value becomes a one-element list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def list_images(source: str | os.PathLike | Sequence[str | os.PathLike], max_images: int | None = None) -> list[Path]:
    """Image files of ``source``: a file, a folder (sorted, not recursive) or a list of either.

    Raises:
        FileNotFoundError: A path that does not exist, or no image in what was given.
    """
    items = as_list(source) if not isinstance(source, (str, os.PathLike)) else [source]
    images: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            images += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"source={item}: no such image file or folder")
    if not images:
        raise FileNotFoundError(f"source={source}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return images[:max_images] if max_images else images


def model_stride(model: nn.Module) -> int:
    stride = getattr(model, "stride", None)
    if isinstance(stride, torch.Tensor) and stride.numel():
        return int(stride.max())
    return 32


def letterbox(image: str | os.PathLike | np.ndarray, imgsz: int, stride: int = 32) -> tuple[np.ndarray, torch.Tensor]:
    """Ultralytics' own ``LetterBox`` to a square ``imgsz`` (same input for every model, so figures line up).

    Args:
        image: Image path or a BGR ``uint8`` array (as OpenCV reads it).
        imgsz: Square side; rounded up to a multiple of ``stride``.
        stride: Model stride.

    Returns:
        ``(letterboxed RGB uint8 array (H, W, 3), float tensor (1, 3, H, W) in [0, 1])`` -- the tensor is what
        Ultralytics' predictor feeds the model.
    """
    import cv2
    from ultralytics.data.augment import LetterBox

    if not isinstance(image, np.ndarray):
        bgr = cv2.imread(str(image))
        if bgr is None:
            raise FileNotFoundError(f"{image}: not a readable image")
    else:
        bgr = image
    size = int(np.ceil(imgsz / stride) * stride)
    boxed = LetterBox((size, size), auto=False, stride=stride)(image=bgr)
    rgb = np.ascontiguousarray(boxed[..., ::-1])
    tensor = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255.0).unsqueeze(0)
    return rgb, tensor


def rows_of(model: nn.Module) -> nn.Module | None:
    """The ``nn.Sequential`` of YAML rows of an Ultralytics model (``model.model``), else None."""
    rows = getattr(model, "model", None)
    return rows if isinstance(rows, nn.Sequential) else None


def row_label(model: nn.Module, path: str) -> str:
    """Name of a module by its YAML row: ``"16"`` -> ``"row 16 EMA"``, ``"6.m.0.attn"`` -> ``"row 6 C2f_EMA m.0.attn"``.

    ``path`` is relative to the rows (``model.model``); for a model without rows the path is returned as it is.
    """
    rows = rows_of(model)
    if rows is None:
        return path or type(model).__name__
    head, _, rest = path.partition(".")
    if not head.isdigit() or int(head) >= len(rows):
        return path
    row = rows[int(head)]
    label = f"row {head} {_type_name(row)}"
    return f"{label} {rest}" if rest else label


def _type_name(module: nn.Module) -> str:
    name = getattr(module, "type", None)  # Ultralytics stores the YAML module name on each row
    text = str(name) if name else type(module).__name__
    return text.rsplit(".", 1)[-1]


def row_choices(model: nn.Module) -> list[str]:
    """``"<index> <type>"`` for every row (what ``layers=`` accepts)."""
    rows = rows_of(model)
    return [] if rows is None else [f"{i} {_type_name(m)}" for i, m in enumerate(rows)]


def safe_filename(text: str) -> str:
    """A readable file name for a label (``row 6 C2f_EMA m.0.attn`` -> ``row6_C2f_EMA_m.0.attn``)."""
    text = re.sub(r"row (\d+)", r"row\1", text)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "gate"
