"""Certifiers are sound (never above the true minimal perturbation), exact where the math
says so, and never above any attack's radius: against exact answers (linear models), against
every attack, against random points inside their balls, against each other (CROWN vs IBP),
and the Fawzi limit."""

import numpy as np
import pytest

from advbench.kit import lp
from advbench.kit.target import Target
from advbench.lazy import keras
from advbench.runs.harness import attack_radii, certified_radii
from helpers import REGISTRY, certifier, exact_linear_radius, linear_model, trained_mlp


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

    from advbench.kit import lp
    from advbench_plugins.certifiers.lipschitz import layer_norm

    keras.utils.set_random_seed(1)
    layer = {
        "max": keras.layers.MaxPooling2D(3, strides=2),
        "avg": keras.layers.AveragePooling2D(2),
        "batchnorm": keras.layers.BatchNormalization(),
    }[layer_kind]
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


def radii(name, target, x, y, norm, **params):
    predicted = target.predict(x)
    return certified_radii(certifier(name, **params), target, x, y, predicted, norm, 64)[0]


# Full CROWN on a ResNet is costly on a CPU; a coarser bisection keeps the tests quick.
FAST = {"crown": {"tolerance": 0.01}, "ibp": {"tolerance": 0.01}, "alpha_crown": {"tolerance": 0.01}}


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_on_a_linear_model_certifiers_never_exceed_the_exact_radius_and_the_tight_ones_equal_it(norm):
    model = linear_model(classes=5, seed=4)
    x = np.random.default_rng(0).uniform(0.4, 0.6, size=(30, 8, 8, 1)).astype(np.float32)
    predicted, exact = exact_linear_radius(model, x, norm)
    target = Target(model, num_classes=5)
    box_binds = exact > 0.4 if norm == "linf" else np.zeros(len(x), bool)  # linf: the box matters beyond 0.4
    for name in ("lipschitz", "hein2017", "crown", "alpha_crown", "ibp"):
        radius = radii(
            name, target, x, predicted, norm, **({"tolerance": 1e-6} if name in ("crown", "alpha_crown", "ibp") else {})
        )
        assert np.all(radius <= np.where(box_binds, np.inf, exact * (1 + 1e-4))), name
        np.testing.assert_allclose(radius[~box_binds], exact[~box_binds], rtol=1e-4, err_msg=name)


def test_smoothing_on_a_binary_linear_model_stays_below_the_exact_radius():
    # With two classes the smoothed linear classifier equals the linear one, so its
    # certified radius must not exceed the exact distance to the decision boundary.
    model = linear_model(classes=2, seed=5)
    x = np.random.default_rng(1).uniform(0.3, 0.7, size=(20, 8, 8, 1)).astype(np.float32)
    predicted, exact = exact_linear_radius(model, x, "l2")
    radius = radii("smoothing", Target(model, num_classes=2), x, predicted, "l2", sigma=0.5, n=2000, n0=50)
    assert np.all(radius <= exact)
    assert np.mean(radius > 0) > 0.5


@pytest.fixture(scope="module")
def networks():
    """A trained softplus MLP and ReLU MLP, a trained CNN with max-pooling, and a small
    ResNet (Add, BN) with random weights."""
    softplus, data = trained_mlp(hidden=32, epochs=15, activation="softplus")
    relu, _ = trained_mlp(hidden=32, epochs=15, activation="relu", seed=1)
    keras.utils.set_random_seed(2)
    resnet = REGISTRY.get("architecture", "resnet32")(REGISTRY.get("architecture", "resnet32").Params(depth=8)).build(
        (8, 8, 1), 10
    )
    cnn = REGISTRY.get("architecture", "cnn")(REGISTRY.get("architecture", "cnn").Params(filters=[8, 8], hidden=16)).build(
        (8, 8, 1), 10
    )
    cnn.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cnn.fit(data.x_train, data.y_train, epochs=5, batch_size=128, verbose=0)
    return {"softplus": softplus, "relu": relu, "resnet": resnet, "cnn": cnn}, data.x_test[:40], data.y_test[:40]


APPLICABLE = {
    "softplus": ["lipschitz", "hein2017", "ibp", "crown"],
    "relu": ["lipschitz", "ibp", "crown", "alpha_crown"],
    "resnet": ["ibp", "crown"],
    "cnn": ["ibp", "crown", "alpha_crown"],
}


@pytest.mark.parametrize("kind", ["softplus", "relu", "resnet", "cnn"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_every_certifier_is_below_every_attack_and_its_ball_is_safe(networks, kind, norm):
    models, x, y = networks
    if kind in ("resnet", "cnn"):
        x = x[:4] if kind == "resnet" else x[:16]
    target = Target(models[kind], num_classes=10)
    predicted = target.predict(x)
    if kind == "resnet":
        y = predicted  # random weights: certify the model's own predictions
    else:
        y = y[: len(x)]
    attacks = {}
    for name, params in (("pgd", {"steps": 20}), ("deepfool", {}), ("apgd", {"steps": 20})):
        cls = REGISTRY.get("attack", name)
        attacks[name] = attack_radii(cls(cls.Params(**params)), target, x, y, predicted, norm, [0.05], 0.02, 0, len(x)).radius
    rng = np.random.default_rng(0)
    for name in APPLICABLE[kind]:
        radius = certified_radii(certifier(name, **FAST.get(name, {})), target, x, y, predicted, norm, 40)[0]
        for attack, empirical in attacks.items():
            assert np.all(radius <= empirical), (name, attack)
        keep = radius > 0
        for _ in range(10):
            delta = rng.choice([-1.0, 1.0], size=x.shape) if norm == "linf" else rng.normal(size=x.shape)
            if norm == "l2":
                delta /= np.linalg.norm(delta.reshape(len(x), -1), axis=1)[:, None, None, None]
            noisy = np.clip(x + 0.999 * radius[:, None, None, None] * delta, 0, 1).astype(np.float32)
            np.testing.assert_array_equal(target.predict(noisy)[keep], predicted[keep], err_msg=name)


@pytest.mark.parametrize("kind", ["relu", "cnn"])
def test_alpha_crown_is_never_looser_than_crown_and_tighter_on_average(networks, kind):
    models, x, y = networks
    target = Target(models[kind], num_classes=10)
    x = x[:16]
    y = target.predict(x)
    for norm in ("linf", "l2"):
        crown = radii("crown", target, x, y, norm)
        alpha = radii("alpha_crown", target, x, y, norm)
        assert np.all(alpha >= crown * (1 - 1e-3)), norm
        assert alpha.mean() > crown.mean(), norm


@pytest.mark.parametrize("kind", ["softplus", "relu", "resnet"])
def test_crown_is_at_least_as_tight_as_ibp(networks, kind):
    models, x, y = networks
    if kind == "resnet":
        x = x[:4]
    target = Target(models[kind], num_classes=10)
    y = target.predict(x)
    for norm in ("linf", "l2"):
        crown = radii("crown", target, x, y, norm, **FAST["crown"])
        ibp = radii("ibp", target, x, y, norm, **FAST["ibp"])
        assert np.all(crown >= ibp * (1 - 1e-3)), norm
        assert crown.mean() > ibp.mean()


def test_hein2017_refuses_relu_and_deeper_networks(networks):
    models, x, y = networks
    assert "ReLU" in certifier("hein2017").check(Target(models["relu"], num_classes=10))
    assert "one-hidden-layer" in certifier("hein2017").check(Target(models["resnet"], num_classes=10))


def test_bound_propagation_refuses_an_unsupported_layer_by_name():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.LayerNormalization(name="my_norm")(keras.layers.Flatten()(inputs))
    target = Target(keras.Model(inputs, keras.layers.Dense(10)(h)), num_classes=10)
    for name in ("ibp", "crown"):
        assert "my_norm" in certifier(name).check(target) and "LayerNormalization" in certifier(name).check(target)


def test_synthetic_generator_is_lipschitz_and_classes_are_balanced():
    from advbench import load_dataset
    from advbench.results.data import fawzi_limit
    from advbench_plugins.datasets.synthetic import Synthetic

    dataset = Synthetic(lipschitz=2.0, latent_dim=6, classes=3)
    rng = np.random.default_rng(0)
    z, w = rng.normal(size=(500, 6)), rng.normal(size=(500, 6)) * rng.uniform(0.01, 3, size=(500, 1))
    image_distance = lp.numpy_norm(dataset.generate(z) - dataset.generate(z + w), "l2")
    assert np.all(image_distance <= 2.0 * np.linalg.norm(w, axis=1) * (1 + 1e-5))
    assert image_distance.max() / np.linalg.norm(w, axis=1).max() > 0.5  # not a loose constant
    data = load_dataset("synthetic", classes=3, train_examples=3000)
    np.testing.assert_allclose(np.bincount(data.y_train) / 3000, 1 / 3, atol=0.03)
    limit = fawzi_limit([0.0, 1.0, 100.0], 1.0, [0.5, 0.5])
    np.testing.assert_allclose(limit, [1.0, 1 - 2 * (0.8413447 - 0.5), 0.0], atol=1e-6)


def test_fawzi_limit_in_the_leaderboard_and_certified_accuracy_below_it(tmp_path):
    from advbench.testing import run_spec, tiny_spec

    spec = tiny_spec(
        tmp_path,
        dataset={"name": "synthetic", "image_size": 8, "train_examples": 1500, "test_examples": 200, "lipschitz": 1.0},
        models=[{"name": "m", "architecture": {"name": "mlp", "hidden": 32}, "training": {"epochs": 10, "learning_rate": 0.01}}],
        threat_models=[{"norm": "l2", "eps": [0.1, 0.5]}],
        attacks=[{"name": "pgd", "steps": 10}],
        certifiers=[{"name": "lipschitz"}, {"name": "crown"}],
    )
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 0, run.output
    results = run.results
    bounds = results.bounds[0]
    for eps in (0.1, 0.5):
        assert bounds.certified_accuracy(eps) <= float(results.robustness_limit(eps))
    board = (run.run_dir / "leaderboard.md").read_text()
    assert "Fawzi et al.'s limit" in board


def test_smoothing_through_the_pipeline_is_kept_apart_and_labelled(tmp_path):
    from advbench.testing import run_spec, tiny_spec

    spec = tiny_spec(
        tmp_path,
        models=[
            {
                "name": "noisy",
                "architecture": {"name": "mlp", "hidden": 32},
                "defense": {"name": "gaussian_noise", "sigma": 0.25},
                "training": {"epochs": 5, "learning_rate": 0.01},
            }
        ],
        threat_models=[{"norm": "l2", "eps": [0.25, 0.5]}],
        attacks=[{"name": "pgd", "steps": 10}],
        certifiers=[{"name": "smoothing", "n": 500, "n0": 20, "sigma": 0.25}, {"name": "lipschitz"}],
    )
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 0, run.output
    bounds = run.results.bounds[0]
    assert "smoothing" in bounds.smoothed and "smoothing" not in bounds.certified
    board = (run.run_dir / "leaderboard.md").read_text()
    assert "certifies the *smoothed* classifier" in board and "1 − α" in board
    # the smoothed classifier's accuracies carry their 95% Clopper-Pearson interval, in the table and the JSON
    row = next(line for line in board.splitlines() if line.startswith("| noisy | smoothing |"))
    assert row.count("±") == 3, row  # clean and both budgets
    from scipy.stats import binomtest

    from advbench.results.json import leaderboard_document

    smoothed = leaderboard_document(run.results)["threat_models"][0]["entries"][0]["budgets"][0]["smoothed"]["smoothing"]
    n = len(bounds.label)
    exact = binomtest(round(smoothed["value"] * n), n).proportion_ci(0.95, method="exact")
    assert (smoothed["lower"], smoothed["upper"]) == pytest.approx((exact.low, exact.high))
    # the export has the smoothed classifier's own radii and predictions, apart from the model's certified radius
    import csv
    import io

    from advbench.results.csv import export_csv

    stream = io.StringIO()
    export_csv(run.run_dir, stream)
    rows = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert "cert:smoothing" not in rows[0] and "cert:lipschitz" in rows[0]
    radius, prediction = bounds.smoothed["smoothing"]
    assert [float(r["smoothed:smoothing"]) for r in rows] == pytest.approx(radius.tolist())
    assert [int(r["smoothed:smoothing:prediction"]) for r in rows] == prediction.tolist()
    assert any(float(r["smoothed:smoothing"]) > 0 for r in rows)
    assert all(float(r["certified_radius"]) == float(r["cert:lipschitz"]) * (r["label"] == r["predicted"]) for r in rows)


@pytest.mark.parametrize("name", REGISTRY.names("certifier"))
def test_every_certifier_returns_one_nonnegative_deterministic_radius_per_example(networks, name):
    models, x, y = networks
    target = Target(models["softplus"], num_classes=10)
    x, y = x[:10], target.predict(x[:10])
    params = {"smoothing": {"n": 200, "n0": 20}}.get(name, {})
    for norm in REGISTRY.get("certifier", name).norms:
        first = radii(name, target, x, y, norm, **params)
        second = radii(name, target, x, y, norm, **params)
        assert first.shape == (10,) and np.all(first >= 0) and np.all(np.isfinite(first))
        np.testing.assert_array_equal(first, second)


MEMORY_PROBE = """
import resource, sys
import numpy as np
from advbench import load_dataset
from advbench.runs.harness import certified_radii
from advbench.contract.plugins import load_plugins
from advbench.kit.target import Target
from advbench.core.training import initialize

registry = load_plugins(strict=True).registry
cnn = registry.get("architecture", "cnn")
model = cnn(cnn.Params(filters=[16, 32], hidden=64)).build((8, 8, 1), 10)
initialize(model, 0)
x = load_dataset("digits").x_test[:16]
target = Target(model, num_classes=10)
predicted = target.predict(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
name, extra = sys.argv[2], {"bab": {"max_domains": 24, "attack_steps": 0}}.get(sys.argv[2], {})
cls = registry.get("certifier", name)
certified_radii(cls(cls.Params(memory_mb=int(sys.argv[1]), tolerance=0.05, **extra)), target, x, predicted, predicted, "linf", 16)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


@pytest.mark.parametrize("name", ["crown", "bab"])
def test_memory_budget_bounds_the_memory_it_adds(name):
    """Raising memory_mb from 16 to 512 may add at most 512 MB to the process's peak (the
    framework's fixed overhead is the same in both): CROWN's intermediate bounds on a
    small CNN take far more per example than the widest layer suggests, and branch and
    bound's batches of subdomains are sized by the same budget."""
    import subprocess
    import sys

    def growth(memory_mb):
        result = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(memory_mb), name], capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return float(result.stdout.split()[-1])

    assert growth(512) - growth(16) <= 512


def test_a_bound_computation_larger_than_the_memory_is_refused_with_its_estimate(monkeypatch):
    """advbench's own estimate for one example is over the memory available: the job is
    refused before allocating, with the estimate in the message (not killed by the OS)."""
    import advbench
    from advbench.kit.bounds import memory
    from helpers import trained_mlp

    model, data = trained_mlp(hidden=16, epochs=1, activation="relu")
    monkeypatch.setattr(memory, "available_bytes", lambda: 1000)
    with pytest.raises(
        advbench.AdvbenchError, match=r"crown: one example needs about .* by advbench's estimate, and 1,000 bytes"
    ):
        advbench.evaluate(
            model, data.x_test[:8], data.y_test[:8], norm="linf", eps=[0.05], attacks=["fgsm"], certifiers=["crown"]
        )
