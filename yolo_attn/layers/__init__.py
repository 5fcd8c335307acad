"""Attention layers, one module per paper; they import only torch (usable and testable without Ultralytics).

Channel-preserving attention (added after a layer; the plugin injects c1 = channels of the ``from`` layer):
:class:`SE`, :class:`CBAM`, :class:`ECA`, :class:`CoordAtt`, :class:`EMA`.
Conv-like (stands where Ultralytics' ``Conv`` stands; c1 injected, c2 width-scaled): :class:`ODConv`
(raw layer: :class:`ODConv2d`).
"""

from yolo_attn.layers.cbam import CBAM
from yolo_attn.layers.coord_attn import CoordAtt
from yolo_attn.layers.eca import ECA, eca_kernel_size
from yolo_attn.layers.ema import EMA
from yolo_attn.layers.odconv import ODConv, ODConv2d
from yolo_attn.layers.se import SE

__all__ = ["SE", "CBAM", "ECA", "eca_kernel_size", "CoordAtt", "EMA", "ODConv2d", "ODConv"]
