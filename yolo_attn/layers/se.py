"""Squeeze-and-Excitation attention.

Paper: Jie Hu, Li Shen, Gang Sun, "Squeeze-and-Excitation Networks", CVPR 2018, https://arxiv.org/abs/1709.01507
Official code (Caffe): https://github.com/hujie-frank/SENet

The official block is GAP -> 1x1 conv C -> C/r (bias) -> ReLU -> 1x1 conv C/r -> C (bias) -> sigmoid -> x * s with
r = 16. Parameter names follow torchvision's ``SqueezeExcitation`` (``fc1``, ``fc2``; 1x1 conv weights).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from yolo_attn.layers._gate import GateTap, RestoresGateTaps

__all__ = ["SE"]


def _exporting() -> bool:
    """Whether the forward is being scripted, traced or exported to ONNX (fast paths then take the plain ops)."""
    return torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _check_channels(layer: str, c1: object) -> int:
    """Return ``c1`` as an int or raise a ValueError that says what went wrong in the YAML row.

    Shared by all layer modules (they import it from here to stay torch-only and free of a helpers module).
    """
    if isinstance(c1, (list, tuple)):
        raise ValueError(
            f"{layer} takes one input; got channels {list(c1)} (a YAML row whose `from` lists several layers). "
            "Put a Concat before it."
        )
    try:
        n = operator.index(c1)  # accepts int-like (numpy ints), rejects floats and strings
    except TypeError:
        n = None
    if isinstance(c1, bool) or n is None or n <= 0:
        raise ValueError(f"{layer}: channels must be a positive int; got {c1!r}")
    return n


class SE(RestoresGateTaps, nn.Module):
    """Squeeze-and-Excitation channel attention (Hu et al., CVPR 2018).

    ``y = x * sigmoid(W2 relu(W1 GAP(x) + b1) + b2)`` with ``W1: C -> C/r`` and ``W2: C/r -> C`` (1x1 convs with
    bias, as in the paper's Caffe models). Output shape equals input shape.

    YAML: ``[-1, 1, SE, []]`` or ``[-1, 1, SE, [8]]`` (the plugin injects c1 = channels of the ``from`` layer;
    extra args follow, here the reduction r).

    Args:
        c1 (int): Input channels C (injected by the plugin's parser hook).
        reduction (int): Reduction ratio r; the bottleneck has ``C // r`` units, which must be >= 1.

    Examples:
        >>> SE(64)(torch.randn(2, 64, 13, 21)).shape
        torch.Size([2, 64, 13, 21])
    """

    #: When a YAML row leaves ``reduction`` out and C < 16 (8-channel bottlenecks inside small blocks), the plugin
    #: uses the largest r <= 16 that keeps a hidden unit (:mod:`yolo_attn.plugin.layer_args`).
    fit_defaults = {"reduction": lambda c1, reduction: c1 // reduction >= 1}

    def __init__(self, c1: int, reduction: int = 16) -> None:
        super().__init__()
        c1 = _check_channels("SE", c1)
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1 or c1 // reduction < 1:
            # A 0-unit bottleneck would silently produce a constant 0.5 gate.
            raise ValueError(
                f"SE: reduction must be an int in 1..{c1} for c1={c1} so that c1 // reduction >= 1; "
                f"got reduction={reduction!r}"
            )
        hidden = c1 // reduction
        self.c1, self.reduction = c1, reduction
        self.fc1 = nn.Conv2d(c1, hidden, 1, bias=True)
        self.fc2 = nn.Conv2d(hidden, c1, 1, bias=True)
        self._add_gate_taps()

    def _add_gate_taps(self) -> None:
        self.channel_gate = GateTap("channel")  # sigmoid(excitation): one weight per channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        # 1x1 convs on a 1x1 map are linear layers; F.linear skips the conv dispatch overhead (same maths/params).
        # GAP as sum / n: sum's backward is a broadcast view, mean's materialises a full-size division.
        s = x.sum((2, 3)) / (x.shape[2] * x.shape[3])
        s = F.relu(F.linear(s, self.fc1.weight.flatten(1), self.fc1.bias))
        s = F.linear(s, self.fc2.weight.flatten(1), self.fc2.bias)
        return x * self.channel_gate(s.sigmoid().reshape(b, c, 1, 1))

    def extra_repr(self) -> str:
        return f"c1={self.c1}, reduction={self.reduction}"
