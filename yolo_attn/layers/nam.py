"""NAM: normalization-based attention (channel branch).

Paper: Yichao Liu, Zongru Shao, Yueyang Teng, Nico Hoffmann, "NAM: Normalization-based Attention Module",
NeurIPS 2021 Workshop (ImageNet PPML), https://arxiv.org/abs/2111.12419
Official code: https://github.com/Christian-lyc/NAM (``MODELS/attention.py``, ``Att`` / ``Channel_Att``)

The official module is the channel branch only (its latest ``attention.py`` has no spatial branch): BatchNorm the
input, scale each channel by ``w_c = |gamma_c| / sum_c |gamma_c|`` (read from ``bn2.weight.data``, so no gradient
flows through w), and gate the input: ``out = x * sigmoid(w * BN(x))``. The gate is per element. An earlier revision
of that file had a ReLU before the sigmoid and a size-bound spatial branch; both were removed upstream and are not
reproduced. Parameter names follow the official ``Att`` (``Channel_Att.bn2``), so its state_dicts load with
``strict=True``.

Computed as one BatchNorm call whose affine parameters are ``w * gamma`` and ``w * beta`` (the same maths, gradients
and running statistics), then the sigmoid and product: three full-size passes instead of the official six.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolo_attn.layers._gate import GateTap
from yolo_attn.layers.se import _check_channels, _exporting

__all__ = ["NAM"]


class _ChannelAtt(nn.Module):
    """Holds the official ``Channel_Att.bn2`` (the computation is in :meth:`NAM.forward`)."""

    def __init__(self, c1: int) -> None:
        super().__init__()
        self.channels = c1
        self.bn2 = nn.BatchNorm2d(c1, affine=True)


def _bn_call_args(bn: nn.BatchNorm2d) -> tuple[torch.Tensor | None, torch.Tensor | None, bool, float]:
    """Running stats, training flag and momentum exactly as ``_BatchNorm.forward`` passes them to F.batch_norm.

    Also counts the batch (``num_batches_tracked``) the way that forward does.
    """
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep = not bn.training or bn.track_running_stats
    return (bn.running_mean if keep else None), (bn.running_var if keep else None), use_batch_stats, factor


class NAM(nn.Module):
    """NAM channel attention (Liu et al., 2021), as in the official code's latest ``Att``/``Channel_Att``.

    ``out = x * sigmoid(w * BN(x))`` with ``w_c = |gamma_c| / sum |gamma|`` (BN's own weights, no gradient through
    w). BatchNorm2d with PyTorch defaults (momentum 0.1, eps 1e-5), trained and tracked as usual. Output shape equals
    input shape.

    YAML: ``[-1, 1, NAM, []]`` (the plugin injects c1 = channels of the ``from`` layer; NAM has no other args).

    Args:
        c1 (int): Input channels C (injected by the plugin's parser hook).

    Note:
        The official constructor ``Att(channels, shape, out_channels=None, no_spatial=True)`` takes a feature size for
        the removed spatial branch; none of those arguments affects the channel branch, so they are not taken here.
        The gate is per element (it depends on x itself): ``self.element_gate`` (:class:`GateTap`, kind ``"element"``).

    Examples:
        >>> NAM(64)(torch.randn(2, 64, 13, 21)).shape
        torch.Size([2, 64, 13, 21])
    """

    def __init__(self, c1: int) -> None:
        super().__init__()
        self.c1 = _check_channels("NAM", c1)
        self.Channel_Att = _ChannelAtt(self.c1)  # official attribute names (state_dict compatibility)
        self.element_gate = GateTap("element")  # sigmoid(w * BN(x)), (B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.Channel_Att.bn2
        w = bn.weight.detach().abs()
        w = w / w.sum()
        if type(bn) is nn.BatchNorm2d:
            # w * (gamma * x_hat + beta) == (w * gamma) * x_hat + w * beta: one BatchNorm call gives the gate logits,
            # with the same gradients for gamma/beta (w is a constant) and the same running-stat updates.
            running_mean, running_var, use_batch_stats, factor = _bn_call_args(bn)
            logits = F.batch_norm(
                x, running_mean, running_var, bn.weight * w, bn.bias * w, use_batch_stats, factor, bn.eps
            )
        else:  # a converted norm (SyncBatchNorm, frozen BN): call it as the official code does
            logits = bn(x) * w[:, None, None]
        gate = logits.sigmoid_()  # in place: batch_norm's backward does not need its output
        exporting = _exporting()
        if exporting or self.element_gate.observed or torch.is_grad_enabled():
            return x * self.element_gate(gate)
        return gate.mul_(x)  # inference: reuse the gate's buffer

    def extra_repr(self) -> str:
        return f"c1={self.c1}"
