"""Attention inside Ultralytics' CSP blocks for every registered layer: ``C2f_EMA``, ``C3k2_CBAM``, ``C3_SE``, ...

The most published placement in "YOLO + attention" papers puts the layer inside the blocks, not after them. Forks
write one class per (block, layer) pair; here ``<Block>_<Layer>`` exists for every block in :data:`BLOCKS` and every
registered layer (aliases too: ``C2f_CA`` is ``C2f_CoordAtt``), including layers registered later by users.

A ``<Block>_<Layer>`` row takes exactly the stock block's YAML args, scaling and repeats (the parser hook hands it
the stock block's channel rules, including C3k2's ``c3k=True`` at scales m/l/x), builds the stock block, then adds
the attention. The stock parameter names are kept, so stock weights load into it unchanged; attention tensors are
new. Layer options go in a trailing mapping: ``[-1, 3, C2f_EMA, [256, True, {factor: 8, position: fuse}]]``.

Positions (``position:`` in that mapping) for channel-preserving layers:

* ``bottleneck`` (default) -- in every Bottleneck, on the residual branch before the shortcut add:
  ``x + attn(cv2(cv1(x)))`` ("inside the residual block" of the tutorials). In ``C3k2`` with ``c3k=True`` these are
  the inner C3k's bottlenecks.
* ``mid`` -- in every Bottleneck, between its two convs: ``x + cv2(attn(cv1(x)))``.
* ``fuse`` -- once, on the concatenation before the block's final 1x1 fusion conv (``cv2`` of C2f/C3k2/C2, ``cv3``
  of C3).

Conv-like layers (``C2f_ODConv``) instead replace every 3x3 conv inside the bottlenecks (1x1 convs stay). Their
BatchNorm tensors keep stock names and shapes; the dynamic kernel banks are new.

This module subclasses Ultralytics' public block classes and relies on their attribute layout (``m``, ``cv1``...
``Bottleneck.cv1/cv2/add``), verified on the versions listed in :mod:`yolo_attn.plugin.integration`; patching
Ultralytics itself stays in that module. Ultralytics is imported on first use, not when this module is imported:
importing Ultralytics runs the plugin's start-up hook, which needs this module complete.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from yolo_attn.plugin import registry
from yolo_attn.plugin.layer_args import fit_defaults, split_keywords, to_positional

__all__ = [
    "BLOCKS",
    "DEFAULT_POSITION",
    "POSITIONS",
    "AttentionBlock",
    "block_class",
    "block_classes",
    "part_class",
    "part_classes",
    "split_block_name",
    "stock_block_of",
]

#: Stock blocks with attention variants. ``C3k2`` is a ``C2f`` subclass; its inner ``C3k`` blocks are ``C3`` subclasses.
BLOCKS: tuple[str, ...] = ("C2f", "C3k2", "C3", "C2")
POSITIONS: dict[str, str] = {
    "bottleneck": "in every Bottleneck, on the residual branch before the shortcut add: x + attn(cv2(cv1(x)))",
    "mid": "in every Bottleneck, between its two convs: x + cv2(attn(cv1(x)))",
    "fuse": "once, on the concatenation before the block's final 1x1 fusion conv (cv2 of C2f/C3k2/C2, cv3 of C3)",
}
DEFAULT_POSITION = "bottleneck"

_LOCK = threading.RLock()
_CLASSES: dict[tuple[str, str], type[nn.Module]] = {}
_PARTS: dict[str, type[nn.Module]] = {}  # the Ultralytics-derived helper classes, created on first use


def _ultralytics() -> dict[str, type[nn.Module]]:
    """Ultralytics' block classes (imported here, on first use: see the module docstring)."""
    from ultralytics.nn.modules import C2, C3, C2f, C3k2, Conv
    from ultralytics.nn.modules.block import Bottleneck

    return {"C2f": C2f, "C3k2": C3k2, "C3": C3, "C2": C2, "Conv": Conv, "Bottleneck": Bottleneck}


def _residual_forward(self, x: torch.Tensor) -> torch.Tensor:
    y = self.attn(self.cv2(self.cv1(x)))
    return x + y if self.add else y


def _mid_forward(self, x: torch.Tensor) -> torch.Tensor:
    y = self.cv2(self.attn(self.cv1(x)))
    return x + y if self.add else y


def _input_forward(self, x: torch.Tensor) -> torch.Tensor:
    return type(self).__mro__[1].forward(self, self.attn(x))


def _input_forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
    return type(self).__mro__[1].forward_fuse(self, self.attn(x))


_PART_SPECS = {
    # name: (Ultralytics base, methods, docstring)
    "ResidualAttentionBottleneck": (
        "Bottleneck",
        {"forward": _residual_forward},
        "Ultralytics' Bottleneck with an attention layer ``attn`` on the residual branch: ``x + attn(cv2(cv1(x)))``.",
    ),
    "MidAttentionBottleneck": (
        "Bottleneck",
        {"forward": _mid_forward},
        "Ultralytics' Bottleneck with an attention layer ``attn`` between its convs: ``x + cv2(attn(cv1(x)))``.",
    ),
    "AttentionInputConv": (
        "Conv",
        {"forward": _input_forward, "forward_fuse": _input_forward_fuse},
        "Ultralytics' Conv after an attention layer ``attn`` on its input: ``conv(attn(x))``. Subclassing Conv keeps "
        "``conv``/``bn`` names (stock weights load) and lets ``BaseModel.fuse`` fold the BN as for any Conv: it "
        "switches the instance to ``forward_fuse``, which keeps the attention.",
    ),
}


def part_class(name: str) -> type[nn.Module]:
    """A helper class: ``ResidualAttentionBottleneck``, ``MidAttentionBottleneck`` or ``AttentionInputConv``."""
    with _LOCK:
        cls = _PARTS.get(name)
        if cls is None:
            base, methods, doc = _PART_SPECS[name]
            namespace = {"__module__": __name__, "__qualname__": name, "__doc__": doc, **methods}
            cls = _PARTS[name] = type(name, (_ultralytics()[base],), namespace)
        return cls


def part_classes() -> list[type[nn.Module]]:
    """Every helper class (for the safe-load allow-list)."""
    return [part_class(name) for name in _PART_SPECS]


class AttentionBlock:
    """Mixin of every ``<Block>_<Layer>`` class: builds the stock block, then puts the layer inside it.

    Class attributes set per generated class: ``stock_block`` (the Ultralytics class whose parser rules apply) and
    ``layer_name`` (the registered layer).

    Instance attributes:
        attn_position (str): Where the layer sits (:data:`POSITIONS`), or ``"convs"`` for conv-like layers.
        attn_layers (list[str]): Module paths (inside the block) of the inserted or replacing layers.
        yolo_attn_notes (list[str]): What was fitted (shown by ``yolo-attn inspect``, logged by the parser hook).
    """

    stock_block: type[nn.Module]
    layer_name: str

    def __init__(self, *args: Any) -> None:
        stock_args, options = split_keywords(args)
        position = options.pop("position", None)
        super().__init__(*stock_args)
        spec = registry.get_spec(self.layer_name)
        self.yolo_attn_notes: list[str] = []
        self.attn_layers: list[str] = []
        if spec.kind == "conv":
            if position is not None:
                raise ValueError(
                    f"{type(self).__name__}: position= applies to channel-preserving layers; {spec.name} is conv-like "
                    "and replaces the bottlenecks' 3x3 convs"
                )
            self.attn_position = "convs"
            self._replace_convs(spec, options)
        else:
            position = DEFAULT_POSITION if position is None else position
            if position not in POSITIONS:
                raise ValueError(
                    f"{type(self).__name__}: position={position!r} is not one of {', '.join(POSITIONS)} "
                    f"({'; '.join(f'{k}: {v}' for k, v in POSITIONS.items())})"
                )
            self.attn_position = position
            self._insert_attention(spec, position, options)

    # -------------------------------------------------------------------------------------------- construction
    def _bottlenecks(self) -> list[tuple[str, nn.Module]]:
        bottleneck = _ultralytics()["Bottleneck"]
        return [(name, m) for name, m in self.named_modules() if type(m) is bottleneck]

    def _build_layer(self, spec: registry.LayerSpec, channels: int, options: Mapping[str, Any]) -> nn.Module:
        keywords, notes = fit_defaults(spec.cls, channels, [], options)
        for note in notes:
            if note not in self.yolo_attn_notes:
                self.yolo_attn_notes.append(note)
        try:
            return spec.cls(channels, *to_positional(spec.cls, [], keywords))
        except (TypeError, ValueError) as exc:
            where = f"{spec.name} at {channels} channels ({self.attn_position})"
            raise ValueError(f"{type(self).__name__}: {where}: {exc}") from exc

    def _insert_attention(self, spec: registry.LayerSpec, position: str, options: Mapping[str, Any]) -> None:
        if position == "fuse":
            name = "cv3" if isinstance(self, _ultralytics()["C3"]) else "cv2"
            final = getattr(self, name)
            final.attn = self._build_layer(spec, final.conv.in_channels, options)
            final.__class__ = part_class("AttentionInputConv")
            self.attn_layers.append(f"{name}.attn")
            return
        bottlenecks = self._bottlenecks()
        if not bottlenecks:
            raise ValueError(f"{type(self).__name__}: this {self.stock_block.__name__} has no Bottleneck to put it in")
        for name, b in bottlenecks:
            conv = b.cv2 if position == "bottleneck" else b.cv1
            b.attn = self._build_layer(spec, conv.conv.out_channels, options)
            b.__class__ = part_class(
                "ResidualAttentionBottleneck" if position == "bottleneck" else "MidAttentionBottleneck"
            )
            self.attn_layers.append(f"{name}.attn")

    def _replace_convs(self, spec: registry.LayerSpec, options: Mapping[str, Any]) -> None:
        import inspect

        accepted = set(inspect.signature(spec.cls).parameters)
        for name, b in self._bottlenecks():
            for attr in ("cv1", "cv2"):
                old = getattr(b, attr)
                conv = old.conv
                if conv.kernel_size != (3, 3):
                    continue
                c1, c2 = conv.in_channels, conv.out_channels
                extra = {"g": conv.groups, "d": conv.dilation[0], "act": old.act}
                extra = {k: v for k, v in extra.items() if k in accepted and k not in options}
                if conv.groups != 1 and "g" not in accepted:
                    raise ValueError(f"{spec.name} cannot replace the grouped conv {name}.{attr} (no g= argument)")
                try:
                    new = spec.cls(c1, c2, 3, conv.stride[0], **extra, **options)
                except (TypeError, ValueError) as exc:
                    where = f"{spec.name}({c1}, {c2}, 3) for {name}.{attr}"
                    raise ValueError(f"{type(self).__name__}: {where}: {exc}") from exc
                setattr(b, attr, new)
                self.attn_layers.append(f"{name}.{attr}")
        if not self.attn_layers:
            raise ValueError(f"{type(self).__name__}: this {self.stock_block.__name__} has no 3x3 bottleneck conv")

    def extra_repr(self) -> str:
        return f"{self.layer_name} {self.attn_position}: {', '.join(self.attn_layers)}"


# ------------------------------------------------------------------------------------------------ classes by name
def split_block_name(name: str) -> tuple[str, registry.LayerSpec] | None:
    """``"C2f_EMA"`` -> ``("C2f", <EMA spec>)``; None unless the block is known and the layer registered.

    The layer part is matched like :func:`registry.find_spec` (registered names and aliases, case-insensitive).
    """
    block, sep, layer = name.partition("_")
    if not sep or not layer:
        return None
    block = next((b for b in BLOCKS if b.casefold() == block.casefold()), None)
    spec = registry.find_spec(layer) if block else None
    return (block, spec) if spec is not None else None


def stock_block_of(module: object) -> str | None:
    """The stock block of a ``<Block>_<Layer>`` YAML module name (``C2f_EMA`` -> ``C2f``), else None."""
    if not isinstance(module, str) or "_" not in module:
        return None
    parsed = split_block_name(module)
    return parsed[0] if parsed else None


def block_class(block: str, layer: str | registry.LayerSpec) -> type[nn.Module]:
    """The ``<block>_<layer>`` class (created once per pair; ``layer`` may be an alias or a registration).

    Raises:
        KeyError: Unknown block or layer; the message lists the valid ones.
    """
    if block not in BLOCKS:
        raise KeyError(f"no block {block!r}; blocks with attention variants: {', '.join(BLOCKS)}")
    spec = layer if isinstance(layer, registry.LayerSpec) else registry.get_spec(layer)
    with _LOCK:
        key = (block, spec.name)
        cls = _CLASSES.get(key)
        if cls is None:
            stock = _ultralytics()[block]
            name = f"{block}_{spec.name}"
            doc = (
                f"Ultralytics' {block} with {spec.name} inside (see :mod:`yolo_attn.plugin.blocks`).\n\n"
                f"YAML: the stock {block} row with the module renamed, e.g. ``[-1, 3, {name}, [256, True]]``; "
                f"{spec.name} options and ``position`` go in a trailing mapping: "
                f"``[-1, 3, {name}, [256, True, {{position: fuse}}]]``."
            )
            cls = type(
                name,
                (AttentionBlock, stock),
                {
                    "__module__": __name__,
                    "__qualname__": name,
                    "__doc__": doc,
                    "stock_block": stock,
                    "layer_name": spec.name,
                },
            )
            _CLASSES[key] = cls
        return cls


def block_classes(spec: registry.LayerSpec) -> dict[str, type[nn.Module]]:
    """Every YAML name of ``spec``'s block variants (aliases included) -> class."""
    out = {}
    for block in BLOCKS:
        cls = block_class(block, spec)
        for layer_name in spec.names:
            out[f"{block}_{layer_name}"] = cls
    return out


def __getattr__(name: str) -> type[nn.Module]:
    # Checkpoints pickle block classes as yolo_attn.plugin.blocks.C2f_EMA: create them on demand when unpickling.
    if name in _PART_SPECS:
        return part_class(name)
    parsed = split_block_name(name)
    if parsed is None or f"{parsed[0]}_{parsed[1].name}" != name:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return block_class(parsed[0], parsed[1].name)
