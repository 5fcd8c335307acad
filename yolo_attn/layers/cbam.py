"""Convolutional Block Attention Module.

Paper: Sanghyun Woo, Jongchan Park, Joon-Young Lee, In So Kweon, "CBAM: Convolutional Block Attention Module",
ECCV 2018, https://arxiv.org/abs/1807.06521
Official code: https://github.com/Jongchan/attention-module (``MODELS/cbam.py``)

Follows the official module, not the popular blog version nor Ultralytics' built-in ``CBAM``: the channel gate is a
shared Linear MLP (with bias) on the avg- *and* max-pooled vectors; the spatial gate concatenates the channel-wise
**[max, mean]** maps in that order and applies a k x k conv (no bias) + ``BatchNorm2d(1)`` before the sigmoid.
Parameter names match the official module (``ChannelGate.mlp.{1,3}``, ``SpatialGate.spatial.{conv,bn}``), so
official state_dicts load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolo_attn.layers._gate import GateTap, RestoresGateTaps
from yolo_attn.layers.se import SE, _check_channels

__all__ = ["CBAM"]


class _BasicConv(nn.Module):
    """Official ``BasicConv(2, 1, k, relu=False)``: conv without bias followed by BN."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, stride=1, padding=(kernel_size - 1) // 2, bias=False)
        # momentum=0.01 is what the official BasicConv uses (not PyTorch's default 0.1); kept for faithfulness.
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class _ChannelGate(RestoresGateTaps, nn.Module):
    def __init__(self, c1: int, reduction: int) -> None:
        super().__init__()
        # Index layout (Flatten, Linear, ReLU, Linear) mirrors the official Sequential so names are mlp.1 / mlp.3.
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(c1, c1 // reduction), nn.ReLU(), nn.Linear(c1 // reduction, c1)
        )
        self._add_gate_taps()

    def _add_gate_taps(self) -> None:
        self.gate = GateTap("channel", label="channel")  # M_c, (B, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        # One MLP call on the stacked [avg; max] vectors instead of two calls (same maths, half the dispatch).
        # adaptive_max_pool2d keeps max_pool2d's index-based gradient (ties: gradient to one element, like official).
        # sum / n, not mean: sum's backward is a broadcast view, mean's materialises a full-size division.
        avg = x.sum((2, 3)) / (x.shape[2] * x.shape[3])
        pooled = torch.cat((avg, F.adaptive_max_pool2d(x, 1).flatten(1)), 0)
        att = self.mlp(pooled)
        att = att[:b] + att[b:]
        return x * self.gate(att.sigmoid()[:, :, None, None])


class _SpatialGate(RestoresGateTaps, nn.Module):
    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.spatial = _BasicConv(kernel_size)
        self._add_gate_taps()

    def _add_gate_taps(self) -> None:
        self.gate = GateTap("spatial", label="spatial")  # M_s, (B, 1, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [max, mean] order as in the official ChannelPool; torch.max (not amax) keeps its index-based gradient.
        comp = torch.cat((torch.max(x, 1, keepdim=True)[0], x.sum(1, keepdim=True) / x.shape[1]), 1)
        return x * self.gate(self.spatial(comp).sigmoid())


class CBAM(nn.Module):
    """CBAM: channel gate then spatial gate (Woo et al., ECCV 2018), as in the official code.

    Channel gate ``M_c = sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)))`` with a shared ``Linear C -> C/r -> C`` MLP
    (bias, ReLU); spatial gate ``M_s = sigmoid(BN(conv_kxk([Max_c(x'); Mean_c(x')])))``; output ``x' * M_s`` where
    ``x' = x * M_c``. Output shape equals input shape.

    YAML: ``[-1, 1, CBAM, []]``, ``[-1, 1, CBAM, [7]]`` or ``[-1, 1, CBAM, [3, 8]]`` (the plugin injects c1 =
    channels of the ``from`` layer; extra args follow: kernel_size, reduction). Note the argument order
    ``(c1, kernel_size, reduction)`` matches Ultralytics' ``CBAM(c1, kernel_size)``.

    Args:
        c1 (int): Input channels C (injected by the plugin's parser hook).
        kernel_size (int): Spatial-gate conv size, 3 or 7 (paper: 7).
        reduction (int): Channel-MLP reduction ratio r (paper: 16); ``C // r`` must be >= 1.

    Examples:
        >>> CBAM(64)(torch.randn(2, 64, 13, 21)).shape
        torch.Size([2, 64, 13, 21])
    """

    #: Same rule as SE for the channel MLP when C < 16 (see :mod:`yolo_attn.plugin.layer_args`).
    fit_defaults = SE.fit_defaults

    def __init__(self, c1: int, kernel_size: int = 7, reduction: int = 16) -> None:
        super().__init__()
        c1 = _check_channels("CBAM", c1)
        if kernel_size not in (3, 7) or isinstance(kernel_size, bool):
            raise ValueError(f"CBAM: kernel_size must be one of (3, 7); got {kernel_size!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1 or c1 // reduction < 1:
            raise ValueError(
                f"CBAM: reduction must be an int in 1..{c1} for c1={c1} so that c1 // reduction >= 1; "
                f"got reduction={reduction!r}"
            )
        self.c1, self.kernel_size, self.reduction = c1, kernel_size, reduction
        self.ChannelGate = _ChannelGate(c1, reduction)  # official attribute names (state_dict compatibility)
        self.SpatialGate = _SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))
