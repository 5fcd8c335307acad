"""Registry of layers that Ultralytics model YAMLs may name: ``name -> (class, kind)``.

The registry is the only public way to make a layer known to the YAML parser. It follows MMEngine's contract:
registering a taken name raises unless ``force=True``, and looking up an unknown name raises an error that lists
every registered name.

Two kinds of layer exist because Ultralytics' parser treats them differently:

* ``"attention"`` -- channel-preserving layers added *after* a layer (SE, CBAM, ECA, EMA, CoordAtt). The YAML args
  are the layer's own options; the plugin injects the input channels first: ``[-1, 1, EMA, [16]] -> EMA(c1, 16)``.
* ``"conv"`` -- layers that stand where ``Conv`` stands and may change the channel count (ODConv). The first YAML arg
  is the output width, scaled by the model's width multiple exactly like ``Conv``:
  ``[-1, 1, ODConv, [256, 3, 2]] -> ODConv(c1, make_divisible(min(256, max_channels) * width, 8), 3, 2)``.

Example:
    >>> import torch.nn as nn
    >>> from yolo_attn import register_layer
    >>> @register_layer(kind="attention")
    ... class MyGate(nn.Module):
    ...     def __init__(self, c1: int, reduction: int = 4): ...
    >>> # a YAML row `[-1, 1, MyGate, [8]]` now builds MyGate(<input channels>, 8) at every scale
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch.nn as nn

LayerKind = Literal["attention", "conv"]
LAYER_KINDS: tuple[str, ...] = ("attention", "conv")

ModuleT = TypeVar("ModuleT", bound=type[nn.Module])


@dataclass(frozen=True)
class LayerSpec:
    """One registered layer.

    Attributes:
        name: The name YAML rows use (the module column of ``[from, repeats, module, args]``).
        cls: The ``nn.Module`` subclass that is built.
        kind: ``"attention"`` (channel-preserving, c1 injected) or ``"conv"`` (c1 injected, c2 width-scaled).
        builtin: True for the layers shipped with yolo-attn.
        aliases: Other names YAML rows may use for the same layer (``SA`` for ``ShuffleAttention``).
    """

    name: str
    cls: type[nn.Module]
    kind: str
    builtin: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The registered name followed by its aliases."""
        return (self.name, *self.aliases)


_REGISTRY: dict[str, LayerSpec] = {}
_ALIASES: dict[str, str] = {}  # alias -> registered name
_LISTENERS: list[Callable[[LayerSpec | None, str], None]] = []


def _check_kind(kind: str, name: str) -> None:
    if kind not in LAYER_KINDS:
        raise ValueError(f"register_layer({name!r}): kind={kind!r} is not one of {', '.join(LAYER_KINDS)}")


def register_layer(
    cls: ModuleT | None = None,
    *,
    kind: str = "attention",
    name: str | None = None,
    aliases: tuple[str, ...] | list[str] = (),
    force: bool = False,
) -> ModuleT | Callable[[ModuleT], ModuleT]:
    """Register an ``nn.Module`` subclass so Ultralytics model YAMLs can name it.

    Usable as a call (``register_layer(MyGate, kind="attention")``) or a decorator (``@register_layer(kind="conv")``).
    Registration reaches an already-imported Ultralytics at once; later imports pick it up too.

    The class must be importable from a stable module path (not ``__main__``) for trained checkpoints and DDP
    workers to find it again.

    Args:
        cls: The layer class. Omit it to get a decorator.
        kind: ``"attention"`` (constructor ``cls(c1, *yaml_args)``, output channels = input channels) or ``"conv"``
            (constructor ``cls(c1, c2, *yaml_args[1:])`` with ``c2`` width-scaled like Ultralytics' ``Conv``).
        name: Name used in YAML rows; defaults to ``cls.__name__``. Must be a Python identifier.
        aliases: Other names YAML rows may use for the layer (``("SA",)``); each must be free like ``name``.
        force: Replace an existing registration of the same name (and aliases) instead of raising.

    Returns:
        The class itself (so the decorator form leaves it unchanged), or a decorator when ``cls`` is omitted.

    Raises:
        KeyError: ``name`` or an alias is already registered and ``force`` is False.
        ValueError: ``kind`` is unknown or ``name`` is not a valid identifier.
        TypeError: ``cls`` is not an ``nn.Module`` subclass.
    """

    def _register(layer_cls: ModuleT) -> ModuleT:
        layer_name = name or getattr(layer_cls, "__name__", "")
        if not (isinstance(layer_cls, type) and issubclass(layer_cls, nn.Module)):
            raise TypeError(f"register_layer: {layer_cls!r} is not an nn.Module subclass (YAML layers must be modules)")
        alias_names = tuple(dict.fromkeys(a for a in aliases if a != layer_name))
        for candidate in (layer_name, *alias_names):
            if not isinstance(candidate, str) or not candidate.isidentifier() or keyword.iskeyword(candidate):
                raise ValueError(f"register_layer: name {candidate!r} is not a valid Python identifier")
        _check_kind(kind, layer_name)
        for candidate in (layer_name, *alias_names):
            owner = _lookup(candidate)
            if owner is not None and not force:
                raise KeyError(
                    f"{candidate!r} is already registered (to {owner.cls.__module__}.{owner.cls.__qualname__}, "
                    f"kind={owner.kind!r}); pass force=True to replace it. Registered: {', '.join(list_layers())}"
                )
        builtin = layer_cls.__module__.startswith("yolo_attn.layers")
        spec = LayerSpec(name=layer_name, cls=layer_cls, kind=kind, builtin=builtin, aliases=alias_names)
        if layer_name in _REGISTRY:  # force=True: drop the old registration's aliases first
            old = _REGISTRY[layer_name]
            for alias in old.aliases:
                _ALIASES.pop(alias, None)
                if alias not in alias_names:
                    for listener in list(_LISTENERS):
                        listener(None, alias)
        for listener in list(_LISTENERS):  # listeners may veto (e.g. a name Ultralytics' parser already uses)
            for candidate in spec.names:
                listener(spec, candidate)
        _REGISTRY[layer_name] = spec
        for alias in alias_names:
            _ALIASES[alias] = layer_name
        return layer_cls

    if cls is None:
        return _register
    return _register(cls)


def unregister_layer(name: str) -> LayerSpec:
    """Remove a registration (mainly for tests and notebooks); returns what was removed."""
    spec = get_spec(name)
    del _REGISTRY[spec.name]
    for alias in spec.aliases:
        _ALIASES.pop(alias, None)
    for listener in list(_LISTENERS):
        for candidate in spec.names:
            listener(None, candidate)
    return spec


def _lookup(name: str) -> LayerSpec | None:
    """The registration of a registered name or alias (exact case), else None."""
    return _REGISTRY.get(name) or _REGISTRY.get(_ALIASES.get(name, ""))


def get_spec(name: str) -> LayerSpec:
    """Return the registration for ``name`` (a registered name or alias); the ``KeyError`` lists the valid names."""
    spec = _lookup(name)
    if spec is None:
        raise KeyError(f"no layer named {name!r} is registered; registered layers: {_valid_names()}")
    return spec


def find_spec(name: str) -> LayerSpec | None:
    """Like :func:`get_spec` but case-insensitive (``ema``, ``simam``, ``sa``); None when nothing or several match."""
    exact = _lookup(name)
    if exact is not None:
        return exact
    folded = name.casefold()
    matches = {s.name for s in _REGISTRY.values() for n in s.names if n.casefold() == folded}
    return _REGISTRY[matches.pop()] if len(matches) == 1 else None


def _valid_names() -> str:
    return ", ".join(
        f"{s.name} (alias {', '.join(s.aliases)})" if s.aliases else s.name
        for s in sorted(_REGISTRY.values(), key=lambda s: s.name)
    )


def get_layer(name: str) -> type[nn.Module]:
    """Return the class registered under ``name`` (``KeyError`` listing the valid names otherwise)."""
    return get_spec(name).cls


def list_layers(kind: str | None = None) -> list[str]:
    """Names of registered layers, sorted; optionally only those of one ``kind``."""
    if kind is not None:
        _check_kind(kind, "list_layers")
    return sorted(n for n, s in _REGISTRY.items() if kind is None or s.kind == kind)


def specs() -> list[LayerSpec]:
    """All registrations (a copy), in registration order."""
    return list(_REGISTRY.values())


def add_listener(callback: Callable[[LayerSpec | None, str], None]) -> None:
    """Call ``callback(spec, name)`` on every (un)registration; ``spec`` is None on removal. Used by the integration."""
    if callback not in _LISTENERS:
        _LISTENERS.append(callback)


def _register_builtins() -> None:
    from yolo_attn.layers import BUILTIN_LAYERS

    for layer, kind, layer_aliases in BUILTIN_LAYERS:
        if layer.__name__ not in _REGISTRY:
            register_layer(layer, kind=kind, aliases=layer_aliases)


_register_builtins()
