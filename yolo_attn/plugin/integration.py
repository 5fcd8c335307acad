"""The one module that touches Ultralytics internals.

What it does to an imported ``ultralytics.nn.tasks`` (nothing on disk is edited):

1. **Parser branch.** ``parse_model`` only injects input channels for modules in its local ``base_modules`` set; any
   other module gets its YAML args unchanged (``[-1, 1, EMA, [256]]`` would build ``EMA(256)`` at every scale). We
   add one ``elif`` branch, just before the catch-all ``else: c2 = ch[f]``, that hands registered plugin layers their
   true channels. It is added by rewriting the function's AST (located by structure, not by line numbers), compiled
   with the tasks module's globals and its original file name and line numbers, so tracebacks still point at
   Ultralytics' source. Copying ``parse_model`` wholesale would go stale every release; this keeps every other
   branch exactly as installed.
2. **Names.** Every registered layer is set as an attribute of ``ultralytics.nn.tasks``: the parser resolves module
   names with ``globals()[name]`` of that module.
3. **Errors naming the row.** The patched ``parse_model`` reports failures with ``file:line`` of the YAML row, and
   unknown module names list the registered plugin layers.
4. **YAML lookup.** ``check_yaml`` (as seen from ``ultralytics.nn.tasks``) falls back to the YAMLs shipped with
   yolo-attn, so ``yolov8s-ema.yaml`` resolves from any folder with scale ``s``.
5. **Pretrained transfer.** ``BaseModel.load`` (what ``pretrained=base.pt`` calls) keys tensors by row index, so
   every row after an inserted layer would be dropped; when the source model is a base of the target (or vice
   versa) we hand Ultralytics' own ``load`` a re-indexed view of the source (:mod:`yolo_attn.variants.transfer`
   aligns the rows), so every base tensor lands in its renumbered layer and Ultralytics' head handling still applies.
6. **Fusing.** ``BaseModel.fuse`` (val, predict, export) also calls ``fuse()`` on plugin layers that have one
   (ODConv folds its BatchNorm into the dynamic kernel bank).
7. **Restricted loading.** Plugin classes are added to ``torch.serialization``'s safe globals so checkpoints load with
   ``ULTRALYTICS_SAFE_LOAD=1``.

If the structure we rely on is missing, registration raises :class:`IntegrationError`; the start-up hook turns that
into a warning and installs placeholder layers that raise the same explanation when a YAML names them, so a model
is never silently built with wrong channels.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import torch

from yolo_attn.plugin import registry

#: Ultralytics releases this integration was verified against (full test suite run).
VERIFIED_ULTRALYTICS_VERSIONS: tuple[str, ...] = ("8.4.0", "8.4.100", "8.4.190")
#: Range declared in pyproject; other versions are attempted, the structural checks below guard them.
SUPPORTED_ULTRALYTICS_RANGE = ">=8.4,<8.5"

_MARK = "_yolo_attn_integration"  # attribute set on ultralytics.nn.tasks once patched
_CHANNELS_HOOK = "_yolo_attn_channels"  # name the inserted branch calls, set in the tasks module's globals
_KINDS_NAME = "_yolo_attn_kinds"  # {class: kind} the inserted branch consults, set in the tasks module's globals
_BLOCKS_NAME = "_yolo_attn_blocks"  # `cls in ...` is True for <Block>_<Layer> classes (tasks module's globals)
_BLOCK_VAR = "_yolo_attn_block"  # local of the patched parse_model: the attention block class of the current row
_LOCK = threading.RLock()


class IntegrationError(RuntimeError):
    """Ultralytics' internals are not what this plugin was built for; nothing was patched."""


class ModelYAMLError(ValueError):
    """A model YAML row could not be built; the message names the file, line and row."""


def model_yaml_dirs() -> list[Path]:
    """Folders holding the shipped model YAMLs (installed wheel first, then a source/editable checkout)."""
    package = Path(__file__).resolve().parents[1]  # yolo_attn/
    return [d for d in (package / "model_yamls", package.parent / "model_yamls") if d.is_dir()]


def find_model_yaml(name: str | os.PathLike) -> Path | None:
    """Return the shipped YAML called ``name`` (bare file name), or None."""
    base = Path(name).name
    for folder in model_yaml_dirs():
        candidate = folder / base
        if candidate.is_file():
            return candidate
    return None


def ultralytics_version() -> str:
    """Installed Ultralytics version without importing the whole package (safe during its own import)."""
    module = sys.modules.get("ultralytics")
    version = getattr(module, "__version__", None)
    if version:
        return version
    from importlib.metadata import version as dist_version

    return dist_version("ultralytics")


# --------------------------------------------------------------------------------------------------------------------
# channel resolution (called from inside the patched parse_model)
# --------------------------------------------------------------------------------------------------------------------
_ROWS = threading.local()  # per parse_model call: row index -> notes / first-arg reading (see _row_state)


def _row_state() -> dict[str, dict[int, Any]]:
    state = getattr(_ROWS, "state", None)
    if state is None:
        state = _ROWS.state = {"notes": {}, "literal_first": {}}
    return state


def _resolve_channels(
    m: type, args: list, ch: list[int], f: int | list[int], width: float, max_channels: float, i: int, d: dict
):
    """Return ``(c1, c2, args)`` for a plugin layer row, the way ``parse_model`` does for ``Conv``.

    Channel-preserving layers get their args through :func:`yolo_attn.plugin.layer_args.interpret_attention_args`
    (keywords, fork-style channel args, fitted defaults); what it read is kept for the row's log line and errors.
    """
    import ultralytics.nn.tasks as tasks

    from yolo_attn.plugin.layer_args import FORK_ARGS_KEY, interpret_attention_args, split_keywords, to_positional

    kind = _kinds()[m]
    name = getattr(m, "__name__", str(m))
    if isinstance(f, int):
        c1: Any = ch[f]
    else:
        c1 = [ch[x] for x in f]
    state = _row_state()
    if kind == "attention":
        if isinstance(c1, list):
            if len(set(c1)) != 1:
                raise ValueError(
                    f"{name} is channel-preserving but its inputs {list(f)} have different channels {c1}; "
                    "put a Concat before it or register a layer of kind 'conv'"
                )
            c2 = c1[0]
        else:
            c2 = c1
        literal = str(d.get(FORK_ARGS_KEY, "")).lower() == "literal"
        read = interpret_attention_args(m, args, c1, width, max_channels, literal=literal)
        if read.notes:
            state["notes"].setdefault(i, []).extend(read.notes)
        if read.literal_first:
            state["literal_first"][i] = (
                read.literal_first,
                tasks.make_divisible(min(read.literal_first[1], max_channels) * width, 8),
                c1,
            )
        return c1, c2, [c1, *read.args]
    # kind == "conv": same rule as Ultralytics' base_modules (Conv): c2 = make_divisible(min(c2, max_ch) * width, 8)
    positional, keywords = split_keywords(args)
    if not positional or not isinstance(positional[0], (int, float)) or isinstance(positional[0], bool):
        raise ValueError(
            f"{name} is a conv-like layer: its first YAML arg must be the output channels, "
            f"e.g. [-1, 1, {name}, [256, 3, 2]]; got args {args}"
        )
    c2 = tasks.make_divisible(min(positional[0], max_channels) * width, 8)
    return c1, c2, [c1, c2, *to_positional(m, positional[1:], keywords, skip=2)]


def _kinds() -> dict[type, str]:
    return {spec.cls: spec.kind for spec in registry.specs()}


class _KindsView:
    """Live ``class in view`` test for the inserted branch (registrations may change after patching)."""

    def __contains__(self, item: object) -> bool:
        try:
            return item in _kinds()
        except TypeError:  # unhashable module objects are never plugin layers
            return False


# --------------------------------------------------------------------------------------------------------------------
# AST rewrite of parse_model
# --------------------------------------------------------------------------------------------------------------------
def _find_catch_all(fn: ast.FunctionDef) -> tuple[ast.For, ast.If, ast.If]:
    """Find the ``if m in base_modules: ... elif ...: ... else: c2 = ch[f]`` chain inside the row loop.

    Returns the row loop, the chain's first ``if`` and its last ``elif`` (whose ``else`` is the catch-all).
    """
    loops = [
        n
        for n in ast.walk(fn)
        if isinstance(n, ast.For) and "backbone" in ast.unparse(n.iter) and "head" in ast.unparse(n.iter)
    ]
    if len(loops) != 1:
        raise IntegrationError(
            f"expected one `for ... in enumerate(d['backbone'] + d['head'])` loop, found {len(loops)}"
        )
    for node in loops[0].body:
        if not (isinstance(node, ast.If) and "base_modules" in ast.unparse(node.test)):
            continue
        last = node
        while len(last.orelse) == 1 and isinstance(last.orelse[0], ast.If):
            last = last.orelse[0]
        orelse = last.orelse
        if len(orelse) == 1 and ast.unparse(orelse[0]).replace(" ", "") == "c2=ch[f]":
            return loops[0], node, last
        raise IntegrationError(f"the channel if/elif chain no longer ends in `else: c2 = ch[f]` (got {orelse!r})")
    raise IntegrationError("no `if m in base_modules:` channel branch found in the row loop")


def _check_locals(fn: ast.FunctionDef) -> None:
    """The inserted branch reads these names; make sure parse_model still defines them."""
    assigned = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    assigned |= {a.arg for a in fn.args.args}
    missing = {"m", "args", "ch", "f", "c1", "c2", "width", "max_channels", "i", "d"} - assigned
    if missing:
        raise IntegrationError(f"parse_model no longer defines {sorted(missing)}")


def _patched_parse_model(tasks) -> Any:
    """Compile parse_model with one extra elif branch for plugin layers."""
    original = tasks.parse_model
    source = textwrap.dedent(inspect.getsource(original))
    first_line = original.__code__.co_firstlineno
    tree = ast.parse(source)
    fn = tree.body[0]
    if not (isinstance(fn, ast.FunctionDef) and fn.name == "parse_model"):
        raise IntegrationError("ultralytics.nn.tasks.parse_model is not a plain function")
    _check_locals(fn)
    loop, chain, last = _find_catch_all(fn)
    # Plugin layers: one branch before the catch-all hands them their channels.
    branch = ast.parse(
        f"if m in {_KINDS_NAME}:\n    c1, c2, args = {_CHANNELS_HOOK}(m, args, ch, f, width, max_channels, i, d)\n"
    ).body[0]
    branch.orelse = last.orelse
    last.orelse = [branch]
    # Blocks with attention inside (C2f_EMA): the chain runs with the stock class (C2f), so every stock rule
    # applies unchanged (channels, repeats, C3k2's c3k at m/l/x); the row is then built with the attention class.
    before = ast.parse(
        f"{_BLOCK_VAR} = m if m in {_BLOCKS_NAME} else None\nif {_BLOCK_VAR} is not None:\n    m = m.stock_block\n"
    ).body
    after = ast.parse(f"if {_BLOCK_VAR} is not None:\n    m = {_BLOCK_VAR}\n").body
    at = loop.body.index(chain)
    loop.body[at : at + 1] = [*before, chain, *after]
    ast.fix_missing_locations(tree)
    ast.increment_lineno(tree, first_line - 1)
    code = compile(tree, original.__code__.co_filename, "exec")
    namespace: dict[str, Any] = {}
    exec(code, tasks.__dict__, namespace)
    patched = namespace["parse_model"]
    patched.__doc__ = original.__doc__
    patched.__wrapped_original__ = original
    return patched


# --------------------------------------------------------------------------------------------------------------------
# errors that name the YAML row
# --------------------------------------------------------------------------------------------------------------------
def _row_line(d: dict, index: int) -> tuple[str | None, int | None]:
    """Best effort ``(path, 1-based line)`` of row ``index`` of the YAML the dict ``d`` came from."""
    yaml_file = d.get("yaml_file")
    if not yaml_file:
        return None, None
    path = Path(yaml_file)
    if not path.is_file():
        import re

        unified = Path(re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", str(path)))
        candidates = (unified, find_model_yaml(path), find_model_yaml(unified), _variant_yaml(path.name))
        path = next((p for p in candidates if p and Path(p).is_file()), path)
        path = Path(path)
    if not path.is_file():
        return str(yaml_file), None
    try:
        import yaml

        root = yaml.compose(path.read_text(encoding="utf-8"))
        sections = {k.value: v for k, v in root.value} if isinstance(root, yaml.MappingNode) else {}
        n_backbone = len(d.get("backbone", []))
        section, j = ("backbone", index) if index < n_backbone else ("head", index - n_backbone)
        node = sections[section].value[j]
        return str(path), node.start_mark.line + 1
    except Exception:  # the location is a courtesy; never hide the real error behind a failure here
        return str(path), None


def _describe_row(d: dict, loc: dict) -> str:
    i = loc.get("i")
    rows = list(d.get("backbone", [])) + list(d.get("head", []))
    row = rows[i] if isinstance(i, int) and i < len(rows) else None
    path, line = _row_line(d, i) if isinstance(i, int) else (None, None)
    where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
    section = "backbone" if isinstance(i, int) and i < len(d.get("backbone", [])) else "head"
    return f"{where}model YAML row {i} ({section}) {row}"


def _unknown_module_message(name: str) -> str:
    import ultralytics.nn.modules as umods

    plugin = ", ".join(registry.list_layers())
    stock = ", ".join(sorted(n for n in getattr(umods, "__all__", ()) if n[:1].isupper())[:40])
    hint = ""
    try:  # a fork's class name for a layer yolo-attn does not ship (those it ships are mapped before parsing)
        from yolo_attn.variants.migrate import FORK_NAMES

        layer = FORK_NAMES.get(name) or FORK_NAMES.get(name.partition("_")[2])
        if layer:
            hint = f" Forks use {name!r} for {layer}, which yolo-attn does not ship: register your implementation."
    except ImportError:
        pass
    return (
        f"unknown module {name!r}.{hint} yolo-attn layers: {plugin}; inside blocks: C2f_<layer>, C3k2_<layer>, "
        f"C3_<layer>, C2_<layer>. Ultralytics modules include: {stock}, ...; torch layers are written nn.<Name>. "
        "Check the spelling, or register your own layer with "
        "yolo_attn.register_layer(MyLayer, kind='attention'|'conv')."
    )


def _is_block(m: object) -> bool:
    from yolo_attn.plugin.blocks import AttentionBlock

    return isinstance(m, type) and issubclass(m, AttentionBlock)


class _BlocksView:
    """``cls in view`` is True for ``<Block>_<Layer>`` classes (consulted by the patched parse_model)."""

    def __contains__(self, item: object) -> bool:
        return _is_block(item)


def _fork_name(name: str) -> tuple[str, str] | None:
    """``EMA_attention`` -> (``EMA``, note), ``C2f_SEAttention`` -> (``C2f_SE``, note); None if no such layer here."""
    try:
        from yolo_attn.variants.migrate import FORK_NAMES
    except ImportError:
        return None
    from yolo_attn.plugin.blocks import BLOCKS

    block, sep, rest = name.partition("_")
    if name in FORK_NAMES:
        meant = FORK_NAMES[name]
        layer = meant
    elif sep and rest in FORK_NAMES and block in BLOCKS:
        layer = FORK_NAMES[rest]
        meant = f"{block}_{layer}"
    else:
        return None
    if layer not in registry.list_layers():
        return None
    spec = registry.get_spec(layer)
    note = (
        f"module {name!r} (a fork's class name) built as yolo-attn's {meant} ({spec.cls.__module__}."
        f"{spec.cls.__qualname__}); `yolo-attn migrate` rewrites the YAML to the plugin's names"
    )
    return meant, note


def _prepare_rows(d: dict) -> None:
    """Before parsing: map fork class names (``EMA_attention``), make block names of any case resolvable, and keep
    C3k2 keyword mappings out of ``c3k``.

    ``C3k2``'s scale rule assigns ``args[3]`` (``c3k``) at m/l/x, which is where a trailing mapping lands when the
    row gives only c2 (``[512, {factor: 8}]``); the stock default ``c3k=False`` is written before it.
    """
    import ultralytics.nn.tasks as tasks

    from yolo_attn.plugin.blocks import block_class, split_block_name

    for i, row in enumerate(list(d.get("backbone") or []) + list(d.get("head") or [])):
        if not (isinstance(row, list) and len(row) == 4 and isinstance(row[2], str)):
            continue
        name = row[2]
        meant = _fork_name(name) if name not in tasks.__dict__ else None
        if meant is not None:  # a fork's class name for a layer that exists here: build it, and say so
            row[2] = name = meant[0]
            _row_state()["notes"].setdefault(i, []).append(meant[1])
        if name not in tasks.__dict__:
            parsed = split_block_name(name)
            if parsed is not None:  # e.g. c2f_ema or C2f_simam: the same class as C2f_EMA / C2f_SimAM
                setattr(tasks, name, block_class(*parsed))
        cls = tasks.__dict__.get(name)
        args = row[3]
        if _is_block(cls) and cls.stock_block.__name__ == "C3k2" and isinstance(args, list):
            if len(args) == 2 and isinstance(args[1], dict):
                args.insert(1, False)


def _literal_first_hint(i: int) -> str:
    reading = _row_state()["literal_first"].get(i)
    if not reading:
        return ""
    (param, value), scaled, c1 = reading
    return (
        f" (the first YAML arg {value} was taken as {param}: it is not this row's channel count, which would have to "
        f"scale like a Conv c2 to the {c1} input channels, but {value} scales to {scaled}. If {value} is meant as "
        f"channels, drop it: the plugin injects the input channels; otherwise give a valid {param})"
    )


def _attach_notes(seq: torch.nn.Module, verbose: bool) -> None:
    """Record what the plugin read or fitted on each row (``yolo-attn inspect`` shows it) and log it once."""
    import ultralytics.nn.tasks as tasks

    notes_by_row = _row_state()["notes"]
    for layer in seq:
        i = getattr(layer, "i", None)
        notes = list(notes_by_row.get(i, []))
        for module in layer.modules():  # blocks note what they fitted inside
            notes.extend(n for n in getattr(module, "yolo_attn_notes", ()) if n not in notes)
        if not notes:
            continue
        layer.yolo_attn_notes = notes
        if verbose:
            for note in notes:
                tasks.LOGGER.info(f"yolo-attn: row {i} {type(layer).__name__}: {note}")


def _wrap_with_row_errors(patched):
    code = patched.__code__

    def parse_model(d, ch, verbose=True):
        previous = getattr(_ROWS, "state", None)
        _ROWS.state = None  # fresh notes for this call (nested calls restore the outer state)
        try:
            _prepare_rows(d)
            seq, save = patched(d, ch, verbose)
            _attach_notes(seq, verbose)
            return seq, save
        except Exception as exc:
            tb, loc = exc.__traceback__, None
            while tb is not None:
                if tb.tb_frame.f_code is code:
                    loc = dict(tb.tb_frame.f_locals)
                tb = tb.tb_next
            if loc is None or "i" not in loc:
                raise
            where = _describe_row(d, loc)
            m = loc.get("m")
            if isinstance(exc, KeyError) and isinstance(m, str) and exc.args and exc.args[0] == m:
                raise ModelYAMLError(f"{where}: {_unknown_module_message(m)}") from exc
            if isinstance(m, type) and (m in _kinds() or _is_block(m)):
                raise ModelYAMLError(f"{where}: {exc}{_literal_first_hint(loc['i'])}") from exc
            if hasattr(exc, "add_note"):
                exc.add_note(f"while building {where}")
            raise
        finally:
            _ROWS.state = previous

    parse_model.__doc__ = patched.__doc__
    parse_model.__wrapped__ = patched
    parse_model._yolo_attn = True
    return parse_model


# --------------------------------------------------------------------------------------------------------------------
# pretrained transfer across renumbered rows
# --------------------------------------------------------------------------------------------------------------------
def _yaml_rows(model: object) -> list | None:
    cfg = getattr(model, "yaml", None)
    if not isinstance(cfg, dict) or "backbone" not in cfg or "head" not in cfg:
        return None
    return list(cfg["backbone"]) + list(cfg["head"])


def renumbered_source(source: torch.nn.Module, target: torch.nn.Module) -> tuple[torch.nn.Module, str] | None:
    """A view of ``source`` whose ``model.<i>`` indices are the target's, or None when no renumbering is needed.

    Unmatched target rows (inserted layers) and conv-like swaps (``Conv`` -> ``ODConv``) hold parameter-less
    placeholders, so nothing is copied into them. ``source`` itself is not modified.
    """
    from yolo_attn.variants.transfer import NotAVariantError, align_layers

    rows_s, rows_t = _yaml_rows(source), _yaml_rows(target)
    layers = getattr(source, "model", None)
    if rows_s is None or rows_t is None or rows_s == rows_t or not isinstance(layers, torch.nn.Sequential):
        return None
    try:
        alignment = align_layers(source.yaml, target.yaml)
    except NotAVariantError:
        return None  # unrelated architectures: Ultralytics' own key/shape intersection, as without the plugin
    if all(i == j for i, j in alignment.matched.items()) and not alignment.replaced:
        return None
    to_base = {j: i for i, j in alignment.matched.items()}
    rows = [layers[to_base[j]] if j in to_base else torch.nn.Identity() for j in range(len(target.model))]
    view = __import__("copy").copy(source)
    view._modules = dict(source._modules)  # a shallow copy would otherwise share (and mutate) the module dict
    view._modules["model"] = torch.nn.Sequential(*rows)
    note = (
        f"yolo-attn: pretrained weights re-indexed for this variant: {len(alignment.renumbered)} rows renumbered, "
        f"{len(alignment.extra)} inserted rows initialised fresh"
        + (f", {len(alignment.replaced)} swapped conv-like rows not transferred" if alignment.replaced else "")
    )
    return view, note


def _wrap_load(original):
    def load(self, weights, verbose=True):
        source = (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights
        if isinstance(source, torch.nn.Module):
            renumbered = renumbered_source(source, self)
            if renumbered is not None:
                weights, note = renumbered
                if verbose:
                    import ultralytics.nn.tasks as tasks

                    tasks.LOGGER.info(note)
        return original(self, weights, verbose)

    load.__doc__ = original.__doc__
    load.__wrapped__ = original
    load._yolo_attn = True
    return load


def _wrap_fuse(original):
    """``BaseModel.fuse`` only folds BN into Ultralytics' own conv classes; also fuse plugin layers that can."""

    def fuse(self, *args, **kwargs):  # pass-through: the signature differs across releases (imgsz= since 8.4.x)
        plugin_types = tuple(spec.cls for spec in registry.specs())
        for m in self.model.modules():
            if plugin_types and isinstance(m, plugin_types) and callable(getattr(m, "fuse", None)):
                m.fuse()
        return original(self, *args, **kwargs)

    fuse.__doc__ = original.__doc__
    fuse.__wrapped__ = original
    fuse._yolo_attn = True
    return fuse


# --------------------------------------------------------------------------------------------------------------------
# YAML lookup, safe-load allow-list, names
# --------------------------------------------------------------------------------------------------------------------
def _wrap_check_yaml(original):
    def check_yaml(file, suffix=(".yaml", ".yml"), hard=True):
        found = original(file, suffix=suffix, hard=False)
        if found:
            return found
        shipped = find_model_yaml(file) if file else None
        if shipped is not None:
            return str(shipped)
        generated = _variant_yaml(file, strict=hard) if file else None
        if generated is not None:
            return str(generated)
        return original(file, suffix=suffix, hard=hard)

    check_yaml.__wrapped__ = original
    check_yaml._yolo_attn = True
    return check_yaml


def _variant_yaml(file: str | os.PathLike, strict: bool = True) -> Path | None:
    """``<family>-<layer>[-<where>].yaml`` names: the variant built from the installed Ultralytics' base YAML.

    ``strict=False`` (Ultralytics' probing ``check_yaml(..., hard=False)``) never raises: ``yaml_model_load`` probes
    the scale-stripped name first in some releases, and a user's own ``yolov8n-mine.yaml`` must still be found
    after it. A bad variant name raises on the final, ``hard`` lookup.
    """
    try:
        from yolo_attn.variants.families import VariantNameError, resolve_variant_yaml
    except ImportError:
        return None
    try:
        return resolve_variant_yaml(str(file))
    except VariantNameError:
        if strict:
            raise
        return None


def _plugin_classes(pending: registry.LayerSpec | None = None) -> list[type]:
    """Every nn.Module class a checkpoint of a plugin model may reference (registered ones and their submodules)."""
    import yolo_attn.layers as layers_pkg
    from yolo_attn.plugin import blocks

    specs = registry.specs() + ([pending] if pending is not None else [])  # listeners run before the registry adds it
    classes: set[type] = {spec.cls for spec in specs}
    classes |= set(blocks.part_classes())
    for spec in specs:
        classes |= set(blocks.block_classes(spec).values())
    prefixes = [layers_pkg.__name__ + "."]
    if _timm_classes_needed():  # TimmAttn checkpoints pickle timm's own layer classes
        import timm.layers  # noqa: F401  (imports the modules whose classes are collected below)

        prefixes.append("timm.layers.")
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith(tuple(prefixes)):
            for obj in vars(module).values():
                if isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == module.__name__:
                    classes.add(obj)
    return sorted(classes, key=lambda c: (c.__module__, c.__qualname__))


def _timm_classes_needed() -> bool:
    """timm's classes join the allow-list when timm is loaded, or when restricted loading is on and timm installed.

    Importing timm costs about a second, so the start-up hook only does it for users who turned on
    ``ULTRALYTICS_SAFE_LOAD`` (whose TimmAttn checkpoints would otherwise be refused).
    """
    if "timm" in sys.modules:
        return True
    from yolo_attn.plugin.autoload import env_flag

    if not env_flag("ULTRALYTICS_SAFE_LOAD"):
        return False
    import importlib.util

    return importlib.util.find_spec("timm") is not None


def _allow_safe_load(pending: registry.LayerSpec | None = None) -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no allow-list; Ultralytics then loads without weights_only anyway
        add(_plugin_classes(pending))


_owned: set[type] = set()  # classes this plugin put into the parser namespace (so re-registration may replace them)


def _sync_blocks(tasks, spec: registry.LayerSpec | None, name: str) -> None:
    """``<Block>_<name>`` for every block: set for a (re)registered name, removed with it."""
    from yolo_attn.plugin.blocks import BLOCKS, block_class

    for block in BLOCKS:
        block_name = f"{block}_{name}"
        if spec is None:
            if _is_block(tasks.__dict__.get(block_name)):
                tasks.__dict__.pop(block_name, None)
        elif block_name not in tasks.__dict__ or _is_block(tasks.__dict__[block_name]):
            setattr(tasks, block_name, block_class(block, spec))


def _sync_name(tasks, spec: registry.LayerSpec | None, name: str) -> None:
    current = tasks.__dict__.get(name)
    if spec is None:
        _sync_blocks(tasks, spec, name)
        if getattr(current, "_yolo_attn_owned", False) or (isinstance(current, type) and current in _owned):
            tasks.__dict__.pop(name, None)
        return
    if current is not None and current is not spec.cls and current not in _owned:
        raise KeyError(
            f"cannot register {name!r}: Ultralytics already defines {name!r} in its parser namespace "
            f"({getattr(current, '__module__', '?')}); choose another name"
        )
    setattr(tasks, name, spec.cls)
    _owned.add(spec.cls)
    _sync_blocks(tasks, spec, name)


def _on_registry_change(spec: registry.LayerSpec | None, name: str) -> None:
    tasks = sys.modules.get("ultralytics.nn.tasks")
    if tasks is not None and getattr(tasks, _MARK, False):
        _sync_name(tasks, spec, name)
        if spec is not None and name == spec.name:  # aliases share the class: one allow-list update per layer
            _allow_safe_load(spec)


def is_registered() -> bool:
    """True once :func:`register_ultralytics` has patched the imported Ultralytics."""
    tasks = sys.modules.get("ultralytics.nn.tasks")
    return bool(tasks is not None and getattr(tasks, _MARK, False))


def register_ultralytics() -> None:
    """Make the imported Ultralytics understand every registered layer (idempotent, thread-safe).

    Called automatically by the start-up hook when ``ultralytics.nn.tasks`` is imported (opt out with
    ``YOLO_ATTN_DISABLE=1``); call it yourself only when the hook is disabled.

    Raises:
        IntegrationError: The installed Ultralytics lacks the structure this plugin patches; nothing was changed.
    """
    with _LOCK:
        import ultralytics.nn.tasks as tasks

        if getattr(tasks, _MARK, False):
            return
        version = ultralytics_version()
        try:
            patched = _wrap_with_row_errors(_patched_parse_model(tasks))
            if not callable(getattr(tasks, "check_yaml", None)) or not callable(getattr(tasks, "make_divisible", None)):
                raise IntegrationError("ultralytics.nn.tasks no longer imports check_yaml/make_divisible")
        except IntegrationError as exc:
            raise IntegrationError(
                f"yolo-attn cannot hook Ultralytics {version}: {exc}. Verified on Ultralytics "
                f"{', '.join(VERIFIED_ULTRALYTICS_VERSIONS)} (supported range {SUPPORTED_ULTRALYTICS_RANGE}). "
                "Install a verified version (pip install 'ultralytics==8.4.190') or report this version."
            ) from exc
        except (OSError, SyntaxError, TypeError) as exc:  # e.g. source not available in a frozen install
            raise IntegrationError(f"yolo-attn cannot read parse_model of Ultralytics {version}: {exc}") from exc

        tasks.__dict__[_KINDS_NAME] = _KindsView()
        tasks.__dict__[_BLOCKS_NAME] = _BlocksView()
        tasks.__dict__[_CHANNELS_HOOK] = _resolve_channels
        tasks.parse_model = patched
        if not getattr(tasks.check_yaml, "_yolo_attn", False):
            tasks.check_yaml = _wrap_check_yaml(tasks.check_yaml)
        base_model = getattr(tasks, "BaseModel", None)
        if base_model is not None and callable(getattr(base_model, "load", None)):
            if not getattr(base_model.load, "_yolo_attn", False):
                base_model.load = _wrap_load(base_model.load)
            if callable(getattr(base_model, "fuse", None)) and not getattr(base_model.fuse, "_yolo_attn", False):
                base_model.fuse = _wrap_fuse(base_model.fuse)
        setattr(tasks, _MARK, version)
        for spec in registry.specs():
            for name in spec.names:
                _sync_name(tasks, spec, name)
        _allow_safe_load()
        registry.add_listener(_on_registry_change)


def install_placeholders(reason: str) -> None:
    """After a failed registration: make plugin names raise ``reason`` when a YAML uses them (never build wrongly)."""
    tasks = sys.modules.get("ultralytics.nn.tasks")
    if tasks is None:
        return
    # Keep resolving shipped YAML names, so `yolov8n-ema.yaml` reaches the placeholder and its explanation
    # instead of a bare "file does not exist".
    if callable(getattr(tasks, "check_yaml", None)) and not getattr(tasks.check_yaml, "_yolo_attn", False):
        tasks.check_yaml = _wrap_check_yaml(tasks.check_yaml)
    for spec in registry.specs():
        for name in spec.names:
            if name in tasks.__dict__:
                continue

            def __init__(self, *args, _name=name, **kwargs):  # noqa: N807 - placeholder constructor
                raise IntegrationError(f"{_name} cannot be built: {reason}")

            placeholder = type(name, (torch.nn.Module,), {"__init__": __init__, "_yolo_attn_owned": True})
            setattr(tasks, name, placeholder)


def _register_from_hook() -> None:
    """Entry point for the start-up hook: never crash the user's ``yolo`` command, never build a wrong model."""
    try:
        register_ultralytics()
    except Exception as exc:  # a plugin must not take the stock CLI down with it
        import warnings

        message = f"yolo-attn: plugin layers are disabled: {exc}"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        try:
            install_placeholders(str(exc))
        except Exception:  # the warning above already says what is wrong
            pass


def pin_cpu_threads(threads: int) -> None:
    """Make Ultralytics keep ``threads`` torch threads on CPU.

    ``select_device`` (every train, val and predict) resets torch to its ``NUM_THREADS`` (cores - 1, at most 8) on
    CPU; results of CPU runs depend on the thread count in the last digits, so a comparison pins one count for all
    its runs, evaluation included.
    """
    import ultralytics.utils.torch_utils as torch_utils

    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"pin_cpu_threads: threads must be a positive int, got {threads!r}")
    if not hasattr(torch_utils, "NUM_THREADS"):
        raise IntegrationError("ultralytics.utils.torch_utils no longer has NUM_THREADS; cannot pin CPU threads")
    torch_utils.NUM_THREADS = threads
    torch.set_num_threads(threads)
