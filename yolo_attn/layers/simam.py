"""SimAM: a simple, parameter-free attention module.

Paper: Lingxiao Yang, Ru-Yuan Zhang, Lida Li, Xiaohua Xie, "SimAM: A Simple, Parameter-Free Attention Module for
Convolutional Neural Networks", ICML 2021, https://proceedings.mlr.press/v139/yang21o.html
Official code: https://github.com/ZjjConan/SimAM (``simam_module``)

The gate of each element is the inverse of its minimal energy: with ``d = x - mean_HW(x)`` and
``v = sum_HW(d^2) / n``, ``n = H*W - 1``, ``y = d^2 / (4 (v + lambda)) + 0.5`` and ``out = x * sigmoid(y)``
(``lambda = 1e-4``), computed per sample and channel. The same maths as the official module, evaluated with fewer
full-size passes: the energy term is ``a z^2`` with z the output of a per-channel GroupNorm (one native kernel; see
:func:`_normalised`), inference reuses that one buffer in place, and training uses a hand-written backward
(:class:`_SimAMFunction`). One departure: on a 1x1 map (``n = 0``) the official code divides 0 by 0 and returns NaN;
here the variance term is taken as 0 there (``d = 0``, so the gate is ``sigmoid(0.5)``, the limit of every other size).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from yolo_attn.layers._gate import GateTap
from yolo_attn.layers.se import _check_channels, _exporting

__all__ = ["SimAM"]


def _normalised(x: torch.Tensor, e_lambda: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, float]:
    """``z = (x - mu) / sqrt(var + eps)`` per (sample, channel), ``eps = lambda n / (H W)``, and ``a = n / (4 H W)``.

    Then ``a z^2 = d^2 / (4 (sum(d^2) / n + lambda))``, the official energy term exactly (``var`` is the biased
    variance, ``sum(d^2) / (H W)``). GroupNorm with one group per channel computes z, mu and 1/std in one fast native
    kernel (``torch.var_mean`` over H, W is ~50x slower on CPU). On a 1x1 map n is taken as 1 (z = 0 there).
    Returns ``(z, mean, rstd, eps, a)``.
    """
    b, c, h, w = x.shape
    hw = h * w
    n = max(hw - 1, 1)
    eps = e_lambda * n / hw
    z, mean, rstd = torch.native_group_norm(x, None, None, b, c, hw, c, eps)
    return z, mean, rstd, eps, n / (4 * hw)


def _gate_inplace(z: torch.Tensor, a: float) -> torch.Tensor:
    """Turn z into the gate ``sigmoid(a z^2 + 0.5)`` in place (one fused multiply-add, then the sigmoid)."""
    return torch.addcmul(z.new_full((), 0.5), z, z, value=a, out=z).sigmoid_()


class _SimAMFunction(torch.autograd.Function):
    """Training-time SimAM: two full-size buffers in the forward instead of autograd's six saved intermediates.

    With ``y = a z^2 + 0.5``, ``z = GroupNorm(x)`` (one group per channel, no affine) and ``s = sigmoid(y)``:
    ``dL/dx = g s + GN_backward(2 a z g x s (1 - s))``, g = dL/dout, using the native GroupNorm backward kernel.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, e_lambda: float) -> torch.Tensor:
        z, mean, rstd, eps, a = _normalised(x, e_lambda)
        s = _gate_inplace(z, a)
        ctx.save_for_backward(x, s, mean, rstd)
        ctx.eps, ctx.a = eps, a
        return x * s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, s, mean, rstd = ctx.saved_tensors
        b, c, h, w = x.shape
        dx = grad * s  # direct term
        gy = dx * x
        gy.addcmul_(gy, s, value=-1)  # dL/dy = g x s (1 - s)
        z = torch.native_group_norm(x, None, None, b, c, h * w, c, ctx.eps)[0]  # recomputed: cheaper than kept
        dz = gy.mul_(z).mul_(2 * ctx.a)
        dx_norm = torch.ops.aten.native_group_norm_backward(
            dz, x, mean, rstd, None, b, c, h * w, c, [True, False, False]
        )[0]
        return dx.add_(dx_norm), None


class SimAM(nn.Module):
    """SimAM: parameter-free, energy-based 3-D attention (Yang et al., ICML 2021), as in the official code.

    ``out = x * sigmoid((x - mu)^2 / (4 ((sum_HW (x - mu)^2) / (H*W - 1) + lambda)) + 0.5)`` per sample and channel,
    ``mu`` the channel's spatial mean. No parameters. Output shape equals input shape.

    YAML: ``[-1, 1, SimAM, []]`` or ``[-1, 1, SimAM, [1.0e-4]]`` (the plugin injects c1 = channels of the ``from``
    layer; the optional arg is lambda).

    Args:
        c1 (int | None): Input channels (injected by the plugin's parser hook; unused by the maths, checked only).
        e_lambda (float): The regulariser lambda in the energy function (paper and official code: 1e-4); > 0.

    Note:
        The gate is per element; it is exposed through ``self.element_gate`` (a :class:`GateTap`, kind
        ``"element"``) for gate-map hooks.

    Examples:
        >>> SimAM(64)(torch.randn(2, 64, 13, 21)).shape
        torch.Size([2, 64, 13, 21])
    """

    def __init__(self, c1: int | None = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.c1 = None if c1 is None else _check_channels("SimAM", c1)
        if (
            isinstance(e_lambda, bool)
            or not isinstance(e_lambda, (int, float))
            or not math.isfinite(e_lambda)
            or e_lambda <= 0
        ):
            # lambda = 0 divides by zero on constant channels (0 / 0); the paper's lambda is a small positive number.
            raise ValueError(f"SimAM: e_lambda must be a finite number > 0 (official default 1e-4); got {e_lambda!r}")
        self.e_lambda = float(e_lambda)
        self.element_gate = GateTap("element")  # sigmoid(y), (B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            # The sum of squares over H*W can overflow float16; compute in float32, return the input dtype.
            return self._forward(x.float()).to(x.dtype)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if _exporting() or self.element_gate.observed:  # observed: the gate as its own (differentiable) tensor
            return self._forward_ops(x)
        x = x.contiguous()
        if torch.is_grad_enabled() and x.requires_grad:
            return _SimAMFunction.apply(x, self.e_lambda)
        z, _, _, _, a = _normalised(x, self.e_lambda)
        return _gate_inplace(z, a).mul_(x)

    def _forward_ops(self, x: torch.Tensor) -> torch.Tensor:
        """The official expression as plain, differentiable, traceable ops (export, gate hooks); sizes stay symbolic
        in a traced graph."""
        h, w = x.shape[2], x.shape[3]
        n = h * w - 1
        d2 = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        # n + (n == 0): 1 on a 1x1 map (where d2 = 0), else n; stays a graph expression when the sizes are traced.
        y = d2 / (4 * (d2.sum(dim=(2, 3), keepdim=True) / (n + (n == 0)) + self.e_lambda)) + 0.5
        return x * self.element_gate(torch.sigmoid(y))

    def extra_repr(self) -> str:
        return f"c1={self.c1}, e_lambda={self.e_lambda:g}"
