"""Certifiers are sound (never above the true minimal perturbation), exact where the
math says so, and never above any attack's radius."""

import numpy as np
import pytest

from advbench.evaluation import attack_radii, certified_radii
from advbench.plugins import load_plugins
from advbench.target import Target
from helpers import exact_linear_radius, linear_model, trained_mlp

REGISTRY = load_plugins(strict=True).registry


def certifier(name, **params):
    cls = REGISTRY.get("certifier", name)
    return cls(cls.Params(**params))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_lipschitz_equals_the_closed_form_on_a_linear_model(norm):
    model = linear_model(classes=5, seed=3)
    x = np.random.default_rng(0).uniform(0, 1, size=(50, 8, 8, 1)).astype(np.float32)
    predicted, exact = exact_linear_radius(model, x, norm)
    radius, _ = certified_radii(certifier("lipschitz"), Target(model, num_classes=5), x, predicted, predicted, norm, 32)
    np.testing.assert_allclose(radius, exact, rtol=1e-4)


def dense_matrix_of(layer, input_shape):
    """The linear map of a bias-free layer, column by column (exact, small shapes only)."""
    dim = int(np.prod(input_shape))
    basis = np.eye(dim, dtype=np.float32).reshape((dim,) + input_shape)
    return np.asarray(layer(basis)).reshape(dim, -1).T


@pytest.mark.parametrize("padding, strides, size", [("same", 1, 6), ("valid", 1, 7), ("same", 2, 8)])
def test_conv_norm_bound_is_sound_and_tight(padding, strides, size):
    import keras

    from advbench_plugins.certifiers.lipschitz import layer_norm

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 2))
    conv = keras.layers.Conv2D(3, 3, padding=padding, strides=strides, use_bias=False)
    keras.Model(inputs, conv(inputs))
    matrix = dense_matrix_of(conv, (size, size, 2))
    exact_l2 = np.linalg.norm(matrix, 2)
    exact_linf = np.abs(matrix).sum(axis=1).max()
    assert exact_l2 <= layer_norm(conv, "l2") <= 1.6 * exact_l2
    assert exact_linf <= layer_norm(conv, "linf") <= exact_linf * (1 + 1e-5)


@pytest.mark.parametrize("layer_kind", ["max", "avg", "batchnorm"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pooling_and_batchnorm_bounds_hold_on_random_pairs(layer_kind, norm):
    import keras

    from advbench import lp
    from advbench_plugins.certifiers.lipschitz import layer_norm

    keras.utils.set_random_seed(1)
    layer = {"max": keras.layers.MaxPooling2D(3, strides=2), "avg": keras.layers.AveragePooling2D(2),
             "batchnorm": keras.layers.BatchNormalization()}[layer_kind]
    inputs = keras.Input((8, 8, 2))
    keras.Model(inputs, layer(inputs))
    if layer_kind == "batchnorm":
        layer.moving_variance.assign(np.random.default_rng(0).uniform(0.1, 2, 2).astype(np.float32))
        layer.gamma.assign(np.array([1.5, -0.7], np.float32))
    bound = layer_norm(layer, norm)
    rng = np.random.default_rng(2)
    a = rng.uniform(size=(500, 8, 8, 2)).astype(np.float32)
    b = a + rng.normal(scale=0.05, size=a.shape).astype(np.float32) * (rng.uniform(size=a.shape) < 0.2)
    ratio = lp.numpy_norm(np.asarray(layer(a)) - np.asarray(layer(b)), norm) / lp.numpy_norm(a - b, norm)
    assert ratio.max() <= bound * (1 + 1e-5)


@pytest.fixture(scope="module")
def trained():
    model, data = trained_mlp(hidden=32, epochs=15)
    return Target(model, num_classes=10), data.x_test[:60], data.y_test[:60]


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_points_inside_the_certified_ball_keep_the_prediction(trained, norm):
    target, x, y = trained
    predicted = target.predict(x)
    radius, _ = certified_radii(certifier("lipschitz"), target, x, y, predicted, norm, 60)
    assert np.any(radius > 0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        if norm == "linf":
            delta = rng.choice([-1.0, 1.0], size=x.shape)  # corners: the farthest points
        else:
            delta = rng.normal(size=x.shape)
            delta /= np.linalg.norm(delta.reshape(len(x), -1), axis=1)[:, None, None, None]
        noisy = (x + 0.999 * radius[:, None, None, None] * delta).astype(np.float32)
        keep = radius > 0
        np.testing.assert_array_equal(target.predict(noisy)[keep], predicted[keep])


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_certified_never_exceeds_empirical_on_a_trained_network(trained, norm):
    target, x, y = trained
    predicted = target.predict(x)
    certified, _ = certified_radii(certifier("lipschitz"), target, x, y, predicted, norm, 60)
    pgd = REGISTRY.get("attack", "pgd")
    outcome = attack_radii(pgd(pgd.Params(steps=20)), target, x, y, predicted, norm, [0.1], 0.02, 0, 60)
    assert np.all(certified <= outcome.radius)


def test_lipschitz_refuses_layers_it_cannot_bound():
    import keras

    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    out = keras.layers.Dense(10, name="logits")(keras.layers.LayerNormalization()(flat))
    target = Target(keras.Model(inputs, out), num_classes=10)
    assert "LayerNormalization" in certifier("lipschitz").check(target)
