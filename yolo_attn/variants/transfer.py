"""Pretrained-weight transfer from a baseline model to a variant whose rows were renumbered by inserted layers.

Ultralytics keys every tensor by row index (``model.16.cv1.conv.weight``) and transfers with ``intersect_dicts``:
a key is copied only when the same key with the same shape exists in the new model. Inserting one attention row
after row 15 shifts every later row by one, so ``model.16.*`` of the baseline (a ``Conv``) meets ``model.16.*`` of
the variant (the new ``EMA``): every tensor after the first insertion is silently dropped or, where shapes happen to
agree, copied into the wrong layer.

This module aligns the two YAMLs row by row (:func:`align_layers`), checks that the alignment is consistent with the
wiring (every matched row reads the matched producers, treating inserted single-input rows as pass-through), and
renames the keys accordingly. Rows swapped for a conv-like plugin layer (``Conv`` -> ``ODConv``) keep their wiring
but not their tensors (the parametrisation differs); they are reported, not guessed.

Example:
    >>> from ultralytics.nn.tasks import DetectionModel
    >>> base = DetectionModel("yolov8n.yaml", verbose=False)
    >>> variant = DetectionModel("yolov8n-ema.yaml", verbose=False)
    >>> report = transfer_state_dict(base, variant)
    >>> report.n_transferred == report.n_base_tensors
    True
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolo_attn.plugin import registry

__all__ = [
    "Alignment",
    "NotAVariantError",
    "TransferError",
    "TransferReport",
    "align_layers",
    "make_initial_checkpoint",
    "map_layers",
    "renamed_state_dict",
    "transfer_command",
    "transfer_state_dict",
]

INPUT = -1  # producer index of the image input
_KEY = re.compile(r"^model\.(\d+)\.(.+)$")
# Rows a conv-like plugin layer may stand in for, besides other conv-like plugin layers.
_CONV_LIKE_STOCK = frozenset({"Conv"})


class TransferError(ValueError):
    """Weights cannot be transferred (mismatched scale, unreadable checkpoint, ...)."""


class NotAVariantError(TransferError):
    """The two model YAMLs are not a base/variant pair: some base row has no counterpart in the variant."""


@dataclass(frozen=True)
class _Row:
    index: int
    sources: tuple[int, ...]  # absolute producer indices; INPUT for the image
    n: int
    module: str
    args: tuple

    def show(self) -> str:
        return f"row {self.index} {self.module}"


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _rows(yaml_dict: Mapping, what: str) -> list[_Row]:
    if not isinstance(yaml_dict, Mapping) or not all(isinstance(yaml_dict.get(s), list) for s in ("backbone", "head")):
        raise TransferError(f"{what}: not an Ultralytics model YAML dict (needs 'backbone' and 'head' row lists)")
    rows = []
    for i, row in enumerate(list(yaml_dict["backbone"]) + list(yaml_dict["head"])):
        f, n, module, args = row
        sources = []
        for x in [f] if isinstance(f, int) else list(f):
            src = x if x >= 0 else i + x  # row 0 reading -1 gives INPUT (-1) by the same formula
            if src < INPUT or src >= i:
                raise TransferError(f"{what}: row {i} {row} reads row {src}, which is not an earlier row")
            sources.append(src)
        rows.append(_Row(i, tuple(sources), int(n), str(module), _freeze(list(args))))
    return rows


def _kind(module: str) -> str | None:
    try:
        return registry.get_spec(module).kind
    except (KeyError, TypeError):
        return None


def _stock_block(module: str) -> str:
    """``C2f_EMA`` -> ``C2f`` (a block with attention inside keeps the stock block's parameter names); else as is."""
    from yolo_attn.plugin.blocks import stock_block_of

    return stock_block_of(module) or module


def _conv_like(module: str) -> bool:
    return module in _CONV_LIKE_STOCK or _kind(module) == "conv"


@dataclass
class Alignment:
    """Row correspondence between a base model YAML and a variant of it.

    Attributes:
        matched: Base row -> variant row for rows with the same module; their tensors transfer.
        replaced: Base row -> variant row for conv-like swaps (``Conv`` -> ``ODConv``): same place in the wiring,
            different parametrisation, so their tensors are not transferred.
        extra: Variant rows with no base counterpart (inserted layers), freshly initialised.
        dropped: Base rows with no variant counterpart (plugin rows removed from the variant).
        base_modules: Module name of every base row.
        variant_modules: Module name of every variant row.
    """

    matched: dict[int, int]
    replaced: dict[int, int]
    extra: list[int]
    dropped: list[int]
    base_modules: list[str] = field(default_factory=list)
    variant_modules: list[str] = field(default_factory=list)

    @property
    def renumbered(self) -> list[tuple[int, int, str]]:
        """``(base row, variant row, module)`` of matched rows whose index changed."""
        return [(i, j, self.base_modules[i]) for i, j in sorted(self.matched.items()) if i != j]

    def variant_to_base(self) -> dict[int, int]:
        """Variant row -> base row for matched and replaced rows."""
        return {j: i for i, j in {**self.matched, **self.replaced}.items()}


def align_layers(base_yaml: Mapping, variant_yaml: Mapping, *, removed: Iterable[int] = ()) -> Alignment:
    """Align the rows of a base model YAML with those of a variant (layers inserted, removed or swapped).

    Rows are walked in order. A base row matches the first later variant row with the same module and repeats
    (preferring identical args) whose producers are the matched producers of the base row; variant rows skipped on
    the way are inserted rows. Inserted (variant) and removed (base) single-input rows are pass-through when
    producers are compared, so ``C2f -> EMA -> Conv`` still matches ``C2f -> Conv``. A ``Conv`` row that became a
    conv-like plugin layer (or the reverse) with the same args is aligned as *replaced*. A stock block and its
    attention variant (``C2f`` and ``C2f_EMA``) are the same row: the variant keeps every stock tensor name.

    Args:
        base_yaml: The baseline model dict (``model.yaml``, or a loaded YAML file).
        variant_yaml: The variant model dict.
        removed: Base rows known to be absent from the variant (e.g. stock rows removed with ``place(force=True)``);
            without it only plugin rows may be missing.

    Returns:
        The :class:`Alignment`.

    Raises:
        NotAVariantError: A non-plugin base row has no counterpart with the same module and wiring.
    """
    base, var = _rows(base_yaml, "base"), _rows(variant_yaml, "variant")
    to_var: dict[int, int] = {}  # base -> variant, matched or replaced
    dropped: list[int] = []
    extra: list[int] = []
    replaced: dict[int, int] = {}

    def resolve_base(src: int) -> int | None:
        # Follow removed single-input base rows back to a row that has a counterpart.
        while src != INPUT and src in dropped:
            if len(base[src].sources) != 1:
                return None
            src = base[src].sources[0]
        return src

    def resolve_variant(src: int, matched_variant: set[int]) -> int | None:
        # Unmatched variant rows before the candidate are inserted rows: follow single-input ones to their producer.
        while src != INPUT and src not in matched_variant:
            if len(var[src].sources) != 1:
                return None
            src = var[src].sources[0]
        return src

    def wiring_ok(b: _Row, v: _Row) -> bool:
        if len(b.sources) != len(v.sources):
            return False
        matched_variant = set(to_var.values())
        for sb, sv in zip(b.sources, v.sources):
            rb = resolve_base(sb)
            if rb is None:
                return False
            expected = INPUT if rb == INPUT else to_var.get(rb)
            if expected is None or resolve_variant(sv, matched_variant) != expected:
                return False
        return True

    removed = set(removed)
    start = 0
    for b in base:
        if b.index in removed:
            dropped.append(b.index)
            continue
        chosen = None
        for exact_args in (True, False):
            for v in var[start:]:
                same = v.module == b.module or _stock_block(v.module) == _stock_block(b.module)
                swap = not same and _conv_like(v.module) and _conv_like(b.module) and v.args == b.args
                if not (same or swap) or v.n != b.n or (exact_args and v.args != b.args):
                    continue
                if wiring_ok(b, v):
                    chosen = v
                    break
            if chosen is not None:
                break
        if chosen is None:
            if _kind(b.module) is not None:  # a plugin row the variant does without
                dropped.append(b.index)
                continue
            previous = f"variant row {start - 1}" if start else "the start of the variant"
            raise NotAVariantError(
                f"the YAMLs are not a base/variant pair: base row {b.index} {b.module} (repeats {b.n}, args "
                f"{list(b.args)}, reading rows {list(b.sources)}) has no counterpart after {previous}; a variant may "
                "only insert or remove layers and swap Conv for a conv-like plugin layer"
            )
        extra.extend(range(start, chosen.index))
        to_var[b.index] = chosen.index
        if _stock_block(chosen.module) != _stock_block(b.module):  # C2f -> C2f_EMA keeps every stock tensor name
            replaced[b.index] = chosen.index
        start = chosen.index + 1
    extra.extend(range(start, len(var)))
    matched = {i: j for i, j in to_var.items() if i not in replaced}
    return Alignment(
        matched=matched,
        replaced=replaced,
        extra=extra,
        dropped=dropped,
        base_modules=[r.module for r in base],
        variant_modules=[r.module for r in var],
    )


def map_layers(base_yaml: Mapping, variant_yaml: Mapping) -> dict[int, int]:
    """Base row index -> variant row index for every row whose tensors transfer (same module).

    Replaced conv-like rows are not in the map (see :func:`align_layers` for them and for inserted rows).

    Raises:
        NotAVariantError: The YAMLs are not a base/variant pair.
    """
    return align_layers(base_yaml, variant_yaml).matched


@dataclass
class TransferReport:
    """What a transfer copied, skipped and left freshly initialised.

    Attributes:
        n_base_tensors: State-dict entries of the base model (parameters and buffers, BN statistics included).
        n_variant_tensors: State-dict entries of the variant model (0 when it was not given).
        n_transferred: Base entries copied into the variant.
        skipped: Base key -> why it was not copied.
        new: Variant keys that received nothing from the base (inserted or replaced layers, shape changes).
        renumbered: ``(base row, variant row, module)`` for transferred rows whose index changed.
        replaced: ``(base row, variant row, base module, variant module)`` for conv-like swaps.
        extra_rows: ``(variant row, module)`` of inserted rows.
        dropped_rows: ``(base row, module)`` of base rows absent from the variant.
    """

    n_base_tensors: int
    n_variant_tensors: int
    n_transferred: int
    skipped: dict[str, str] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)
    renumbered: list[tuple[int, int, str]] = field(default_factory=list)
    replaced: list[tuple[int, int, str, str]] = field(default_factory=list)
    extra_rows: list[tuple[int, str]] = field(default_factory=list)
    dropped_rows: list[tuple[int, str]] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        """Base entries not copied (see :attr:`skipped` for the reasons)."""
        return len(self.skipped)

    @property
    def n_variant_new(self) -> int:
        """Variant entries left as initialised (tensors of layers the base does not have)."""
        return len(self.new)

    def summary(self) -> str:
        """A few lines for logs: counts, renumbered rows, inserted/replaced rows and skip reasons."""
        lines = [
            f"transferred {self.n_transferred}/{self.n_base_tensors} base tensors"
            + (f" into {self.n_variant_tensors} variant tensors" if self.n_variant_tensors else "")
            + f"; {self.n_variant_new} variant tensors newly initialised; {self.n_skipped} skipped"
        ]
        if self.renumbered:
            moves = ", ".join(f"{i}->{j}" for i, j, _ in self.renumbered)
            lines.append(f"  renumbered rows: {moves}")
        if self.extra_rows:
            lines.append("  inserted rows (new): " + ", ".join(f"{j} {m}" for j, m in self.extra_rows))
        if self.replaced:
            lines.append(
                "  replaced rows (not transferred): " + ", ".join(f"{i} {a} -> {j} {b}" for i, j, a, b in self.replaced)
            )
        if self.dropped_rows:
            lines.append("  base rows absent from the variant: " + ", ".join(f"{i} {m}" for i, m in self.dropped_rows))
        reasons: dict[str, int] = {}
        for reason in self.skipped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, count in reasons.items():
            lines.append(f"  skipped {count}: {reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (counts and row lists; skipped keys with reasons)."""
        return {
            "n_base_tensors": self.n_base_tensors,
            "n_variant_tensors": self.n_variant_tensors,
            "n_transferred": self.n_transferred,
            "n_skipped": self.n_skipped,
            "n_variant_new": self.n_variant_new,
            "skipped": dict(self.skipped),
            "renumbered": [list(r) for r in self.renumbered],
            "replaced": [list(r) for r in self.replaced],
            "extra_rows": [list(r) for r in self.extra_rows],
            "dropped_rows": [list(r) for r in self.dropped_rows],
        }


def _base_parts(base: Any) -> tuple[dict[str, torch.Tensor], Mapping]:
    if isinstance(base, tuple) and len(base) == 2:
        state, yaml_dict = base
        return dict(state), yaml_dict
    yaml_dict = getattr(base, "yaml", None)
    if not isinstance(yaml_dict, Mapping) or not callable(getattr(base, "state_dict", None)):
        raise TransferError(
            "base must be an Ultralytics model (with .yaml and .state_dict()) or a (state_dict, yaml_dict) pair; "
            f"got {type(base).__name__}"
        )
    return base.state_dict(), yaml_dict


def renamed_state_dict(
    base: Any,
    variant_yaml: Mapping | nn.Module,
    variant_state: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], TransferReport]:
    """Rename a base model's state dict to the variant's row numbering.

    Meant for a ``BaseModel.load`` hook: ``sd, report = renamed_state_dict(weights, self.yaml, self.state_dict())``
    then ``self.load_state_dict(sd, strict=False)``.

    Args:
        base: The base model (has ``.yaml`` and ``.state_dict()``), or a ``(state_dict, yaml_dict)`` pair.
        variant_yaml: The variant's model dict, or the variant model itself (then its state dict is the default
            ``variant_state``).
        variant_state: The variant's state dict. When given, keys it lacks and shape mismatches are skipped with a
            reason and :attr:`TransferReport.new` is filled; otherwise every renamed key is returned unchecked.

    Returns:
        ``(state dict keyed for the variant, report)``. The tensors are the base's own (not copies).

    Raises:
        NotAVariantError: The YAMLs are not a base/variant pair.
    """
    state, base_yaml = _base_parts(base)
    if not isinstance(variant_yaml, Mapping) and isinstance(getattr(variant_yaml, "yaml", None), Mapping):
        variant_state = variant_state if variant_state is not None else variant_yaml.state_dict()
        variant_yaml = variant_yaml.yaml  # a variant model was passed: use its dict and check against its tensors
    alignment = align_layers(base_yaml, variant_yaml)
    out: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    bm, vm = alignment.base_modules, alignment.variant_modules
    for key, tensor in state.items():
        m = _KEY.match(key)
        if m is None:
            new_key = key  # not a row tensor (none in stock detection models); keep the key as is
        else:
            i, rest = int(m.group(1)), m.group(2)
            if i in alignment.replaced:
                j = alignment.replaced[i]
                skipped[key] = f"row {i} {bm[i]} was replaced by {vm[j]} (row {j}): different parametrisation"
                continue
            if i not in alignment.matched:
                skipped[key] = f"row {i} {bm[i]} has no counterpart in the variant"
                continue
            new_key = f"model.{alignment.matched[i]}.{rest}"
        if variant_state is not None:
            if new_key not in variant_state:
                skipped[key] = f"{new_key} does not exist in the variant"
                continue
            if tuple(variant_state[new_key].shape) != tuple(tensor.shape):
                skipped[key] = (
                    f"shape {tuple(tensor.shape)} != variant {new_key} {tuple(variant_state[new_key].shape)} "
                    "(other scale or class count?)"
                )
                continue
        out[new_key] = tensor
    report = TransferReport(
        n_base_tensors=len(state),
        n_variant_tensors=len(variant_state) if variant_state is not None else 0,
        n_transferred=len(out),
        skipped=skipped,
        new=[k for k in variant_state if k not in out] if variant_state is not None else [],
        renumbered=alignment.renumbered,
        replaced=[(i, j, bm[i], vm[j]) for i, j in sorted(alignment.replaced.items())],
        extra_rows=[(j, vm[j]) for j in alignment.extra],
        dropped_rows=[(i, bm[i]) for i in alignment.dropped],
    )
    return out, report


def transfer_state_dict(base_model: nn.Module, variant_model: nn.Module, *, load: bool = True) -> TransferReport:
    """Copy every base tensor into its renumbered place in the variant (shapes checked).

    Args:
        base_model: The baseline Ultralytics model (``.yaml`` and ``.state_dict()``).
        variant_model: The variant model (``.yaml``), modified in place when ``load`` is True.
        load: Load the renamed tensors into ``variant_model`` (``load_state_dict(strict=False)``).

    Returns:
        The :class:`TransferReport`.

    Raises:
        NotAVariantError: The YAMLs are not a base/variant pair.
    """
    variant_state = variant_model.state_dict()
    state, report = renamed_state_dict(base_model, variant_model.yaml, variant_state)
    if load:
        # Cast to the variant's dtype/device: a base loaded from a half checkpoint must not turn layers half.
        cast = {k: v.to(dtype=variant_state[k].dtype, device=variant_state[k].device) for k, v in state.items()}
        variant_model.load_state_dict(cast, strict=False)
    return report


def _scale_of(yaml_dict: Mapping) -> str | None:
    return yaml_dict.get("scale") or None


def make_initial_checkpoint(
    base_pt: str | Path, variant_cfg: str | Path | Mapping, out_pt: str | Path
) -> TransferReport:
    """Write an Ultralytics checkpoint of a variant initialised from a baseline checkpoint.

    The variant is built with the base's class count and input channels, receives every base tensor at its
    renumbered row (:func:`transfer_state_dict`) and the base's class names, and is saved like Ultralytics' final
    checkpoints (FP16 model, ``epoch=-1``, no optimizer). ``yolo train model=<out_pt> data=...`` then starts from it
    (Ultralytics transfers all of its tensors, since the architecture is identical).

    Args:
        base_pt: Baseline checkpoint (``best.pt`` of a stock model, or any Ultralytics ``.pt``).
        variant_cfg: Variant YAML name or path (``yolov8n-ema.yaml``) or model dict. Its scale must be the base's.
        out_pt: Where to write the checkpoint.

    Returns:
        The :class:`TransferReport` (also stored in the checkpoint under ``"yolo_attn_transfer"``).

    Raises:
        TransferError: The scales differ, or the output would overwrite the base checkpoint.
        NotAVariantError: The YAMLs are not a base/variant pair.
    """
    import ultralytics
    from ultralytics.nn.tasks import BaseModel, DetectionModel, load_checkpoint

    from yolo_attn.plugin.integration import register_ultralytics

    register_ultralytics()
    base_pt, out_pt = Path(base_pt), Path(out_pt)
    if out_pt.resolve() == base_pt.resolve():
        raise TransferError(f"out_pt={out_pt} is the base checkpoint itself; choose another file")
    base, ckpt = load_checkpoint(base_pt)
    if not isinstance(base, BaseModel) or not isinstance(getattr(base, "yaml", None), dict):
        raise TransferError(f"{base_pt}: not an Ultralytics model checkpoint with a model YAML")
    if base.is_fused():
        raise TransferError(f"{base_pt}: the model is fused for inference (Conv+BN folded); use an unfused checkpoint")
    names = dict(getattr(base, "names", {}) or {})
    nc = len(names) or base.yaml.get("nc")
    model_cls = type(base) if isinstance(base, DetectionModel) else DetectionModel
    variant = model_cls(variant_cfg, ch=base.yaml.get("channels", 3), nc=nc, verbose=False)
    base_scale, variant_scale = _scale_of(base.yaml), _scale_of(variant.yaml)
    if base_scale and variant_scale and base_scale != variant_scale:
        raise TransferError(
            f"base {base_pt} is scale {base_scale!r} but the variant {variant_cfg} is scale {variant_scale!r}; "
            f"use the variant at scale {base_scale!r} (e.g. yolov8{base_scale}-ema.yaml)"
        )
    report = transfer_state_dict(base, variant)
    variant.names = names or variant.names
    variant.args = {k: v for k, v in (ckpt.get("train_args") or {}).items() if k in {"imgsz", "data", "single_cls"}}
    variant.args["task"] = getattr(base, "task", "detect")
    variant.eval()
    for p in variant.parameters():
        p.requires_grad = False  # like a stripped Ultralytics checkpoint; the trainer re-enables gradients
    variant.half()
    out_pt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "date": datetime.now().astimezone().isoformat(),
            "version": ultralytics.__version__,
            "license": "AGPL-3.0 License (https://ultralytics.com/license)",
            "docs": "https://docs.ultralytics.com",
            "epoch": -1,
            "best_fitness": None,
            "model": variant,
            "ema": None,
            "updates": None,
            "optimizer": None,
            "train_args": {**variant.args, "model": str(variant.yaml.get("yaml_file", variant_cfg))},
            "train_metrics": None,
            "train_results": None,
            "yolo_attn_transfer": {"base": str(base_pt), **report.to_dict()},
        },
        out_pt,
    )
    return report


def transfer_command(base: str, model: str, out: str) -> dict:
    """CLI: ``yolo-attn transfer base=yolov8n.pt model=yolov8n-ema.yaml out=yolov8n-ema-init.pt``.

    Writes an initial checkpoint of ``model`` holding every tensor of ``base`` at its renumbered row, and prints the
    report. Train from it with ``yolo train model=<out> data=...``.
    """
    report = make_initial_checkpoint(base, model, out)
    print(report.summary())
    print(f"wrote {out}")
    return report.to_dict()
