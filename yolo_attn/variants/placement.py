"""Move layers in a model YAML with one command, and inspect what a YAML builds before training it.

``place`` edits the YAML text row by row (:mod:`yolo_attn.variants.edit`): inserting a row after row ``t`` makes every
consumer of ``t`` (the next row's ``-1``, later absolute ``from`` indices, Concat and Detect inputs) read the new row,
and renumbers every other absolute ``from`` so it still reads the same producer. Comments and layout survive, and a
header comment records the edit. The edited YAML is built once before it is written, so a layer that cannot take
its input (``EMA`` factor not dividing the channels) fails here rather than at ``yolo train``.

``inspect`` checks the wiring statically first (``from`` out of range, pointing forward or at itself, naming
``file:line``), then builds the rows with Ultralytics' own ``parse_model`` and runs one forward pass, so a Concat of
maps with different strides is reported as "row i (Concat) inputs from rows [a, b] have spatial sizes ..." instead of
a bare ``torch.cat`` error from deep inside ``DetectionModel``.

Example:
    >>> text = place("yolov8.yaml", "EMA", after=[15, 18, 21], args=[16], out="my.yaml")
    >>> rows = inspect("my.yaml", imgsz=64, scale="n")
"""

from __future__ import annotations

import copy
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from yolo_attn.plugin import registry
from yolo_attn.plugin.blocks import stock_block_of
from yolo_attn.variants.edit import (
    YAMLEditError,
    find_rows,
    format_row,
    insert_layer,
    parse_rows,
    remove_layers,
    replace_layer,
)

__all__ = [
    "PlacementError",
    "WiringError",
    "inspect",
    "inspect_command",
    "place",
    "place_command",
    "resolve_model_yaml",
]

_SCALED = re.compile(r"(\d+)([nslmx])(.+)?$")  # yaml_model_load's rule: yolov8s-ema.yaml -> yolov8-ema.yaml
_CONV_LIKE_STOCK = frozenset({"Conv"})
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: same result, ~8x faster


class PlacementError(YAMLEditError):
    """A ``place`` request cannot be applied (unknown layer, wrong kind, stock row without ``force``...)."""


class WiringError(PlacementError):
    """A model YAML is wired wrongly (bad ``from``, Concat of different spatial sizes); names ``file:line``."""


# ------------------------------------------------------------------------------------------------------ resolution
def resolve_model_yaml(name: str | Path) -> tuple[Path, str]:
    """Find a model YAML the way Ultralytics does, and the scale letter its name implies.

    Looks for ``name`` as a local file, in Ultralytics' own cfg folder (``check_yaml``) and among the YAMLs shipped
    with yolo-attn; if none exists, tries the name without its scale letter (``yolov8s.yaml`` -> ``yolov8.yaml``).

    Args:
        name: A path or bare file name (``yolov8.yaml``, ``yolov8s-ema.yaml``, ``runs/my.yaml``).

    Returns:
        ``(path of the file read, scale letter from the name or "")``.

    Raises:
        FileNotFoundError: No candidate exists.
    """
    from ultralytics.nn.tasks import guess_model_scale
    from ultralytics.utils.checks import check_yaml

    from yolo_attn.plugin.integration import find_model_yaml

    text = str(name)
    scale = guess_model_scale(text)
    candidates = [text]
    unified = _SCALED.sub(r"\1\3", text)
    if unified != text:
        candidates.append(unified)
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate), scale
        found = check_yaml(candidate, hard=False) if Path(candidate).suffix in {".yaml", ".yml"} else None
        if found:
            return Path(found), scale
        shipped = find_model_yaml(candidate)
        if shipped is not None:
            return shipped, scale
        from yolo_attn.variants.families import resolve_variant_yaml

        generated = resolve_variant_yaml(candidate)  # yolo26n-ema-blocks.yaml: generated from Ultralytics' base
        if generated is not None:
            return Path(generated), scale
    raise FileNotFoundError(
        f"model YAML {text!r} not found as a file, in Ultralytics' cfg/models, among yolo-attn's shipped YAMLs or "
        "as a <family><scale>-<layer>[-<where>] variant name (`yolo-attn layers` lists them)"
    )


def _row_lines(text: str) -> list[int | None]:
    """1-based line of every row (backbone then head) in a model YAML text."""
    try:
        root = yaml.compose(text, Loader=_LOADER)
        sections = {k.value: v for k, v in root.value} if isinstance(root, yaml.MappingNode) else {}
        return [n.start_mark.line + 1 for s in ("backbone", "head") for n in sections[s].value]
    except Exception:  # a location is a courtesy; the caller still reports the row index
        return []


def _where(path: Path | str | None, lines: Sequence[int | None], row: int | None) -> str:
    if path is None:
        return ""
    line = lines[row] if row is not None and 0 <= row < len(lines) else None
    return f"{path}:{line}: " if line else f"{path}: "


# --------------------------------------------------------------------------------------------------------- place
def _as_list(value: Any, what: str) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    raise PlacementError(f"{what}={value!r}: expected row indices like {what}=15 or {what}=15,18,21")


def _layer_kind(name: str) -> str:
    """``"attention"``/``"conv"`` for a registered layer, ``"block"`` for ``C2f_EMA``-style names, ``"ultralytics"``
    for a module the parser knows."""
    try:
        return registry.get_spec(name).kind
    except KeyError:
        pass
    if stock_block_of(name):
        return "block"
    import torch.nn as nn

    if name.startswith("nn."):
        if isinstance(getattr(nn, name[3:], None), type):
            return "ultralytics"
    elif name.startswith("torchvision.ops."):
        import torchvision

        if isinstance(getattr(torchvision.ops, name[len("torchvision.ops.") :], None), type):
            return "ultralytics"
    else:
        import ultralytics.nn.tasks as tasks

        obj = getattr(tasks, name, None)
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            return "ultralytics"
    raise PlacementError(
        f"layer={name!r} is neither a registered yolo-attn layer ({', '.join(registry.list_layers())}) nor a module "
        "name Ultralytics' parser knows (Conv, C2f, nn.Identity, ...)"
    )


def _is_plugin(module: Any) -> bool:
    if not isinstance(module, str):
        return False
    try:
        registry.get_spec(module)
        return True
    except KeyError:
        return stock_block_of(module) is not None


def _conv_like(module: str) -> bool:
    return module in _CONV_LIKE_STOCK or (_is_plugin(module) and registry.get_spec(module).kind == "conv")


def _describe_changes(old_text: str, new_text: str, removed: Sequence[int] = ()) -> list[str]:
    """Human lines: inserted/removed/replaced rows and every consumer whose producer changed."""
    from yolo_attn.variants.transfer import NotAVariantError, align_layers

    old, new = yaml.load(old_text, Loader=_LOADER), yaml.load(new_text, Loader=_LOADER)
    try:
        a = align_layers(old, new, removed=removed)
    except NotAVariantError:  # an edit the row alignment cannot follow; the YAML itself is still right
        return [f"{len(old['backbone'] + old['head'])} rows -> {len(new['backbone'] + new['head'])} rows"]
    old_rows = old["backbone"] + old["head"]
    new_rows = new["backbone"] + new["head"]
    to_new = {**a.matched, **a.replaced}

    def sources(rows: list, i: int) -> list[int]:
        f = rows[i][0]
        return [x if x >= 0 else i + x for x in ([f] if isinstance(f, int) else f)]

    lines = []
    for j in a.extra:
        src = sources(new_rows, j)
        reads = ", ".join(f"{k} {new_rows[k][2]}" if k >= 0 else "input" for k in src)
        lines.append(f"inserted row {j} {new_rows[j][2]} {format_row(new_rows[j][3])} reading row {reads}")
    for i in a.dropped:
        lines.append(f"removed row {i} {old_rows[i][2]}")
    for i, j in sorted(a.replaced.items()):
        lines.append(f"replaced row {i} {old_rows[i][2]} -> {new_rows[j][2]} (wiring unchanged)")
    # A consumer is rewired when it reads a producer other than the counterpart of what it read before.
    for i, j in sorted(to_new.items()):
        before = [-1 if s < 0 else to_new.get(s) for s in sources(old_rows, i)]
        after = sources(new_rows, j)
        if before != after:
            now = ", ".join(f"{s} {new_rows[s][2]}" if s >= 0 else "input" for s in after)
            was = ", ".join(str(s) for s in sources(old_rows, i))
            lines.append(f"rewired row {j} {new_rows[j][2]} (was row {i}): reads {now} instead of base row {was}")
    moved = [(i, j) for i, j in sorted(to_new.items()) if i != j]
    if moved:
        lines.append(
            f"renumbered {len(moved)} rows ({moved[0][0]}->{moved[0][1]} ... {moved[-1][0]}->{moved[-1][1]}); "
            "their other `from` indices still read the same producers"
        )
    return lines


def _check_builds(text: str, scale: str) -> str:
    """Build the edited rows with Ultralytics' parser at one scale; return the scale used."""
    import ultralytics.nn.tasks as tasks

    from yolo_attn.plugin.integration import register_ultralytics

    register_ultralytics()
    d = yaml.load(text, Loader=_LOADER)
    scales = d.get("scales") or {}
    if scales and scale not in scales:
        scale = next(iter(scales))  # the smallest widths hit channel constraints (divisibility) first
    d["scale"] = scale
    try:
        tasks.parse_model(copy.deepcopy(d), ch=d.get("channels", 3), verbose=False)
    except Exception as exc:
        raise PlacementError(
            f"the edited YAML does not build at scale {scale!r} (nothing was written): {exc}"
            + "".join(f" [{n}]" for n in getattr(exc, "__notes__", []))
        ) from exc
    return scale


def place(
    base: str | Path,
    layer: str | None = None,
    after: int | Sequence[int] | None = None,
    before: int | Sequence[int] | None = None,
    replace: int | Sequence[int] | None = None,
    remove: str | int | Sequence[int] | None = None,
    args: Sequence | None = None,
    out: str | Path | None = None,
    scale: str | None = None,
    *,
    force: bool = False,
    check: bool = True,
    verbose: bool = False,
) -> str:
    """Insert, replace or remove layers in a model YAML, rewiring every ``from`` index.

    Exactly one operation per call: ``after=``/``before=`` (insert ``layer``; both may be given), ``replace=`` (swap
    the module of Conv rows for a conv-like ``layer``) or ``remove=`` (a layer name: all its rows; or row indices).

    Args:
        base: Model YAML path or name, resolved like Ultralytics (local file, Ultralytics' cfg, shipped YAMLs;
            ``yolov8s.yaml`` reads ``yolov8.yaml`` and notes scale ``s``).
        layer: Module name of the rows to insert or the replacement: a registered yolo-attn layer or a module
            Ultralytics' parser knows.
        after: Row indices (base numbering); a new row follows each and their consumers read it.
        before: Row indices of single-input rows; a new row reads what that row read, and that row reads it.
        replace: Row indices of ``Conv`` rows (or conv-like plugin rows) whose module becomes ``layer`` (kind
            ``"conv"`` or an Ultralytics module); wiring and args are kept unless ``args`` is given.
        remove: A layer name (``"EMA"``: every row of it) or row indices; consumers read the removed row's input.
        args: YAML args of the inserted rows (default ``[]``), or new args for replaced rows.
        out: Write the edited YAML here (refused if it is the base file itself).
        scale: Scale used for the build check (default: the letter in ``base``'s name, else the first scale).
        force: Allow removing or replacing rows that are not plugin/Conv rows.
        check: Build the edited YAML with Ultralytics' parser before returning/writing it.
        verbose: Print the summary of what changed.

    Returns:
        The edited YAML text (also written to ``out`` when given).

    Raises:
        PlacementError: Bad layer, kind, indices or operation mix, or the edited YAML does not build; the message
            names ``file:line`` of the row involved.
        FileNotFoundError: ``base`` cannot be found.
    """
    text, summary, _ = _place(base, layer, after, before, replace, remove, args, out, scale, force, check)
    if verbose:
        print("\n".join(summary))
    return text


def _place(
    base: str | Path,
    layer: str | None,
    after: Any,
    before: Any,
    replace: Any,
    remove: Any,
    args: Any,
    out: str | Path | None,
    scale: str | None,
    force: bool,
    check: bool,
) -> tuple[str, list[str], Path | None]:
    path, name_scale = resolve_model_yaml(base)
    scale = scale or name_scale
    text = path.read_text(encoding="utf-8")
    lines = _row_lines(text)
    rows = parse_rows(text).rows
    n_rows = len(rows)
    after, before, replace = _as_list(after, "after"), _as_list(before, "before"), _as_list(replace, "replace")
    if args is not None and not isinstance(args, (list, tuple)):
        args = [args]  # `args=16` on the command line means [16]
    ops = [bool(after or before), bool(replace), remove is not None]
    if sum(ops) != 1:
        raise PlacementError("say exactly one of: after=/before= (insert), replace= (swap a Conv) or remove=")
    for what, indices in (("after", after), ("before", before), ("replace", replace)):
        for t in indices:
            if not isinstance(t, int) or isinstance(t, bool) or not -n_rows <= t < n_rows:
                raise PlacementError(f"{path}: {what}={t!r} is not a row index of this YAML (0..{n_rows - 1})")

    def fail(message: str, row: int | None) -> PlacementError:
        return PlacementError(f"{_where(path, lines, row)}{message}", row=row)

    cli = [f"base={base}"]
    removed_rows: list[int] = []
    try:
        if after or before:
            if not layer:
                raise PlacementError("after=/before= insert a layer: give layer=<name> (e.g. layer=EMA)")
            if _layer_kind(layer) == "block":
                raise PlacementError(
                    f"{layer} is a block with attention inside: it replaces a stock {stock_block_of(layer)} row "
                    f"(replace=<row> layer={layer}) rather than being inserted"
                )
            cli += [f"layer={layer}"] + [
                f"{k}={','.join(map(str, v))}" for k, v in (("after", after), ("before", before)) if v
            ]
            new_text = insert_layer(text, layer, args or [], after=after, before=before, note="placeholder")
        elif replace:
            if not layer:
                raise PlacementError("replace= swaps a Conv row for a conv-like layer: give layer=<name> (e.g. ODConv)")
            kind = _layer_kind(layer)
            if kind == "attention":
                raise PlacementError(
                    f"replace= swaps a conv-like row, but {layer} is a layer of kind 'attention' (channel-preserving, "
                    f"it cannot stand where a Conv changes width or stride); insert it with after=/before= instead. "
                    f"Layers of kind 'conv': {', '.join(registry.list_layers('conv')) or 'none'}; for attention "
                    f"inside a block, replace a C2f/C3k2/C3/C2 row with e.g. layer=C2f_{layer}"
                )
            for t in replace:
                module = rows[t % n_rows].row[2]
                if kind == "block":
                    stock = stock_block_of(layer)
                    if stock_block_of(module) != stock and module != stock and not force:
                        raise fail(
                            f"replace={t}: row {t % n_rows} is {module}, not a {stock} row; {layer} takes "
                            f"the args of a stock {stock} row",
                            t % n_rows,
                        )
                    continue
                if not _conv_like(module) and not force:
                    raise fail(
                        f"replace={t}: row {t % n_rows} is {module}, not a Conv row; replace= keeps the row's args, "
                        "which only fit a Conv-like signature [c2, k, s] (pass force=True to swap anyway)",
                        t % n_rows,
                    )
            cli += [f"layer={layer}", f"replace={','.join(map(str, replace))}"]
            new_text = replace_layer(text, layer, replace, args=args, note="placeholder")
        else:
            if isinstance(remove, str):
                targets = find_rows(text, remove)
                if not targets:
                    raise PlacementError(f"{path}: remove={remove}: no row uses module {remove!r}")
            else:
                targets = _as_list(remove, "remove")
            for t in targets:
                if not isinstance(t, int) or not -n_rows <= t < n_rows:
                    raise PlacementError(f"{path}: remove={t!r} is not a row index of this YAML (0..{n_rows - 1})")
                module = rows[t % n_rows].row[2]
                if not _is_plugin(module) and not force:
                    raise fail(
                        f"remove={t}: row {t % n_rows} is {module}, a stock Ultralytics row, not a plugin layer; "
                        "pass force=True to remove it anyway",
                        t % n_rows,
                    )
            removed_rows = [t % n_rows for t in targets]
            cli += [f"remove={remove if isinstance(remove, str) else ','.join(map(str, targets))}"]
            new_text = remove_layers(text, targets, note="placeholder")
    except PlacementError:
        raise
    except YAMLEditError as exc:  # the editor names the row index; add where it is in the file
        raise fail(str(exc), exc.row) from exc
    if args is not None:
        cli.append(f"args={format_row(list(args))}")

    changes = _describe_changes(text, new_text, removed=removed_rows)
    scale_note = f" (scale {scale} from the name)" if name_scale else ""
    edits = [c for c in changes if not c.startswith(("rewired", "renumbered"))] or ["no change"]
    header = [f"# yolo-attn place {' '.join(cli)}  [base file {path.name}{scale_note}]"]
    header += [f"#   {c}" for c in edits] + ["#   every other `from` index renumbered to keep its producer"]
    new_text = "\n".join(header) + "\n" + new_text.split("\n", 1)[1]  # replaces the editor's placeholder header
    built = _check_builds(new_text, scale) if check else None
    summary = [f"base: {path}" + (f" (scale {scale} from the name)" if name_scale else ""), *changes]
    if built:
        summary.append(f"builds at scale {built}")
    written = None
    if out is not None:
        out_path = Path(out)
        if out_path.resolve() == path.resolve():
            raise PlacementError(f"out={out} is the base YAML itself; write the edit to another file")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(new_text, encoding="utf-8")
        written = out_path
        summary.append(f"wrote {out_path}")
        if name_scale and not _SCALED.search(out_path.stem):
            summary.append(
                f"note: Ultralytics takes the scale from the file name; {out_path.name} has none, so it builds at "
                "the first scale unless renamed like yolov8" + name_scale + "-<name>.yaml"
            )
    return new_text, summary, written


def place_command(**kwargs: Any) -> dict:
    """CLI: ``yolo-attn place base=yolov8.yaml layer=EMA after=15,18,21 [args=[16]] [out=my.yaml]``.

    Other forms: ``before=12``, ``replace=16,19 layer=ODConv``, ``remove=EMA`` or ``remove=16,20`` (``force=True``
    for stock rows), ``scale=s`` (build check scale), ``check=False``. Without ``out=`` the YAML goes to stdout and the
    summary to stderr.
    """
    allowed = {"base", "layer", "after", "before", "replace", "remove", "args", "out", "scale", "force", "check"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise PlacementError(f"place: unknown argument(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}")
    if "base" not in kwargs:
        raise PlacementError("place: give base=<model YAML>, e.g. base=yolov8.yaml")
    params = {k: kwargs.get(k) for k in ("base", "layer", "after", "before", "replace", "remove", "args", "out")}
    text, summary, written = _place(
        **params,
        scale=kwargs.get("scale"),
        force=bool(kwargs.get("force")),
        check=kwargs.get("check", True) is not False,
    )
    if written is None:
        print(text, end="")
        print("\n".join(summary), file=sys.stderr)
    else:
        print("\n".join(summary))
    return {"text": text, "summary": summary, "out": str(written) if written else None}


# ------------------------------------------------------------------------------------------------------- inspect
def _load_model_dict(model: str | Path | Mapping, scale: str | None) -> tuple[dict, Path | None, list, str, str]:
    """Model dict (with scale), its file, row lines, the scale used and a note about how it was chosen."""
    if isinstance(model, Mapping):
        d, path, text = copy.deepcopy(dict(model)), None, None
        name_scale = d.get("scale") or ""
    else:
        from ultralytics.utils import YAML

        path, name_scale = resolve_model_yaml(model)
        text = path.read_text(encoding="utf-8")
        d = YAML.load(path)
    lines = _row_lines(text) if text is not None else []
    scales = d.get("scales") or {}
    chosen = scale or name_scale or ""
    note = f"scale {chosen} ({'scale=' if scale else 'from the name'})" if chosen else ""
    if scales:
        if chosen and chosen not in scales:
            raise PlacementError(f"scale={chosen!r} is not one of this YAML's scales ({', '.join(scales)})")
        if not chosen:
            chosen = next(iter(scales))
            note = f"scale {chosen} (first in `scales`; pass scale= or name the file with a scale letter)"
    d["scale"] = chosen
    if path is not None:
        d["yaml_file"] = str(path)  # the integration's build errors then name file:line
    return d, path, lines, chosen, note


def _check_wiring(d: Mapping, path: Path | None, lines: Sequence[int | None]) -> None:
    """Static checks of every row's ``from`` before anything is built."""
    rows = list(d.get("backbone") or []) + list(d.get("head") or [])
    if not rows:
        raise WiringError(f"{path or 'model'}: no backbone/head rows")
    for i, row in enumerate(rows):
        where = _where(path, lines, i)
        if not (isinstance(row, list) and len(row) == 4):
            raise WiringError(f"{where}row {i} {row!r} is not [from, repeats, module, args]", row=i)
        f, n = row[0], row[1]
        froms = [f] if isinstance(f, int) else f
        if (
            not isinstance(froms, list)
            or not froms
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in froms)
        ):
            raise WiringError(f"{where}row {i} {row}: `from` must be an int or a list of ints, got {f!r}", row=i)
        valid = "-1 (the image input)" if i == 0 else f"-{i}..-1 (relative) or 0..{i - 1} (absolute)"
        for x in froms:
            problem = None
            if x >= len(rows):
                problem = f"is past the last row (the YAML has {len(rows)} rows)"
            elif x >= 0 and x == i:
                problem = "points to the row itself"
            elif x >= 0 and x > i:
                problem = f"points forward to row {x}"
            elif x < 0 and (i + x < 0 and not (i == 0 and x == -1)):
                problem = f"reaches before row 0 (row {i} {x:+d} = {i + x})"
            elif i == 0 and x != -1:
                problem = "is not the image input"
            if problem:
                raise WiringError(f"{where}row {i} {row}: from index {x} {problem}; valid: {valid}", row=i)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise WiringError(f"{where}row {i} {row}: repeats must be a positive int, got {n!r}", row=i)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _parse_logged(seq: Any, messages: list[str]) -> dict[int, tuple[int, str]]:
    """Row index -> (repeats after depth scaling, args string) from parse_model's own per-row log lines."""
    out: dict[int, tuple[int, str]] = {}
    for m in seq:
        t = str(getattr(m, "type", ""))
        for msg in messages:
            head, sep, rest = msg.partition(f"  {t}")
            if not sep or not head[:3].strip().isdigit() or int(head[:3]) != m.i:
                continue
            parts = head.rsplit(None, 2)  # "<i><from>", repeats, params
            n = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 1
            out[m.i] = (n, rest.strip())
            break
    return out


def _build_rows(d: dict) -> tuple[Any, list[int], dict[int, tuple[int, str]]]:
    """``parse_model`` with its per-row log captured (the args *after* channel injection, as Ultralytics prints)."""
    import ultralytics.nn.tasks as tasks
    from ultralytics.utils import LOGGER

    capture = _Capture()
    saved = (LOGGER.handlers[:], LOGGER.level, LOGGER.propagate, LOGGER.disabled)
    LOGGER.handlers, LOGGER.propagate, LOGGER.disabled = [capture], False, False
    LOGGER.setLevel(logging.INFO)
    try:
        seq, save = tasks.parse_model(copy.deepcopy(d), ch=d.get("channels", 3), verbose=True)
    finally:
        LOGGER.handlers, _, LOGGER.propagate, LOGGER.disabled = saved
        LOGGER.setLevel(saved[1])
    return seq, save, _parse_logged(seq, capture.messages)


def _abs_sources(m: Any) -> list[int]:
    f = m.f
    return [x if x >= 0 else m.i + x for x in ([f] if isinstance(f, int) else f)]


def _run(seq: Any, x: Any, path: Path | None = None, lines: Sequence[int | None] = (), record: dict | None = None):
    """Ultralytics' ``_predict_once`` over every row, keeping every output; errors name the failing row."""
    import torch

    from yolo_attn.bench.flops import first_tensor

    y: list[Any] = []
    for m in seq:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        try:
            out = m(x)
        except Exception as exc:
            where = _where(path, lines, m.i)
            module = str(m.type).rsplit(".", 1)[-1]
            srcs = _abs_sources(m)
            inputs = x if isinstance(x, (list, tuple)) else [x]
            shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in inputs]
            sizes = [s[2:] for s in shapes if isinstance(s, tuple) and len(s) == 4]
            if module == "Concat" and len(set(sizes)) > 1:
                shown = " vs ".join(f"({h},{w})" for h, w in sizes)
                raise WiringError(
                    f"{where}row {m.i} (Concat) inputs from rows {srcs} have spatial sizes {shown}; Concat joins "
                    "channels, so its inputs must have the same stride (check the `from` indices and the Upsample/"
                    "stride-2 rows between them)",
                    row=m.i,
                ) from exc
            raise WiringError(
                f"{where}row {m.i} ({module}) failed on inputs from rows {srcs} with shapes {shapes}: {exc}", row=m.i
            ) from exc
        if record is not None:
            t = first_tensor(out)
            record[m.i] = list(t.shape) if t is not None else None
        y.append(out)
        x = out
    return x


def _per_layer_gflops(seq: Any, d: dict, imgsz: int, inputs: dict[int, Any]) -> tuple[dict[int, float], str]:
    """Per-row GFLOPs at the real input size: yolo_attn.bench.flops when available, else thop per layer."""
    import torch
    from torch import nn

    class _Graph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = seq
            self.yaml = d

        def forward(self, x: torch.Tensor) -> Any:
            return _run(self.model, x)

    try:
        from yolo_attn.bench.flops import count_flops

        report = count_flops(_Graph(), imgsz, channels=d.get("channels", 3), name="inspect")
        by_index = {row["index"]: float(row["gflops"]) for row in report.layers}
        if len(by_index) == len(seq):
            return by_index, (
                "GFLOPs: yolo_attn.bench.flops.count_flops (2 x conv/matmul MACs per aten op, unfused; plugin layers "
                "counted by their official formulation)"
            )
    except Exception:  # the counter is optional here; fall back to thop rather than lose the table
        pass
    import thop

    out: dict[int, float] = {}
    with torch.no_grad():
        for m in seq:
            x = inputs.get(m.i)
            try:
                macs, _ = thop.profile(copy.deepcopy(m), inputs=(x,), verbose=False)
                out[m.i] = 2 * float(macs) / 1e9
            except Exception:
                out[m.i] = float("nan")
    return out, "GFLOPs: thop.profile per layer on its real inputs (2 x MACs; nn.Module calls only)"


def inspect(
    model: str | Path | Mapping, imgsz: int = 640, scale: str | None = None, *, verbose: bool = False
) -> list[dict]:
    """Build a model YAML row by row and report what each row became.

    Wiring is checked statically first, then the rows are built with Ultralytics' ``parse_model`` (the yolo-attn
    integration names ``file:line`` for plugin layers that cannot take their input) and one forward pass of a
    zeros ``(1, channels, imgsz, imgsz)`` image records every output shape.

    Args:
        model: YAML path or name (resolved like Ultralytics: ``yolov8s-ema.yaml`` -> scale ``s``), or a model dict.
        imgsz: Square input size of the forward pass (also the size GFLOPs are counted at).
        scale: Scale letter; default the one in the name, else the first of the YAML's ``scales``.
        verbose: Print the table.

    Returns:
        One dict per row: ``index``, ``from``, ``n`` (repeats after depth scaling), ``module`` (YAML name),
        ``args`` (as Ultralytics logs them, channels injected), ``output_shape``, ``params``, ``gflops``, ``notes``
        (what the plugin read or fitted: fork-style channel args, defaults fitted to small channel counts).

    Raises:
        WiringError: A ``from`` index is invalid, or a row fails on its inputs (Concat of different spatial sizes);
            the message names ``file:line``.
        ModelYAMLError: A plugin layer row cannot be built (from the integration, with ``file:line``).
    """
    rows, footer = _inspect(model, imgsz, scale)
    if verbose:
        print(format_table(rows, footer))
    return rows


def _inspect(model: str | Path | Mapping, imgsz: int, scale: str | None) -> tuple[list[dict], list[str]]:
    import torch

    from yolo_attn.plugin.integration import register_ultralytics

    register_ultralytics()
    if not isinstance(imgsz, int) or isinstance(imgsz, bool) or imgsz < 32 or imgsz % 32:
        raise PlacementError(f"imgsz={imgsz!r}: give a multiple of 32 (the largest stride), e.g. 640")
    d, path, lines, used_scale, scale_note = _load_model_dict(model, scale)
    _check_wiring(d, path, lines)
    try:
        seq, _, logged = _build_rows(d)
    except ValueError:
        raise  # ModelYAMLError and friends already name file:line
    except Exception as exc:  # a stock module given args it cannot take: say which row, keep the original text
        notes = " ".join(getattr(exc, "__notes__", []))
        raise PlacementError(
            f"{path or 'model'}: building the rows failed: {type(exc).__name__}: {exc} {notes}"
        ) from exc
    seq.eval()
    shapes: dict[int, Any] = {}
    inputs: dict[int, Any] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a: inputs.__setitem__(mod.i, a[0])) for m in seq]
    x = torch.zeros(1, d.get("channels", 3), imgsz, imgsz)
    try:
        with torch.no_grad():
            _run(seq, x, path, lines, shapes)
    finally:
        for h in hooks:
            h.remove()
    gflops, counter = _per_layer_gflops(seq, d, imgsz, inputs)
    yaml_rows = list(d["backbone"]) + list(d["head"])
    rows = []
    for m in seq:
        n, args = logged.get(m.i, (yaml_rows[m.i][1], repr(yaml_rows[m.i][3]) + " (YAML, not logged)"))
        rows.append(
            {
                "index": m.i,
                "from": m.f,
                "n": n,
                "module": str(yaml_rows[m.i][2]),
                "args": args,
                "output_shape": shapes.get(m.i),
                "params": int(sum(p.numel() for p in m.parameters())),
                "gflops": gflops.get(m.i, float("nan")),
                "notes": list(getattr(m, "yolo_attn_notes", ())),
            }
        )
    name = str(path) if path else "model dict"
    footer = [
        f"{name}: {len(rows)} layers, {sum(r['params'] for r in rows):,} parameters, "
        f"{sum(r['gflops'] for r in rows):.3f} GFLOPs at {imgsz}x{imgsz}" + (f", {scale_note}" if scale_note else ""),
        f"{counter}; output shapes from one eval forward of zeros(1, {d.get('channels', 3)}, {imgsz}, {imgsz}); "
        "args as logged by Ultralytics' parse_model (channels injected)",
    ]
    footer += [f"row {r['index']} {r['module']}: {note}" for r in rows for note in r["notes"]]
    return rows, footer


def format_table(rows: list[dict], footer: Sequence[str] = ()) -> str:
    """Render :func:`inspect` rows as a fixed-width table (Ultralytics' column order plus shape and GFLOPs)."""

    def shape(s: Any) -> str:
        return "x".join(map(str, s)) if s else "-"

    digits = 3 if sum(r["gflops"] for r in rows) >= 1 else 4  # tiny test images would print 0.000 everywhere
    arg_w = min(max([len("arguments"), *(len(r["args"]) for r in rows)]), 48)
    mod_w = max([len("module"), *(len(r["module"]) for r in rows)])
    head = (
        f"{'':>3}{'from':>16}{'n':>3}{'params':>11}  {'module':<{mod_w}}  {'arguments':<{arg_w}}  "
        f"{'output':<17}{'GFLOPs':>9}"
    )
    out = [head]
    for r in rows:
        args = r["args"] if len(r["args"]) <= arg_w else r["args"][: arg_w - 3] + "..."
        out.append(
            f"{r['index']:>3}{str(r['from']):>16}{r['n']:>3}{r['params']:>11,}  {r['module']:<{mod_w}}  "
            f"{args:<{arg_w}}  {shape(r['output_shape']):<17}{r['gflops']:>9.{digits}f}"
        )
    out.extend(footer)
    return "\n".join(out)


def inspect_command(**kwargs: Any) -> dict:
    """CLI: ``yolo-attn inspect model=my.yaml imgsz=640 [scale=s]``: print the per-layer table."""
    allowed = {"model", "imgsz", "scale"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise PlacementError(f"inspect: unknown argument(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}")
    if "model" not in kwargs:
        raise PlacementError("inspect: give model=<model YAML>, e.g. model=yolov8n-ema.yaml")
    rows, footer = _inspect(kwargs["model"], kwargs.get("imgsz", 640), kwargs.get("scale"))
    print(format_table(rows, footer))
    return {"rows": rows, "footer": list(footer)}
