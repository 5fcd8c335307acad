"""Attention layers, one module per paper; they import only torch (usable and testable without Ultralytics).

Channel-preserving attention (added after a layer; the plugin injects c1 = channels of the ``from`` layer):
:class:`SE`, :class:`CBAM`, :class:`ECA`, :class:`CoordAtt`, :class:`EMA`, and the rest of the EMA paper's
comparison set and the field's favourites: :class:`SimAM`, :class:`ShuffleAttention` (alias ``SA``), :class:`NAM`,
:class:`TripletAttention`; :class:`TimmAttn` builds any shape-preserving timm attention type (timm is optional and
imported only when one is built).
Conv-like (stands where Ultralytics' ``Conv`` stands; c1 injected, c2 width-scaled): :class:`ODConv`
(raw layer: :class:`ODConv2d`).
"""

from yolo_attn.layers.cbam import CBAM
from yolo_attn.layers.coord_attn import CoordAtt
from yolo_attn.layers.eca import ECA, eca_kernel_size
from yolo_attn.layers.ema import EMA
from yolo_attn.layers.nam import NAM
from yolo_attn.layers.odconv import ODConv, ODConv2d
from yolo_attn.layers.se import SE
from yolo_attn.layers.shuffle_attn import ShuffleAttention
from yolo_attn.layers.simam import SimAM
from yolo_attn.layers.timm_bridge import TimmAttn, timm_attention_types
from yolo_attn.layers.triplet_attn import TripletAttention

__all__ = [
    "SE",
    "CBAM",
    "ECA",
    "eca_kernel_size",
    "CoordAtt",
    "EMA",
    "SimAM",
    "ShuffleAttention",
    "NAM",
    "TripletAttention",
    "TimmAttn",
    "timm_attention_types",
    "ODConv2d",
    "ODConv",
    "BUILTIN_LAYERS",
]

#: What the registry registers at import: (class, kind, aliases). Kind "attention" = channel-preserving (c1
#: injected), "conv" = stands where Conv stands (c1 injected, c2 width-scaled).
BUILTIN_LAYERS: tuple[tuple[type, str, tuple[str, ...]], ...] = (
    (SE, "attention", ()),
    (CBAM, "attention", ()),
    (ECA, "attention", ()),
    (EMA, "attention", ()),
    (CoordAtt, "attention", ("CA",)),
    (SimAM, "attention", ()),
    (ShuffleAttention, "attention", ("SA",)),
    (NAM, "attention", ()),
    (TripletAttention, "attention", ()),
    (TimmAttn, "attention", ()),
    (ODConv, "conv", ()),
)
