"""Efficient Multi-Scale Attention.

Paper: Daliang Ouyang, Su He, Guozhong Zhang, Mingzhu Luo, Huaiyong Guo, Jian Zhan, Zhijie Huang, "Efficient
Multi-Scale Attention Module with Cross-Spatial Learning", ICASSP 2023, https://arxiv.org/abs/2305.13563
Official code: https://github.com/YOLOonMe/EMA-attention-module

Same maths and parameters as the official module (``gn``, ``conv1x1``, ``conv3x3`` with the official shapes, so
official state_dicts load with ``strict=True``), computed without the official (B*G, C/G, H, W) reshape and without
materialising the 3x3 branch or the GroupNorm output; training uses a hand-written backward. See ``_ema_forward``
for the identities used and ``_EMAFunction.backward`` for the gradient. CPU inference reuses its scratch buffers
across calls (``_Workspace``): inside a full model the page faults of fresh scratch memory cost more than the
layer's arithmetic.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from yolo_attn.layers._gate import GateTap, RestoresGateTaps
from yolo_attn.layers.se import _check_channels, _exporting

__all__ = ["EMA"]


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _window_means(xg: torch.Tensor, p_h: torch.Tensor, p_w: torch.Tensor) -> torch.Tensor:
    """Mean of x over the window each tap (i, j) of a 3x3, stride-1, zero-padding-1 conv sees, over all outputs.

    Tap row i = 0 never sees input row H-1, i = 2 never sees row 0 (the padding stands in); likewise for columns.
    Window mean = (whole-map sum - excluded row - excluded column + excluded corner) / (H*W), where the row and
    column sums come from the strip means already computed. Returns (B, G, C/G, 3, 3).
    """
    h, w = xg.shape[-2], xg.shape[-1]
    zero = torch.zeros_like(p_h[..., 0])
    total = p_h.mean(-1)
    rows = torch.stack((p_h[..., -1], zero, p_h[..., 0]), -1) / h  # (B, G, C/G, 3)
    cols = torch.stack((p_w[..., -1], zero, p_w[..., 0]), -1) / w
    top, bottom = xg[..., 0, :], xg[..., -1, :]  # (B, G, C/G, W)
    corner = torch.stack(
        (
            torch.stack((bottom[..., -1], zero, bottom[..., 0]), -1),
            torch.stack((zero, zero, zero), -1),
            torch.stack((top[..., -1], zero, top[..., 0]), -1),
        ),
        -2,
    ) / (h * w)
    return total[..., None, None] - rows.unsqueeze(-1) - cols.unsqueeze(-2) + corner


class _Workspace:
    """Scratch buffers that an EMA layer reuses across CPU inference calls.

    Why: PyTorch's CPU allocator hands large buffers back to the C library, which returns freed memory at the top of
    the heap to the kernel; the next forward page-faults it in again (~2.5 us per 4 KiB page measured here). Inside
    yolov8s at 640 (one thread, each model in a process of its own) the EMA model's fresh scratch buffers -- about
    4x the input's size per call on the 128-channel row -- made it fault ~25,500 pages per forward where yolov8s
    faulted ~18,300: more time than the three layers' arithmetic. Only intermediates live here, never a returned
    tensor, and only on paths that nothing records (no autograd, no tracing): those need fresh buffers.

    One buffer per role, per thread (two threads running the same model must not share scratch memory), per dtype,
    device and inference-mode flag (a tensor made under ``torch.inference_mode`` cannot be written outside it). A
    role's buffer grows to the largest input seen and is viewed at the size asked for, so memory stays bounded when
    input shapes vary. Not pickled: a deep copy or a checkpoint gets an empty workspace.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, role: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A contiguous scratch tensor of ``shape`` with ``like``'s dtype and device (contents undefined)."""
        buffers: dict = self._local.__dict__.setdefault("buffers", {})
        key = (role, like.dtype, like.device, torch.is_inference_mode_enabled())
        n = math.prod(shape)
        buf = buffers.get(key)
        if buf is None or buf.numel() < n:
            buf = buffers[key] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[:n].view(shape)

    def clear(self) -> None:
        """Free this thread's buffers."""
        self._local.__dict__.pop("buffers", None)


def _tap_slices(k: int, n: int) -> tuple[int, int]:
    """Output range [start, end) along one axis for which tap offset k - 1 of a 3-tap, zero-padded conv is inside."""
    return max(0, 1 - k), min(n, n + 1 - k)


def _conv3x3_shared_eager(
    xg: torch.Tensor, k1: torch.Tensor, loops: bool, workspace: _Workspace | None = None
) -> torch.Tensor:
    """``conv2d(x, k1 repeated per group, padding=1, groups=G)``: one output per group, kernel shared by the groups.

    ``loops=True`` (CPU): contract over the C/G channels first (one GEMM per sample gives the 9 tap maps), then add
    the 9 shifted tap maps. On CPU this is several times faster than oneDNN's grouped conv for this odd shape (C/G
    inputs, 1 output; also faster than a dense conv over the B*G batch, a depthwise conv plus a channel sum, or
    ``F.fold`` for the shifted adds), and the per-sample loop keeps the (G, 9, H, W) temporary small. Not traceable
    (the Python loop runs over the batch). ``loops=False``: the grouped conv (GPUs, where cuDNN handles it well).
    With a ``workspace`` the temporary and the result are its scratch buffers.
    """
    b, g, cg, h, w = xg.shape
    if not loops:
        return F.conv2d(xg.reshape(b, g * cg, h, w), k1.reshape(1, cg, 3, 3).repeat(g, 1, 1, 1), padding=1, groups=g)
    taps = k1.reshape(cg, 9).t()  # (9, C/G)
    out = xg.new_empty(b, g, h, w) if workspace is None else workspace.get("t1", (b, g, h, w), xg)
    zbuf = None if workspace is None else workspace.get("taps", (g, 9, h * w), xg)
    for i in range(b):
        z = torch.matmul(taps, xg[i].reshape(g, cg, h * w), out=zbuf).reshape(g, 9, h, w)
        o = out[i]
        o.copy_(z[:, 4])  # centre tap covers every output
        for t in (0, 1, 2, 3, 5, 6, 7, 8):
            k, j = divmod(t, 3)
            (ys, ye), (xs, xe) = _tap_slices(k, h), _tap_slices(j, w)
            o[:, ys:ye, xs:xe] += z[:, t, ys + k - 1 : ye + k - 1, xs + j - 1 : xe + j - 1]
    return out


def _conv3x3_shared_backward(
    xg: torch.Tensor, dw: torch.Tensor, k1: torch.Tensor, loops: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``_conv3x3_shared_eager`` w.r.t. x (a new (B, G, C/G, H, W) buffer) and k1 (C/G * 9).

    ``loops=True``: both use the same per-sample matrix D of shifted copies of dw (D[t] = dw moved by tap t, zero
    where the tap fell on padding): dx = k1 @ D and dk1 = sum x @ D^T. ``loops=False``: transposed conv (a conv
    with the flipped kernel) and the conv weight gradient.
    """
    b, g, cg, h, w = xg.shape
    if not loops:
        dx = F.conv2d(dw, k1.flip(-1, -2).reshape(cg, 1, 3, 3).repeat(g, 1, 1, 1), padding=1, groups=g)
        dk = torch.ops.aten.convolution_backward(
            dw,
            xg.reshape(b, g * cg, h, w),
            k1.reshape(1, cg, 3, 3).repeat(g, 1, 1, 1),
            None,
            [1, 1],
            [1, 1],
            [1, 1],
            False,
            [0, 0],
            g,
            [False, True, False],
        )[1]
        return dx.reshape(b, g, cg, h, w), dk.sum(0).reshape(cg * 9)
    k9 = k1.reshape(cg, 9)
    dx = dw.new_empty(b, g, cg, h, w)
    dk = dw.new_zeros(g, cg, 9)
    d = dw.new_empty(g, 9, h, w)
    for i in range(b):
        d.zero_()
        dwi = dw[i]
        for t in range(9):
            k, j = divmod(t, 3)
            ys, ye = max(0, k - 1), min(h, h + k - 1)
            xs, xe = max(0, j - 1), min(w, w + j - 1)
            d[:, t, ys:ye, xs:xe] = dwi[:, ys - k + 1 : ye - k + 1, xs - j + 1 : xe - j + 1]
        df = d.reshape(g, 9, h * w)
        torch.matmul(k9, df, out=dx[i].reshape(g, cg, h * w))
        dk.baddbmm_(xg[i].reshape(g, cg, h * w), df.transpose(1, 2))
    return dx, dk.sum(0).reshape(cg * 9)


def _ema_forward(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    w3: torch.Tensor,
    b3: torch.Tensor,
    groups: int,
    cg: int,
    eps: float,
    eager: bool,
    workspace: _Workspace | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """EMA forward on (B, G, C/G, H, W) views. Returns the output and the tensors the backward needs.

    Exact identities relative to the official forward (float32 results agree to ~1e-6):

    * conv1x1 is pointwise, so conv on the concatenated strips then split == conv on each strip.
    * GroupNorm(C/G, C/G) on the (B*G, C/G, H, W) reshape normalises each channel over (H, W) per sample.
    * ``GAP(x1) = gn.bias`` because a normalised map has zero mean, so ``a1 = softmax(GAP x1) = softmax(gn.bias)``.
    * With a1 fixed, ``a1 . x2`` is a 3x3 conv of x with the kernel ``sum_c a1_c W3[c]``: one output per group.
    * ``GAP(x2) = W3 * window means + b3`` (see ``_window_means``), so x2 is never computed.
    * ``a2 . x1 = sum_c (a2 gamma rstd)_c (y_c - mu_c) + a2 . beta`` with y the GroupNorm input.

    ``eager=True`` (nothing records the ops: inside the autograd.Function or under no_grad) reuses buffers in
    place and uses the faster untraceable 3x3 conv; ``eager=False`` is plain differentiable, exportable ops. A
    ``workspace`` (CPU inference, requires ``eager``) holds every full-size intermediate; the saved tensors then
    alias its scratch buffers and are returned empty.
    """
    b, h, w = x.shape[0], x.shape[2], x.shape[3]
    g = groups  # g and cg are Python ints (not traced sizes): the exported graph needs static kernel shapes
    c = g * cg
    xg = x.reshape(b, g, cg, h, w)

    # 1x1 branch: directional means, the shared 1x1 conv on each strip, sigmoid gates.
    p_h = xg.mean(4)  # (B, G, C/G, H): mean over W
    p_w = xg.mean(3)  # (B, G, C/G, W): mean over H
    w1m = w1.reshape(cg, cg)
    s_h = torch.sigmoid(torch.matmul(w1m, p_h) + b1.reshape(cg, 1))
    s_w = torch.sigmoid(torch.matmul(w1m, p_w) + b1.reshape(cg, 1))
    if workspace is not None:
        y = torch.mul(xg, s_h.unsqueeze(-1), out=workspace.get("y", tuple(xg.shape), xg))
    else:
        y = xg * s_h.unsqueeze(-1)
    y = y.mul_(s_w.unsqueeze(-2)) if eager else y * s_w.unsqueeze(-2)  # GroupNorm input
    # Two-pass statistics (as accurate as GroupNorm's own); the centred map is kept instead of y.
    mu = y.mean((3, 4), keepdim=True)
    yc = y.sub_(mu) if eager else y - mu
    ycf = yc.reshape(b * g * cg, 1, h * w)
    var = torch.bmm(ycf, ycf.transpose(1, 2)).reshape(b, g, cg) / (h * w)
    rstd = torch.rsqrt(var + eps)

    # Cross-spatial attention vectors.
    a1 = torch.softmax(beta, 0)
    win = _window_means(xg, p_h, p_w).reshape(b, g, cg * 9)
    a2 = torch.softmax(torch.matmul(win, w3.reshape(cg, cg * 9).t()) + b3, -1)  # (B, G, C/G)

    # weights = a1 . x2 + a2 . x1, per pixel and group.
    k1 = torch.matmul(a1, w3.reshape(cg, cg * 9)).reshape(1, cg, 3, 3)
    if eager:
        t1 = _conv3x3_shared_eager(xg, k1, loops=x.device.type == "cpu", workspace=workspace)
    else:
        t1 = F.conv2d(x, k1.repeat(g, 1, 1, 1), padding=1, groups=g)
    k2 = a2 * gamma * rstd
    const = ((a2 * beta).sum(-1) + torch.dot(a1, b3))[:, :, None, None]
    if workspace is not None:  # t1 is scratch: accumulate the weights and the gate in place
        t2 = torch.matmul(k2.unsqueeze(-2), yc.reshape(b, g, cg, h * w), out=workspace.get("t2", (b, g, 1, h * w), x))
        att = t1.add_(t2.view(b, g, h, w)).add_(const).sigmoid_()
        return (xg * att.unsqueeze(2)).reshape(b, c, h, w), ()
    t2 = torch.matmul(k2.unsqueeze(-2), yc.reshape(b, g, cg, h * w)).reshape(b, g, h, w)
    wts = t1 + t2 + const
    att = torch.sigmoid(wts)
    out = (xg * att.unsqueeze(2)).reshape(b, c, h, w)
    return out, (xg, p_h, p_w, s_h, s_w, yc, mu, rstd, a1, a2, win, k1, att)


class _EMAFunction(torch.autograd.Function):
    """Training-time EMA with a hand-written backward.

    Autograd through ``_ema_forward`` keeps ~8 full-size intermediates alive and allocates as many again in the
    backward; on CPU every fresh large buffer is page-faulted in, which dominates the time. This backward derives
    the gradient analytically and accumulates into three full-size buffers.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, gamma, beta, w3, b3, groups: int, eps: float):
        out, saved = _ema_forward(x, w1, b1, gamma, beta, w3, b3, groups, w3.shape[0], eps, eager=True)
        ctx.save_for_backward(w1, b1, gamma, beta, w3, b3, *saved)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        w1, b1, gamma, beta, w3, b3, xg, p_h, p_w, s_h, s_w, yc, mu, rstd, a1, a2, win, k1, att = ctx.saved_tensors
        b, g, cg, h, w = xg.shape
        hw = h * w
        dout = dout.reshape(b, g, cg, h, w)

        # out = x * att: d att = sum_c dout * x (accumulated channel by channel: no full-size temporary).
        datt = dout[:, :, 0] * xg[:, :, 0]
        for i in range(1, cg):
            datt.addcmul_(dout[:, :, i], xg[:, :, i])
        dw = datt.mul_(att).mul_(1 - att)  # d weights, (B, G, H, W)

        # t1 = conv3x3(x, k1) + a1 . b3; dx starts as its input gradient.
        dx, dk1 = _conv3x3_shared_backward(xg, dw, k1, loops=xg.device.type == "cpu")
        dx.addcmul_(dout, att.unsqueeze(2))
        dsum = dw.sum((2, 3))  # (B, G): d of every per-group constant added to the weights

        # t2 = sum_c k2_c yc_c + a2 . beta, with k2 = a2 * gamma * rstd.
        dwf = dw.reshape(b * g, h * w, 1)
        ycdw = torch.bmm(yc.reshape(b * g, cg, h * w), dwf).reshape(b, g, cg)  # yc . dw per channel
        # a2 . x1 with x1 = yc * rstd * gamma + beta: gradients for a2, gamma, beta and the GroupNorm input y.
        da2 = gamma * rstd * ycdw + beta * dsum.unsqueeze(-1)
        dgamma = (a2 * rstd * ycdw).sum((0, 1))
        dbeta = (a2 * dsum.unsqueeze(-1)).sum((0, 1))
        # GroupNorm backward with d x1 = a2 (x) dw: dy = alpha (dw - mean dw) - alpha rstd^2 (yc . dw)/HW * yc.
        alpha = gamma * rstd * a2
        delta = -alpha * rstd * rstd * ycdw / hw
        dwc = dw - (dsum / hw)[:, :, None, None]
        dy = yc * delta[..., None, None]
        dy.addcmul_(alpha[..., None, None], dwc.unsqueeze(2))

        # y = x * s_h * s_w: dx += dy * s_h * s_w, and with y = yc + mu,
        # d u_h = (sum_w dy * y) * (1 - s_h) (the sigmoid derivative's s_h cancels the 1 / s_h), same for w.
        q = (yc + mu).mul_(dy)
        du_h = q.sum(4).mul_(1 - s_h)  # (B, G, C/G, H)
        du_w = q.sum(3).mul_(1 - s_w)  # (B, G, C/G, W)
        del q
        dy.mul_(s_h.unsqueeze(-1))
        dx.addcmul_(dy, s_w.unsqueeze(-2))
        del dy

        # Cross-spatial vectors: a1 = softmax(beta), a2 = softmax(W3 . win + b3).
        w3m = w3.reshape(cg, cg * 9)
        da1 = torch.mv(w3m, dk1) + b3 * dsum.sum()
        dbeta = dbeta + a1 * (da1 - torch.dot(a1, da1))
        dm2 = a2 * (da2 - (a2 * da2).sum(-1, keepdim=True))  # (B, G, C/G)
        dw3 = torch.outer(a1, dk1) + torch.matmul(dm2.reshape(-1, cg).t(), win.reshape(-1, cg * 9))
        db3 = a1 * dsum.sum() + dm2.sum((0, 1))
        dwin = torch.matmul(dm2, w3m).reshape(b, g, cg, 3, 3) / hw

        # 1x1 conv on the strips: u = W1 p + b1.
        w1m = w1.reshape(cg, cg)
        dw1 = torch.matmul(du_h, p_h.transpose(-1, -2)).sum((0, 1)) + torch.matmul(du_w, p_w.transpose(-1, -2)).sum(
            (0, 1)
        )
        db1 = du_h.sum((0, 1, 3)) + du_w.sum((0, 1, 3))
        dp_h = torch.matmul(w1m.t(), du_h)
        dp_w = torch.matmul(w1m.t(), du_w)

        # Means: p_h = mean over W, p_w = mean over H, and the window means (whole map, edge rows/cols, corners).
        dx.add_((dp_h / w + dwin.sum((3, 4)).unsqueeze(-1)).unsqueeze(-1))
        dx.add_((dp_w / h).unsqueeze(-2))
        drow, dcol = dwin.sum(4), dwin.sum(3)  # (B, G, C/G, 3): per excluded row / column
        dx[..., -1, :] -= drow[..., 0:1]
        dx[..., 0, :] -= drow[..., 2:3]
        dx[..., :, -1] -= dcol[..., 0:1]
        dx[..., :, 0] -= dcol[..., 2:3]
        dx[..., -1, -1] += dwin[..., 0, 0]
        dx[..., -1, 0] += dwin[..., 0, 2]
        dx[..., 0, -1] += dwin[..., 2, 0]
        dx[..., 0, 0] += dwin[..., 2, 2]

        dx = dx.reshape(b, g * cg, h, w)
        return dx, dw1.reshape(w1.shape), db1, dgamma, dbeta, dw3.reshape(w3.shape), db3, None, None


class EMA(RestoresGateTaps, nn.Module):
    """Efficient Multi-Scale Attention with cross-spatial learning (Ouyang et al., ICASSP 2023).

    The C channels are split into G groups of C/G; per group (weights shared across groups):
    ``x1 = GN(x * sigmoid(conv1x1(AvgPool_W x)) * sigmoid(conv1x1(AvgPool_H x)))`` (1x1 branch),
    ``x2 = conv3x3(x)`` (3x3 branch), ``w = softmax_c(GAP x1) . x2 + softmax_c(GAP x2) . x1`` (cross-spatial
    dot products over the C/G channels, per pixel) and ``y = x * sigmoid(w)``. Output shape equals input shape.

    YAML: ``[-1, 1, EMA, []]`` or ``[-1, 1, EMA, [16]]`` (the plugin injects c1 = channels of the ``from`` layer;
    extra args follow, here the number of groups G).

    Args:
        c1 (int): Input channels C (injected by the plugin's parser hook). Must be divisible by ``factor``.
        factor (int): Number of groups G (the official name; it is a group count, not a ratio). Default 32.

    Note:
        The official constructor is ``EMA(channels, c2=None, factor=32)``; here the second positional argument is
        ``factor`` (YAML rows pass G directly). Parameters and state_dict keys are the official ones.

    Examples:
        >>> EMA(64)(torch.randn(2, 64, 13, 21)).shape
        torch.Size([2, 64, 13, 21])
    """

    #: Args whose official default may not fit small channel counts (16 channels inside a yolov8n C2f): when a YAML
    #: row leaves the arg out, the plugin passes the largest valid value <= the default and logs it
    #: (:mod:`yolo_attn.plugin.fitting`). Explicit values are never changed: an invalid one raises.
    fit_defaults = {"factor": lambda c1, factor: c1 % factor == 0}

    #: The official code's computation (the 3x3 conv over every group, GroupNorm, two matmuls), which this forward
    #: avoids: FLOPs tables count EMA by it, the convention published numbers use (see
    #: :mod:`yolo_attn.bench.official_flops`). A string, so this file keeps importing only torch.
    official_formulation = "yolo_attn.bench.official_flops:ema_official"

    def __init__(self, c1: int, factor: int = 32) -> None:
        super().__init__()
        c1 = _check_channels("EMA", c1)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1 or c1 % factor:
            # The official code only asserts c1 // factor > 0 and then fails inside a reshape (e.g. c1 = 48, 80).
            raise ValueError(
                f"EMA: c1={c1} is not divisible by factor={factor!r} (factor is the number of groups G); "
                f"valid factor values for c1={c1}: {_divisors(c1)}"
            )
        self.c1, self.groups = c1, factor
        cg = c1 // factor
        self.gn = nn.GroupNorm(cg, cg)
        self.conv1x1 = nn.Conv2d(cg, cg, kernel_size=1, stride=1, padding=0)
        self.conv3x3 = nn.Conv2d(cg, cg, kernel_size=3, stride=1, padding=1)
        self._add_gate_taps()
        self._workspace = _Workspace()  # CPU inference scratch buffers, reused across calls (not state)

    def __getstate__(self) -> dict:
        state = super().__getstate__().copy()
        state.pop("_workspace", None)  # thread-local scratch memory: neither picklable nor worth copying
        return state

    def _add_gate_taps(self) -> None:
        self.spatial_gate = GateTap("spatial", groups=self.groups)  # sigmoid(weights): one H x W map per group

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # restores the gate tap of an older checkpoint
        self._workspace = _Workspace()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = [
            self.conv1x1.weight,
            self.conv1x1.bias,
            self.gn.weight,
            self.gn.bias,
            self.conv3x3.weight,
            self.conv3x3.bias,
        ]
        exporting = _exporting()
        device = x.device.type
        if x.dtype in (torch.float16, torch.bfloat16) or _autocast_enabled(device) or params[0].dtype != x.dtype:
            # Compute in float32, as autocast does for the official GroupNorm: the per-channel statistics and
            # softmaxes are not safe in half precision. Output keeps the input dtype.
            with torch.autocast(device, enabled=False):
                return self._forward(x.float(), [p.float() for p in params], exporting).to(x.dtype)
        return self._forward(x, params, exporting)

    def _forward(self, x: torch.Tensor, params: list[torch.Tensor], exporting: bool) -> torch.Tensor:
        x = x.contiguous()
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))
        cg = self.c1 // self.groups
        if self.spatial_gate.observed and not exporting:  # someone reads the gate: the path that materialises it
            out, saved = _ema_forward(x, *params, self.groups, cg, self.gn.eps, eager=False)
            self.spatial_gate(saved[-1])
            return out
        if needs_grad and not exporting:
            return _EMAFunction.apply(x, *params, self.groups, self.gn.eps)
        # Inference, export and tracing: the same maths as plain ops (in place, untraceable and with reused scratch
        # buffers only when nothing records them).
        eager = not (needs_grad or exporting)
        workspace = None
        if eager and x.device.type == "cpu":
            workspace = self._workspace  # set by __init__ and __setstate__ (unpickling, deepcopy)
        return _ema_forward(x, *params, self.groups, cg, self.gn.eps, eager=eager, workspace=workspace)[0]

    def extra_repr(self) -> str:
        return f"c1={self.c1}, factor={self.groups}"
