"""Edit Ultralytics model YAMLs by row: insert, replace or remove layers with every ``from`` index rewired.

Moving an attention layer by hand means renumbering every absolute ``from`` index after it, and forgetting one
silently wires Concat or Detect to the wrong producer. These functions do it mechanically:

* :func:`insert_layer` ``after=[15, 18, 21]``: a new row reads each target; every consumer of the target (the next
  row's ``-1``, later absolute indices, Concat and Detect inputs) reads the new row instead; every other ``from``
  is renumbered to keep its producer.
* ``before=[t]``: the new row reads what row ``t`` read, and row ``t`` reads the new row; nothing else changes.
* :func:`replace_layer`: swap the module of a row (``Conv -> ODConv``), keeping its args and wiring.
* :func:`remove_layers`: drop rows; their consumers read what the removed row read (the inverse of ``after=``).

Text is edited line by line, so comments and layout survive; a row's leading index comment (``# 18 (P4/16)``) is
renumbered with it. Example:

    >>> text = Path("yolov8.yaml").read_text()
    >>> new_text = insert_layer(text, "EMA", after=[15, 18, 21])
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

SECTIONS = ("backbone", "head")
_ROW_LINE = re.compile(r"^(?P<indent>\s*-\s*)(?P<row>\[.*?\])(?P<rest>\s*(#.*)?)$")
_FROM_PREFIX = re.compile(r"^\[\s*(?P<from>\[[^\]]*\]|-?\d+)\s*,")
_INDEX_COMMENT = re.compile(r"^(?P<hash>\s*#\s*)(?P<num>\d+)(?P<tail>\b.*)$")
# libyaml's loader when PyYAML was built with it: same results as SafeLoader, ~8x faster (placement parses often).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YAMLEditError(ValueError):
    """A placement request does not fit the YAML (bad index, multi-input target, ...); names the row.

    Attributes:
        row: Index (original numbering) of the row the error is about, or None; callers that know the file use it to
            add ``file:line``.
    """

    def __init__(self, message: str, row: int | None = None) -> None:
        super().__init__(message)
        self.row = row


@dataclass
class _Row:
    section: str
    row: list  # [from, repeats, module, args] as parsed
    line: int | None  # 0-based line of a one-line row in the text, None for rows we created
    comment: str = ""  # trailing '# ...' text (with its leading whitespace)
    origin: int | None = None  # index in the original YAML, None for inserted rows
    orig_text: str | None = None  # the row's original flow text, written back verbatim while the row is unchanged
    orig_row: list | None = None


@dataclass
class ModelRows:
    """A model YAML split into rows, with enough layout information to write it back with comments."""

    lines: list[str]
    rows: list[_Row]
    one_line_rows: bool
    data: dict = field(default_factory=dict)

    @property
    def n_backbone(self) -> int:
        return sum(r.section == "backbone" for r in self.rows)


def parse_rows(text: str) -> ModelRows:
    """Split a model YAML into rows; record each row's line when every row sits on a line of its own."""
    data = yaml.load(text, Loader=_LOADER)
    if not isinstance(data, dict) or not all(isinstance(data.get(s), list) for s in SECTIONS):
        raise YAMLEditError("not an Ultralytics model YAML: it needs 'backbone' and 'head' lists of rows")
    root = yaml.compose(text, Loader=_LOADER)
    nodes = {k.value: v for k, v in root.value}
    lines = text.splitlines()
    rows: list[_Row] = []
    one_line = True
    for section in SECTIONS:
        for node, row in zip(nodes[section].value, data[section]):
            if not (isinstance(row, list) and len(row) == 4):
                raise YAMLEditError(
                    f"line {node.start_mark.line + 1}: row {len(rows)} {row!r} is not [from, repeats, module, args]",
                    row=len(rows),
                )
            line_no = node.start_mark.line
            match = _ROW_LINE.match(lines[line_no]) if node.start_mark.line == node.end_mark.line else None
            if match is None:
                one_line = False
            rows.append(
                _Row(
                    section,
                    row,
                    line_no if match else None,
                    comment=match.group("rest") if match else "",
                    origin=len(rows),
                    orig_text=match.group("row") if match else None,
                    orig_row=copy.deepcopy(row),
                )
            )
    return ModelRows(lines=lines, rows=rows, one_line_rows=one_line, data=data)


def _sources(f: int | list, index: int) -> list[int]:
    return [x if x >= 0 else index + x for x in ([f] if isinstance(f, int) else f)]


def _check_index(value: int, n_rows: int, what: str) -> int:
    if not isinstance(value, int) or not -n_rows <= value < n_rows:
        raise YAMLEditError(f"{what}={value!r} is not a row index of this YAML (0..{n_rows - 1})")
    return value % n_rows


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "True", False: "False", None: "None"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # Bare words Ultralytics resolves itself (nc, None, True) stay bare; other strings are quoted.
        return value if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", value) else f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if isinstance(value, dict):  # layer keyword args: [-1, 1, EMA, [{factor: 8}]]
        if not all(isinstance(k, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in value):
            raise YAMLEditError(f"cannot write YAML mapping {value!r}: keys must be argument names")
        return "{" + ", ".join(f"{k}: {_format_value(v)}" for k, v in value.items()) + "}"
    raise YAMLEditError(f"cannot write YAML arg {value!r}")


def format_row(row: Sequence) -> str:
    """Flow-style row text as Ultralytics writes it: ``[-1, 1, EMA, [16]]``."""
    return _format_value(list(row))


def _rewire(model: ModelRows, new_order: list[_Row], redirect: dict[int, int]) -> None:
    """Rewrite ``from`` of every row in ``new_order``.

    Producers are tracked by identity: ``producer_of[id(row)]`` is the list of rows it reads (old wiring), and
    ``redirect`` maps an original row index to the original-or-new row whose output its consumers now read.
    """
    position = {id(r): i for i, r in enumerate(new_order)}
    for new_index, row in enumerate(new_order):
        f = row.row[0]
        if getattr(row, "_fixed_sources", None) is not None:
            targets = row._fixed_sources  # rows we inserted name their producers explicitly
        else:
            old_index = row.origin
            targets = [redirect.get(src, ("orig", src)) for src in _sources(f, old_index)]
        new_sources = []
        for kind, ref in targets:
            if kind == "orig" and ref < 0:  # the image input (row 0 reads -1)
                new_sources.append(-1)
                continue
            producer = model._by_origin[ref] if kind == "orig" else ref
            new_sources.append(position[id(producer)])
        new_f = _encode_from(f, new_sources, new_index)
        if new_f != f:
            row.row = [new_f, *row.row[1:]]


def _encode_from(old_f: int | list, sources: list[int], index: int) -> int | list:
    """Keep the author's style: relative stays relative, absolute stays absolute."""
    old_list = [old_f] if isinstance(old_f, int) else list(old_f)
    out = [src - index if old < 0 else src for old, src in zip(old_list, sources)]
    return out[0] if isinstance(old_f, int) else out


def _render(model: ModelRows, new_order: list[_Row], header: str) -> str:
    if not model.one_line_rows:
        data = dict(model.data)
        data["backbone"] = [r.row for r in new_order if r.section == "backbone"]
        data["head"] = [r.row for r in new_order if r.section == "head"]
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=200)
        return header + body
    # Line-preserving path: the original lines, with row lines replaced and inserted rows placed after their anchor.
    by_line = {r.line: r for r in model.rows if r.line is not None}
    after_line: dict[int | None, list[_Row]] = {}
    index_of = {id(r): i for i, r in enumerate(new_order)}
    kept_ids = {id(r) for r in new_order}
    for i, r in enumerate(new_order):
        if r.line is not None:
            continue
        # An inserted row goes right after the nearest earlier existing row of its section, else right before the
        # next existing row (e.g. inserted before the first head row).
        prev = next((p for p in reversed(new_order[:i]) if p.line is not None and p.section == r.section), None)
        if prev is not None:
            after_line.setdefault(prev.line, []).append(r)
        else:
            nxt = next((p for p in new_order[i + 1 :] if p.line is not None), None)
            after_line.setdefault(("before", nxt.line) if nxt else len(model.lines) - 1, []).append(r)
    out: list[str] = []

    def emit(r: _Row, indent: str) -> None:
        comment = r.comment
        m = _INDEX_COMMENT.match(comment) if comment else None
        if m and r.origin is not None and int(m.group("num")) == r.origin:
            comment = f"{m.group('hash')}{index_of[id(r)]}{m.group('tail')}"
        text = r.orig_text if r.orig_text is not None and r.row == r.orig_row else format_row(r.row)
        out.append(f"{indent}{text}{comment}")

    indent_default = "  - "
    for n, text in enumerate(model.lines):
        for r in after_line.get(("before", n), []):
            emit(r, indent_default)
        row = by_line.get(n)
        if row is None:
            out.append(text)
        elif id(row) in kept_ids:
            indent = _ROW_LINE.match(text).group("indent")
            indent_default = indent
            emit(row, indent)
        for r in after_line.get(n, []):
            emit(r, indent_default)
    return header + "\n".join(out) + "\n"


def _prepare(text: str) -> ModelRows:
    model = parse_rows(text)
    model._by_origin = {r.origin: r for r in model.rows}
    return model


def _header(text: str, note: str) -> str:
    return f"# yolo-attn: {note}\n"


def insert_layer(
    text: str,
    module: str,
    args: Sequence | None = None,
    *,
    after: Iterable[int] = (),
    before: Iterable[int] = (),
    repeats: int = 1,
    note: str | None = None,
) -> str:
    """Insert a ``[from, repeats, module, args]`` row after and/or before rows, rewiring every ``from``.

    Args:
        text: The model YAML text.
        module: Module name for the new rows (e.g. ``"EMA"``).
        args: YAML args of the new rows (default ``[]``), e.g. ``[16]`` for ``EMA(c1, 16)``.
        after: Row indices (original numbering) to follow; their consumers read the new row instead.
        before: Row indices to precede; the new row reads what that row read (single input only), and that row
            reads the new one.
        repeats: The repeats column of the new rows.
        note: Extra words for the header comment that records the edit.

    Returns:
        The edited YAML text, with a header comment recording the edit.

    Raises:
        YAMLEditError: an index is out of range, duplicated, or a ``before`` target reads several inputs.
    """
    model = _prepare(text)
    n = len(model.rows)
    after = sorted({_check_index(t, n, "after") for t in after})
    before = sorted({_check_index(t, n, "before") for t in before})
    if not after and not before:
        raise YAMLEditError("say where: after=<rows> and/or before=<rows>")
    args = list(args or [])
    new_order: list[_Row] = []
    redirect: dict[int, tuple[str, Any]] = {}
    for r in model.rows:
        if r.origin in before:
            srcs = _sources(r.row[0], r.origin)
            if len(srcs) != 1:
                raise YAMLEditError(
                    f"before={r.origin}: row {r.origin} {r.row} reads {len(srcs)} inputs; "
                    "insert after one of its producers instead",
                    row=r.origin,
                )
            new = _Row(r.section, [-1, repeats, module, args], None)
            new._fixed_sources = [redirect.get(srcs[0], ("orig", srcs[0]))]
            new_order.append(new)
            r._fixed_sources = [("new", new)]
        new_order.append(r)
        if r.origin in after:
            if r.row[2] == "Detect" or r is model.rows[-1]:
                raise YAMLEditError(
                    f"after={r.origin}: row {r.origin} {r.row} is the model's output; nothing reads it", row=r.origin
                )
            new = _Row(r.section, [-1, repeats, module, args], None)
            new._fixed_sources = [("orig", r.origin)]
            new_order.append(new)
            redirect[r.origin] = ("new", new)
    for r in new_order:
        if not hasattr(r, "_fixed_sources"):
            r._fixed_sources = None
    _rewire(model, new_order, redirect)
    where = ", ".join(
        [f"after row {t} ({model.rows[t].row[2]})" for t in after]
        + [f"before row {t} ({model.rows[t].row[2]})" for t in before]
    )
    header = _header(text, note or f"inserted {format_row([-1, repeats, module, args])} {where}; from indices rewired")
    return _render(model, new_order, header)


def replace_layer(
    text: str, module: str, rows: Iterable[int], *, args: Sequence | None = None, note: str | None = None
) -> str:
    """Swap the module of the given rows (e.g. ``Conv`` -> ``ODConv``), keeping their wiring (and args unless given)."""
    model = _prepare(text)
    targets = sorted({_check_index(t, len(model.rows), "replace") for t in rows})
    if not targets:
        raise YAMLEditError("replace= needs at least one row index")
    old = {t: model.rows[t].row[2] for t in targets}
    for t in targets:
        new_args = list(args) if args is not None else model.rows[t].row[3]
        model.rows[t].row = [model.rows[t].row[0], model.rows[t].row[1], module, new_args]
    for r in model.rows:
        r._fixed_sources = None
    header = _header(text, note or "replaced " + ", ".join(f"row {t} {old[t]} -> {module}" for t in targets))
    return _render(model, list(model.rows), header)


def rewrite_rows(
    text: str, changes: Mapping[int, tuple[str | None, Sequence | None]], *, note: str | None = None
) -> str:
    """Set the module and/or args of rows, keeping their ``from``, repeats, comments and every other row.

    Used for edits that change what a row builds but not the graph: ``C2f -> C2f_EMA`` (attention inside the block,
    same args) or a fork-style ``EMA [256] -> EMA []`` (:mod:`yolo_attn.variants.migrate`).

    Args:
        text: The model YAML text.
        changes: Row index (original numbering) -> ``(module, args)``; ``None`` keeps that part of the row.
        note: Words for the header comment that records the edit.

    Returns:
        The edited YAML text, with a header comment recording the edit.

    Raises:
        YAMLEditError: an index is out of range, or ``changes`` is empty.
    """
    model = _prepare(text)
    n = len(model.rows)
    targets = {_check_index(i, n, "row"): change for i, change in changes.items()}
    if not targets:
        raise YAMLEditError("rewrite_rows needs at least one row")
    described = []
    for i, (module, args) in sorted(targets.items()):
        r = model.rows[i]
        new_row = [r.row[0], r.row[1], r.row[2] if module is None else module, r.row[3] if args is None else list(args)]
        described.append(f"row {i} {format_row(r.row[2:])} -> {format_row(new_row[2:])}")
        r.row = new_row
    for r in model.rows:
        r._fixed_sources = None
    return _render(model, list(model.rows), _header(text, note or "rewrote " + "; ".join(described)))


def remove_layers(text: str, rows: Iterable[int], *, note: str | None = None) -> str:
    """Delete single-input rows; whatever read a deleted row reads that row's own input instead."""
    model = _prepare(text)
    targets = sorted({_check_index(t, len(model.rows), "remove") for t in rows})
    if not targets:
        raise YAMLEditError("remove= needs at least one row index")
    redirect: dict[int, tuple[str, Any]] = {}
    for t in targets:
        srcs = _sources(model.rows[t].row[0], t)
        if len(srcs) != 1:
            raise YAMLEditError(
                f"remove={t}: row {t} {model.rows[t].row} reads {len(srcs)} inputs; cannot bypass it", row=t
            )
        redirect[t] = redirect.get(srcs[0], ("orig", srcs[0]))
    new_order = [r for r in model.rows if r.origin not in targets]
    for r in new_order:
        r._fixed_sources = None
    _rewire(model, new_order, redirect)
    header = _header(text, note or "removed " + ", ".join(f"row {t} ({model.rows[t].row[2]})" for t in targets))
    return _render(model, new_order, header)


def find_rows(text: str, module: str) -> list[int]:
    """Indices of rows whose module column equals ``module``."""
    return [i for i, r in enumerate(parse_rows(text).rows) if r.row[2] == module]
