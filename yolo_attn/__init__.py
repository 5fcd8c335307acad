"""yolo-attn: attention layers for the stock Ultralytics YOLO CLI, and an honest ablation harness.

Importing this package is cheap (no torch): names are resolved lazily (PEP 562) so the start-up hook that makes the
stock ``yolo`` command understand plugin layers costs well under a millisecond.

Example:
    >>> from yolo_attn import EMA
    >>> EMA(64)(torch.randn(1, 64, 20, 24)).shape
    torch.Size([1, 64, 20, 24])
"""

from yolo_attn.plugin import autoload as _autoload  # noqa: F401  (installs the Ultralytics hook: import order must not matter)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "SE": "yolo_attn.layers.se",
    "CBAM": "yolo_attn.layers.cbam",
    "ECA": "yolo_attn.layers.eca",
    "EMA": "yolo_attn.layers.ema",
    "CoordAtt": "yolo_attn.layers.coord_attn",
    "ODConv2d": "yolo_attn.layers.odconv",
    "ODConv": "yolo_attn.layers.odconv",
    "SimAM": "yolo_attn.layers.simam",
    "ShuffleAttention": "yolo_attn.layers.shuffle_attn",
    "NAM": "yolo_attn.layers.nam",
    "TripletAttention": "yolo_attn.layers.triplet_attn",
    "TimmAttn": "yolo_attn.layers.timm_bridge",
    "timm_attention_types": "yolo_attn.layers.timm_bridge",
    "register_layer": "yolo_attn.plugin.registry",
    "unregister_layer": "yolo_attn.plugin.registry",
    "list_layers": "yolo_attn.plugin.registry",
    "get_layer": "yolo_attn.plugin.registry",
    "LayerKind": "yolo_attn.plugin.registry",
    "register_ultralytics": "yolo_attn.plugin.integration",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from yolo_attn.layers.cbam import CBAM  # noqa: F401
    from yolo_attn.layers.coord_attn import CoordAtt  # noqa: F401
    from yolo_attn.layers.eca import ECA  # noqa: F401
    from yolo_attn.layers.ema import EMA  # noqa: F401
    from yolo_attn.layers.nam import NAM  # noqa: F401
    from yolo_attn.layers.odconv import ODConv, ODConv2d  # noqa: F401
    from yolo_attn.layers.se import SE  # noqa: F401
    from yolo_attn.layers.shuffle_attn import ShuffleAttention  # noqa: F401
    from yolo_attn.layers.simam import SimAM  # noqa: F401
    from yolo_attn.layers.timm_bridge import TimmAttn, timm_attention_types  # noqa: F401
    from yolo_attn.layers.triplet_attn import TripletAttention  # noqa: F401
    from yolo_attn.plugin.integration import register_ultralytics  # noqa: F401
    from yolo_attn.plugin.registry import LayerKind, get_layer, list_layers, register_layer, unregister_layer  # noqa: F401


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'yolo_attn' has no attribute {name!r}")
    import importlib  # here, not at module level: importing yolo_attn happens at every interpreter start

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
