"""Bridge to timm's attention layers: a YAML row ``[-1, 1, TimmAttn, [gc]]`` builds ``timm.layers.create_attn``.

timm (https://github.com/huggingface/pytorch-image-models, ``timm/layers/create_attn.py``) keeps the field's
attention layers behind one factory, ``create_attn(attn_type, channels, **kwargs)``. :class:`TimmAttn` builds one of
them with the true input channels (injected by the plugin) and holds it as ``self.attn``, so its state_dict keys are
timm's own under the prefix ``attn.``.

Which types exist is read from timm's source (the names ``get_attn`` compares against), so a newer timm's types are
listed without editing this file. A type is usable when, with its defaults, it keeps the input's shape at any H x W;
:func:`timm_attention_types` says which are and why the others are refused (checked by building each one and running
it on two non-square inputs; the fixed-size types are refused by what their code requires).

timm is an optional extra: without it a ``TimmAttn`` row fails with ``pip install 'yolo-attn[timm]'``. This module
imports timm only when a ``TimmAttn`` is built or the types are listed.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from yolo_attn.layers.se import _check_channels

__all__ = ["TimmAttn", "TIMM_INSTALL", "timm_attention_types"]

#: What to run when timm is missing.
TIMM_INSTALL = "pip install 'yolo-attn[timm]'"

#: Types whose code needs a fixed input size, from reading timm's source (1.0.x); a probe at two sizes could pass
#: by chance (a 16 x 24 input is divisible by 8), so these are refused by what the code requires.
_FIXED_SIZE: dict[str, str] = {
    "bottleneck": (
        "needs a fixed input size: BottleneckAttn requires feat_size=(H, W) (its relative position embeddings are "
        "sized to one H x W), and YOLO feature maps change size with imgsz and aspect ratio"
    ),
    "halo": (
        "needs H and W divisible by block_size (8 by default): it fails on the 20 x 20 P5 map at imgsz 640 and on "
        "most rectangular inputs"
    ),
    "bat": (
        "needs H and W divisible by block_size (7 by default), which YOLO's stride-8/16/32 maps at the usual sizes "
        "(80, 40, 20 at imgsz 640) are not"
    ),
}

#: Non-square probe inputs (B, H, W) used to classify the other types, in eval and in train mode (batch 2: a
#: BatchNorm on a pooled 1x1 map cannot train at batch 1, in timm's layers as in Ultralytics' own).
_PROBE_SIZES = ((2, 13, 21), (2, 10, 6))
_PROBE_CHANNELS = 32


def _timm() -> Any:
    """Import timm or fail with the install command."""
    try:
        import timm
        import timm.layers  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"TimmAttn needs timm, which is not installed; install it with: {TIMM_INSTALL}") from exc
    return timm


def _create_attn_module() -> Any:
    _timm()
    # ``timm.layers.create_attn`` is the function (re-exported over the module name): import the module itself.
    return importlib.import_module("timm.layers.create_attn")


@functools.lru_cache(maxsize=1)
def _type_names() -> tuple[str, ...]:
    """Attention type names ``timm.layers.get_attn`` accepts, in source order (read from its source code)."""
    module = _create_attn_module()
    tree = ast.parse(inspect.getsource(module.get_attn))
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "attn_type"):
            continue
        for op, comp in zip(node.ops, node.comparators):
            if isinstance(op, ast.Eq) and isinstance(comp, ast.Constant) and isinstance(comp.value, str):
                found.append((comp.lineno, comp.col_offset, comp.value))
            elif isinstance(op, ast.In) and isinstance(comp, (ast.Tuple, ast.List, ast.Set)):
                found += [
                    (e.lineno, e.col_offset, e.value)
                    for e in comp.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                ]
    names = [name.lower() for _, _, name in sorted(found)]
    if not names:
        raise RuntimeError(
            f"could not read the attention types from timm {_timm().__version__}'s get_attn source; "
            "yolo-attn's TimmAttn needs updating for this timm version"
        )
    return tuple(dict.fromkeys(names))


def _probe(
    build: Any, channels: int, sizes: tuple[tuple[int, int, int], ...], modes: tuple[bool, ...] = (False, True)
) -> str | None:
    """None if ``build()`` keeps (B, C, H, W) at every size in each mode (False = eval, True = train), else why not.

    Train mode updates BatchNorm running statistics: use it only on throwaway modules.
    """
    try:
        module = build()
    except Exception as exc:  # timm asserts / TypeErrors: the reason, verbatim
        return f"cannot be built at {channels} channels: {type(exc).__name__}: {exc}".rstrip(": ")
    was_training = module.training
    try:
        for train in modes:
            module.train(train)
            for b, h, w in sizes:
                x = torch.randn(b, channels, h, w)
                try:
                    with torch.no_grad():
                        y = module(x)
                except Exception as exc:
                    mode = "train" if train else "eval"
                    return f"fails on a {tuple(x.shape)} input ({mode} mode): {type(exc).__name__}: {exc}".rstrip(": ")
                if not isinstance(y, torch.Tensor) or y.shape != x.shape:
                    got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                    return f"changes the shape: {tuple(x.shape)} -> {got} (not channel- and size-preserving)"
    finally:
        module.train(was_training)
    return None


@functools.lru_cache(maxsize=1)
def _classified() -> tuple[tuple[str, str | None], ...]:
    create_attn = _create_attn_module().create_attn
    out = []
    threads = torch.get_num_threads()
    # One thread for these tiny probes: several intra-op threads only spin against each other here (on a busy
    # 2-core machine, 0.3 s becomes 9 s). Restored at once.
    torch.set_num_threads(1)
    try:
        for name in _type_names():
            reason = _FIXED_SIZE.get(name)
            if reason is None:
                reason = _probe(lambda name=name: create_attn(name, _PROBE_CHANNELS), _PROBE_CHANNELS, _PROBE_SIZES)
                if reason is not None:
                    reason = f"with its defaults, timm {_timm().__version__}'s create_attn({name!r}, channels) {reason}"
            out.append((name, reason))
    finally:
        torch.set_num_threads(threads)
    return tuple(out)


def timm_attention_types() -> dict[str, str | None]:
    """Every attention type timm's ``create_attn`` accepts -> None if ``TimmAttn`` can use it, else the reason.

    Usable means: with its default arguments the module keeps the input's (B, C, H, W) at any size (checked on two
    non-square inputs in eval and train mode). Types that need a fixed input size are refused by what their code
    requires. The result is computed once per process (building each type once, a fraction of a second).

    Raises:
        ImportError: timm is not installed (the message has the install command).

    Example:
        >>> timm_attention_types()["gc"] is None
        True
    """
    return dict(_classified())


def _usable_names() -> list[str]:
    return [name for name, reason in _classified() if reason is None]


def _bind_positional(cls: Any, name: str, args: list, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Extra positional YAML args fill the timm class's parameters after ``channels``, in signature order."""
    if not args:
        return kwargs
    try:
        params = list(inspect.signature(cls).parameters.values())[1:]
    except (TypeError, ValueError):
        raise ValueError(f"TimmAttn({name!r}): pass its options by name, e.g. [{name}, {{option: value}}]") from None
    # device/dtype (timm >= 1.0.2x factory arguments) are not layer options: never filled by position.
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("device", "dtype")
    ]
    if len(args) > len(positional):
        raise ValueError(
            f"TimmAttn({name!r}): {len(args)} extra positional args {args} but the timm layer takes at most "
            f"{len(positional)} after channels ({', '.join(p.name for p in positional) or 'none'})"
        )
    bound = {p.name: value for p, value in zip(positional, args)}
    twice = sorted(set(bound) & set(kwargs))
    if twice:
        raise ValueError(f"TimmAttn({name!r}): {', '.join(twice)} given both by position and by name")
    return {**bound, **kwargs}


class TimmAttn(nn.Module):
    """A timm attention layer built with the true input channels: ``timm.layers.create_attn(name, c1, **kwargs)``.

    YAML: ``[-1, 1, TimmAttn, [gc]]``, ``[-1, 1, TimmAttn, [se, {rd_ratio: 0.25}]]`` or ``[-1, 1, TimmAttn, [se,
    0.25]]`` (the plugin injects c1 = channels of the ``from`` layer). The first arg is the timm type name; a trailing
    mapping holds keyword arguments for the timm layer; other extra positional args fill the timm layer's parameters
    after ``channels`` in its signature order (``se, 0.25`` is ``rd_ratio=0.25`` for ``SEModule``).

    Args:
        c1 (int): Input channels (injected by the plugin's parser hook).
        name (str): timm attention type (``se``, ``eca``, ``gc``, ``cbam``, ...), case-insensitive; see
            :func:`timm_attention_types` for the usable ones.
        *args: Extra positional args for the timm layer; a trailing dict is read as keyword arguments.
        **kwargs: Keyword arguments for the timm layer.

    Raises:
        ImportError: timm is not installed (the message has the install command).
        ValueError: unknown or refused type (with the reason), bad options, or a configuration that changes the
            input's shape.

    Examples:
        >>> m = TimmAttn(64, "gc")
        >>> m(torch.randn(2, 64, 13, 21)).shape
        torch.Size([2, 64, 13, 21])
        >>> sorted(m.state_dict())[:2]
        ['attn.conv_attn.bias', 'attn.conv_attn.weight']
    """

    #: The YAML keyword mapping (``[gc, {rd_ratio: 0.25}]``) reaches the constructor as a trailing mapping: the
    #: plugin passes on the keywords it cannot bind to a named parameter
    #: (:func:`yolo_attn.plugin.layer_args.to_positional`).
    accepts_keyword_mapping = True

    def __init__(self, c1: int, name: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        c1 = _check_channels("TimmAttn", c1)
        timm = _timm()
        known = _type_names()
        if not isinstance(name, str) or name.lower() not in known:
            raise ValueError(
                f"TimmAttn: {name!r} is not a timm attention type; write the type first, e.g. "
                f"[-1, 1, TimmAttn, [gc]]. Usable with timm {timm.__version__}: {', '.join(_usable_names())} "
                f"(all types and why some are refused: yolo-attn layers)"
            )
        name = name.lower()
        refused = _FIXED_SIZE.get(name)
        if refused:
            raise ValueError(f"TimmAttn: timm attention type {name!r} is refused: it {refused}")
        args_list = list(args)
        if args_list and isinstance(args_list[-1], Mapping):
            trailing = dict(args_list.pop())
            both = sorted(set(trailing) & set(kwargs))
            if both:
                raise ValueError(f"TimmAttn({name!r}): {', '.join(both)} given twice")
            kwargs = {**trailing, **kwargs}
        bad_keys = [k for k in kwargs if not isinstance(k, str)]
        if bad_keys:
            raise ValueError(f"TimmAttn({name!r}): keyword names must be strings, got {bad_keys!r}")
        module = _create_attn_module()
        kwargs = _bind_positional(module.get_attn(name), name, args_list, dict(kwargs))
        try:
            attn = module.create_attn(name, c1, **kwargs)
        except Exception as exc:
            raise ValueError(
                f"TimmAttn({name!r}) at {c1} channels with {kwargs or 'its defaults'}: timm {timm.__version__} "
                f"raised {type(exc).__name__}: {exc}"
            ) from exc
        # The plugin treats TimmAttn as channel-preserving: check this configuration keeps the shape at all.
        problem = _probe(lambda: attn, c1, ((1, 9, 13),), modes=(False,))  # eval: no running-stat updates
        if problem:
            raise ValueError(f"TimmAttn({name!r}) at {c1} channels with {kwargs or 'its defaults'} {problem}")
        self.c1, self.name, self.kwargs = c1, name, kwargs
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)

    def extra_repr(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"c1={self.c1}, name={self.name!r}{options}"
