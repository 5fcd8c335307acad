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
