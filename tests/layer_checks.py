"""Helpers shared by the layer equivalence suites (test_layers, test_layers_comparison_set)."""

from __future__ import annotations

import torch
from torch import nn


def randomize_(module: nn.Module, seed: int, std: float = 0.5) -> nn.Module:
    """Random parameters and BN running stats: defaults like gamma=1, beta=0 (or SA's zero/one init) would hide
    ordering bugs, a swapped half or a missing term."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return module


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal to 1e-5, relative to the expected tensor's largest magnitude (at least 1)."""
    scale = max(1.0, expected.detach().abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{what}: {m}")
