"""Stochastic feature augmentation: x' = alpha * x + r, alpha ~ N(1, s1^2), r ~ N(0, s2^2) per element."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedser_client.core.augment import stochastic_feature_augmentation


def views(x: torch.Tensor, sigma1: float, sigma2: float, seed: int = 0) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    return stochastic_feature_augmentation(x, sigma1, sigma2, gen).numpy().astype(np.float64)


@pytest.mark.parametrize("sigma1, sigma2", [(0.1, 0.1), (0.25, 0.1)])  # weak and strong defaults
def test_noise_and_scale_have_the_configured_mean_and_std(sigma1: float, sigma2: float) -> None:
    n = 200_000
    # x = 0 isolates r: x' = r
    r = views(torch.zeros(n), sigma1, sigma2)
    assert abs(r.mean()) < 4 * sigma2 / np.sqrt(n)
    assert r.std() == pytest.approx(sigma2, rel=0.01)
    # x = 5: x' = 5 alpha + r, so (x' - r_part) has mean 5 and variance 25 s1^2 + s2^2
    shifted = views(torch.full((n,), 5.0), sigma1, sigma2, seed=1)
    alpha_mean = shifted.mean() / 5.0
    alpha_std = np.sqrt(max(shifted.var() - sigma2**2, 0.0)) / 5.0
    assert alpha_mean == pytest.approx(1.0, abs=4 * sigma1 / np.sqrt(n))
    assert alpha_std == pytest.approx(sigma1, rel=0.02)


def test_each_element_draws_its_own_alpha_and_r() -> None:
    x = torch.ones(4, 1000)
    out = views(x, 0.25, 0.1)
    assert np.unique(out).size == out.size  # no element shares a draw
    # elements of one row are uncorrelated with those of another
    assert abs(np.corrcoef(out[0], out[1])[0, 1]) < 0.1


def test_same_generator_seed_gives_the_same_views() -> None:
    x = torch.randn(3, 7, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(views(x, 0.1, 0.1, seed=5), views(x, 0.1, 0.1, seed=5))
    assert not np.array_equal(views(x, 0.1, 0.1, seed=5), views(x, 0.1, 0.1, seed=6))


def test_zero_sigmas_leave_features_unchanged() -> None:
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(views(x, 0.0, 0.0), x.numpy())
