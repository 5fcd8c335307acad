"""Efficient Channel Attention.

Paper: Qilong Wang, Banggu Wu, Pengfei Zhu, Peihua Li, Wangmeng Zuo, Qinghua Hu, "ECA-Net: Efficient Channel
Attention for Deep Convolutional Neural Networks", CVPR 2020, https://arxiv.org/abs/1910.03151
Official code: https://github.com/BangguWu/ECANet (``models/eca_module.py``)

GAP -> Conv1d(1, 1, k, padding (k-1)//2, no bias) across channels -> sigmoid -> x * s. The official module defaults
to k = 3 and ignores C (its ResNets pass k by hand); here ``k_size=None`` means the paper's adaptive rule
(:func:`eca_kernel_size`) and an int means a fixed k. Parameter name ``conv`` matches the official module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from yolo_attn.layers._gate import GateTap, RestoresGateTaps
from yolo_attn.layers.se import _check_channels

__all__ = ["ECA", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """Paper's adaptive kernel size ``k = psi(C) = |log2(C)/gamma + b/gamma|_odd``.

    Rounding rule: ``t = |log2(C)/gamma + b/gamma|``, then ``k = 2 * floor(t / 2) + 1``, i.e. the nearest odd
    integer to t, with ties (t an even integer) going up. This is exactly what the paper's published snippet
    ``t = int(abs((log(C, 2) + b) / gamma)); k = t if t % 2 else t + 1`` computes; ``math.log2`` is used instead of
    ``math.log(C, 2)`` because it is exact for powers of two, where ties sit (C = 128 gives t = 4.0 -> k = 5).

    Args:
        channels (int): Channel count C.
        gamma (int): gamma in the paper (2).
        b (int): b in the paper (1).

    Returns:
        (int): Odd kernel size k >= 1, e.g. C = 64 -> 3, 128 -> 5, 256 -> 5, 512 -> 5, 2048 -> 7.
    """
    t = abs(math.log2(channels) / gamma + b / gamma)
    return 2 * int(t // 2) + 1


class ECA(RestoresGateTaps, nn.Module):
    """Efficient Channel Attention (Wang et al., CVPR 2020).

    ``y = x * sigmoid(conv1d_k(GAP(x)))`` where the 1-D conv (no bias) slides over the channel axis, so each channel
    attends to its k neighbours. Output shape equals input shape.

    YAML: ``[-1, 1, ECA, []]`` (adaptive k from C) or ``[-1, 1, ECA, [3]]`` (fixed k = 3, the official module's
    default); the plugin injects c1 = channels of the ``from`` layer; extra args follow.

    Args:
        c1 (int): Input channels C (injected by the plugin's parser hook).
        k_size (int | None): Kernel size k; None = the paper's adaptive rule ``psi(C)`` (see :func:`eca_kernel_size`),
            an int = that fixed odd k >= 1.
        gamma (int): gamma of the adaptive rule (paper: 2); ignored when ``k_size`` is given.
        b (int): b of the adaptive rule (paper: 1); ignored when ``k_size`` is given.

    Examples:
        >>> ECA(256).k_size
        5
        >>> ECA(64)(torch.randn(2, 64, 13, 21)).shape
        torch.Size([2, 64, 13, 21])
    """

    def __init__(self, c1: int, k_size: int | None = None, gamma: int = 2, b: int = 1) -> None:
        super().__init__()
        c1 = _check_channels("ECA", c1)
        if k_size is None:
            if gamma <= 0:
                raise ValueError(f"ECA: gamma must be > 0 for the adaptive kernel size; got gamma={gamma!r}")
            k_size = eca_kernel_size(c1, gamma, b)
        elif isinstance(k_size, bool) or not isinstance(k_size, int) or k_size < 1 or k_size % 2 == 0:
            raise ValueError(
                f"ECA: k_size must be None (adaptive, the paper's rule) or an odd int >= 1 (1, 3, 5, 7, ...); "
                f"got k_size={k_size!r}"
            )
        self.c1, self.k_size = c1, k_size
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self._add_gate_taps()

    def _add_gate_taps(self) -> None:
        self.channel_gate = GateTap("channel")  # sigmoid(conv1d(GAP)): one weight per channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        # GAP as sum / n: sum's backward is a broadcast view, mean's materialises a full-size division.
        y = (x.sum((2, 3)) / (x.shape[2] * x.shape[3])).unsqueeze(1)  # (B, 1, C): channels are the 1-D axis
        y = F.conv1d(y, self.conv.weight, None, 1, self.conv.padding)
        return x * self.channel_gate(y.sigmoid().reshape(b, c, 1, 1))

    def extra_repr(self) -> str:
        return f"c1={self.c1}, k_size={self.k_size}"
