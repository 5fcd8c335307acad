"""Coordinate Attention.

Paper: Qibin Hou, Daquan Zhou, Jiashi Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021,
https://arxiv.org/abs/2103.02907
Official code: https://github.com/houqb/CoordAttention (``coordatt.py``)

Pool along W -> (C, H) and along H -> (C, W); concatenate on the spatial axis; shared 1x1 conv C -> mip (bias),
BatchNorm, h-swish; split; two 1x1 convs mip -> C (bias); sigmoid; ``out = x * a_h * a_w``, with
``mip = max(8, C // reduction)``. Parameter names match the official module (``conv1``, ``bn1``, ``act``, ``conv_h``,
``conv_w``). The official module takes ``(inp, oup)``; as an attention layer output channels must equal input
channels, so only ``c1`` is taken.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolo_attn.layers._gate import GateTap, RestoresGateTaps
from yolo_attn.layers.se import _check_channels

__all__ = ["CoordAtt"]


class CoordAtt(RestoresGateTaps, nn.Module):
    """Coordinate Attention (Hou et al., CVPR 2021), as in the official code.

    ``f = h_swish(BN(conv1([AvgPool_W(x); AvgPool_H(x)])))``, split into ``f_h``, ``f_w``;
    ``a_h = sigmoid(conv_h(f_h))``, ``a_w = sigmoid(conv_w(f_w))``; ``y = x * a_h * a_w``. Output shape equals
    input shape.

    YAML: ``[-1, 1, CoordAtt, []]`` or ``[-1, 1, CoordAtt, [16]]`` (the plugin injects c1 = channels of the ``from``
    layer; extra args follow, here the reduction r).

    Args:
        c1 (int): Input (= output) channels C (injected by the plugin's parser hook).
        reduction (int): Reduction r; the hidden width is ``mip = max(8, C // r)`` (official rule, paper: r = 32).

    Examples:
        >>> CoordAtt(64).conv1.out_channels  # max(8, 64 // 32)
        8
        >>> CoordAtt(64)(torch.randn(2, 64, 13, 21)).shape
        torch.Size([2, 64, 13, 21])
    """

    def __init__(self, c1: int, reduction: int = 32) -> None:
        super().__init__()
        c1 = _check_channels("CoordAtt", c1)
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(
                f"CoordAtt: reduction must be an int >= 1 (mip = max(8, c1 // reduction)); got {reduction!r}"
            )
        mip = max(8, c1 // reduction)
        self.c1, self.reduction, self.mip = c1, reduction, mip
        self.conv1 = nn.Conv2d(c1, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()  # == official h_swish: x * ReLU6(x + 3) / 6
        self.conv_h = nn.Conv2d(mip, c1, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, c1, kernel_size=1, stride=1, padding=0)
        self._add_gate_taps()

    def _add_gate_taps(self) -> None:
        self.gate_h = GateTap("strip_h", label="h")  # a_h, (B, C, H, 1)
        self.gate_w = GateTap("strip_w", label="w")  # a_w, (B, C, 1, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        # Strips as (B, C, H + W, 1): sum / n instead of AdaptiveAvgPool (same maths, exports with dynamic H/W;
        # sum's backward is a broadcast view where mean's materialises a full-size division).
        y = torch.cat((x.sum(3) / w, x.sum(2) / h), 2).unsqueeze(-1)
        y = self.act(self.bn1(F.conv2d(y, self.conv1.weight, self.conv1.bias)))  # BN stats span both strips
        a_h = F.conv2d(y[:, :, :h], self.conv_h.weight, self.conv_h.bias).sigmoid()  # (B, C, H, 1)
        a_w = F.conv2d(y[:, :, h:], self.conv_w.weight, self.conv_w.bias).sigmoid()  # (B, C, W, 1)
        return x * self.gate_w(a_w.transpose(2, 3)) * self.gate_h(a_h)

    def extra_repr(self) -> str:
        return f"c1={self.c1}, reduction={self.reduction}, mip={self.mip}"
