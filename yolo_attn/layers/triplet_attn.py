"""Triplet Attention.

Paper: Diganta Misra, Trikay Nalamada, Ajay Uppili Arasanipalai, Qibin Hou, "Rotate to Attend: Convolutional Triplet
Attention Module", WACV 2021, https://arxiv.org/abs/2010.03045
Official code: https://github.com/landskape-ai/triplet-attention (``MODELS/triplet_attention.py``)

Three branches, each a CBAM-style gate on a rotated view of the input: the official module permutes x to (B, H, C, W)
and (B, W, H, C), pools the first axis into [max, mean] (``ChannelPool``), applies a 7x7 conv (2 -> 1, no bias) +
``BatchNorm2d(1, momentum=0.01)`` + sigmoid, multiplies, and permutes back; the third branch does the same on x
itself (H x W). The output is the mean of the three gated tensors (two with ``no_spatial=True``). Parameter names
follow the official module (``ChannelGateH``, ``ChannelGateW``, ``SpatialGate``, each ``.spatial.{conv,bn}``), so
official state_dicts load with ``strict=True``.

Computed without the rotations: the pools reduce x along H, W and C directly, the gate maps are broadcast back in the
input's layout, and ``mean_i(x * g_i) = x * mean_i(g_i)`` is evaluated as one product (no permuted copies of x).
The official constructor's ``gate_channels``, ``reduction_ratio`` and ``pool_types`` are unused by its computation;
only ``no_spatial`` is taken here.
"""

from __future__ import annotations

import torch
from torch import nn

from yolo_attn.layers._gate import GateTap
from yolo_attn.layers.se import _check_channels

__all__ = ["TripletAttention"]


class _BasicConv(nn.Module):
    """Official ``BasicConv(2, 1, 7, stride=1, padding=3, relu=False)``: conv without bias, then BatchNorm."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, stride=1, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)  # the official momentum, not 0.1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class _ZPoolGate(nn.Module):
    """Official ``SpatialGate``: [max, mean] over the leading axis -> conv + BN -> sigmoid (here: on pooled maps)."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = _BasicConv(7)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.spatial(pooled))


def _zpool(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``[max, mean]`` of x over ``dim``, stacked on a new axis 1 (official ``ChannelPool`` on the rotated view).

    ``torch.max`` (not ``amax``) keeps the official index-based gradient (ties: one element gets it).
    """
    return torch.stack((torch.max(x, dim)[0], x.mean(dim)), 1)


class TripletAttention(nn.Module):
    """Triplet Attention (Misra et al., WACV 2021), as in the official code.

    ``out = (x * g_cw + x * g_hc + x * g_hw) / 3`` with ``g_cw`` (C x W map, pooled over H), ``g_hc`` (H x C map,
    pooled over W) and ``g_hw`` (H x W map, pooled over C), each ``sigmoid(BN(conv7x7([max, mean])))``; with
    ``no_spatial=True`` the H x W branch is dropped and the mean is over two. Output shape equals input shape.

    YAML: ``[-1, 1, TripletAttention, []]`` or ``[-1, 1, TripletAttention, [True]]`` (the plugin injects c1 =
    channels of the ``from`` layer; the optional arg is ``no_spatial``).

    Args:
        c1 (int): Input channels (injected by the plugin's parser hook; the layer works for any C).
        no_spatial (bool): Drop the H x W branch (official default False).

    Note:
        Gates for hooks, in the input's layout (the rotated branches' maps permuted back, same values):
        ``gate_cw`` (kind ``"strip_w"``, (B, C, 1, W)), ``gate_hc`` (kind ``"strip_h"``, (B, C, H, 1)) and
        ``gate_hw`` (kind ``"spatial"``, (B, 1, H, W)). The branches are averaged, not chained:
        ``output == input * mean(gates)`` (``gate_combine = "mean"``).

    Examples:
        >>> TripletAttention(64)(torch.randn(2, 64, 13, 21)).shape
        torch.Size([2, 64, 13, 21])
    """

    #: The gates are averaged (``output == input * mean of the broadcast gates``), not multiplied.
    gate_combine = "mean"

    def __init__(self, c1: int, no_spatial: bool = False) -> None:
        super().__init__()
        self.c1 = _check_channels("TripletAttention", c1)
        if not isinstance(no_spatial, bool):
            raise ValueError(f"TripletAttention: no_spatial must be True or False; got {no_spatial!r}")
        self.no_spatial = no_spatial
        # Official attribute names: ChannelGateH works on the (C, W) plane, ChannelGateW on the (H, C) plane.
        self.ChannelGateH = _ZPoolGate()
        self.ChannelGateW = _ZPoolGate()
        if not no_spatial:
            self.SpatialGate = _ZPoolGate()
        self.gate_cw = GateTap("strip_w", label="C-W")
        self.gate_hc = GateTap("strip_h", label="H-C")
        self.gate_hw = GateTap("spatial", label="H-W")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # C-W branch: official view (B, H, C, W), pooled over H -> map (B, 1, C, W); as (B, C, 1, W) on x.
        g_cw = self.ChannelGateH(_zpool(x, 2)).transpose(1, 2)
        # H-C branch: official view (B, W, H, C), pooled over W -> map (B, 1, H, C); as (B, C, H, 1) on x.
        g_hc = self.ChannelGateW(_zpool(x, 3).transpose(2, 3)).permute(0, 3, 2, 1)
        g_cw, g_hc = self.gate_cw(g_cw), self.gate_hc(g_hc)
        if self.no_spatial:
            return x * ((g_cw + g_hc) * 0.5)
        g_hw = self.gate_hw(self.SpatialGate(_zpool(x, 1)))
        # One full-size sum of the broadcast maps, then one product (the 1/3 applied to the small maps).
        third = 1.0 / 3.0
        return x * (g_cw * third + g_hc * third + g_hw * third)

    def extra_repr(self) -> str:
        return f"c1={self.c1}, no_spatial={self.no_spatial}"
