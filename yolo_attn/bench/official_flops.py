"""Official-formulation FLOPs: count a plugin layer as its paper's official code computes it.

Why: a layer may compute the official maths in a cheaper, equivalent way (yolo-attn's EMA never materialises the
official 3x3 branch over every group). Counting what it executes is honest about *this* implementation, but papers
and the model zoos count the architecture as the official code runs it; a table of executed counts pasted next to
published ones reports an EMA five times cheaper than everyone else's. So ``yolo-attn bench`` reports both: the
headline ``GFLOPs`` by the official formulation and ``GFLOPs (executed)``.

How a layer declares its official count -- derived, never typed in:

* A layer class whose forward is not the official formulation names one with a class attribute
  ``official_formulation = "package.module:function"`` (a string, so ``yolo_attn.layers`` keeps importing only
  torch), or a function directly. For classes whose source cannot carry the attribute (third-party modules, layers
  owned elsewhere), :func:`register_official_formulation` maps the class to a function.
* The function, ``fn(module, *inputs, **kwargs) -> output``, computes the layer's output the way the official code
  does, with the module's own parameters (it may call the module's children; each child then gets its own official
  count in the per-module breakdown).
* :func:`yolo_attn.bench.flops.count_flops` records the real inputs of every such module during its counting pass
  (layers nested inside stock blocks included, e.g. an EMA inside a C2f), runs the formulation on them under the same
  per-aten-op counter, and substitutes its count for the module's executed count in every row that contains it. The
  formulation's output must equal the module's output (relative L2 error <= :data:`FORMULATION_RTOL`), so a wrong
  formulation cannot silently change the headline figure.
* A layer that declares nothing is counted as executed (its forward already is the official formulation: SE, CBAM,
  ECA, CoordAtt; stock Ultralytics modules). ``official_formulation = None`` on a subclass opts out of an inherited
  declaration.

The formulations below are written from the papers and the official repositories (cited per function).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FORMULATION_RTOL",
    "OfficialFormulation",
    "ema_official",
    "formulation_name",
    "odconv2d_official",
    "official_formulation_of",
    "register_official_formulation",
    "unregister_official_formulation",
]

#: ``fn(module, *inputs, **kwargs) -> output``: the module's output computed as the official code computes it.
OfficialFormulation = Callable[..., Any]

#: Maximum relative L2 difference between a formulation's output and the module's own output (float32 maths done in
#: a different order agrees to ~1e-6; 1e-3 leaves room for large activations of random weights, and a formulation
#: of different maths is off by O(1)).
FORMULATION_RTOL = 1e-3

_REGISTERED: dict[type, OfficialFormulation] = {}
_RESOLVED: dict[str, OfficialFormulation] = {}


def register_official_formulation(
    cls: type[nn.Module], fn: OfficialFormulation | None = None
) -> OfficialFormulation | Callable[[OfficialFormulation], OfficialFormulation]:
    """Declare the official formulation of a layer class whose source cannot carry ``official_formulation``.

    Usable as a call (``register_official_formulation(MyLayer, fn)``) or a decorator on the function. A class
    attribute ``official_formulation`` on the layer wins over a registration (subclasses inherit both).

    Args:
        cls: The layer class (instances of subclasses match too).
        fn: ``fn(module, *inputs, **kwargs) -> output``.

    Returns:
        ``fn`` (or the decorator).
    """

    def _register(func: OfficialFormulation) -> OfficialFormulation:
        if not callable(func):
            raise TypeError(f"register_official_formulation({cls.__name__}): {func!r} is not callable")
        _REGISTERED[cls] = func
        return func

    return _register if fn is None else _register(fn)


def unregister_official_formulation(cls: type[nn.Module]) -> OfficialFormulation | None:
    """Remove a registration made by :func:`register_official_formulation`; returns it (None if there was none)."""
    return _REGISTERED.pop(cls, None)


def _resolve(path: str, owner: type) -> OfficialFormulation:
    if path in _RESOLVED:
        return _RESOLVED[path]
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{owner.__qualname__}.official_formulation = {path!r}: expected 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{owner.__qualname__}.official_formulation = {path!r} cannot be imported: {exc}") from exc
    if not callable(obj):
        raise ValueError(f"{owner.__qualname__}.official_formulation = {path!r} is not callable")
    _RESOLVED[path] = obj
    return obj


def official_formulation_of(module: nn.Module) -> OfficialFormulation | None:
    """The official formulation declared for ``module``'s class, or None (= its forward is the official one).

    Raises:
        ValueError: The class names a formulation that cannot be imported or is not callable.
    """
    cls = type(module)
    for klass in cls.__mro__:  # the nearest declaration wins: an attribute, then a registration, on the same class
        if "official_formulation" in klass.__dict__:
            declared = klass.__dict__["official_formulation"]
            if declared is None:  # explicit opt-out: this class's forward is the official formulation
                return None
            if isinstance(declared, str):
                return _resolve(declared, cls)
            if isinstance(declared, staticmethod):
                declared = declared.__func__
            if not callable(declared):
                raise ValueError(f"{cls.__qualname__}.official_formulation = {declared!r} is not callable")
            return declared
        if klass in _REGISTERED:
            return _REGISTERED[klass]
    return None


def formulation_name(fn: OfficialFormulation) -> str:
    """``module:qualname`` of a formulation (recorded in reports)."""
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


# ------------------------------------------------------------------------------------------------------------- EMA
def ema_official(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """EMA as the official code computes it (Ouyang et al., ICASSP 2023).

    Written from the paper (Fig. 2) and ``EMA.forward`` of https://github.com/YOLOonMe/EMA-attention-module: the
    input is reshaped to (B*G, C/G, H, W); the 1x1 branch pools along W and H (``AdaptiveAvgPool2d((None, 1))`` /
    ``((1, None))``), runs the shared 1x1 conv on the concatenated strips, gates with two sigmoids and applies
    GroupNorm(C/G, C/G); the 3x3 branch is the shared 3x3 conv over every group; the cross-spatial step takes a
    softmax over the channels of each branch's global average pool and two (1, C/G) x (C/G, H*W) matmuls; the sum is
    a sigmoid gate per pixel and group.

    Args:
        m: A :class:`yolo_attn.layers.EMA` (uses ``groups``, ``conv1x1``, ``conv3x3``, ``gn``).
        x: (B, C, H, W) input.
    """
    b, c, h, w = x.shape
    g = m.groups
    group_x = x.reshape(b * g, -1, h, w)
    x_h = F.adaptive_avg_pool2d(group_x, (h, 1))
    x_w = F.adaptive_avg_pool2d(group_x, (1, w)).permute(0, 1, 3, 2)
    hw = m.conv1x1(torch.cat([x_h, x_w], dim=2))
    x_h, x_w = torch.split(hw, [h, w], dim=2)
    x1 = m.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
    x2 = m.conv3x3(group_x)
    x11 = torch.softmax(F.adaptive_avg_pool2d(x1, 1).reshape(b * g, -1, 1).permute(0, 2, 1), dim=-1)
    x12 = x2.reshape(b * g, c // g, -1)
    x21 = torch.softmax(F.adaptive_avg_pool2d(x2, 1).reshape(b * g, -1, 1).permute(0, 2, 1), dim=-1)
    x22 = x1.reshape(b * g, c // g, -1)
    weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * g, 1, h, w)
    return (group_x * weights.sigmoid()).reshape(b, c, h, w)


# ---------------------------------------------------------------------------------------------------------- ODConv
def odconv2d_official(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ODConv2d as the official code computes it (Li et al., ICLR 2022).

    Written from ``Attention`` and ``ODConv2d`` of https://github.com/OSVAI/ODConv (``modules/odconv.py``): GAP ->
    1x1 conv (no bias) -> BN -> ReLU -> four heads (channel, filter, spatial: sigmoid; kernel: softmax over the
    bank; all divided by the temperature; a skipped head is the constant 1). ``_forward_impl_common``: scale the input
    by the channel attention, form ``sum_n a_s * a_wn * W_n`` elementwise over the bank (broadcast multiply and sum:
    no matrix product), one grouped conv with the batch folded into the groups, scale by the filter attention.
    ``_forward_impl_pw1x`` (k = 1 and one kernel): a plain conv with ``W_0``. A ``bias`` (only present after
    yolo-attn folded the following BatchNorm into the layer) is added at the end, as that BatchNorm's shift.

    Args:
        m: A :class:`yolo_attn.layers.ODConv2d` (eval mode: the attention BN uses its running statistics).
        x: (B, C_in, H, W) input.
    """
    att = m.attention
    b, cin, h, w = x.shape
    z = att.fc(F.adaptive_avg_pool2d(x, 1))
    z = F.batch_norm(z, att.bn.running_mean, att.bn.running_var, att.bn.weight, att.bn.bias, False, 0.0, att.bn.eps)
    z = F.relu(z)
    t = att.temperature
    channel = torch.sigmoid(att.channel_fc(z).view(b, -1, 1, 1) / t)
    filt: torch.Tensor | float = 1.0
    spatial: torch.Tensor | float = 1.0
    kernel: torch.Tensor | float = 1.0
    if att.filter_fc is not None:
        filt = torch.sigmoid(att.filter_fc(z).view(b, -1, 1, 1) / t)
    if att.spatial_fc is not None:
        spatial = torch.sigmoid(att.spatial_fc(z).view(b, 1, 1, 1, m.k, m.k) / t)
    if att.kernel_fc is not None:
        kernel = torch.softmax(att.kernel_fc(z).view(b, -1, 1, 1, 1, 1) / t, dim=1)
    if m.k == 1 and m.kernel_num == 1:  # official _forward_impl_pw1x
        out = F.conv2d(x * channel, m.weight.squeeze(0), None, m.s, m.p, m.d, m.g)
    else:  # official _forward_impl_common
        xb = (x * channel).reshape(1, -1, h, w)
        agg = spatial * kernel * m.weight.unsqueeze(0)
        agg = torch.sum(agg, dim=1).view(-1, cin // m.g, m.k, m.k)
        out = F.conv2d(xb, agg, None, m.s, m.p, m.d, m.g * b)
        out = out.view(b, m.c2, out.size(-2), out.size(-1))
    out = out * filt
    if m.bias is not None:
        out = out + m.bias.view(1, -1, 1, 1)
    return out
