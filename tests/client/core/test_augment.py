"""Stochastic feature augmentation: x' = alpha * x + r, alpha ~ N(1, s1^2), r ~ N(0, s2^2) per element."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedser_client.core.augment import StrongView, stochastic_feature_augmentation, style_bank, weak_views


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


def test_style_bank_maps_a_speakers_z_scores_to_another_speakers() -> None:
    rng = np.random.default_rng(0)
    own, other = rng.normal(3.0, 2.0, size=(50, 5)), rng.normal(-1.0, 0.5, size=(40, 5))
    stats = [(a.mean(axis=0), a.std(axis=0)) for a in (own, other)]
    bank = torch.from_numpy(style_bank(stats[0], [stats[1]]))
    z = (own - stats[0][0]) / (stats[0][1] + 1e-5)
    view = StrongView(0.0, 0.0, styles=bank)(torch.from_numpy(z.astype(np.float32)), torch.Generator().manual_seed(0))
    expected = (own - stats[1][0]) / (stats[1][1] + 1e-5)   # the same rows, normalised by the other speaker
    np.testing.assert_allclose(view.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_mixup_keeps_most_of_each_row_and_mask_zeroes_the_configured_share() -> None:
    x = torch.eye(64)  # row i is all its own feature i: the share of itself it keeps is x'[i, i]
    mixed = StrongView(0.0, 0.0, mixup=0.3)(x, torch.Generator().manual_seed(1))
    own = torch.diagonal(mixed)
    assert bool((own >= 0.7 - 1e-6).all()) and bool((own < 1.0).any())
    assert torch.allclose(mixed.sum(dim=1), torch.ones(64))  # a convex mix of two rows
    masked = StrongView(0.0, 0.0, mask=0.25)(torch.ones(400, 100), torch.Generator().manual_seed(2))
    assert float((masked == 0).float().mean()) == pytest.approx(0.25, abs=0.01)


def test_weak_views_are_independent_sfa_draws_of_every_row() -> None:
    x = torch.full((3, 4), 2.0)
    stacked = weak_views(x, 5, 0.1, 0.1, torch.Generator().manual_seed(3))
    assert stacked.shape == (5, 3, 4) and len({tuple(v.flatten().tolist()) for v in stacked}) == 5
    assert float(stacked.mean()) == pytest.approx(2.0, abs=0.1)
