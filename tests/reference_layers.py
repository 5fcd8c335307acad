"""Deliberately naive, official-style reference implementations of the attention layers.

Written from ``/work/shared/notes/layers.md`` (which records what each paper's official repository does) and kept
independent of ``yolo_attn``: nothing here imports the production code. Structure, parameter names and shapes follow
the official code so that ``load_state_dict(strict=True)`` copies weights across in either direction:

* SE: torchvision-style names ``fc1``/``fc2`` (1x1 convs with bias; the official code is Caffe).
* CBAM: Jongchan/attention-module (``ChannelGate.mlp.{1,3}`` Linear, ``SpatialGate.spatial.{conv,bn}``).
* ECA: BangguWu/ECANet ``eca_layer`` (``conv`` Conv1d).
* CoordAtt: houqb/CoordAttention (``conv1``, ``bn1``, ``act``, ``conv_h``, ``conv_w``).
* EMA: YOLOonMe/EMA-attention-module (``gn``, ``conv1x1``, ``conv3x3`` + parameter-free ``softmax``, ``agp``,
  ``pool_h``, ``pool_w``), grouped by reshaping to (B*G, C/G, H, W) exactly as upstream.
* ODConv: OSVAI/ODConv ``modules/odconv.py`` (``attention.{fc,bn,channel_fc,filter_fc,spatial_fc,kernel_fc}``,
  ``weight``).
* SimAM, ShuffleAttention, NAM, TripletAttention: see the section at the end of the file (official repositories
  named there).

Each reference also takes a ``variant`` switch used only by the negative-control tests (a known-wrong variant that
the equivalence check must reject), so those tests prove the comparison can fail.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RefSE",
    "RefSEBlog",
    "RefCBAM",
    "RefECA",
    "RefCoordAtt",
    "RefEMA",
    "RefODConv2d",
    "RefODConv",
    "ref_eca_kernel_size",
    "RefSimAM",
    "RefShuffleAttention",
    "RefNAM",
    "RefTripletAttention",
]


# ----------------------------------------------------------------------------------------------------------------- SE
class RefSE(nn.Module):
    """Squeeze-and-Excitation: GAP -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias) -> sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=True)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.avgpool(x)
        s = self.fc1(s)
        s = self.relu(s)
        s = self.fc2(s)
        s = self.sigmoid(s)
        return x * s


class RefSEBlog(nn.Module):
    """The common blog variant (``nn.Linear(bias=False)``): a negative control, not the paper."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.size()
        y = F.adaptive_avg_pool2d(x, 1).view(b, c)
        return x * self.fc(y).view(b, c, 1, 1)


# --------------------------------------------------------------------------------------------------------------- CBAM
class _RefBasicConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=1, padding=(k - 1) // 2, bias=False)
        # Official BasicConv: BatchNorm2d(eps=1e-5, momentum=0.01, affine=True).
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class _RefFlatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1)


class _RefChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            _RefFlatten(),
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = None
        for pool in ("avg", "max"):
            if pool == "avg":
                p = F.avg_pool2d(x, (x.size(2), x.size(3)), stride=(x.size(2), x.size(3)))
            else:
                p = F.max_pool2d(x, (x.size(2), x.size(3)), stride=(x.size(2), x.size(3)))
            raw = self.mlp(p)
            att = raw if att is None else att + raw
        scale = torch.sigmoid(att).unsqueeze(2).unsqueeze(3).expand_as(x)
        return x * scale


class _RefSpatialGate(nn.Module):
    def __init__(self, kernel_size: int, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.spatial = _RefBasicConv(2, 1, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mx = torch.max(x, 1)[0].unsqueeze(1)
        mn = torch.mean(x, 1).unsqueeze(1)
        # Official order is [max, mean]; "mean_max" is the blog order (negative control).
        comp = torch.cat((mn, mx) if self.variant == "mean_max" else (mx, mn), dim=1)
        return x * torch.sigmoid(self.spatial(comp))


class RefCBAM(nn.Module):
    """CBAM as in Jongchan/attention-module: channel gate (avg+max, shared Linear MLP) then spatial gate."""

    def __init__(self, channels: int, kernel_size: int = 7, reduction: int = 16, variant: str = "official") -> None:
        super().__init__()
        self.ChannelGate = _RefChannelGate(channels, reduction)
        self.SpatialGate = _RefSpatialGate(kernel_size, variant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


# ---------------------------------------------------------------------------------------------------------------- ECA
def ref_eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """The expression printed in the ECA paper / README (truncate, then bump even values to the next odd)."""
    t = int(abs((math.log(channels, 2) + b) / gamma))
    return t if t % 2 else t + 1


class RefECA(nn.Module):
    """BangguWu/ECANet ``eca_layer``: GAP -> Conv1d over channels (no bias) -> sigmoid -> scale."""

    def __init__(self, channels: int, k_size: int = 3) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        y = self.sigmoid(y)
        return x * y.expand_as(x)


# ----------------------------------------------------------------------------------------------------------- CoordAtt
class _RefHSigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + 3) / 6


class _RefHSwish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sigmoid = _RefHSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(x)


class RefCoordAtt(nn.Module):
    """houqb/CoordAttention ``CoordAtt`` with inp == oup."""

    def __init__(self, channels: int, reduction: int = 32, variant: str = "official") -> None:
        super().__init__()
        self.variant = variant
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = _RefHSwish()
        self.conv_h = nn.Conv2d(mip, channels, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        n, c, h, w = x.size()
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = torch.cat([x_h, x_w], dim=2)
        y = self.conv1(y)
        y = self.bn1(y)
        y = self.act(y)
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.permute(0, 1, 3, 2)
        if self.variant == "swapped_heads":  # negative control: conv_h/conv_w applied to the wrong strips
            a_h = self.conv_w(x_h).sigmoid()
            a_w = self.conv_h(x_w).sigmoid()
        else:
            a_h = self.conv_h(x_h).sigmoid()
            a_w = self.conv_w(x_w).sigmoid()
        return identity * a_w * a_h


# ---------------------------------------------------------------------------------------------------------------- EMA
class RefEMA(nn.Module):
    """YOLOonMe/EMA-attention-module ``EMA``: everything per group on a (B*G, C/G, H, W) reshape."""

    def __init__(self, channels: int, factor: int = 32, variant: str = "official") -> None:
        super().__init__()
        self.groups = factor
        assert channels // self.groups > 0
        self.variant = variant
        # Negative control "softmax_wrong_axis": softmax over the singleton axis instead of the channels.
        self.softmax = nn.Softmax(1 if variant == "softmax_wrong_axis" else -1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        cg = channels // self.groups
        self.gn = nn.GroupNorm(cg, cg)
        self.conv1x1 = nn.Conv2d(cg, cg, kernel_size=1, stride=1, padding=0)
        self.conv3x3 = nn.Conv2d(cg, cg, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        group_x = x.reshape(b * self.groups, -1, h, w)
        x_h = self.pool_h(group_x)
        x_w = self.pool_w(group_x).permute(0, 1, 3, 2)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(group_x)
        x11 = self.softmax(self.agp(x1).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x12 = x2.reshape(b * self.groups, c // self.groups, -1)
        x21 = self.softmax(self.agp(x2).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x22 = x1.reshape(b * self.groups, c // self.groups, -1)
        weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * self.groups, 1, h, w)
        return (group_x * weights.sigmoid()).reshape(b, c, h, w)


# ------------------------------------------------------------------------------------------------------------- ODConv
class _RefODAttention(nn.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        groups: int = 1,
        reduction: float = 0.0625,
        kernel_num: int = 4,
        min_channel: int = 16,
        variant: str = "official",
    ) -> None:
        super().__init__()
        a = max(int(cin * reduction), min_channel)
        self.kernel_size = k
        self.kernel_num = kernel_num
        self.temperature = 1.0
        self.variant = variant
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(cin, a, 1, bias=False)
        self.bn = nn.BatchNorm2d(a)
        self.relu = nn.ReLU(inplace=True)
        self.channel_fc = nn.Conv2d(a, cin, 1, bias=True)
        self.has_filter = not (cin == groups and cin == cout)
        if self.has_filter:
            self.filter_fc = nn.Conv2d(a, cout, 1, bias=True)
        self.has_spatial = k != 1
        if self.has_spatial:
            self.spatial_fc = nn.Conv2d(a, k * k, 1, bias=True)
        self.has_kernel = kernel_num != 1
        if self.has_kernel:
            self.kernel_fc = nn.Conv2d(a, kernel_num, 1, bias=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            if isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor):
        x = self.relu(self.bn(self.fc(self.avgpool(x))))
        t = self.temperature
        ch = torch.sigmoid(self.channel_fc(x).view(x.size(0), -1, 1, 1) / t)
        fi = torch.sigmoid(self.filter_fc(x).view(x.size(0), -1, 1, 1) / t) if self.has_filter else 1.0
        if self.has_spatial:
            sp = self.spatial_fc(x).view(x.size(0), 1, 1, 1, self.kernel_size, self.kernel_size)
            sp = torch.sigmoid(sp / t)
        else:
            sp = 1.0
        if self.has_kernel:
            ke = self.kernel_fc(x).view(x.size(0), -1, 1, 1, 1, 1)
            # Negative control "softmax_batch_axis": softmax over the batch instead of the kernels.
            ke = F.softmax(ke / t, dim=0 if self.variant == "softmax_batch_axis" else 1)
        else:
            ke = 1.0
        return ch, fi, sp, ke


class RefODConv2d(nn.Module):
    """OSVAI/ODConv ``ODConv2d``: per-sample aggregated kernel, one grouped conv over the batch."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        reduction: float = 0.0625,
        kernel_num: int = 4,
        variant: str = "official",
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.k = cin, cout, k
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.kernel_num = kernel_num
        self.attention = _RefODAttention(cin, cout, k, groups, reduction, kernel_num, variant=variant)
        self.weight = nn.Parameter(torch.randn(kernel_num, cout, cin // groups, k, k))
        for i in range(kernel_num):
            nn.init.kaiming_normal_(self.weight[i], mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ch, fi, sp, ke = self.attention(x)
        if self.k == 1 and self.kernel_num == 1:  # official _forward_impl_pw1x
            x = x * ch
            out = F.conv2d(x, self.weight.squeeze(0), None, self.stride, self.padding, self.dilation, self.groups)
            return out * fi
        b, cin, h, w = x.size()
        x = x * ch
        x = x.reshape(1, -1, h, w)
        agg = sp * ke * self.weight.unsqueeze(0)
        agg = torch.sum(agg, dim=1).view(-1, self.cin // self.groups, self.k, self.k)
        out = F.conv2d(x, agg, None, self.stride, self.padding, self.dilation, self.groups * b)
        out = out.view(b, self.cout, out.size(-2), out.size(-1))
        return out * fi


class RefODConv(nn.Module):
    """ODConv2d + BatchNorm2d + SiLU with 'same' padding (what an Ultralytics ``Conv`` row becomes)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, kernel_num: int = 4, **kw) -> None:
        super().__init__()
        self.conv = RefODConv2d(c1, c2, k, s, k // 2, 1, g, kernel_num=kernel_num, **kw)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


# ============================================================================= the EMA paper's comparison set (issue 9)
# Written from the official repositories (read with the search tool), independent of yolo_attn:
# * SimAM: ZjjConan/SimAM ``simam_module`` (parameter-free; n = H*W - 1, lambda = 1e-4).
# * ShuffleAttention: wofmanaf/SA-Net ``models/sa_resnet.py`` ``sa_layer`` (cweight/cbias/sweight/sbias, gn).
# * NAM: Christian-lyc/NAM ``MODELS/attention.py`` (latest: ``Att`` wrapping ``Channel_Att`` with ``bn2``).
# * TripletAttention: landskape-ai/triplet-attention ``MODELS/triplet_attention.py`` (ChannelGateH/W, SpatialGate).
# Each follows the official module's op sequence literally (permute/contiguous copies, chunk/cat, pow, ...).


# -------------------------------------------------------------------------------------------------------------- SimAM
class RefSimAM(nn.Module):
    """ZjjConan/SimAM ``simam_module``.

    Negative control ``variant="n_hw"``: divides the energy sum by H*W instead of H*W - 1 (a common re-write).
    """

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4, variant: str = "official") -> None:
        super().__init__()
        self.activaton = nn.Sigmoid()  # (sic) the official attribute name
        self.e_lambda = e_lambda
        self.variant = variant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        n = w * h if self.variant == "n_hw" else w * h - 1
        x_minus_mu_square = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = x_minus_mu_square / (4 * (x_minus_mu_square.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5
        return x * self.activaton(y)


# --------------------------------------------------------------------------------------------------- ShuffleAttention
class RefShuffleAttention(nn.Module):
    """wofmanaf/SA-Net ``sa_layer``: group reshape, chunk into channel/spatial halves, concat, 2-way shuffle.

    Negative control ``variant="swapped_halves"``: the channel gate on the second half and the spatial gate on the
    first.
    """

    def __init__(self, channel: int, groups: int = 64, variant: str = "official") -> None:
        super().__init__()
        self.groups = groups
        self.variant = variant
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        half = channel // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.sigmoid = nn.Sigmoid()
        self.gn = nn.GroupNorm(half, half)

    @staticmethod
    def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b, groups, -1, h, w)
        x = x.permute(0, 2, 1, 3, 4)
        return x.reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b * self.groups, -1, h, w)
        x_0, x_1 = x.chunk(2, dim=1)
        if self.variant == "swapped_halves":
            x_0, x_1 = x_1, x_0
        xn = self.avg_pool(x_0)
        xn = self.cweight * xn + self.cbias
        xn = x_0 * self.sigmoid(xn)
        xs = self.gn(x_1)
        xs = self.sweight * xs + self.sbias
        xs = x_1 * self.sigmoid(xs)
        out = torch.cat([xs, xn] if self.variant == "swapped_halves" else [xn, xs], dim=1)
        out = out.reshape(b, -1, h, w)
        return self.channel_shuffle(out, 2)


# ---------------------------------------------------------------------------------------------------------------- NAM
class _RefNAMChannelAtt(nn.Module):
    def __init__(self, channels: int, variant: str) -> None:
        super().__init__()
        self.channels = channels
        self.variant = variant
        self.bn2 = nn.BatchNorm2d(self.channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.bn2(x)
        if self.variant == "weight_with_grad":  # negative control: w taken without .data (gradient flows through w)
            weight_bn = self.bn2.weight.abs() / torch.sum(self.bn2.weight.abs())
        else:
            weight_bn = self.bn2.weight.data.abs() / torch.sum(self.bn2.weight.data.abs())
        x = x.permute(0, 2, 3, 1).contiguous()
        x = torch.mul(weight_bn, x)
        x = x.permute(0, 3, 1, 2).contiguous()
        if self.variant == "relu":  # negative control: the earlier revision's ReLU before the sigmoid
            x = F.relu(x)
        return torch.sigmoid(x) * residual


class RefNAM(nn.Module):
    """Christian-lyc/NAM ``Att`` (latest revision: the channel branch only)."""

    def __init__(self, channels: int, variant: str = "official") -> None:
        super().__init__()
        self.Channel_Att = _RefNAMChannelAtt(channels, variant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.Channel_Att(x)


# --------------------------------------------------------------------------------------------------- TripletAttention
class _RefTripletBasicConv(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, padding: int, momentum: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, stride=1, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=momentum, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class _RefTripletGate(nn.Module):
    """Official ``SpatialGate``: ChannelPool ([max, mean] over dim 1) -> BasicConv(2, 1, 7) -> sigmoid -> scale."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.variant = variant
        momentum = 0.1 if variant == "bn_momentum_default" else 0.01
        self.spatial = _RefTripletBasicConv(2, 1, 7, padding=3, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mx, mn = torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)
        compressed = torch.cat((mn, mx) if self.variant == "mean_max" else (mx, mn), dim=1)
        scale = torch.sigmoid(self.spatial(compressed))
        return x * scale


class RefTripletAttention(nn.Module):
    """landskape-ai/triplet-attention ``TripletAttention``: permuted copies, three gates, mean of the outputs.

    Negative controls: ``variant="mean_max"`` (pool order swapped) and ``"bn_momentum_default"`` (BN momentum 0.1
    instead of the official 0.01: outputs agree, running statistics after a training step do not).
    """

    def __init__(
        self,
        gate_channels: int,
        reduction_ratio: int = 16,
        pool_types: tuple[str, ...] = ("avg", "max"),
        no_spatial: bool = False,
        variant: str = "official",
    ) -> None:
        super().__init__()
        self.ChannelGateH = _RefTripletGate(variant)
        self.ChannelGateW = _RefTripletGate(variant)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = _RefTripletGate(variant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_perm1 = x.permute(0, 2, 1, 3).contiguous()
        x_out11 = self.ChannelGateH(x_perm1).permute(0, 2, 1, 3).contiguous()
        x_perm2 = x.permute(0, 3, 2, 1).contiguous()
        x_out21 = self.ChannelGateW(x_perm2).permute(0, 3, 2, 1).contiguous()
        if not self.no_spatial:
            return (1 / 3) * (self.SpatialGate(x) + x_out11 + x_out21)
        return (1 / 2) * (x_out11 + x_out21)
