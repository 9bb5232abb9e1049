"""The initial model weights, built without torch: the names, shapes and distribution of torch's own."""

from __future__ import annotations

import numpy as np

from fedser_shared.model import EmotionMLP, build_model, weights_of
from fedser_shared.weights import initial_weights

D, C, HIDDEN = 40, 4, (32, 16)


def test_initial_weights_have_the_models_names_shapes_and_dtype() -> None:
    ours = initial_weights(D, C, HIDDEN, seed=0)
    torchs = weights_of(EmotionMLP(D, C, HIDDEN))
    assert list(ours) == list(torchs)
    for name, value in torchs.items():
        assert ours[name].shape == value.shape and ours[name].dtype == np.float32, name


def test_initial_weights_follow_torchs_linear_default_distribution() -> None:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases: bounded, centred, spread as a uniform is."""
    weights = initial_weights(1024, 4, [512], seed=3)
    for name, fan_in in (("w.hidden.0.weight", 1024), ("w.hidden.0.bias", 1024), ("w.head.weight", 512)):
        value, bound = weights[name].astype(np.float64), 1 / np.sqrt(fan_in)
        assert np.abs(value).max() <= bound, name
        assert np.abs(value).max() > 0.95 * bound, name
        assert abs(value.mean()) < 0.1 * bound, name
        np.testing.assert_allclose(value.std(), bound / np.sqrt(3), rtol=0.1, err_msg=name)


def test_the_same_seed_gives_the_same_weights_and_another_seed_others() -> None:
    first, again, other = (initial_weights(D, C, HIDDEN, seed=s) for s in (7, 7, 8))
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name])


def test_a_built_model_holds_the_initial_weights() -> None:
    model = weights_of(build_model(D, C, HIDDEN, 0.2, seed=5))
    for name, value in initial_weights(D, C, HIDDEN, seed=5).items():
        np.testing.assert_array_equal(model[name], value)
