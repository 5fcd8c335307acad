"""Shuffle Attention (SA).

Paper: Qing-Long Zhang, Yu-Bin Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks",
ICASSP 2021, https://arxiv.org/abs/2102.00240
Official code: https://github.com/wofmanaf/SA-Net (``models/sa_resnet.py``, ``sa_layer``)

The official ``sa_layer`` splits the C channels into G groups and each group into two halves of C/2G channels:

* channel half: ``x0 * sigmoid(cweight * GAP(x0) + cbias)``;
* spatial half: ``x1 * sigmoid(sweight * GN(x1) + sbias)`` with ``GN = GroupNorm(C/2G, C/2G)`` (each channel
  normalised over H x W, with its own affine);
* the halves are concatenated back in place and the C channels shuffled with 2 groups (``channel_shuffle(out, 2)``).

``cweight``/``sweight`` start at 0 and ``cbias``/``sbias`` at 1, parameters (C/2G of each) shared by the groups; the
names are the official ones, so official state_dicts load with ``strict=True``.

Both halves are a per-channel affine map of the normalised input inside a sigmoid: ``logit = A_c z + B_c`` with
``z`` the channel normalised over H x W; ``A_c = 0`` and ``B_c = cweight * mean + cbias`` on the channel half,
``A_c = sweight * gn.weight`` and ``B_c = sweight * gn.bias + sbias`` on the spatial half. For an even G this module
writes the output through a strided view in x's group order (:func:`_shuffled_grouped`), scales the channel half by its
per-channel gate, evaluates the per-element sigmoid only on the spatial half, and writes the output once (no
concatenation, no shuffle copy), with a hand-written backward (:class:`_SAFunction`). An odd G (no such view),
small maps (below ``_FAST_MIN_HW`` = 256 elements, where per-op overhead dominates) and export run the official op
sequence.

The official default ``groups=64`` needs C divisible by 128 (``C % (2 * groups) == 0``; otherwise the official
parameters do not match the halves or GroupNorm gets 0 channels). YOLO n/s models have 64-channel rows and 16-channel
bottlenecks, so ``groups`` is declared in ``fit_defaults``: a YAML row that leaves it out gets the largest valid value
<= 64 (logged, shown by ``inspect``); an explicit invalid value raises ``ValueError`` listing the valid ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from yolo_attn.layers._gate import GateTap
from yolo_attn.layers.se import _check_channels, _exporting

__all__ = ["ShuffleAttention", "channel_shuffle"]

#: Smallest H*W for the fast path. Below it (10 x 10 maps, P5 at imgsz 320) the fast path's extra small ops cost more
#: than the full-size passes it saves (measured 0.85-0.95x of the official code at 5x5 and 10x10 on a 2-core CPU,
#: >= 1.05x from 20x20 up), so the official op sequence runs there.
_FAST_MIN_HW = 256


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The official shuffle: ``(B, g, C/g, H, W) -> (B, C/g, g, H, W)``, flattened back to (B, C, H, W)."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def valid_groups(c1: int) -> list[int]:
    """Group counts G with ``c1 % (2 * G) == 0``, ascending."""
    return [g for g in range(1, c1 // 2 + 1) if c1 % (2 * g) == 0]


def _coefficients(
    mean: torch.Tensor,
    groups: int,
    cweight: torch.Tensor,
    cbias: torch.Tensor,
    sweight: torch.Tensor,
    sbias: torch.Tensor,
    gn_weight: torch.Tensor,
    gn_bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``A``, ``B`` ((B, C), x's channel order) of the gate logits ``A z + B``, z = per-channel norm of x.

    Channel half: ``A = 0``, ``B = cweight * mean + cbias``. Spatial half: ``sweight * (gn.weight z + gn.bias) +
    sbias``, i.e. ``A = sweight * gn.weight``, ``B = sweight * gn.bias + sbias`` (GroupNorm(C/2G, C/2G) normalises each
    channel over H x W, which is what z is).
    """
    b, c = mean.shape
    cg = c // (2 * groups)
    m0 = mean.reshape(b, groups, 2, cg)[:, :, 0]
    a1 = (sweight.reshape(cg) * gn_weight).expand(b, groups, cg)
    b1 = (sweight.reshape(cg) * gn_bias + sbias.reshape(cg)).expand(b, groups, cg)
    b0 = cweight.reshape(cg) * m0 + cbias.reshape(cg)
    a = torch.stack((torch.zeros_like(a1), a1), 2).reshape(b, c)
    bias = torch.stack((b0, b1), 2).reshape(b, c)
    return a, bias


def _grouped(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, H, W) in input order as (B, 2, G/2, C/G, H, W) = (b, k, g', m, h, w): a plain view.

    Group ``g = k G/2 + g'`` holds channels ``g C/G + m``; ``m < C/2G`` is its channel half, the rest its spatial half.
    Parameters shaped (1, C/2G, 1, 1) broadcast against either half as they are.
    """
    b, c, h, w = t.shape
    return t.view(b, 2, groups // 2, c // groups, h, w)


def _shuffled_grouped(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, H, W) in output order viewed like :func:`_grouped` (a strided view, needs G even).

    The 2-way shuffle puts input channel ``k C/2 + i`` at output channel ``2 i + k``; with ``i = g' C/G + m`` that is
    output element (b, g', m, k) of ``(B, G/2, C/G, 2, H, W)``, permuted here to (b, k, g', m).
    """
    b, c, h, w = t.shape
    return t.view(b, groups // 2, c // groups, 2, h, w).permute(0, 3, 1, 2, 4, 5)


class _SAFunction(torch.autograd.Function):
    """Shuffle Attention for an even number of groups, written straight into the shuffled output (forward and
    backward by hand).

    Channel half: ``out = x sc``, ``sc = sigmoid(cweight mean + cbias)`` per (sample, channel).
    Spatial half: ``out = x s``, ``s = sigmoid(alpha d + beta)`` with ``d = x - mean``, ``alpha = sweight gn.weight
    rstd`` and ``beta = sweight gn.bias + sbias`` (the GroupNorm folded in; ``rstd = 1 / sqrt(mean(d^2) + eps)``).
    Backward, g the output gradient: ``u = g s``, ``dl = u x (1 - s)`` (d logit); on the spatial half
    ``dx = u + alpha dl + (2 dvar / HW) d - alpha mean(dl)`` with ``dvar = -rstd^2 alpha sum(dl d) / 2``; on the
    channel half ``dx = g sc + cweight dlc / HW`` with ``dlc = sc (1 - sc) sum(g x)``. The sigmoid is evaluated per
    element only where the gate varies per element (the spatial half).
    """

    @staticmethod
    def forward(ctx, x, cweight, cbias, sweight, sbias, gn_weight, gn_bias, groups: int, eps: float):
        out, saved = _sa_forward(x, cweight, cbias, sweight, sbias, gn_weight, gn_bias, groups, eps, keep_gate=True)
        ctx.save_for_backward(x, *saved, cweight, sweight, gn_weight, gn_bias)
        ctx.groups = groups
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, d, s, m_c, sc, rstd, alpha, cweight, sweight, gn_weight, gn_bias = ctx.saved_tensors
        g = ctx.groups
        cg = x.shape[1] // (2 * g)
        hw = x.shape[2] * x.shape[3]
        go = _shuffled_grouped(grad, g)
        xg = _grouped(x, g)
        dx = torch.empty_like(x)
        dxg = _grouped(dx, g)
        dims = (0, 1, 2)  # b, k, g': the axes the C/2G shared parameters are summed over
        # channel half: out = x sc, sc = sigmoid(cw * mean + cb)
        gc, xc = go[:, :, :, :cg], xg[:, :, :, :cg]
        tmp = gc * xc
        dlc = tmp.sum((-2, -1), keepdim=True).mul_(torch.addcmul(sc, sc, sc, value=-1))  # sum(g x) sc (1 - sc)
        torch.addcmul(dlc * (cweight / hw), gc, sc, out=dxg[:, :, :, :cg])  # g sc + the mean's share
        d_cw, d_cb = (dlc * m_c).sum(dims), dlc.sum(dims)
        # spatial half: out = x s, s = sigmoid(alpha d + beta)
        dxs = dxg[:, :, :, cg:]
        u = torch.mul(go[:, :, :, cg:], s, out=dxs)  # g s, the direct term, written where dx goes
        dl = u * xg[:, :, :, cg:]
        dl.addcmul_(dl, s, value=-1)  # g x s (1 - s)
        dbeta = dl.sum((-2, -1), keepdim=True)
        dalpha = torch.mul(dl, d, out=tmp).sum((-2, -1), keepdim=True)
        c_d = (dalpha * alpha).mul_(rstd * rstd).mul_(-1.0 / hw)  # 2 dvar / HW
        dxs.addcmul_(dl, alpha).addcmul_(d, c_d).sub_((alpha * dbeta).mul_(1.0 / hw))  # last: -alpha mean(dl)
        # parameters (per C/2G position): alpha = sw gw rstd, beta = sw gb + sb
        q, db = (dalpha * rstd).sum(dims), dbeta.sum(dims)  # (C/2G, 1, 1)
        gw, gb = gn_weight.view(cg, 1, 1), gn_bias.view(cg, 1, 1)
        shape = cweight.shape
        return (
            dx,
            d_cw.view(shape),
            d_cb.view(shape),
            (q * gw + db * gb).view(shape),
            db.view(shape),
            (q * sweight.view(cg, 1, 1)).view(cg),
            (db * sweight.view(cg, 1, 1)).view(cg),
            None,
            None,
        )


def _sa_forward(x, cweight, cbias, sweight, sbias, gn_weight, gn_bias, groups: int, eps: float, keep_gate: bool):
    """Forward of :class:`_SAFunction`; returns the output and, for the backward, ``(d, s, m_c, sc, rstd, alpha)``.

    ``keep_gate=False`` (inference) writes the spatial gate into the output buffer instead of keeping it.
    """
    cg = x.shape[1] // (2 * groups)
    hw = x.shape[2] * x.shape[3]
    xg = _grouped(x, groups)
    out = torch.empty_like(x)
    og = _shuffled_grouped(out, groups)
    gw, gb = gn_weight.view(cg, 1, 1), gn_bias.view(cg, 1, 1)
    means = xg.mean((-2, -1), keepdim=True)  # (B, 2, G/2, C/G, 1, 1): both halves in one reduction
    # channel half: x * sigmoid(cweight * GAP + cbias)
    m_c = means[:, :, :, :cg]
    sc = torch.addcmul(cbias, cweight, m_c).sigmoid_()
    torch.mul(xg[:, :, :, :cg], sc, out=og[:, :, :, :cg])
    # spatial half: GroupNorm(C/2G, C/2G) statistics, folded into one multiply-add before the sigmoid
    xs = xg[:, :, :, cg:]
    d = xs - means[:, :, :, cg:]
    rstd = torch.linalg.vector_norm(d, dim=(-2, -1), keepdim=True).square_().mul_(1.0 / hw).add_(eps).rsqrt_()
    alpha = rstd * (sweight * gw)
    os_ = og[:, :, :, cg:]
    s = torch.addcmul(torch.addcmul(sbias, sweight, gb), alpha, d, out=torch.empty_like(d) if keep_gate else os_)
    s.sigmoid_()
    torch.mul(s, xs, out=os_)
    return out, (d, s, m_c, sc, rstd, alpha)


class ShuffleAttention(nn.Module):
    """Shuffle Attention (Zhang & Yang, ICASSP 2021), as in the official ``sa_layer``.

    Per group of C/G channels: the first C/2G get a channel gate ``sigmoid(cweight * GAP + cbias)``, the other C/2G
    a spatial gate ``sigmoid(sweight * GN(x) + sbias)``; then a 2-way channel shuffle. Output shape equals input
    shape.

    YAML: ``[-1, 1, ShuffleAttention, []]``, ``[-1, 1, SA, []]`` or ``[-1, 1, SA, [16]]`` (the plugin injects c1 =
    channels of the ``from`` layer; the optional arg is the number of groups G).

    Args:
        c1 (int): Input channels C (injected by the plugin's parser hook); must be even.
        groups (int): Number of groups G (official default 64); C must be divisible by 2 * G. A YAML row that leaves
            it out gets the largest valid value <= 64 (``fit_defaults``).

    Note:
        Gates for hooks, both in the input's channel order: ``channel_gate`` (kind ``"channel"``, (B, C, 1, 1), 1 on
        the spatial-half channels) and ``spatial_gate`` (kind ``"element"``, (B, C, H, W), 1 on the channel-half
        channels). Because of the shuffle, ``output == channel_shuffle(input * channel_gate * spatial_gate, 2)``
        (``output_channel_shuffle``), not the plain product.

    Examples:
        >>> ShuffleAttention(256)(torch.randn(2, 256, 13, 21)).shape
        torch.Size([2, 256, 13, 21])
        >>> ShuffleAttention(64, 16).groups
        16
    """

    #: Official defaults that may not fit small channel counts; the plugin fits them when a row leaves them out.
    fit_defaults = {"groups": lambda c1, groups: groups >= 1 and c1 % (2 * groups) == 0}
    #: The output is ``channel_shuffle(input * gates, output_channel_shuffle)`` (see the class docstring).
    output_channel_shuffle = 2

    def __init__(self, c1: int, groups: int = 64) -> None:
        super().__init__()
        c1 = _check_channels("ShuffleAttention", c1)
        if c1 % 2:
            raise ValueError(
                f"ShuffleAttention: c1={c1} is odd; it splits every group into two equal halves and shuffles the "
                "channels in 2 groups, so it needs an even channel count"
            )
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or c1 % (2 * groups):
            raise ValueError(
                f"ShuffleAttention: c1={c1} is not divisible by 2 * groups = 2 * {groups!r} (each of the G groups "
                f"is split into two halves of c1 / (2 G) channels); valid groups for c1={c1}: {valid_groups(c1)}"
            )
        self.c1, self.groups = c1, groups
        cg = c1 // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, cg, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, cg, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, cg, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, cg, 1, 1))
        self.gn = nn.GroupNorm(cg, cg)
        self.channel_gate = GateTap("channel", label="channel")  # channel half: sigmoid(cweight * GAP + cbias)
        self.spatial_gate = GateTap("element", label="spatial")  # spatial half: sigmoid(sweight * GN + sbias)

    def _params(self) -> list[torch.Tensor]:
        return [self.cweight, self.cbias, self.sweight, self.sbias, self.gn.weight, self.gn.bias]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16) or self.cweight.dtype != x.dtype:
            # GroupNorm statistics in float32 (what autocast does for the official GroupNorm); input dtype out.
            return self._forward(x.float(), [p.float() for p in self._params()]).to(x.dtype)
        return self._forward(x, self._params())

    def _forward(self, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        if self.channel_gate.observed or self.spatial_gate.observed:
            return self._forward_gates(x, params)
        exporting = _exporting()
        if exporting or self.groups % 2 or x.shape[2] * x.shape[3] < _FAST_MIN_HW:
            # Export; odd G (no strided view matches the shuffle); small maps, where the fast path's extra small ops
            # cost more than the full-size passes they save: the official op sequence.
            return self._forward_official_order(x, params)
        x = x.contiguous()
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
            return _SAFunction.apply(x, *params, self.groups, self.gn.eps)
        with torch.no_grad():  # the same forward, nothing saved
            return _sa_forward(x, *params, self.groups, self.gn.eps, keep_gate=False)[0]

    def _forward_official_order(self, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        """The official op sequence: (B G, C/G, H, W) groups, GAP / GroupNorm halves, concatenation, shuffle."""
        cweight, cbias, sweight, sbias, gn_weight, gn_bias = params
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        cg = self.c1 // (2 * self.groups)  # Python ints (not traced sizes): the exported graph needs constant groups
        xg = x.reshape(b * self.groups, 2 * cg, h, w)
        x0, x1 = xg[:, :cg], xg[:, cg:]
        xn = x0 * torch.sigmoid(cweight * x0.mean((2, 3), keepdim=True) + cbias)
        xs = x1 * torch.sigmoid(sweight * F.group_norm(x1, cg, gn_weight, gn_bias, self.gn.eps) + sbias)
        return channel_shuffle(torch.cat((xn, xs), 1).reshape(b, self.c1, h, w), 2)

    def _forward_gates(self, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        """Plain differentiable ops while a gate is read: both gates built in the input's channel order."""
        c = self.c1
        g, cg = self.groups, c // (2 * self.groups)
        z = F.group_norm(x, c, eps=self.gn.eps)  # each channel over H x W, no affine
        a, bias = _coefficients(x.mean((2, 3)), g, *params)
        logits = a[:, :, None, None] * z + bias[:, :, None, None]
        spatial = (torch.arange(c, device=x.device) // cg % 2 == 1)[None, :, None, None]  # spatial-half channels
        channel_gate = torch.where(spatial, 1.0, bias.sigmoid()[:, :, None, None])  # (B, C, 1, 1)
        spatial_gate = torch.where(spatial, torch.sigmoid(logits), 1.0)  # (B, C, H, W)
        return channel_shuffle(x * self.channel_gate(channel_gate) * self.spatial_gate(spatial_gate), 2)

    def extra_repr(self) -> str:
        return f"c1={self.c1}, groups={self.groups}"
