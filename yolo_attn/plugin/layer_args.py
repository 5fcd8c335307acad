"""How a plugin row's YAML args become constructor args: keywords, fork-style channel args, fitted defaults.

Three rules, applied the same way after a row (``[-1, 1, EMA, [...]]``) and inside blocks (``C2f_EMA``):

1. **Keywords.** A trailing mapping in the YAML args holds keyword arguments, always read literally:
   ``[-1, 1, EMA, [{factor: 8}]]`` builds ``EMA(c1, factor=8)``. They are bound to positions with the layer's
   signature, because Ultralytics' parser calls ``m(*args)``.
2. **Fork-style channel args.** Most community YAMLs write the channel count first, like a ``Conv`` c2:
   ``[-1, 1, EMA, [256]]``. For a channel-preserving layer whose first positional arg, scaled exactly like a ``Conv``
   c2 (``make_divisible(min(v, max_channels) * width, 8)``), equals the true input channels, the arg is read as the
   channel count and dropped (the plugin injects the channels itself); one line is logged and ``inspect`` shows it.
   ``[-1, 1, EMA, [8]]`` after a 64-channel row stays ``factor=8``. Force the literal reading with the keyword form
   (rule 1) or, for a whole YAML, a top-level ``fork_args: literal``.
3. **Fitted defaults.** A layer lists in ``fit_defaults`` the args whose official default may not fit the channels
   it gets (EMA's 32 groups do not divide the 16 channels of a bottleneck in yolov8n's first C2f). When the YAML
   leaves such an arg out, the largest valid value <= the official default is used and logged. A value the user
   gave is never changed: an invalid one fails with the layer's own error listing the valid values.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FORK_ARGS_KEY",
    "LayerArgs",
    "conv_scaled",
    "fit_defaults",
    "interpret_attention_args",
    "split_keywords",
    "to_positional",
]

#: Top-level model-YAML key: ``fork_args: literal`` turns rule 2 off for every row of that YAML.
FORK_ARGS_KEY = "fork_args"


@dataclass
class LayerArgs:
    """The result of interpreting a plugin row's YAML args.

    Attributes:
        args: Positional constructor args after the injected channels.
        notes: Human-readable lines on what was read or fitted (logged by the integration, shown by ``inspect``).
        literal_first: ``(parameter name, value)`` when the first YAML arg was taken literally although it was a
            number a fork-style YAML could mean as channels; used to explain a failing build.
    """

    args: list
    notes: list[str] = field(default_factory=list)
    literal_first: tuple[str, Any] | None = None


def conv_scaled(value: float, width: float, max_channels: float) -> int:
    """``value`` scaled like a ``Conv`` c2 in Ultralytics' parser: ``make_divisible(min(v, max_ch) * width, 8)``."""
    return int(math.ceil(min(value, max_channels) * width / 8) * 8)


def split_keywords(args: Sequence) -> tuple[list, dict[str, Any]]:
    """Split YAML args into positional args and the keywords of a trailing mapping (rule 1)."""
    args = list(args)
    if args and isinstance(args[-1], Mapping):
        keywords = dict(args.pop())
        bad = [k for k in keywords if not isinstance(k, str)]
        if bad:
            raise ValueError(f"keyword args must be names, got {bad!r}")
        return args, keywords
    return args, {}


def _parameters(cls: type) -> list[inspect.Parameter]:
    """Constructor parameters after the first (the injected channels)."""
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: nothing to bind or fit
        return []
    return params[1:]


def to_positional(cls: type, args: Sequence, keywords: Mapping[str, Any], *, skip: int = 1) -> list:
    """Bind ``keywords`` after ``args`` into one positional list (``parse_model`` calls ``m(*args)``).

    Args:
        cls: Layer class.
        args: Positional args after the ``skip`` injected ones.
        keywords: Keyword args to place.
        skip: Number of leading constructor parameters the parser injects (1 for c1, 2 for c1, c2).

    A class with ``accepts_keyword_mapping = True`` gets the keywords that match none of its positional
    parameters as one trailing mapping (it reads them itself).

    Raises:
        ValueError: An unknown keyword, a keyword given twice, or a keyword-only parameter that cannot be passed
            positionally; the message lists the valid names.
    """
    if not keywords:
        return list(args)
    try:
        params = list(inspect.signature(cls).parameters.values())[skip:]
    except (TypeError, ValueError):
        raise ValueError(f"{cls.__name__} has no inspectable signature: pass its args positionally") from None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in positional]
    unknown = [k for k in keywords if k not in names]
    if unknown and getattr(cls, "accepts_keyword_mapping", False):
        # The layer reads a trailing mapping itself (TimmAttn forwards it to timm): pass the other keywords on.
        named = {k: v for k, v in keywords.items() if k in names}
        return [*to_positional(cls, args, named, skip=skip), {k: keywords[k] for k in unknown}]
    if unknown:
        valid = ", ".join(names) or "none"
        raise ValueError(f"{cls.__name__} has no argument {', '.join(map(repr, unknown))}; valid keywords: {valid}")
    twice = [k for k in keywords if names.index(k) < len(args)]
    if twice:
        raise ValueError(f"{cls.__name__}: argument {', '.join(map(repr, twice))} given both by position and by name")
    out = list(args)
    last = max(names.index(k) for k in keywords)
    for p in positional[len(args) : last + 1]:
        if p.name in keywords:
            out.append(keywords[p.name])
        elif p.default is inspect.Parameter.empty:
            raise ValueError(f"{cls.__name__}: argument {p.name!r} has no default; give it before {list(keywords)}")
        else:
            out.append(p.default)
    return out


def fit_defaults(cls: type, c1: int, args: Sequence, keywords: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Rule 3: keywords for ``fit_defaults`` args the YAML leaves out whose official default does not fit ``c1``.

    Returns:
        ``(keywords with fitted values added, notes)``.
    """
    rules: Mapping[str, Callable[[int, Any], bool]] = getattr(cls, "fit_defaults", None) or {}
    keywords = dict(keywords)
    notes: list[str] = []
    if not rules or not isinstance(c1, int):
        return keywords, notes
    params = _parameters(cls)
    given = set(keywords) | {p.name for p in params[: len(args)]}
    defaults = {p.name: p.default for p in params}
    for name, valid in rules.items():
        default = defaults.get(name, inspect.Parameter.empty)
        if name in given or not isinstance(default, int) or isinstance(default, bool) or valid(c1, default):
            continue
        fitted = next((v for v in range(default - 1, 0, -1) if valid(c1, v)), None)
        if fitted is None:  # nothing fits: let the layer raise its own error, which lists the valid values
            continue
        keywords[name] = fitted
        notes.append(
            f"{cls.__name__} at {c1} channels: {name}={fitted} (the official default {name}={default} does not fit "
            f"{c1} channels; the largest valid value <= {default} is used; give {name}= to choose)"
        )
    return keywords, notes


def interpret_attention_args(
    cls: type,
    yaml_args: Sequence,
    c1: int,
    width: float = 1.0,
    max_channels: float = float("inf"),
    *,
    literal: bool = False,
) -> LayerArgs:
    """Apply rules 1-3 to the YAML args of a channel-preserving plugin row whose input has ``c1`` channels.

    Args:
        cls: The layer class.
        yaml_args: The row's args as written (after Ultralytics' string evaluation).
        c1: True input channels (injected first).
        width: The model's width multiple at this scale.
        max_channels: The model's max channels at this scale.
        literal: Never read the first arg as channels (rule 2 off).

    Returns:
        The :class:`LayerArgs`; ``args`` excludes ``c1``.
    """
    args, keywords = split_keywords(yaml_args)
    notes: list[str] = []
    literal_first = None
    first = args[0] if args else None
    if isinstance(first, int) and not isinstance(first, bool) and isinstance(c1, int):
        scaled = conv_scaled(first, width, max_channels)
        params = _parameters(cls)
        taken_as = params[0].name if params else "its first argument"
        if not literal and first > 0 and c1 in (scaled, first):
            args = args[1:]
            how = "as written" if first == c1 else f"scaled like a Conv c2 to {scaled}"
            notes.append(
                f"{cls.__name__} [{first}]: {first} read as the channel count ({how} = the {c1} input channels) and "
                f"dropped; the plugin injects the channels. For {first} as {taken_as}, write [{{{taken_as}: {first}}}]"
            )
        else:
            literal_first = (taken_as, first)
    keywords, fitted = fit_defaults(cls, c1, args, keywords)
    notes.extend(fitted)
    return LayerArgs(args=to_positional(cls, args, keywords), notes=notes, literal_first=literal_first)
