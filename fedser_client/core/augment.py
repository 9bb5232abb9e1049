"""Stochastic feature augmentation (SFA): x' = alpha * x + r, per element,
alpha ~ N(1, sigma1^2), r ~ N(0, sigma2^2)."""

from __future__ import annotations

import torch


def stochastic_feature_augmentation(x: torch.Tensor, sigma1: float, sigma2: float, generator: torch.Generator | None) -> torch.Tensor:
    alpha = 1.0 + sigma1 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    noise = sigma2 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return alpha * x + noise
