"""Feature-level views (DESIGN §5).

- Stochastic feature augmentation (SFA): x' = alpha * x + r, per element, alpha ~ N(1, sigma1^2),
  r ~ N(0, sigma2^2). Weak and strong views differ in sigma1. Per element x' ~ N(x, sigma1^2 x^2 + sigma2^2),
  which is how it is drawn: one normal per element, not two (random draws were most of MvPL's view pass).
- Options of the strong view, each off by default, applied in this order before SFA and masking:
  speaker style (a row re-normalised as if it came from another speaker: z' = z * scale_k + shift_k for a
  random k of the client's style bank), mixup with another unlabeled row of the batch (the row keeps at
  least 1 - mixup of itself, so its pseudo-label still names it), and random feature masking (a share of
  the z-scored features set to 0, the speaker's mean).

Every draw comes from the generator passed in; nothing reads a tensor back to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def stochastic_feature_augmentation(x: torch.Tensor, sigma1: float, sigma2: float, generator: torch.Generator | None) -> torch.Tensor:
    """alpha * x + r drawn as x + sqrt(sigma1^2 x^2 + sigma2^2) * e, e ~ N(0, 1): per element the same normal
    distribution (the sum of two independent normals), from one draw instead of two."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return _scale_and_shift(noise, x, sigma1, sigma2)


def _scale_and_shift(noise: torch.Tensor, x: torch.Tensor, sigma1: float, sigma2: float) -> torch.Tensor:
    """x + sqrt(sigma1^2 x^2 + sigma2^2) * noise, written into `noise` (broadcast over its leading dimensions):
    the same float operations as the expression, without two noise-sized temporaries."""
    return noise.mul_(torch.sqrt(sigma1**2 * x * x + sigma2**2)).add_(x)


def style_bank(own: tuple[np.ndarray, np.ndarray], others: list[tuple[np.ndarray, np.ndarray]], eps: float = 1e-5) -> np.ndarray:
    """[K, 2, D] (scale, shift) taking a row z-scored with `own` = (mean, std) to the z-score it would have
    under each of `others`' statistics: z' = (z (s + eps) + m - m_k) / (s_k + eps)."""
    mean, std = own
    if not others:
        return np.zeros((0, 2, len(mean)), np.float32)
    return np.stack([np.stack([(std + eps) / (s_k + eps), (mean - m_k) / (s_k + eps)]) for m_k, s_k in others]).astype(np.float32)


@dataclass(frozen=True)
class StrongView:
    """The strong view: SFA with (sigma1, sigma2) plus the options above."""

    sigma1: float
    sigma2: float
    mixup: float = 0.0          # largest share of the partner row, in [0, 0.5]; 0 = off
    mask: float = 0.0           # share of features zeroed per row; 0 = off
    styles: torch.Tensor | None = None   # [K, 2, D] style bank; None or empty = off

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n = x.shape[0]
        if self.styles is not None and len(self.styles) and n:
            pick = torch.randint(len(self.styles), (n,), generator=generator, device=x.device)
            x = x * self.styles[pick, 0] + self.styles[pick, 1]
        if self.mixup > 0 and n > 1:
            partner = torch.randperm(n, generator=generator, device=x.device)
            share = self.mixup * torch.rand((n, 1), generator=generator, device=x.device, dtype=x.dtype)
            x = (1.0 - share) * x + share * x[partner]
        x = stochastic_feature_augmentation(x, self.sigma1, self.sigma2, generator)
        if self.mask > 0:
            keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= self.mask
            x = x * keep
        return x


def weak_views(x: torch.Tensor, views: int, sigma1: float, sigma2: float, generator: torch.Generator | None) -> torch.Tensor:
    """[views, n, D]: `views` SFA views of every row from one draw (one forward pass then takes them all)."""
    noise = torch.randn((views, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return _scale_and_shift(noise, x, sigma1, sigma2)
