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
reads x in the order the 2-way shuffle writes it (a strided view, :func:`_matched`), scales the channel half by its
per-channel gate, evaluates the per-element sigmoid only on the spatial half, and writes the output once (no
concatenation, no shuffle copy), with a hand-written backward (:class:`_SAFunction`). An odd G (no such view) and
export use plain ops: one GroupNorm for z, the gate, the official shuffle.

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
from yolo_attn.layers.se import _check_channels

__all__ = ["ShuffleAttention", "channel_shuffle"]


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


def _matched(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, HW) in input order as (B, G/2, 2, C/2G, 2, HW) = (b, g', half, r, k, hw), matching the output's layout.

    Input channel ``p = k C/2 + g' 2 C/2G + half C/2G + r`` (group ``g = k G/2 + g'``) lands at output channel
    ``2 i + k`` with ``i = p mod C/2`` after the 2-way shuffle, which is element (b, g', half, r, k) of the output
    viewed as ``(B, G/2, 2, C/2G, 2, HW)``. Needs G even.
    """
    b, c, hw = t.shape
    return t.reshape(b, 2, groups // 2, 2, c // (2 * groups), hw).permute(0, 2, 3, 4, 1, 5)


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
        b, c, h, w = x.shape
        g, hw = ctx.groups, h * w
        cg = c // (2 * g)
        gm = grad.reshape(b, g // 2, 2, cg, 2, hw)
        xm = _matched(x.reshape(b, c, hw), g)
        dx = torch.empty_like(x)
        dxm = _matched(dx.reshape(b, c, hw), g)
        dims = (0, 1, 3)  # b, g', k: the axes the C/2G shared parameters are summed over
        # channel half: out = x sc, sc = sigmoid(cw * mean + cb)
        gc, xc = gm[:, :, 0], xm[:, :, 0]
        tmp = gc * xc
        dlc = tmp.sum(-1).mul_(torch.addcmul(sc, sc, sc, value=-1))  # d logit = sum(g x) sc (1 - sc)
        torch.addcmul((dlc * (cweight.reshape(cg, 1) / hw)).unsqueeze(-1), gc, sc.unsqueeze(-1), out=dxm[:, :, 0])
        d_cw, d_cb = (dlc * m_c).sum(dims), dlc.sum(dims)
        # spatial half: out = x s, s = sigmoid(alpha d + beta)
        dxs = dxm[:, :, 1]
        u = torch.mul(gm[:, :, 1], s, out=dxs)  # g s, the direct term, written where dx goes
        dl = u * xm[:, :, 1]
        dl.addcmul_(dl, s, value=-1)  # g x s (1 - s)
        dbeta = dl.sum(-1)
        dalpha = torch.mul(dl, d, out=tmp).sum(-1)
        c_d = (dalpha * alpha).mul_(rstd * rstd).mul_(-1.0 / hw)  # 2 dvar / HW
        c_0 = (alpha * dbeta).mul_(-1.0 / hw)  # -alpha mean(dl): the mean's share
        dxs.addcmul_(dl, alpha.unsqueeze(-1)).addcmul_(d, c_d.unsqueeze(-1)).add_(c_0.unsqueeze(-1))
        # parameters (per C/2G position): alpha = sw gw rstd, beta = sw gb + sb
        q, db = (dalpha * rstd).sum(dims), dbeta.sum(dims)
        sw, gw, gb = sweight.reshape(cg), gn_weight, gn_bias
        shape = cweight.shape
        return (
            dx,
            d_cw.reshape(shape),
            d_cb.reshape(shape),
            (q * gw + db * gb).reshape(shape),
            db.reshape(shape),
            q * sw,
            db * sw,
            None,
            None,
        )


def _sa_forward(x, cweight, cbias, sweight, sbias, gn_weight, gn_bias, groups: int, eps: float, keep_gate: bool):
    """Forward of :class:`_SAFunction`; returns the output and, for the backward, ``(d, s, m_c, sc, rstd, alpha)``.

    ``keep_gate=False`` (inference) writes the spatial gate into the output buffer instead of keeping it.
    """
    b, c, h, w = x.shape
    hw, cg = h * w, c // (2 * groups)
    xm = _matched(x.reshape(b, c, hw), groups)
    out = x.new_empty(b, c, h, w)
    om = out.reshape(b, groups // 2, 2, cg, 2, hw)
    cw, cb = cweight.reshape(cg, 1), cbias.reshape(cg, 1)
    sw, sb = sweight.reshape(cg, 1), sbias.reshape(cg, 1)
    gw, gb = gn_weight.reshape(cg, 1), gn_bias.reshape(cg, 1)
    means = xm.mean(-1)  # (B, G/2, 2, C/2G, 2): both halves in one reduction
    # channel half: x * sigmoid(cweight * GAP + cbias)
    m_c = means[:, :, 0]
    sc = torch.addcmul(cb, cw, m_c).sigmoid_()
    torch.mul(xm[:, :, 0], sc.unsqueeze(-1), out=om[:, :, 0])
    # spatial half: GroupNorm(C/2G, C/2G) statistics, folded into one multiply-add before the sigmoid
    xs = xm[:, :, 1]
    d = xs - means[:, :, 1].unsqueeze(-1)
    rstd = torch.linalg.vector_norm(d, dim=-1).square_().mul_(1.0 / hw).add_(eps).rsqrt_()
    alpha = rstd * (sw * gw)
    beta = torch.addcmul(sb, sw, gb)
    os_ = om[:, :, 1]
    s = torch.addcmul(beta.unsqueeze(-1), alpha.unsqueeze(-1), d, out=torch.empty_like(d) if keep_gate else os_)
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
        exporting = torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        observed = self.channel_gate.observed or self.spatial_gate.observed
        if exporting or observed:
            return self._forward_ops(x, params, observed)
        if self.groups % 2:  # odd G: no strided view matches the shuffle; the plain-ops formulation
            return self._forward_ops(x, params, observed=False)
        x = x.contiguous()
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
            return _SAFunction.apply(x, *params, self.groups, self.gn.eps)
        with torch.no_grad():  # the same forward, nothing saved
            return _sa_forward(x, *params, self.groups, self.gn.eps, keep_gate=False)[0]

    def _forward_ops(self, x: torch.Tensor, params: list[torch.Tensor], observed: bool) -> torch.Tensor:
        """Plain differentiable ops (export, and whenever a gate is read): the gates in the input's channel order."""
        c = self.c1  # a Python int, not a traced size: the exported GroupNorm needs a constant group count
        g, cg = self.groups, c // (2 * self.groups)
        z = F.group_norm(x, c, eps=self.gn.eps)  # each channel over H x W, no affine
        a, bias = _coefficients(x.mean((2, 3)), g, *params)
        logits = a[:, :, None, None] * z + bias[:, :, None, None]
        if not observed:
            return channel_shuffle(x * torch.sigmoid(logits), 2)
        spatial = (torch.arange(c, device=x.device) // cg % 2 == 1)[None, :, None, None]  # spatial-half channels
        channel_gate = torch.where(spatial, 1.0, bias.sigmoid()[:, :, None, None])  # (B, C, 1, 1)
        spatial_gate = torch.where(spatial, torch.sigmoid(logits), 1.0)  # (B, C, H, W)
        return channel_shuffle(x * self.channel_gate(channel_gate) * self.spatial_gate(spatial_gate), 2)

    def extra_repr(self) -> str:
        return f"c1={self.c1}, groups={self.groups}"
