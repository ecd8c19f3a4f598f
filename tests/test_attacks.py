"""Attacks stay inside their budget and the box, are deterministic under a seed, and give
radii that never undercut the exact minimal perturbation of a linear model."""

import numpy as np
import pytest

from advbench import lp
from advbench.evaluation import attack_radii
from advbench.plugins import load_plugins
from advbench.target import Target
from helpers import exact_linear_radius, linear_model, trained_mlp

REGISTRY = load_plugins(strict=True).registry


@pytest.fixture(scope="module")
def mlp():
    model, data = trained_mlp(hidden=32, epochs=15)
    x, y = data.x_test[:64], data.y_test[:64]
    return Target(model, num_classes=10), x, y


def attack(name, **params):
    cls = REGISTRY.get("attack", name)
    return cls(cls.Params(**params))


# Every registered attack, with small settings, in every norm it supports.
CONFORMANCE = [(name, norm) for name in REGISTRY.names("attack") if name not in {"transfer"} for norm in REGISTRY.get("attack", name).norms]
SMALL = {"pgd": {"steps": 5}, "masked_pgd": {"steps": 5}, "apgd": {"steps": 10}, "square": {"queries": 50},
         "cw": {"steps": 10, "search_steps": 2}, "ensemble": {"steps": 5, "targets": 2, "queries": 20, "minimal_steps": 10}}


@pytest.mark.parametrize("name, norm", CONFORMANCE)
def test_every_attack_stays_in_budget_and_box_and_is_deterministic(mlp, name, norm):
    target, x, y = mlp
    method = attack(name, **SMALL.get(name, {}))
    eps = np.linspace(0.02, 0.3, len(x)).astype(np.float32) * (1 if norm == "linf" else 4)
    method.prepare(target, x, y, context=None)

    def call():
        result = method.minimize(target, x, y, norm, 7) if method.minimal_norm else method.perturb(target, x, y, eps, norm, 7)
        return np.asarray(result[0] if isinstance(result, tuple) else result)

    first, second = call(), call()
    if not method.minimal_norm:
        assert np.all(lp.numpy_norm(first - x, norm) <= eps * (1 + 1e-5) + 1e-7)
    assert first.shape == x.shape and first.dtype == np.float32
    assert first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.75)])
@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_pgd_is_at_least_as_strong_as_fgsm(mlp, norm, eps, loss):
    target, x, y = mlp
    budget = np.full(len(x), eps, np.float32)
    fgsm = np.asarray(attack("fgsm", loss=loss).perturb(target, x, y, budget, norm, 0))
    pgd = np.asarray(attack("pgd", steps=20, restarts=2, loss=loss).perturb(target, x, y, budget, norm, 0))
    fooled_fgsm = np.mean(target.predict(fgsm) != y)
    fooled_pgd = np.mean(target.predict(pgd) != y)
    assert fooled_pgd >= fooled_fgsm
    assert fooled_pgd > 0.3  # an undefended model falls at these budgets


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_radii_on_a_linear_model_never_undercut_the_exact_minimum(norm):
    rng = np.random.default_rng(1)
    model = linear_model()
    target = Target(model, num_classes=4)
    x = rng.uniform(0.3, 0.7, size=(40, 8, 8, 1)).astype(np.float32)
    predicted, exact = exact_linear_radius(model, x, norm)
    outcome = attack_radii(attack("pgd", steps=30, loss="cw"), target, x, predicted, predicted, norm, [0.01, 0.05], 0.01, 0, 40)
    assert np.all(np.isfinite(outcome.radius))
    assert np.all(outcome.radius >= exact * (1 - 1e-4))
    # PGD on the CW margin with a 1% bisection lands close to the minimum where the box does not bind.
    assert np.median(outcome.radius / exact) < 1.05
    # success at each eps agrees with the radius
    for k, eps in enumerate([0.01, 0.05]):
        np.testing.assert_array_equal(outcome.success[k], outcome.radius <= eps * (1 + 1e-5))


def test_misclassified_examples_have_radius_zero_and_are_not_attacked(mlp):
    target, x, y = mlp
    predicted = target.predict(x)
    wrong_label = (y + 1) % 10
    outcome = attack_radii(attack("fgsm"), target, x[:8], wrong_label[:8], predicted[:8], "linf", [0.1], 0.05, 0, 8)
    assert np.all(outcome.radius == 0) and outcome.attack_calls == 0


def test_an_attack_leaving_its_budget_is_an_error(mlp):
    from advbench import Attack
    from advbench.evaluation import AttackContractError

    class Cheat(Attack):
        def perturb(self, target, x, y, eps, norm, seed):
            return np.clip(np.asarray(x) + 2 * np.asarray(eps)[:, None, None, None], 0, 1)

    target, x, y = mlp
    with pytest.raises(AttackContractError, match="left its budget"):
        attack_radii(Cheat(), target, x[:4], y[:4], y[:4], "linf", [0.1], 0.05, 0, 4)


def test_per_target_keeps_one_build_per_live_target_and_never_serves_a_dead_targets():
    from advbench.components import Component

    class Model:
        pass

    component, builds = Component(), []

    def build():
        builds.append(len(builds) + 1)
        return builds[-1]

    first = Model()
    assert component.per_target(first, "linf", build) == 1 and component.per_target(first, "linf", build) == 1
    assert component.per_target(first, "l2", build) == 2
    second = Model()
    component.__dict__["_per_target"][(id(second), "linf")] = (first, 99)  # as if `second` had a dead target's id
    assert component.per_target(second, "linf", build) == 3
    component.forget_targets()
    assert component.per_target(first, "linf", build) == 4
