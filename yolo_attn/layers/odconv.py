"""Omni-Dimensional Dynamic Convolution.

Paper: Chao Li, Aojun Zhou, Anbang Yao, "Omni-Dimensional Dynamic Convolution", ICLR 2022,
https://arxiv.org/abs/2209.07947
Official code: https://github.com/OSVAI/ODConv (``modules/odconv.py``)

``ODConv2d`` is the official raw dynamic conv (same parameter names and shapes: ``attention.{fc, bn, channel_fc,
filter_fc, spatial_fc, kernel_fc}``, ``weight``), so official state_dicts load with ``strict=True``. ``ODConv`` is the
YAML-facing drop-in for Ultralytics' ``Conv`` (autopad + ODConv2d + BatchNorm2d + SiLU).

Departures from the official module (each is marked in the code):

* Training with batch size 1 normalises the attention BN with its running statistics instead of raising
  "Expected more than 1 value per channel" (a YOLO dataloader's last batch can hold one image).
* Under ONNX export / TorchScript the per-sample kernels are applied with unfold + batched matmul instead of one
  grouped conv over the batch, which would bake the export batch size into the graph.
* An optional output ``bias`` (None by default) exists only to receive a folded BatchNorm (``ODConv.fuse``).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from yolo_attn.layers.se import _check_channels

__all__ = ["ODConv2d", "ODConv"]


def _autopad(k: int, p: int | None = None, d: int = 1) -> int:
    """'Same' padding for stride 1, exactly Ultralytics' ``autopad`` rule (reimplemented: no ultralytics import)."""
    if d > 1:
        k = d * (k - 1) + 1  # effective kernel size
    if p is None:
        p = k // 2
    return p


def _as_int(layer: str, name: str, value: object, minimum: int) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        n = None
    if isinstance(value, bool) or n is None or n < minimum:
        raise ValueError(f"{layer}: {name} must be an int >= {minimum}; got {name}={value!r}")
    return n


class _ODAttention(nn.Module):
    """Official ``Attention``: GAP -> 1x1 conv (no bias) -> BN -> ReLU -> channel/filter/spatial/kernel heads."""

    def __init__(self, c1: int, c2: int, k: int, g: int, reduction: float, kernel_num: int, min_channel: int = 16):
        super().__init__()
        a = max(int(c1 * reduction), min_channel)
        self.kernel_size = k
        self.kernel_num = kernel_num
        self.temperature = 1.0  # official: annealed by the training loop via update_temperature()
        self.fc = nn.Conv2d(c1, a, 1, bias=False)
        self.bn = nn.BatchNorm2d(a)
        self.channel_fc = nn.Conv2d(a, c1, 1, bias=True)
        # Heads the official code skips (gate = 1) are None here: no parameters, same state_dict keys.
        self.filter_fc = None if (c1 == g and c1 == c2) else nn.Conv2d(a, c2, 1, bias=True)  # depthwise
        self.spatial_fc = None if k == 1 else nn.Conv2d(a, k * k, 1, bias=True)
        self.kernel_fc = None if kernel_num == 1 else nn.Conv2d(a, kernel_num, 1, bias=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def update_temperature(self, temperature: float) -> None:
        self.temperature = temperature

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        b = x.shape[0]
        # GAP as sum / n: exports with dynamic shapes, and sum's backward is a view (mean's a full-size division).
        z = self.fc(x.sum((2, 3), keepdim=True) / (x.shape[2] * x.shape[3]))
        bn = self.bn
        if self.training and b == 1 and bn.running_mean is not None and bn.running_var is not None:
            # Departure: BatchNorm cannot compute batch statistics from one value per channel and raises; a YOLO
            # dataloader's last batch can hold a single image, so normalise it with the running statistics (no
            # update) instead of crashing. Every other batch size trains exactly as the official module.
            z = F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            z = bn(z)
        z = F.relu(z)
        t = self.temperature
        channel = torch.sigmoid(self.channel_fc(z).reshape(b, -1, 1, 1) / t)
        filt: torch.Tensor | None = None
        spatial: torch.Tensor | None = None
        kernel: torch.Tensor | None = None
        if self.filter_fc is not None:
            filt = torch.sigmoid(self.filter_fc(z).reshape(b, -1, 1, 1) / t)
        if self.spatial_fc is not None:
            spatial = torch.sigmoid(self.spatial_fc(z).reshape(b, 1, 1, 1, self.kernel_size, self.kernel_size) / t)
        if self.kernel_fc is not None:
            kernel = torch.softmax(self.kernel_fc(z).reshape(b, -1, 1, 1, 1, 1) / t, dim=1)
        return channel, filt, spatial, kernel


class ODConv2d(nn.Module):
    """Omni-dimensional dynamic convolution (Li et al., ICLR 2022), as in the official code.

    A bank of ``kernel_num`` (n) kernels ``W_1..W_n``; per sample, four attentions computed from GAP(x) modulate
    it along all four dimensions: ``y = (sum_i a_wi * a_s * W_i) * (a_c * x)`` scaled by ``a_f`` per output
    channel, where a_c (input channels), a_f (output channels), a_s (k x k positions) use sigmoid and a_w (kernels)
    softmax, all divided by ``temperature``. Heads are skipped (gate = 1) for a_f when depthwise, a_s when k = 1,
    a_w when n = 1. No conv bias.

    YAML: use :class:`ODConv` in model files (it adds BN + SiLU like ``Conv``); ``ODConv2d`` is the raw layer.

    Args:
        c1 (int): Input channels (c_in).
        c2 (int): Output channels (c_out).
        k (int): Kernel size k (square).
        s (int): Stride.
        p (int): Padding.
        d (int): Dilation.
        g (int): Groups; c1 and c2 must be divisible by it.
        reduction (float): Attention width ratio r; hidden width ``A = max(int(c1 * r), 16)``.
        kernel_num (int): Number of kernels n in the bank (paper's "ODConv (4x)" = 4).

    Attributes:
        weight (nn.Parameter): Kernel bank, shape (n, c2, c1 // g, k, k), Kaiming-normal (fan_out) init.
        bias (nn.Parameter | None): None unless a BatchNorm was folded in (``ODConv.fuse``).

    Examples:
        >>> ODConv2d(16, 32, 3, p=1)(torch.randn(2, 16, 13, 21)).shape
        torch.Size([2, 32, 13, 21])
    """

    #: FLOPs by the official formulation (the kernel bank mixed elementwise, as the official code does) for the
    #: headline GFLOPs column; written from the official code in yolo_attn.bench (this file imports only torch).
    official_formulation = "yolo_attn.bench.official_flops:odconv2d_official"

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int,
        s: int = 1,
        p: int = 0,
        d: int = 1,
        g: int = 1,
        reduction: float = 0.0625,
        kernel_num: int = 4,
    ) -> None:
        super().__init__()
        c1 = _check_channels("ODConv2d", c1)
        c2 = _check_channels("ODConv2d", c2)
        k = _as_int("ODConv2d", "k (kernel size)", k, 1)
        s = _as_int("ODConv2d", "s (stride)", s, 1)
        p = _as_int("ODConv2d", "p (padding)", p, 0)
        d = _as_int("ODConv2d", "d (dilation)", d, 1)
        g = _as_int("ODConv2d", "g (groups)", g, 1)
        if c1 % g or c2 % g:
            valid = [v for v in range(1, min(c1, c2) + 1) if c1 % v == 0 and c2 % v == 0]
            raise ValueError(
                f"ODConv2d: c1={c1} and c2={c2} must both be divisible by g={g}; valid g for these channels: {valid}"
            )
        if isinstance(kernel_num, bool) or not isinstance(kernel_num, int) or kernel_num < 1:
            raise ValueError(f"ODConv2d: kernel_num must be an int >= 1 (paper: 4); got kernel_num={kernel_num!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, (int, float)) or not reduction > 0:
            raise ValueError(f"ODConv2d: reduction must be a number > 0 (paper: 0.0625); got reduction={reduction!r}")
        self.c1, self.c2, self.k, self.s, self.p, self.d, self.g = c1, c2, k, s, p, d, g
        self.kernel_num = kernel_num
        self.attention = _ODAttention(c1, c2, k, g, float(reduction), kernel_num)
        self.weight = nn.Parameter(torch.empty(kernel_num, c2, c1 // g, k, k))
        for i in range(kernel_num):
            nn.init.kaiming_normal_(self.weight[i], mode="fan_out", nonlinearity="relu")
        self.register_parameter("bias", None)  # departure: only set by fuse_bn_() (BN folding)

    def update_temperature(self, temperature: float) -> None:
        """Set the attention temperature (official schedule: 30 -> 1 over the first epochs)."""
        self.attention.update_temperature(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel, filt, spatial, kernel = self.attention(x)
        x = x * channel
        if self.k == 1 and self.kernel_num == 1:
            # Official _forward_impl_pw1x: no spatial/kernel attention, so the kernel is shared by the batch.
            out = F.conv2d(x, self.weight[0], None, self.s, self.p, self.d, self.g)
        else:
            b = x.shape[0]
            bank = self.weight.reshape(self.kernel_num, -1)
            # Official: sum_n (a_s * a_wn) * W_n. The spatial gate does not depend on n, so it is applied after the
            # kernel mix, which becomes one (B, n) @ (n, c2*c1/g*k*k) matmul (no (B, n, ...) temporary).
            agg = bank.expand(b, -1) if kernel is None else torch.mm(kernel.reshape(b, self.kernel_num), bank)
            agg = agg.reshape(b, self.c2, self.c1 // self.g, self.k, self.k)  # one kernel per sample
            if spatial is not None:
                agg = agg * spatial.reshape(b, 1, 1, self.k, self.k)
            if torch.jit.is_scripting():
                batch_independent = True
            else:
                batch_independent = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            out = self._conv_unfold(x, agg) if batch_independent else self._conv_grouped(x, agg)
        if filt is not None:
            out = out * filt
        if self.bias is not None:
            out = out + self.bias.reshape(1, -1, 1, 1)
        return out

    def _conv_grouped(self, x: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        """Official: the batch becomes groups of one conv (fast eager path; the graph would fix B)."""
        b, _, h, w = x.shape
        out = F.conv2d(
            x.reshape(1, -1, h, w),
            agg.reshape(-1, self.c1 // self.g, self.k, self.k),
            None,
            self.s,
            self.p,
            self.d,
            self.g * b,
        )
        return out.reshape(b, self.c2, out.shape[-2], out.shape[-1])

    def _conv_unfold(self, x: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        """Same result as ``_conv_grouped`` with no batch size in the graph (ONNX / TorchScript)."""
        b, h = x.shape[0], x.shape[2]
        g, kk = self.g, self.k * self.k
        cols = F.unfold(x, (self.k, self.k), (self.d, self.d), (self.p, self.p), (self.s, self.s))
        cols = cols.reshape(b, g, (self.c1 // g) * kk, -1)  # unfold orders rows channel-major, like agg
        out = torch.matmul(agg.reshape(b, g, self.c2 // g, (self.c1 // g) * kk), cols)  # (B, g, c2/g, L)
        oh = (h + 2 * self.p - self.d * (self.k - 1) - 1) // self.s + 1
        return out.reshape(b, self.c2, oh, -1)

    @torch.no_grad()
    def fuse_bn_(self, bn: nn.BatchNorm2d) -> None:
        """Fold an eval-mode BatchNorm that follows this layer into the kernel bank and ``bias`` (in place).

        Exact: the aggregated kernel is linear in the bank and the filter attention scales output channels, so
        ``BN(y) = y * scale + shift`` becomes bank * scale (per output channel) and a bias added after it.
        """
        assert bn.running_mean is not None and bn.running_var is not None
        scale = bn.running_var.add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        self.weight.mul_(scale.reshape(1, -1, 1, 1, 1))
        if self.bias is None:
            self.bias = nn.Parameter(shift.detach().clone())
        else:
            self.bias.mul_(scale).add_(shift)

    def extra_repr(self) -> str:
        return (
            f"{self.c1}, {self.c2}, k={self.k}, s={self.s}, p={self.p}, d={self.d}, g={self.g}, "
            f"kernel_num={self.kernel_num}, bias={self.bias is not None}"
        )


class ODConv(nn.Module):
    """ODConv as a drop-in for Ultralytics' ``Conv``: ODConv2d (autopad) -> BatchNorm2d -> SiLU.

    YAML: ``[-1, 1, ODConv, [256, 3, 2]]`` (c1 injected, c2 width-scaled exactly like Conv; extra args follow
    ``Conv``'s order: k, s, p, g, d, act, then reduction, kernel_num).

    Args:
        c1 (int): Input channels (injected by the plugin's parser hook).
        c2 (int): Output channels (width-scaled by the parser like ``Conv``).
        k (int): Kernel size.
        s (int): Stride.
        p (int | None): Padding; None = 'same' (Ultralytics' autopad rule).
        g (int): Groups.
        d (int): Dilation.
        act (bool | nn.Module): True = SiLU, a module = that module, otherwise Identity (like ``Conv``).
        reduction (float): ODConv attention ratio r (paper: 0.0625).
        kernel_num (int): Number of kernels in the bank (paper: 4).

    Attributes:
        conv (ODConv2d): The dynamic convolution.
        bn (nn.BatchNorm2d | nn.Identity): BatchNorm; Identity after :meth:`fuse`.
        act (nn.Module): Activation.

    Examples:
        >>> ODConv(16, 32, 3, 2)(torch.randn(2, 16, 14, 22)).shape
        torch.Size([2, 32, 7, 11])
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        d: int = 1,
        act: bool | nn.Module = True,
        reduction: float = 0.0625,
        kernel_num: int = 4,
    ) -> None:
        super().__init__()
        c1 = _check_channels("ODConv", c1)
        k = _as_int("ODConv", "k (kernel size)", k, 1)  # official ODConv supports square int kernels only
        d = _as_int("ODConv", "d (dilation)", d, 1)
        self.conv = ODConv2d(c1, c2, k, s, _autopad(k, p, d), d, g, reduction, kernel_num)
        self.bn = nn.BatchNorm2d(self.conv.c2)
        self.act = nn.SiLU() if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        """Forward without BN (for use after :meth:`fuse`, like Ultralytics' ``Conv.forward_fuse``)."""
        return self.act(self.conv(x))

    def fuse(self) -> ODConv:
        """Fold ``bn`` into ``conv`` (eval-mode exact) and replace it by Identity. Idempotent; returns self.

        Ultralytics' ``model.fuse()`` only fuses its own Conv classes; call this (e.g. from the integration's fuse
        hook) for ODConv layers. ``bn`` becomes ``nn.Identity`` instead of being deleted so ``forward`` and
        TorchScript keep working.
        """
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv.fuse_bn_(self.bn)
            self.bn = nn.Identity()
        return self

    def update_temperature(self, temperature: float) -> None:
        """Set the ODConv attention temperature."""
        self.conv.update_temperature(temperature)
