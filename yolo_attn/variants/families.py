"""Every YOLO family, every placement, by name: ``<family><scale>-<layer>[-<where>].yaml``.

``yolo train model=yolo26s-ema-backbone.yaml`` works from any folder for every registered layer: the name is parsed
here, the variant is built from the *installed* Ultralytics' own base YAML (``cfg/models/26/yolo26.yaml``) with the
same row editor as ``yolo-attn place`` (:mod:`yolo_attn.variants.edit`), written to a cache folder, and handed to
Ultralytics' YAML loader. The scale letter is read by Ultralytics itself from the name, as for stock models.

Name grammar (layer and placement are case-insensitive; ``<layer>`` is any registered name or alias, including
layers registered later)::

    yolo26s-ema.yaml            = yolo26s-ema-neck.yaml
    yolo26s-cbam-backbone.yaml  yolo26s-se-sppf.yaml  yolo26s-simam-blocks.yaml
    yolo26s-odconv.yaml         yolo26s-odconv-blocks.yaml          (conv-kind layers)
    yolov9c-ema.yaml  yolov10n-eca.yaml  rtdetr-l-ema.yaml          (families whose base file carries the size)

Placements, computed from the base YAML's structure (never from a table of row numbers):

* ``neck`` (default): one layer after each row that feeds the detection head (the head row's ``from`` list).
* ``backbone``: one layer after each backbone row whose output a head row reads.
* ``sppf``: one layer after the backbone's last row (SPPF, or what follows it: C2PSA in YOLO11/26, PSA in YOLOv10).
* ``blocks``: the head's ``C2f``/``C3k2``/``C3``/``C2`` rows become ``<Block>_<Layer>`` (attention inside each
  bottleneck; same args), built by :mod:`yolo_attn.plugin.blocks`.

Conv-kind layers (ODConv) replace rows instead of being inserted: ``neck`` (default) swaps the head's stride-2
``Conv`` rows (the PAN downsampling convs), ``blocks`` puts them inside the blocks; ``backbone``/``sppf`` are refused.
A combination a family cannot take (no blocks to put attention into, no stride-2 Conv in its head) fails with the
reason and the valid choices, before anything is built.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from yolo_attn.plugin import registry
from yolo_attn.plugin.blocks import BLOCKS
from yolo_attn.variants.edit import _LOADER, _sources, insert_layer, replace_layer, rewrite_rows
from yolo_attn.variants.transfer import _freeze

__all__ = [
    "BLOCK_MODULES",
    "FAMILIES",
    "PLACEMENTS",
    "Family",
    "Variant",
    "VariantNameError",
    "family_placements",
    "parse_variant_name",
    "render_variant",
    "resolve_variant_yaml",
    "variant_cache_dir",
]

#: Placement names, in the order ``yolo-attn layers`` lists them; the first is the default.
PLACEMENTS: dict[str, str] = {
    "neck": "after each row that feeds the detection head (default)",
    "backbone": "after each backbone row whose output the head reads",
    "sppf": "once, after the backbone's last row (SPPF, or the C2PSA/PSA that follows it)",
    "blocks": "inside the head's C2f/C3k2/C3/C2 blocks: those rows become <Block>_<Layer>, same args",
}
#: What conv-kind layers do for each placement (they replace Conv rows instead of adding rows).
CONV_PLACEMENTS: dict[str, str] = {
    "neck": "the head's stride-2 Conv rows (PAN downsampling) become the layer (default)",
    "blocks": "inside the head's C2f/C3k2/C3/C2 blocks: the bottlenecks' 3x3 convs become the layer",
}
#: Stock blocks whose rows ``-blocks`` renames: the blocks of :mod:`yolo_attn.plugin.blocks`.
BLOCK_MODULES: tuple[str, ...] = BLOCKS
#: Other stock CSP-style blocks a head may hold; ``-blocks`` leaves them stock and the header says so.
_OTHER_BLOCKS = frozenset(
    {"A2C2f", "C2fCIB", "RepC3", "C3Ghost", "C3x", "C3TR", "C2fPSA", "C2PSA", "C2fAttn", "RepNCSPELAN4", "C1"}
)

CACHE_ENV = "YOLO_ATTN_VARIANT_DIR"  # overrides the root of the generated-YAML cache
_SUFFIXES = (".yaml", ".yml")
_UNIFY = re.compile(r"(\d+)([nslmx])(.+)?$")  # Ultralytics' yaml_model_load rule: yolov8s-ema -> yolov8-ema
_CANDIDATE = re.compile(r"^(yolo|rtdetr)", re.IGNORECASE)


class VariantNameError(ValueError):
    """A ``<family><scale>-<layer>[-<where>].yaml`` name whose family is known but whose other parts are not valid.

    Attributes:
        choices: The valid values for the part that was wrong.
    """

    def __init__(self, message: str, choices: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.choices = list(choices)


@dataclass(frozen=True)
class Family:
    """A detection model family Ultralytics ships.

    Attributes:
        name: How variant names start (``yolo26``, ``yolov8-p2``, ``yolov9``, ``rtdetr``).
        title: Human name for headers (``YOLO26``).
        cfg: Base YAML under ``ultralytics/cfg/models``; ``{size}`` marks where a size goes for sized families.
        sizes: Empty for families with a ``scales:`` block (the scale letter comes from the name); otherwise the
            sizes whose base file differs (``yolov9t.yaml`` ... ``yolov9e.yaml``), written right after ``name``
            (joined by ``size_sep``).
        size_sep: ``"-"`` for ``rtdetr-l``, empty otherwise.
    """

    name: str
    title: str
    cfg: str
    sizes: tuple[str, ...] = ()
    size_sep: str = ""

    def stem(self, size: str = "") -> str:
        """Base file stem for ``size`` (``yolov9c``, ``rtdetr-l``, ``yolo26``)."""
        return f"{self.name}{self.size_sep}{size}" if self.sizes else self.name

    def base_path(self, size: str = "") -> Path:
        """The installed Ultralytics' base YAML for ``size``."""
        return _cfg_root() / self.cfg.format(size=size)


#: Families names may start with. Longer names first where one is a prefix of another (yolov8-p2 before yolov8).
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("yolov5-p6", "YOLOv5-P6", "v5/yolov5-p6.yaml"),
        Family("yolov5", "YOLOv5", "v5/yolov5.yaml"),
        Family("yolov6", "YOLOv6", "v6/yolov6.yaml"),
        Family("yolov8-p2", "YOLOv8-P2", "v8/yolov8-p2.yaml"),
        Family("yolov8-p6", "YOLOv8-P6", "v8/yolov8-p6.yaml"),
        Family("yolov8", "YOLOv8", "v8/yolov8.yaml"),
        Family("yolov9", "YOLOv9", "v9/yolov9{size}.yaml", sizes=("t", "s", "m", "c", "e")),
        Family("yolov10", "YOLOv10", "v10/yolov10{size}.yaml", sizes=("n", "s", "m", "b", "l", "x")),
        Family("yolo11", "YOLO11", "11/yolo11.yaml"),
        Family("yolo12", "YOLO12", "12/yolo12.yaml"),
        Family("yolo26-p2", "YOLO26-P2", "26/yolo26-p2.yaml"),
        Family("yolo26-p6", "YOLO26-P6", "26/yolo26-p6.yaml"),
        Family("yolo26", "YOLO26", "26/yolo26.yaml"),
        Family(
            "rtdetr", "RT-DETR", "rt-detr/rtdetr-{size}.yaml", sizes=("l", "x", "resnet50", "resnet101"), size_sep="-"
        ),
    )
}


@dataclass(frozen=True)
class Variant:
    """A parsed variant name.

    Attributes:
        family: The family.
        size: The size baked into the base file (sized families), else ``""``.
        scale: The scale letter Ultralytics reads from the requested name (``""`` if none).
        layer: The registered layer.
        token: The layer part as written, lower-cased (``ca``, ``ema``): it names the file.
        placement: One of :data:`PLACEMENTS`.
        explicit: True when the name spelt the placement (``-neck``), so it is kept in the file name.
    """

    family: Family
    size: str
    scale: str
    layer: registry.LayerSpec
    token: str
    placement: str
    explicit: bool = False

    @property
    def stem(self) -> str:
        """Canonical file stem without a scale letter (``yolo26-ema-backbone``, ``yolov9c-ema``)."""
        where = f"-{self.placement}" if self.placement != "neck" or self.explicit else ""
        return f"{self.family.stem(self.size)}-{self.token}{where}"

    @property
    def base_path(self) -> Path:
        return self.family.base_path(self.size)


# ------------------------------------------------------------------------------------------------------ names
@functools.lru_cache(maxsize=1)
def _cfg_root() -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent / "cfg" / "models"


@functools.lru_cache(maxsize=1)
def _stock_names() -> frozenset[str]:
    """File names of every YAML Ultralytics ships under cfg/ (what its own lookup would find by name)."""
    return frozenset(p.name for p in _cfg_root().parent.rglob("*.y*ml"))


def _exists_elsewhere(name: str) -> bool:
    """True when ``name`` (a path or bare name) is found the ordinary way: local file, Ultralytics' cfg, shipped."""
    from yolo_attn.plugin.integration import find_model_yaml

    path = Path(name)
    return path.is_file() or path.name in _stock_names() or find_model_yaml(path.name) is not None


def _layer_choices() -> list[str]:
    return sorted(
        (f"{s.name} ({s.kind}{'; alias ' + ', '.join(s.aliases) if s.aliases else ''})" for s in registry.specs()),
        key=str.casefold,
    )


def _placement_choices(spec: registry.LayerSpec) -> list[str]:
    return list(CONV_PLACEMENTS if spec.kind == "conv" else PLACEMENTS)


def _match_family(stem: str) -> tuple[Family, str, str] | None:
    """``(family, size, rest after the family)`` for a name's stem, or None when no family matches.

    The family part is matched exactly (lower case, as Ultralytics names its files and reads scale letters);
    a family written in another case is refused with the spelling to use.
    """
    unified = _UNIFY.sub(r"\1\3", stem)
    for family in FAMILIES.values():  # sized families: the size is part of the base file name
        for size in family.sizes:
            prefix = family.stem(size) + "-"
            if stem.startswith(prefix):
                return family, size, stem[len(prefix) :]
    for family in FAMILIES.values():
        if not family.sizes and unified.startswith(family.name + "-"):
            return family, "", unified[len(family.name) + 1 :]
    for family in FAMILIES.values():  # a sized family named without its size: say which sizes exist
        if family.sizes and stem.startswith(family.name + "-"):
            sizes = ", ".join(family.stem(s) for s in family.sizes)
            raise VariantNameError(
                f"{stem}: {family.title} has no `scales:` block; its size is part of the base file. "
                f"Name one of {sizes}, e.g. {family.stem(family.sizes[0])}-{stem[len(family.name) + 1 :]}.yaml",
                [family.stem(s) for s in family.sizes],
            )
    lowered = stem[: stem.find("-")].lower() + stem[stem.find("-") :] if "-" in stem else stem
    if lowered != stem and _match_family(lowered) is not None:
        raise VariantNameError(
            f"{stem}: write the family in lower case, {lowered}.yaml (Ultralytics reads the scale letter only from "
            "lower-case names; the layer and placement parts may be in any case)",
            [lowered],
        )
    return None


def parse_variant_name(name: str | os.PathLike, *, skip_existing: bool = True) -> Variant | None:
    """Parse ``<family><scale>-<layer>[-<where>].yaml``; None when the name is not a variant name.

    Args:
        name: A bare file name or a path (only the file name is parsed), with or without the scale letter.
        skip_existing: Return None when the name, or its unified form without the scale letter, is found the
            ordinary way (a local file, a YAML Ultralytics ships such as ``yolov8-p2.yaml``, a shipped yolo-attn
            YAML): those win, exactly as Ultralytics' own lookup would have it.

    Returns:
        The parsed :class:`Variant`, or None.

    Raises:
        VariantNameError: The family is known but the layer or placement part is not valid, or the family cannot
            take that placement; the message lists the valid choices.
    """
    text = os.fspath(name)
    path = Path(text)
    if path.suffix.lower() not in _SUFFIXES or not _CANDIDATE.match(path.name):
        return None  # the fast path taken by every stock `yolo train model=yolov8n.yaml`
    stem = path.stem
    try:  # string matching first: cheap, and most names (yolov8n.yaml) stop here
        matched, refused = _match_family(stem), None
    except VariantNameError as exc:
        matched, refused = None, exc
    if (matched is None and refused is None) or (matched is not None and not matched[2]):
        return None
    unified = _UNIFY.sub(r"\1\3", stem)
    if skip_existing and (_exists_elsewhere(text) or _exists_elsewhere(str(path.with_name(unified + path.suffix)))):
        return None
    if refused is not None:
        raise refused
    family, size, rest = matched
    parts = rest.split("-")
    layer_part, where = parts[0], parts[1:]
    spec = registry.find_spec(layer_part)
    if spec is None:
        same = sorted({s.name for s in registry.specs() for n in s.names if n.casefold() == layer_part.casefold()})
        if len(same) > 1:  # find_spec refuses to guess between layers differing only in case
            raise VariantNameError(
                f"{path.name}: {layer_part!r} matches several registered layers ({', '.join(same)}) when case is "
                "ignored; write the name exactly as registered",
                same,
            )
        raise VariantNameError(
            f"{path.name}: {layer_part!r} is not a registered layer (case-insensitive). Valid layers: "
            f"{', '.join(_layer_choices())}. Name form: {family.stem(size or (family.sizes or ('',))[0])}"
            f"{'' if family.sizes else '<scale>'}-<layer>[-<where>].yaml; `yolo-attn layers` lists everything",
            [s.name for s in registry.specs()],
        )
    choices = _placement_choices(spec)
    known = set(choices) | set(PLACEMENTS)  # a conv-kind layer with `-backbone` gets the conv-kind explanation below
    if len(where) > 1 or (where and where[0].casefold() not in known):
        bad = "-".join(where)
        raise VariantNameError(
            f"{path.name}: {bad!r} is not a placement for {spec.name} (a layer of kind {spec.kind!r}). "
            f"Valid placements: {', '.join(choices)} (nothing = {choices[0]})",
            choices,
        )
    placement = where[0].casefold() if where else choices[0]
    from ultralytics.nn.tasks import guess_model_scale

    variant = Variant(
        family=family,
        size=size,
        scale=guess_model_scale(path.name) if not family.sizes else "",
        layer=spec,
        token=layer_part.casefold(),
        placement=placement,
        explicit=bool(where),
    )
    _target_rows(variant)  # refuse combinations the family cannot take, with the reason, before anything is built
    return variant


# ------------------------------------------------------------------------------------------------- placement rules
@functools.lru_cache(maxsize=64)
def _base_structure(path: Path) -> tuple[tuple, int, str]:
    text = path.read_text(encoding="utf-8")
    d = yaml.load(text, Loader=_LOADER)
    rows = tuple(tuple(_freeze(x) for x in r) for r in d["backbone"] + d["head"])
    return rows, len(d["backbone"]), text


def _head_modules(rows: Sequence, n_backbone: int) -> list[str]:
    """Distinct module names of the head's layers (not Concat/Upsample/the output row), in order."""
    skip = {"Concat", "nn.Upsample", rows[-1][2]}
    return list(dict.fromkeys(r[2] for r in rows[n_backbone:-1] if r[2] not in skip))


def family_placements(family: Family, size: str = "") -> dict[str, list[int] | str]:
    """Rows each placement targets in ``family``'s base YAML, or the reason it has none.

    Keys: ``neck``, ``backbone``, ``sppf``, ``blocks`` (attention kind) and ``convs`` (the head's stride-2 Conv
    rows, what a conv-kind layer's ``neck`` placement replaces). Values: base row indices, or a reason string.
    """
    rows, n_backbone, _ = _base_structure(family.base_path(size or (family.sizes[0] if family.sizes else "")))
    head = range(n_backbone, len(rows))
    out: dict[str, list[int] | str] = {
        "neck": sorted(set(_sources(rows[-1][0], len(rows) - 1))),
        "backbone": sorted({s for i in head for s in _sources(rows[i][0], i) if 0 <= s < n_backbone}),
        "sppf": [n_backbone - 1],
    }
    blocks = [i for i in head[:-1] if rows[i][2] in BLOCK_MODULES]
    others = ", ".join(_head_modules(rows, n_backbone))
    out["blocks"] = blocks or (
        f"{family.title}'s head has no {'/'.join(BLOCK_MODULES)} rows (its layers are {others}), so there is no "
        "block to put the layer inside"
    )
    convs = [i for i in head if rows[i][2] == "Conv" and len(rows[i][3]) > 2 and rows[i][3][2] == 2]
    out["convs"] = convs or (f"{family.title}'s head has no stride-2 Conv rows to replace (its layers are {others})")
    return out


def _rule_key(spec: registry.LayerSpec, placement: str) -> str:
    """Conv-kind layers' ``neck`` placement replaces the head's stride-2 Convs (rule ``convs``)."""
    return "convs" if spec.kind == "conv" and placement == "neck" else placement


def _target_rows(variant: Variant) -> list[int]:
    """Base rows the variant edits; raises :class:`VariantNameError` with the reason when there are none."""
    rules = family_placements(variant.family, variant.size)
    spec, where = variant.layer, variant.placement
    key = _rule_key(spec, where)
    if spec.kind == "conv" and where not in CONV_PLACEMENTS:
        raise VariantNameError(
            f"{variant.stem}: {spec.name} is a conv-kind layer: it replaces Conv rows instead of adding rows, so "
            f"`-{where}` (which inserts rows) does not apply. Valid placements for it: {', '.join(CONV_PLACEMENTS)}; "
            f"to swap other Conv rows use `yolo-attn place base=... layer={spec.name} replace=<rows>`",
            list(CONV_PLACEMENTS),
        )
    rows = rules[key]
    if isinstance(rows, str):
        valid = [p for p in _placement_choices(spec) if not isinstance(rules[_rule_key(spec, p)], str)]
        raise VariantNameError(
            f"{variant.stem}: {rows}. Valid placements for {spec.name} in {variant.family.title}: "
            f"{', '.join(valid) or 'none'}; or place it by row with `yolo-attn place`",
            valid,
        )
    return rows


# ------------------------------------------------------------------------------------------------------ rendering
_WHY = {
    "neck": "these maps are exactly what the detection head sees, so the attention re-weights the features every "
    "stride predicts from, for a small parameter cost; the backbone stays stock (pretrained weights transfer).",
    "backbone": "each backbone stage is re-weighted before the neck fuses it (the 'after each backbone stage' "
    "placement); every stride the head reads has passed one attention layer.",
    "sppf": "one layer on the deepest, most semantic map before the neck spreads it to every scale ('neck "
    "enhancement after SPPF'); the cheapest placement.",
    "blocks": "attention inside each bottleneck's residual branch of the head's CSP blocks ('inside the residual "
    "block', the most published ablation); the stock block's parameter names are kept, so stock weights load.",
}
_WHY_CONV = {
    "neck": "these downsampling convs fuse every scale on the way to P4/P5; making them input-dependent (kernel_num=4 "
    "kernels mixed per sample) is where dynamic convolution pays for its extra kernel parameters.",
    "blocks": "the bottlenecks' 3x3 convs inside the head's blocks become dynamic; the 1x1 convs, the block's "
    "wiring and its BatchNorm names stay stock.",
}


def _citation(cls: type) -> str:
    """``Hu et al., Squeeze-and-Excitation Networks, CVPR 2018`` from a layer file's ``Paper:`` line, if any."""
    import sys

    doc = getattr(sys.modules.get(cls.__module__), "__doc__", None) or ""
    paragraph = re.search(r"Paper:\s*(.+?)(?:\n\s*\n|\n[A-Z][\w ()]*:|$)", doc, re.DOTALL)
    if paragraph:
        text = " ".join(paragraph.group(1).split())
        m = re.match(r'(?P<authors>[^"]+?),\s*"(?P<title>[^"]+)",\s*(?P<venue>[^,]+)', text)
        if m:
            first = m.group("authors").split(",")[0].split()[-1]
            more = " et al." if "," in m.group("authors") or " and " in m.group("authors") else ""
            return f"{first}{more}, {m.group('title').rstrip(',')}, {m.group('venue').strip()}"
    summary = (cls.__doc__ or "").strip().splitlines()
    return summary[0].rstrip(".") if summary else f"{cls.__module__}.{cls.__qualname__}"


def _wrap(text: str, first: str = "# ", rest: str = "#   ") -> str:
    return "\n".join(textwrap.wrap(text, 118, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False))


def _strip_stock_summaries(text: str) -> str:
    # The stock scale comments quote the *stock* model's params/GFLOPs; wrong for a variant, so drop them.
    return re.sub(r"(\]) *# *(\S+ )?summary:.*", r"\1", text)


def _with_scale(stem: str, scale: str) -> str:
    """``yolov8-p2-ema`` -> ``yolov8s-p2-ema``: the scale letter goes right after the version digits."""
    return re.sub(r"^(\D*\d+)", rf"\g<1>{scale}", stem, count=1)


def _consumers(rows: Sequence, target: int) -> list[int]:
    return [i for i in range(target + 1, len(rows)) if target in _sources(rows[i][0], i)]


def render_variant(variant: Variant) -> str:
    """The variant's YAML text: a header saying where the layers sit and why, then the edited base YAML.

    Built with :func:`~yolo_attn.variants.edit.insert_layer` (attention after rows),
    :func:`~yolo_attn.variants.edit.replace_layer` (conv-kind layers for Conv rows) or
    :func:`~yolo_attn.variants.edit.rewrite_rows` (``<Block>_<Layer>``) -- the code ``yolo-attn place`` uses.
    Deterministic: the same variant and installed Ultralytics give the same bytes.
    """
    spec, where, family = variant.layer, variant.placement, variant.family
    rows, n_backbone, base_text = _base_structure(variant.base_path)
    text = _strip_stock_summaries(base_text)
    targets = _target_rows(variant)
    rel = variant.base_path.relative_to(_cfg_root().parent.parent).as_posix()
    listed = ", ".join(map(str, targets))
    lines = [_wrap(f"{variant.stem}: {family.title} + {spec.name} ({_citation(spec.cls)}).")]
    if spec.kind == "conv" and where == "neck":
        body = replace_layer(text, spec.name, targets, note="see above")
        lines += [
            _wrap(
                f"Where: the head's stride-2 Conv rows (the PAN downsampling path), rows {listed} of Ultralytics' "
                f"{rel}, become {spec.name} with the same args (c1 injected, c2 width-scaled exactly like Conv). "
                "Row numbering is unchanged.",
                "# ",
            ),
            _wrap(f"Why: {_WHY_CONV[where]}"),
        ]
    elif where == "blocks":
        changes = {t: (f"{rows[t][2]}_{spec.name}", None) for t in targets}
        body = rewrite_rows(text, changes, note="see above")
        groups: dict[str, list[int]] = {}
        for t in targets:
            groups.setdefault(rows[t][2], []).append(t)
        renamed = "; ".join(
            f"row{'s' if len(ts) > 1 else ''} {', '.join(map(str, ts))} {block} -> {block}_{spec.name}"
            for block, ts in groups.items()
        )
        head_rows = range(n_backbone, len(rows) - 1)
        left_stock = ", ".join(f"row {i} {rows[i][2]}" for i in head_rows if rows[i][2] in _OTHER_BLOCKS)
        inside = (
            "the bottlenecks' 3x3 convs become " + spec.name
            if spec.kind == "conv"
            else (f"one {spec.name} in every bottleneck, on the residual branch before the shortcut add")
        )
        lines += [
            _wrap(
                f"Where: inside the head's blocks -- {renamed} of Ultralytics' {rel} ({inside}). Same args, "
                "repeats, channels and wiring as the stock rows; row numbering is unchanged.",
                "# ",
            ),
            *([_wrap(f"Left stock: {left_stock} (no <Block>_<Layer> class for them).")] if left_stock else []),
            _wrap(f"Why: {(_WHY_CONV if spec.kind == 'conv' else _WHY)[where]}"),
            _wrap(
                "Layer options go in a trailing mapping of a row's args, e.g. [256, True, {position: fuse}] "
                "(see yolo_attn.plugin.blocks)."
            ),
        ]
    else:
        body = insert_layer(text, spec.name, [], after=targets, note="see above")
        new_rows = [t + k + 1 for k, t in enumerate(targets)]
        what = {
            "neck": f"one {spec.name} row after each row that feeds {rows[-1][2]}",
            "backbone": f"one {spec.name} row after each backbone row the head reads",
            "sppf": f"one {spec.name} row after the backbone's last row ({rows[targets[0]][2]})",
        }[where]
        readers = sorted({c for t in targets for c in _consumers(rows, t)})
        reader_text = ", ".join(f"{c} {rows[c][2]}" for c in readers)
        lines += [
            _wrap(
                f"Where: {what} -- row{'s' if len(targets) > 1 else ''} {listed} of Ultralytics' {rel} -- now "
                f"row{'s' if len(targets) > 1 else ''} {', '.join(map(str, new_rows))}. The rows that read "
                f"{'them' if len(targets) > 1 else 'it'} (base rows {reader_text}) read the attention output; every "
                "other `from` index is renumbered to keep its producer.",
                "# ",
            ),
            _wrap(f"Why: {_WHY[where]}"),
        ]
    if family.sizes:
        scale_text = f"Size: built from {variant.base_path.name}; the size is part of the base file name."
    else:
        scale_text = f"Scale from the file name: {_with_scale(variant.stem, 's')}.yaml -> scale s."
    defaults = " Args `[]`: the layer's defaults (see its docstring)."
    if where == "blocks":
        defaults = " The layer inside uses its defaults (see its docstring)."
    elif spec.kind == "conv":
        defaults = ""
    lines.append(_wrap(scale_text + defaults))
    lines.append(
        _wrap(
            "Generated by yolo_attn.variants.families (the row editor of `yolo-attn place`) from the installed "
            "Ultralytics' base YAML; regenerate (scripts/generate_model_yamls.py for the shipped copies) rather than "
            "hand-edit."
        )
    )
    return "\n".join(lines) + "\n" + body.split("\n", 1)[1]


# ------------------------------------------------------------------------------------------------------ resolution
def variant_cache_dir() -> Path:
    """Folder of generated variant YAMLs, keyed by the Ultralytics and yolo-attn versions.

    Root: ``$YOLO_ATTN_VARIANT_DIR`` if set, else ``<Ultralytics' USER_CONFIG_DIR>/yolo-attn/variants`` (Ultralytics
    already falls back to a writable folder there, and tests that sandbox ``YOLO_CONFIG_DIR`` sandbox this too).
    """
    from yolo_attn import __version__
    from yolo_attn.plugin.integration import ultralytics_version

    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root)
    else:
        from ultralytics.utils import USER_CONFIG_DIR

        base = Path(USER_CONFIG_DIR) / "yolo-attn" / "variants"
    return base / f"ultralytics-{ultralytics_version()}_yolo-attn-{__version__}"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)  # atomic: a concurrent reader (DDP workers, parallel jobs) sees old or new, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_variant_yaml(variant: Variant, folder: Path | None = None) -> Path:
    """Render ``variant`` into ``folder`` (default :func:`variant_cache_dir`) unless an identical file is there."""
    text = render_variant(variant)
    folders = [folder] if folder is not None else [variant_cache_dir()]
    if folder is None:  # a read-only config dir must not stop `yolo train`: fall back to the temp folder
        folders.append(Path(tempfile.gettempdir()) / "yolo-attn-variants" / folders[0].name)
    error: OSError | None = None
    for candidate in folders:
        path = candidate / f"{variant.stem}.yaml"
        try:
            if not (path.is_file() and path.read_text(encoding="utf-8") == text):
                _write_atomic(path, text)
            return path
        except OSError as exc:
            error = exc
    raise OSError(f"cannot write the generated variant YAML {variant.stem}.yaml to {folders}: {error}") from error


def resolve_variant_yaml(name: str | os.PathLike) -> Path | None:
    """The generated YAML for a variant name, or None when ``name`` is not one (Ultralytics then says "not found").

    Called by the integration's ``check_yaml`` fallback after a local file, Ultralytics' cfg and the shipped YAMLs
    were tried -- for every model name, so non-variant names return None after a regex and a few dictionary
    lookups. Both forms Ultralytics asks for work: ``yolo26s-ema.yaml`` and ``yolo26-ema.yaml``.

    Raises:
        VariantNameError: The family is known but the layer or placement part is not (the message lists the valid
            choices), or the family cannot take that placement (the message says why).
    """
    variant = parse_variant_name(name)
    if variant is None:
        return None
    return write_variant_yaml(variant)


def family_table() -> list[dict]:
    """One dict per family and size for listings: name, base file, scales/sizes, and every placement's rows."""
    out = []
    for family in FAMILIES.values():
        for size in family.sizes or ("",):
            try:
                rules = family_placements(family, size)
            except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:  # an Ultralytics without this base file
                rules = {"error": f"base YAML unreadable: {exc}"}
            out.append(
                {
                    "family": family.name,
                    "stem": family.stem(size),
                    "title": family.title,
                    "size": size,
                    "base": family.cfg.format(size=size),
                    "rules": rules,
                }
            )
    return out
