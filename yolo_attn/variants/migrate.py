"""Rewrite a fork-style model YAML to the plugin's conventions: ``yolo-attn migrate in=blog.yaml out=mine.yaml``.

YAMLs copied from "YOLOv8 + attention" repositories write the channel count first (``[-1, 1, EMA, [256]]``), use
their own class names (``EMA_attention``, ``SEAttention``, ``CoordAttention``, ``simam_module``) and generic block
rows (``[-1, 3, C2f_ATT, [128, True, 'EMA']]``). The plugin reads such rows at build time where it can tell what
they mean; ``migrate`` makes the reading explicit and permanent, row by row:

* **Names.** A fork name becomes the registered layer it stands for, when that layer exists (:data:`FORK_NAMES`;
  also any case-insensitive match of a registered name or alias, ``simam`` -> ``SimAM``). ``C2f_<fork name>`` and
  ``C2f_ATT [..., 'EMA']`` become ``C2f_EMA`` (the string arg is dropped).
* **Channel args.** For a channel-preserving layer, a first arg that is the channel count of the row's input is
  dropped (the plugin injects the channels). "Is the channel count" means: it equals the input's *unscaled*
  channel count (what fork authors write: the sum of the unscaled widths after a Concat), or, scaled like a
  ``Conv`` c2, it equals the true input channels at every scale of the YAML. The true channels are computed by
  Ultralytics' own ``parse_model`` on the YAML's other rows (plugin rows stood in for by what they do to channels:
  ``nn.Identity`` for attention, ``Conv`` for conv-like layers, the stock block for ``<Block>_<Layer>``), so the
  result does not depend on the plugin's own fork-style reading. A second arg equal to the first (``CoordAttention
  [256, 256]``: c1, c2) goes too.
* **Everything else stays**: comments, layout, other rows, the wiring (text-level edits, as ``yolo-attn place``).

A header comment lists every change with its row and line in the input file, and everything that could not be
migrated (unknown modules, multi-input rows, readings that hold at some scales only), also printed as a report.

Example:
    >>> report = migrate("blog-yolov8-ema.yaml", "yolov8-ema-migrated.yaml")
    >>> print(report.summary())
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolo_attn.plugin import registry
from yolo_attn.plugin.layer_args import conv_scaled
from yolo_attn.variants.edit import _LOADER, YAMLEditError, _sources, format_row, parse_rows, rewrite_rows
from yolo_attn.variants.families import BLOCK_MODULES

__all__ = ["FORK_NAMES", "Change", "MigrateError", "Migration", "Problem", "migrate", "migrate_command"]

#: Class names community YAMLs use -> the registered layer they stand for (mapped only when that layer exists).
FORK_NAMES: dict[str, str] = {
    "SEAttention": "SE",
    "SE_Block": "SE",
    "SEBlock": "SE",
    "SELayer": "SE",
    "CBAMBlock": "CBAM",
    "CBAM_Attention": "CBAM",
    "ECAAttention": "ECA",
    "ECA_layer": "ECA",
    "eca_layer": "ECA",
    "EMA_attention": "EMA",
    "EMA_Attention": "EMA",
    "EMAttention": "EMA",
    "CoordAttention": "CoordAtt",
    "CoordAttn": "CoordAtt",
    "SimAM_module": "SimAM",
    "simam_module": "SimAM",
    "SimAMAttention": "SimAM",
    "NAMAttention": "NAM",
    "NAM_Attention": "NAM",
    "ShuffleAttention": "ShuffleAttention",
    "SA": "ShuffleAttention",
    "sa_layer": "ShuffleAttention",
    "TripletAttention": "TripletAttention",
    "GAM_Attention": "GAM",
    "GAMAttention": "GAM",
}
#: Generic block rows that name their attention in a string arg: ``[-1, 3, C2f_ATT, [128, True, 'EMA']]``.
_GENERIC_BLOCK_SUFFIXES = ("ATT", "Att", "Attn", "ATTN", "Attention", "attention", "att", "attn")
#: Names worth a hint when they are not registered.
_HINTS = {
    "ODConv2d": "yolo-attn's conv-like layer is ODConv (ODConv2d + BatchNorm + SiLU, args like Conv: [c2, k, s])",
}


class MigrateError(ValueError):
    """The input cannot be migrated at all (not a model YAML, same file as the output, unparsable rows)."""


@dataclass
class Change:
    """One migrated row.

    Attributes:
        row: Row index (backbone then head, the model's numbering).
        line: 1-based line in the input file, or None when the rows span several lines.
        before: ``[module, args]`` as written.
        after: ``[module, args]`` as migrated.
        reasons: Why each part changed.
    """

    row: int
    line: int | None
    before: list
    after: list
    reasons: list[str]

    def describe(self) -> str:
        where = f"row {self.row}" + (f" (line {self.line})" if self.line else "")
        return f"{where}: {format_row(self.before)} -> {format_row(self.after)}: {'; '.join(self.reasons)}"


@dataclass
class Problem:
    """Something ``migrate`` left as written, and why."""

    row: int | None
    line: int | None
    text: str

    def describe(self) -> str:
        where = "" if self.row is None else f"row {self.row}" + (f" (line {self.line})" if self.line else "") + ": "
        return where + self.text


@dataclass
class Migration:
    """Result of :func:`migrate`.

    Attributes:
        text: The migrated YAML text (header comment included).
        changes: Rows rewritten.
        unmapped: Rows or readings left as written, with the reason (``not migrated`` in the header).
        kept: Plugin rows whose args were read as the layer's own and kept (informational).
        build: ``"builds at scale n"`` or the build error of the migrated YAML (None when not checked).
        out: Where the text was written, if anywhere.
    """

    text: str
    changes: list[Change] = field(default_factory=list)
    unmapped: list[Problem] = field(default_factory=list)
    kept: list[Problem] = field(default_factory=list)
    build: str | None = None
    out: Path | None = None

    def summary(self) -> str:
        """The human report: changes, rows not migrated, args kept, build result."""
        lines = [f"{len(self.changes)} row(s) migrated, {len(self.unmapped)} not migrated"]
        lines += [f"  changed {c.describe()}" for c in self.changes]
        lines += [f"  NOT MIGRATED {p.describe()}" for p in self.unmapped]
        lines += [f"  kept {p.describe()}" for p in self.kept]
        if self.build:
            lines.append(self.build)
        if self.out:
            lines.append(f"wrote {self.out}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- module names
def _known_to_ultralytics(name: str) -> bool:
    """True for names Ultralytics' parser resolves by itself (its modules, ``nn.X``, ``torchvision.ops.X``)."""
    import torch.nn as nn

    if name.startswith("nn."):
        return isinstance(getattr(nn, name[3:], None), type)
    if name.startswith("torchvision.ops."):
        import torchvision

        return isinstance(getattr(torchvision.ops, name[len("torchvision.ops.") :], None), type)
    import ultralytics.nn.tasks as tasks

    obj = tasks.__dict__.get(name)
    plugin = {n for s in registry.specs() for n in s.names}
    return isinstance(obj, type) and issubclass(obj, nn.Module) and name not in plugin


def _layer_for(name: str) -> tuple[registry.LayerSpec | None, str | None]:
    """``(spec, how)`` for a module name: a registered layer as written, via a fork name, or case-insensitively."""
    exact = next((s for s in registry.specs() if name in s.names), None)
    if exact is not None:
        return exact, None
    target = FORK_NAMES.get(name)
    if target is not None:
        spec = registry.find_spec(target)
        if spec is not None:
            return spec, f"fork name {name} -> {spec.name}"
        return None, f"fork name {name} stands for {target}, which is not a registered layer"
    spec = registry.find_spec(name)
    if spec is not None:
        return spec, f"{name} -> {spec.name} (registered name, case as registered)"
    return None, None


def _split_block(name: str) -> tuple[str, str] | None:
    block, sep, rest = name.partition("_")
    return (block, rest) if sep and rest and block in BLOCK_MODULES else None


# ---------------------------------------------------------------------------------------------- true channels
@dataclass
class _Stand:
    """What a row becomes for the channel parse, and whether its channels can be trusted."""

    row: list
    reliable: bool
    why: str = ""


def _stand_in(i: int, row: list, spec: registry.LayerSpec | None, block: tuple[str, Any] | None) -> _Stand:
    f, n, module, args = row
    first = f if isinstance(f, int) else f[0]
    if block is not None:  # <Block>_<Layer>: the stock block's channels; drop the layer's options and names
        kept = [a for a in args if not isinstance(a, (dict, str))]
        return _Stand([f, n, block[0], kept], True)
    if spec is not None and spec.kind == "attention":
        return _Stand([first, 1, "nn.Identity", []], True)
    if spec is not None:  # conv-like: c2 width-scaled like Conv (stride does not change channels)
        return _Stand([f, 1, "Conv", list(args[:1])], bool(args) and isinstance(args[0], (int, float)))
    if _known_to_ultralytics(module):
        return _Stand(row, True)
    return _Stand([first, 1, "nn.Identity", []], False, f"row {i} {module} is not a module this Python knows")


def _scale_configs(d: dict) -> dict[str, tuple[float, float, float]]:
    """``{scale: (depth, width, max_channels)}``; a YAML without ``scales:`` has one config keyed ``""``."""
    scales = d.get("scales")
    if scales:
        return {str(k): tuple(float(x) for x in v) for k, v in scales.items()}
    # parse_model's own rule without scales: depth/width multiples (default 1), no channel cap
    return {"": (float(d.get("depth_multiple", 1.0)), float(d.get("width_multiple", 1.0)), math.inf)}


def _parse_channels(d: dict, stands: list[_Stand], scale: str | None, config: tuple[float, float, float]) -> list[int]:
    """Output channels of every row, from Ultralytics' ``parse_model`` on the stood-in rows.

    ``scale`` None = the nominal model (width 1, no channel cap): the channel counts a fork author writes.
    The channel list is read from ``parse_model``'s own ``ch`` local when it returns (a profile hook for the
    duration of the call), and modules are allocated on the meta device, so even scale x costs milliseconds.
    """
    import torch
    import ultralytics.nn.tasks as tasks

    rows = [copy.deepcopy(s.row) for s in stands]
    n_backbone = len(d["backbone"])
    model = {k: v for k, v in d.items() if k not in ("backbone", "head", "scales", "scale")}
    model["backbone"], model["head"] = rows[:n_backbone], rows[n_backbone:]
    if scale is None:
        model.update(depth_multiple=1.0, width_multiple=1.0)
    elif scale:  # the real scale name: parse_model special-cases some (C3k2's c3k at m/l/x)
        model["scales"] = {scale: list(config)}
        model["scale"] = scale
    captured: dict[str, list] = {}

    def grab(frame, event, arg):  # parse_model's `ch` is the per-row output channel list we need
        if event == "return" and frame.f_code.co_name == "parse_model":
            ch = frame.f_locals.get("ch")
            if isinstance(ch, list) and len(ch) == len(rows):
                captured["ch"] = list(ch)

    error: Exception | None = None
    for device in ("meta", "cpu"):  # meta is free; CPU only if a module cannot initialise on meta
        previous = sys.getprofile()
        sys.setprofile(grab)
        try:
            with torch.device(device):
                tasks.parse_model(copy.deepcopy(model), ch=model.get("channels", 3), verbose=False)
        except Exception as exc:
            error = exc
            continue
        finally:
            sys.setprofile(previous)
        if "ch" in captured:
            return captured["ch"]
    raise MigrateError(f"Ultralytics' parse_model could not build the YAML's rows to count channels: {error}")


# ------------------------------------------------------------------------------------------------------ migrate
def _binding(cls: type, args: Sequence) -> str:
    """``factor=8`` for the args after the channels, from the layer's signature."""
    try:
        params = [p for p in inspect.signature(cls).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD][1:]
    except (TypeError, ValueError):
        return ""
    named = [f"{p.name}={a!r}" for p, a in zip(params, args) if not isinstance(a, dict)]
    extra = len([a for a in args if not isinstance(a, dict)]) - len(params)
    return ", ".join(named) + (f" and {extra} more than {cls.__name__} takes" if extra > 0 else "")


def migrate(
    in_path: str | Path,
    out_path: str | Path | None = None,
    *,
    literal: Sequence[int] = (),
    check: bool = True,
) -> Migration:
    """Rewrite a fork-style model YAML to the plugin's conventions (see the module docstring for the rules).

    Args:
        in_path: The fork-style YAML.
        out_path: Where to write the migrated YAML (refused if it is ``in_path``); None = only return it.
        literal: Row indices whose args are kept exactly as written (a first arg that happens to equal the channel
            count but is meant as the layer's own option).
        check: Build the migrated YAML once with the plugin at its first scale and report the result.

    Returns:
        The :class:`Migration` (text, changes, rows not migrated, build result).

    Raises:
        MigrateError: The input is not a model YAML, or ``out_path`` is the input file.
        FileNotFoundError: ``in_path`` does not exist.
    """
    source = Path(in_path)
    text = source.read_text(encoding="utf-8")
    if out_path is not None and Path(out_path).resolve() == source.resolve():
        raise MigrateError(f"out={out_path} is the input YAML itself; write the migrated YAML to another file")
    try:
        model_rows = parse_rows(text)
    except YAMLEditError as exc:
        raise MigrateError(f"{source}: {exc}") from exc
    d = model_rows.data
    rows = [copy.deepcopy(r.row) for r in model_rows.rows]
    lines = [r.line + 1 for r in model_rows.rows] if model_rows.one_line_rows else [None] * len(rows)
    literal_rows = {int(i) % len(rows) for i in literal}
    result = Migration(text="")
    if not model_rows.one_line_rows:
        result.unmapped.append(
            Problem(
                None,
                None,
                "some rows span several lines: the YAML was rewritten by yaml.safe_dump and its "
                "comments could not be kept",
            )
        )

    # 1. names: what each row is
    specs: list[registry.LayerSpec | None] = [None] * len(rows)
    blocks: list[tuple[str, Any] | None] = [None] * len(rows)
    new_modules: dict[int, tuple[str, list[str]]] = {}
    new_args: dict[int, list] = {}
    for i, (_f, _n, module, args) in enumerate(rows):
        if not isinstance(module, str):
            continue
        spec, how = _layer_for(module)
        if spec is not None:
            specs[i] = spec
            if how:
                new_modules[i] = (spec.name, [how])
            continue
        split = _split_block(module)
        if split is not None:
            block, suffix = split
            layer, how = _layer_for(suffix)
            if layer is None and suffix in _GENERIC_BLOCK_SUFFIXES:
                for j, a in enumerate(args):
                    named = _layer_for(a.strip("'\""))[0] if isinstance(a, str) else None
                    if named is not None:
                        layer = named
                        how = f"generic {module} naming {a!r} -> {block}_{layer.name} (the string arg dropped)"
                        new_args[i] = [x for k, x in enumerate(args) if k != j]
                        break
            if layer is not None:
                blocks[i] = (block, layer)
                if how:
                    new_modules[i] = (f"{block}_{layer.name}", [how])
                continue
            if _known_to_ultralytics(module):
                continue
            blocks[i] = (block, None)
            why = how or f"{suffix!r} is not a registered layer"
            result.unmapped.append(
                Problem(i, lines[i], f"{module}: a {block} block with {why}; registered: {', '.join(_names())}")
            )
            continue
        if _known_to_ultralytics(module):
            continue
        hint = _HINTS.get(module) or how or "not a registered yolo-attn layer nor an Ultralytics module"
        result.unmapped.append(
            Problem(
                i,
                lines[i],
                f"{module}: {hint}. Register it (yolo_attn.register_layer) or replace the row; "
                f"registered layers: {', '.join(_names())}",
            )
        )

    # 2. channels: Ultralytics' parse of the stood-in rows, nominal and at every scale
    stands = [_stand_in(i, row, specs[i], blocks[i]) for i, row in enumerate(rows)]
    reliable = []
    for i, stand in enumerate(stands):
        ok = stand.reliable and all(reliable[s] for s in _sources(rows[i][0], i) if s >= 0)
        reliable.append(ok)
    configs = _scale_configs(d)
    nominal = _parse_channels(d, stands, None, (1.0, 1.0, math.inf))
    per_scale = {name: _parse_channels(d, stands, name, cfg) for name, cfg in configs.items()}

    # 3. channel-first args of channel-preserving layers
    for i, row in enumerate(rows):
        spec = specs[i]
        if spec is None or spec.kind != "attention":
            continue
        args = list(new_args.get(i, row[3]))
        first = args[0] if args else None
        if not isinstance(first, int) or isinstance(first, bool):
            continue
        srcs = _sources(row[0], i)
        where = lines[i]
        if len(srcs) != 1:
            result.unmapped.append(
                Problem(
                    i,
                    where,
                    f"{row[2]} reads {len(srcs)} rows {srcs}; a channel-preserving layer takes one "
                    "input: put a Concat before it",
                )
            )
            continue
        src = srcs[0]
        if src < 0:
            continue
        if not reliable[src]:
            culprit = next((s.why for s in stands if s.why), "an earlier row is unknown")
            result.unmapped.append(
                Problem(
                    i,
                    where,
                    f"cannot tell whether {first} is a channel count: the input's channels are unknown "
                    f"({culprit}); args kept as written",
                )
            )
            continue
        true = {name: ch[src] for name, ch in per_scale.items()}
        scaled_ok = {name: conv_scaled(first, cfg[1], cfg[2]) == true[name] for name, cfg in configs.items()}
        shown = ", ".join(map(str, true.values())) + (f" at {', '.join(true)}" if "" not in true else " (no scales)")
        source_text = f"row {src} {rows[src][2]}: {nominal[src]} unscaled; {shown}"
        if i in literal_rows:
            result.kept.append(Problem(i, where, f"{row[2]} {format_row(args)} kept as written (literal=)"))
            continue
        if first == nominal[src] or all(scaled_ok.values()):
            how = "" if first == nominal[src] else ", scaled like a Conv c2 at every scale"
            dropped = 2 if len(args) > 1 and args[1] == first else 1
            rest = args[dropped:]
            reason = f"{first} is the channel count of its input{how} ({source_text}) -> dropped" + (
                ", and so is the equal second arg (c1, c2 style)" if dropped == 2 else ""
            )
            bound = _binding(spec.cls, rest)
            if bound:
                reason += f"; the other args bind as {spec.name}({bound})"
            new_args[i] = rest
            name, reasons = new_modules.get(i, (row[2], []))
            new_modules[i] = (name, [*reasons, reason])
        elif any(scaled_ok.values()):
            hits = [s for s, ok in scaled_ok.items() if ok]
            result.unmapped.append(
                Problem(
                    i,
                    where,
                    f"{first} equals the input channels (scaled like a Conv c2) at scale(s) "
                    f"{', '.join(hits)} only ({source_text}); ambiguous, args kept as written. Drop it if it "
                    "is the channel count, or write the layer option as a mapping ([{name: value}])",
                )
            )
        else:
            bound = _binding(spec.cls, args)
            result.kept.append(
                Problem(
                    i,
                    where,
                    f"{row[2]} {format_row(args)}: not the input's channel count ({source_text}); "
                    f"kept as the layer's own args" + (f": {spec.name}({bound})" if bound else ""),
                )
            )

    # 4. write: text-level edits of the changed rows, header listing the changes
    changes = {}
    for i in sorted(set(new_modules) | set(new_args)):
        module = new_modules.get(i, (rows[i][2], []))[0]
        args = new_args.get(i, rows[i][3])
        if module == rows[i][2] and args == rows[i][3]:
            continue
        reasons = new_modules.get(i, (None, []))[1] or ["args rewritten"]
        result.changes.append(Change(i, lines[i], [rows[i][2], rows[i][3]], [module, args], reasons))
        changes[i] = (module, args)
    body = rewrite_rows(text, changes, note="x").split("\n", 1)[1] if changes else text
    body = _maybe_literal_key(body, d, rows, changes, specs, per_scale, configs, result)
    header = _comment_lines(
        [
            f"yolo-attn migrate {source.name}: {len(result.changes)} row(s) rewritten to the plugin's conventions "
            "(channel counts dropped: the plugin injects them)"
        ],
        first="# ",
        rest="#   ",
    )
    header += _comment_lines(f"row {c.describe()[4:]}" for c in result.changes)
    if result.unmapped:
        header.append("# not migrated (left as written):")
        header += _comment_lines(p.describe() for p in result.unmapped)
    result.text = "\n".join(header) + "\n" + body
    if check:
        result.build = _check_build(result.text)
    if out_path is not None:
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.text, encoding="utf-8")
        result.out = out
    return result


def _names() -> list[str]:
    return sorted((n for s in registry.specs() for n in s.names), key=str.casefold)


def _comment_lines(items, first: str = "#   ", rest: str = "#       ") -> list[str]:
    import textwrap

    out = []
    for item in items:
        out += textwrap.wrap(item, 118, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)
    return out


def _maybe_literal_key(body, d, rows, changes, specs, per_scale, configs, result) -> str:
    """Add ``fork_args: literal`` when a kept first arg would be re-read as channels by the plugin's parser."""
    try:
        from yolo_attn.plugin.layer_args import FORK_ARGS_KEY
    except ImportError:  # a plugin without fork-style reading reads every arg literally anyway
        return body
    if FORK_ARGS_KEY in d:
        return body
    ambiguous = {p.row for p in result.unmapped}
    for i, row in enumerate(rows):
        spec = specs[i]
        if spec is None or spec.kind != "attention" or i in ambiguous:
            continue
        args = changes[i][1] if i in changes else row[3]
        first = args[0] if args else None
        srcs = _sources(row[0], i)
        if not isinstance(first, int) or isinstance(first, bool) or len(srcs) != 1 or srcs[0] < 0:
            continue
        for name, cfg in configs.items():
            c1 = per_scale[name][srcs[0]]
            if c1 in (first, conv_scaled(first, cfg[1], cfg[2])):
                result.kept.append(
                    Problem(
                        i,
                        None,
                        f"{spec.name} {format_row(args)} would be read as a channel count at scale "
                        f"{name or '(none)'} ({c1} channels): added `{FORK_ARGS_KEY}: literal` so every arg "
                        "is read as written",
                    )
                )
                key_line = f"{FORK_ARGS_KEY}: literal # yolo-attn migrate: args are the layers' own (no channel counts)"
                lines = body.split("\n")
                at = next((k for k, line in enumerate(lines) if re.match(r"^(nc|scales|backbone)\s*:", line)), 0)
                return "\n".join([*lines[:at], key_line, *lines[at:]])
    return body


def _check_build(text: str) -> str:
    import ultralytics.nn.tasks as tasks

    from yolo_attn.plugin.integration import register_ultralytics

    register_ultralytics()
    d = yaml.load(text, Loader=_LOADER)
    scales = d.get("scales") or {}
    d["scale"] = next(iter(scales), "")
    label = f"scale {d['scale']}" if d["scale"] else "its widths (no scales)"
    try:
        tasks.parse_model(copy.deepcopy(d), ch=d.get("channels", 3), verbose=False)
    except Exception as exc:
        message = str(exc) if len(str(exc)) < 400 else str(exc)[:400] + " ..."
        return f"the migrated YAML does not build at {label} yet: {message}"
    return f"the migrated YAML builds at {label}"


def migrate_command(**kwargs: Any) -> Migration:
    """CLI: ``yolo-attn migrate in=fork.yaml out=mine.yaml [literal=16,20] [check=False]``.

    Without ``out=`` the YAML goes to stdout and the report to stderr.
    """
    allowed = {"in", "out", "literal", "check"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise MigrateError(f"migrate: unknown argument(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}")
    if "in" not in kwargs:
        raise MigrateError("migrate: give in=<fork-style model YAML>, e.g. in=blog-yolov8-ema.yaml out=mine.yaml")
    literal = kwargs.get("literal") or []
    literal = [literal] if isinstance(literal, int) else list(literal)
    result = migrate(kwargs["in"], kwargs.get("out"), literal=literal, check=kwargs.get("check", True) is not False)
    if result.out is None:
        print(result.text, end="")
        print(result.summary(), file=sys.stderr)
    else:
        print(result.summary())
    return result
