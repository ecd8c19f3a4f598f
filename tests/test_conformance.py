"""Backend conformance: every registered attack, certifier and defense, on the Keras
backend this process runs (``KERAS_BACKEND``).

* attacks stay inside their budget and the [0, 1] box (the evaluation raises if not),
  every example they call broken is misclassified, and no radius undercuts the exact
  minimal perturbation of a linear model;
* certifiers return one sound radius per example: never above the exact radius of a
  linear model, never above what an attack finds on a small network;
* defenses train: one step changes the weights, the model predicts, a randomized
  defense draws anew at every call.

``test_backends.py`` runs this file again under every other installed backend, so the
same checks hold on TensorFlow, JAX and PyTorch.
"""

import numpy as np
import pytest

from advbench.kit import backend, lp
from advbench.kit.target import Target
from advbench.runs.context import Components
from advbench.runs.harness import attack_radii, certified_radii
from helpers import REGISTRY, build, exact_linear_radius, linear_model

ATTACK_SETTINGS = {
    "pgd": {"steps": 10},
    "apgd": {"steps": 10},
    "square": {"queries": 100},
    "ensemble": {"steps": 5, "targets": 2, "queries": 50, "minimal_steps": 10},
    "cw": {"steps": 60, "search_steps": 4, "learning_rate": 0.05, "targets": 1},
    "deepfool": {"steps": 20},
    "fmn": {"steps": 30},
    "fab": {"steps": 10},
    "masked_pgd": {"steps": 10, "share": 0.5},
    "transfer": {"steps": 10, "source": "self"},
}
CERTIFIER_SETTINGS = {
    "ibp": {"tolerance": 0.01},
    "crown": {"tolerance": 0.01},
    "alpha_crown": {"tolerance": 0.01},
    "smoothing": {"n": 200, "n0": 20, "batch": 400},
}
DEFENSE_SETTINGS = {
    "pgd_training": {"steps": 3, "eps": 0.1},
    "hein_training": {"growth_steps": 2, "bisection_steps": 2},
    "ibp_training": {"warmup_epochs": 0, "ramp_epochs": 0},
    "crown_ibp_training": {"warmup_epochs": 0, "ramp_epochs": 0},
}


class Context(Components):
    """What ``Attack.prepare`` sees: the registered attacks, and the spec's other models
    (here, the target itself)."""

    def __init__(self, target):
        super().__init__(REGISTRY)
        self._target = target

    def target(self, name):
        return self._target


@pytest.fixture(scope="module")
def linear():
    """A random linear model and points whose exact minimal perturbations are known
    (inputs in [0.4, 0.6], radii small enough that the box does not bind)."""
    model = linear_model(classes=4, seed=2)
    x = np.random.default_rng(0).uniform(0.4, 0.6, size=(12, 8, 8, 1)).astype(np.float32)
    return model, x


@pytest.mark.parametrize("name", REGISTRY.names("attack"))
def test_every_attack_stays_in_budget_and_box_and_never_undercuts_the_exact_radius(linear, name):
    model, x = linear
    attack = build("attack", name, **ATTACK_SETTINGS.get(name, {}))
    target = Target(model, num_classes=4, batch_size=16)
    for norm in attack.norms:
        predicted, exact = exact_linear_radius(model, x, norm)
        eps = [float(np.median(exact))]
        outcome = attack_radii(attack, target, x, predicted, predicted, norm, eps, 0.05, 0, 16, context=Context(target))
        found = np.isfinite(outcome.radius)
        assert found.mean() >= 0.5, (norm, outcome.radius)
        assert np.all(outcome.radius >= exact * (1 - 1e-4)), (norm, outcome.radius / exact)
        adversarial = outcome.adversarial[found]
        assert np.all(target.predict(adversarial) != predicted[found])
        assert adversarial.min() >= 0 and adversarial.max() <= 1
        np.testing.assert_allclose(lp.numpy_norm(adversarial - x[found], norm), outcome.radius[found], rtol=1e-5)


@pytest.mark.parametrize("name", REGISTRY.names("certifier"))
def test_every_certifier_is_sound_on_a_linear_model(linear, name):
    model, x = linear
    certifier = build("certifier", name, **CERTIFIER_SETTINGS.get(name, {}))
    target = Target(model, num_classes=4)
    for norm in certifier.norms:
        predicted, exact = exact_linear_radius(model, x, norm)
        radius = certified_radii(certifier, target, x, predicted, predicted, norm, 16)[0]
        again = certified_radii(certifier, target, x, predicted, predicted, norm, 16)[0]
        assert radius.shape == (len(x),) and np.all(np.isfinite(radius)) and np.all(radius >= 0)
        np.testing.assert_array_equal(radius, again)
        if not certifier.certifies_smoothed:  # the smoothed classifier is another classifier
            assert np.all(radius <= exact * (1 + 1e-4)), (norm, radius / exact)
            assert np.mean(radius > 0) > 0.5


def test_crown_is_exact_where_the_network_is_linear_and_alpha_crown_is_sound_and_tighter():
    """On a CNN with max-pooling at eps 1e-5 (every ReLU stable, nearly every pooling
    window decided) CROWN's margin bound is attained: it equals the margin at the ball's
    corner that the linearization points to (before the max-pool relaxation used the
    window's largest upper bound as a constant, and missed by 4 times the whole eps term).  At larger eps, alpha-CROWN's margins are at least
    CROWN's, larger somewhere, and below the margins at those corners (sound)."""
    from advbench.core.training import initialize
    from advbench.kit.bounds import AlphaCrown, Crown, margin_matrix, read_graph

    model = build("architecture", "cnn", filters=[8, 8], hidden=16).build((8, 8, 1), 10)
    initialize(model, 0)
    x = np.random.default_rng(0).uniform(0.2, 0.8, size=(6, 8, 8, 1)).astype(np.float32)
    target = Target(model, num_classes=10)
    y = target.predict(x)
    C = backend.to_numpy(margin_matrix(y, 10))
    jacobian, _ = target.logit_jacobian(backend.to_tensor(x))
    slopes = np.einsum("bsk,bk...->bs...", C, backend.to_numpy(jacobian))  # (batch, 9, 8, 8, 1)
    nodes = read_graph(model)

    def at_corners(eps):
        corners = np.clip(x[:, None] - eps * np.sign(slopes), 0, 1).astype(np.float32)
        logits = target.logits_numpy(corners.reshape((-1,) + x.shape[1:])).reshape(len(x), 9, 10)
        return np.einsum("bsk,bsk->bs", C, logits)

    def bound(method, eps):
        margins = method(nodes).margins(
            backend.to_tensor(x), backend.to_tensor(C), backend.to_tensor(np.full(len(x), eps)), "linf"
        )
        return backend.to_numpy(margins)

    np.testing.assert_allclose(bound(Crown, 1e-5), at_corners(1e-5), atol=5e-6)  # the eps term: up to 4e-5
    crown, alpha = bound(Crown, 0.03), bound(AlphaCrown, 0.03)
    assert np.all(alpha >= crown - 1e-5) and np.sum(alpha - crown) > 1e-3
    assert np.all(alpha <= at_corners(0.03) + 1e-5)


def test_alpha_crown_optimizes_max_pool_lower_lines_soundly():
    """With no ReLU, alpha-CROWN's only freedom is each max-pool window's convex weighting
    of its inputs (auto_LiRPA's max-pool alpha): it must beat CROWN's single chosen input
    on some margin and stay below the margins at every sampled point of the ball."""
    import keras

    from advbench.core.training import initialize
    from advbench.kit.bounds import AlphaCrown, Crown, margin_matrix, read_graph

    inputs = keras.Input((6, 6, 1))
    h = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(h)))
    initialize(model, 0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, size=(4, 6, 6, 1)).astype(np.float32)
    target = Target(model, num_classes=10)
    y = target.predict(x)
    C = backend.to_numpy(margin_matrix(y, 10))
    nodes = read_graph(model)
    eps = 0.05

    def bound(method):
        margins = method(nodes).margins(
            backend.to_tensor(x), backend.to_tensor(C), backend.to_tensor(np.full(len(x), eps)), "linf"
        )
        return backend.to_numpy(margins)

    crown, alpha = bound(Crown), bound(AlphaCrown)
    assert np.all(alpha >= crown - 1e-5) and np.max(alpha - crown) > 1e-3
    corners = np.clip(x[:, None] + eps * rng.choice([-1.0, 1.0], size=(len(x), 256) + x.shape[1:]), 0, 1)
    logits = target.logits_numpy(corners.reshape((-1,) + x.shape[1:]).astype(np.float32)).reshape(len(x), 256, 10)
    sampled = np.einsum("bsk,bnk->bns", C, logits).min(axis=1)
    assert np.all(alpha <= sampled + 1e-5)


@pytest.fixture(scope="module")
def digits():
    from advbench import load_dataset

    return load_dataset("digits")


@pytest.mark.parametrize("name", REGISTRY.names("defense"))
def test_every_defense_trains_one_step_and_predicts(digits, name):
    from advbench.core.training import initialize, train_model
    from advbench.spec import TrainingSpec

    backend.set_seed(0)
    defense = build("defense", name, **DEFENSE_SETTINGS.get(name, {}))
    model = defense.prepare_model(build("architecture", "mlp", hidden=16).build((8, 8, 1), 10))
    initialize(model, 0)
    before = [np.array(v.numpy()) for v in model.trainable_variables]
    train_model(model, defense, TrainingSpec(epochs=1, batch_size=32), digits.x_train[:32], digits.y_train[:32], seed=0)
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)]
    assert all(changed), [v.path for v, c in zip(model.trainable_variables, changed) if not c]
    target = Target(defense.inference_model(model), num_classes=10, randomized=defense.randomized())
    logits = target.logits_numpy(digits.x_test[:16])
    assert logits.shape == (16, 10) and np.all(np.isfinite(logits))
    assert target.differs_between_calls(digits.x_test[:16]) == defense.randomized()


def test_gradients_agree_with_finite_differences():
    from advbench.core.training import initialize

    model = build("architecture", "mlp", hidden=8).build((2, 2, 1), 3)
    initialize(model, 0)
    x = np.random.default_rng(0).uniform(size=(2, 2, 2, 1))
    target = Target(model, num_classes=3)
    from advbench.kit.losses import cross_entropy

    y = np.array([0, 2])
    _, gradient, _ = target.loss_and_gradient(cross_entropy, backend.to_tensor(x), backend.to_tensor(y, "int32"))
    jacobian, _ = target.logit_jacobian(backend.to_tensor(x))
    step = 1e-3
    for i in np.ndindex(x.shape[1:]):
        up, down = x.copy(), x.copy()
        up[(slice(None),) + i] += step
        down[(slice(None),) + i] -= step
        logits_up, logits_down = target.logits_numpy(up.astype(np.float32)), target.logits_numpy(down.astype(np.float32))
        np.testing.assert_allclose(
            backend.to_numpy(jacobian)[(slice(None), slice(None)) + i],
            (logits_up - logits_down) / (2 * step),
            rtol=2e-2,
            atol=2e-3,
        )
        loss = lambda logits: -np.log(np.exp(logits[np.arange(2), y]) / np.exp(logits).sum(1))  # noqa: E731
        np.testing.assert_allclose(
            backend.to_numpy(gradient)[(slice(None),) + i],
            (loss(logits_up) - loss(logits_down)) / (2 * step),
            rtol=2e-2,
            atol=2e-3,
        )


@pytest.mark.parametrize("bounds", ["ibp", "crown-ibp", "crown"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_certified_training_bounds_have_the_weight_gradient_of_finite_differences(bounds, norm):
    """Certified training descends the certifiers' bounds: their gradient with respect to
    the weights (through convolutions, max-pooling and ReLU relaxations) must be right."""
    from advbench.core.training import initialize
    from advbench.kit.bounds import Crown, ibp_margins, margin_matrix, read_graph
    from advbench.lazy import keras

    model = build("architecture", "cnn", filters=[3], hidden=6).build((6, 6, 1), 4)
    initialize(model, 1)
    nodes = read_graph(model)
    rng = np.random.default_rng(0)
    x = backend.to_tensor(rng.uniform(size=(3, 6, 6, 1)))
    C = margin_matrix(np.array([0, 1, 3]), 4)
    eps = backend.to_tensor(np.full(3, 0.05 if norm == "linf" else 0.15))

    def total():
        if bounds == "ibp":
            margins = ibp_margins(nodes, x, C, eps, norm)
        else:
            margins = Crown(nodes, max_neurons=0 if bounds == "crown-ibp" else 2048, differentiable=True).margins(x, C, eps, norm)
        return keras.ops.sum(margins), None

    variables = model.trainable_variables
    gradients = backend.compile(lambda: backend.variable_grad(total, variables)[2], state=[model])()
    assert all(np.all(np.isfinite(backend.to_numpy(g))) for g in gradients)
    direction = [rng.normal(size=v.shape).astype(np.float32) for v in variables]
    predicted = sum(float(np.sum(backend.to_numpy(g) * d)) for g, d in zip(gradients, direction))
    start = [np.array(v.numpy()) for v in variables]
    step, ends = 1e-4, []  # the bounds are piecewise smooth: a small step stays on one piece
    for sign in (1, -1):
        for v, s, d in zip(variables, start, direction):
            v.assign(s + sign * step * d)
        ends.append(float(backend.to_numpy(total()[0])))
    for v, s in zip(variables, start):
        v.assign(s)
    assert abs(predicted) > 1e-3
    np.testing.assert_allclose(predicted, (ends[0] - ends[1]) / (2 * step), rtol=2e-2)
