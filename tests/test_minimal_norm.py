"""Minimal-norm attacks against the exact answer: on a linear model the smallest
adversarial perturbation inside the [0, 1] box is a small convex program per example
(a linear program for linf, a quadratic one for l2), which scipy solves here, with no
code of advbench's.  Every minimal-norm attack must land within 1% of it, never below."""

import numpy as np
import pytest
from scipy.optimize import linprog, minimize_scalar

from advbench.kit import backend
from advbench.kit.target import Target
from advbench.runs.harness import attack_radii
from helpers import REGISTRY, linear_model


def l2_minimum(v, margin, point):
    """min ||d||_2 s.t. <v, d> + margin <= 0, 0 <= point + d <= 1 (inf if infeasible), from the
    QP's concave dual in one variable: max over lam >= 0 of min over the box of ||d||^2 + lam (<v, d> + margin)."""

    def dual(lam):
        d = np.clip(-lam * v / 2, -point, 1 - point)
        return -(d @ d + lam * (v @ d + margin))

    top = 1.0
    while dual(top) < dual(top / 2) and top < 1e12:  # the maximizer lies below top
        top *= 2
    result = minimize_scalar(dual, bounds=(0.0, top), method="bounded", options={"xatol": 1e-12 * top})
    farthest = np.clip(-np.sign(v), -point, 1 - point)  # the box's largest decrease of the margin
    return np.sqrt(max(-result.fun, 0.0)) if v @ farthest + margin <= 0 else np.inf


def exact_radius(model, x, norm):
    """Per example: min over wrong classes j of min ||delta|| s.t. f_j(x + delta) >= f_c(x + delta), 0 <= x + delta <= 1."""
    kernel = model.layers[-1].kernel.numpy().astype(np.float64)
    bias = model.layers[-1].bias.numpy().astype(np.float64)
    flat = x.reshape(len(x), -1).astype(np.float64)
    predicted = (flat @ kernel + bias).argmax(1)
    n = flat.shape[1]
    radius = np.full(len(x), np.inf)
    for i, (point, c) in enumerate(zip(flat, predicted)):
        bounds = list(zip(-point, 1 - point))
        for j in range(kernel.shape[1]):
            if j == c:
                continue
            v = kernel[:, c] - kernel[:, j]  # the margin f_c - f_j is <v, x> + b; it must reach 0
            margin = v @ point + bias[c] - bias[j]
            if norm == "linf":  # variables (delta, t): min t, |delta_i| <= t, <v, delta> <= -margin
                a_ub = np.vstack(
                    [np.hstack([np.eye(n), -np.ones((n, 1))]), np.hstack([-np.eye(n), -np.ones((n, 1))]), np.r_[v, 0.0][None]]
                )
                result = linprog(
                    np.r_[np.zeros(n), 1.0],
                    A_ub=a_ub,
                    b_ub=np.r_[np.zeros(2 * n), -margin],
                    bounds=bounds + [(0, None)],
                    method="highs",
                )
                value = result.fun if result.status == 0 else np.inf
            else:
                value = l2_minimum(v, margin, point)
            radius[i] = min(radius[i], value)
    return predicted, radius


@pytest.fixture(scope="module")
def problem():
    model = linear_model(classes=4, seed=2)
    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 1.0, size=(24, 8, 8, 1)).astype(np.float32)
    x[x < 0.25] = 0.0  # pixels on the box boundary, so the box binds
    x[x > 0.9] = 1.0
    return model, x, {norm: exact_radius(model, x, norm) for norm in ("l2", "linf")}


MINIMAL = [
    (name, norm)
    for name in REGISTRY.names("attack")
    if REGISTRY.get("attack", name).minimal_norm
    for norm in REGISTRY.get("attack", name).norms
]


@pytest.mark.parametrize("name, norm", MINIMAL, ids=[f"{n}-{p}" for n, p in MINIMAL])
def test_every_minimal_norm_attack_is_within_one_percent_of_the_exact_minimum(problem, name, norm):
    model, x, exact = problem
    predicted, radius = exact[norm]
    assert np.isfinite(radius).all()
    attack = REGISTRY.get("attack", name)()
    outcome = attack_radii(attack, Target(model, num_classes=4), x, predicted, predicted, norm, [0.1], 0.01, 0, len(x))
    ratio = outcome.radius / radius
    assert np.all(ratio >= 1 - 1e-4), ratio.min()  # nothing below the minimum: the oracle and the attack agree
    assert np.all(ratio <= 1.01), (ratio.max(), np.argmax(ratio))


def _box_problem(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, size=(8, 6)).astype(np.float32)
    x[x < 0.3], x[x > 0.8] = 0.0, 1.0
    return rng, x


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_the_box_constrained_steps_are_the_exact_minima(norm):
    from advbench.kit import lp

    rng, x = _box_problem(4)
    v = rng.normal(size=x.shape).astype(np.float32)
    c = rng.uniform(0.05, 1.5, size=len(x)).astype(np.float32)
    step, feasible = (backend.to_numpy(t) for t in lp.BOX_STEPS[norm](*(backend.to_tensor(a) for a in (v, c, x))))
    for point, direction, level, d, ok in zip(x, v, c, step, feasible):
        n = len(point)
        if norm == "linf":
            a_ub = np.vstack([np.hstack([np.eye(n), -np.ones((n, 1))]), np.hstack([-np.eye(n), -np.ones((n, 1))])])
            result = linprog(
                np.r_[np.zeros(n), 1.0],
                A_ub=a_ub,
                b_ub=np.zeros(2 * n),
                A_eq=np.r_[direction, 0.0][None],
                b_eq=[-level],
                bounds=list(zip(-point, 1 - point)) + [(0, None)],
                method="highs",
            )
            best = result.fun if result.status == 0 else None
        else:
            best = l2_minimum(direction.astype(np.float64), float(level), point.astype(np.float64))
            best = best if np.isfinite(best) else None
        assert ok == (best is not None)
        if ok:
            assert np.all(point + d >= -1e-6) and np.all(point + d <= 1 + 1e-6)
            assert direction @ d == pytest.approx(-level, rel=1e-4)
            assert np.linalg.norm(d, np.inf if norm == "linf" else 2) == pytest.approx(best, rel=1e-4)


def test_the_projection_onto_the_l2_ball_inside_the_box_is_exact():
    from scipy.optimize import minimize

    from advbench.kit import lp

    rng, x = _box_problem(5)
    delta = rng.normal(0.0, 0.6, size=x.shape).astype(np.float32)
    eps = np.geomspace(0.05, 5.0, len(x)).astype(np.float32)
    tx, tdelta, teps = (backend.to_tensor(a) for a in (x, delta, eps))
    projected = backend.to_numpy(lp.project_in_box(tx, tdelta, teps, "l2"))
    clipped_first = backend.to_numpy(lp.clip_to_box(tx, lp.project(tdelta, teps, "l2")))
    for point, d, e, p, naive in zip(x, delta, eps, projected, clipped_first):
        result = minimize(
            lambda z: ((z - d) ** 2).sum(),
            np.zeros_like(d, dtype=np.float64),
            method="SLSQP",
            bounds=list(zip(-point, 1 - point)),
            options={"ftol": 1e-14},
            constraints=[{"type": "ineq", "fun": lambda z: e**2 - z @ z}],
        )
        np.testing.assert_allclose(p, result.x, atol=1e-5)
        assert np.linalg.norm(p - d) <= np.linalg.norm(naive - d) + 1e-6  # clipping after the ball is never closer
