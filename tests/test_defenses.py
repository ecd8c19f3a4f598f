"""Defenses and architectures: each trains and predicts; the Cross-Lipschitz regularizer
is exact; PGD training buys robustness; PRM concentrates gradients; randomized defenses
are detected as randomized."""

import numpy as np
import pytest

from advbench.core.training import train_model
from advbench.kit import backend
from advbench.kit.target import Target
from advbench.lazy import keras
from advbench.spec import AugmentationSpec, TrainingSpec
from helpers import REGISTRY, build


@pytest.mark.parametrize("name", REGISTRY.names("architecture"))
def test_every_architecture_outputs_logits(name):
    params = {"resnet32": {"depth": 8}}.get(name, {})
    model = build("architecture", name, **params).build((16, 16, 3), 7)
    assert model(np.zeros((2, 16, 16, 3), np.float32)).shape == (2, 7)


@pytest.fixture(scope="module")
def digits():
    from advbench import load_dataset
    from advbench.core.data import make_subsets

    return make_subsets(load_dataset("digits"), 600, 200, 100, seed=0)


DEFENSES = {
    "weight_decay": {},
    "dropout": {},
    "cross_lipschitz": {},
    "pgd_training": {"eps": 0.1, "steps": 3},
    "fgsm_training": {"eps": 0.1, "check_steps": 3},
    "gaussian_noise": {},
    "randomization": {},
    "prm": {},
    "none": {},
    "ibp_training": {"warmup_epochs": 0, "ramp_epochs": 1},
    "crown_ibp_training": {"warmup_epochs": 0, "ramp_epochs": 1},
}


@pytest.mark.parametrize("name", REGISTRY.names("defense"))
def test_every_defense_trains_and_predicts(name, digits):
    keras.utils.set_random_seed(0)
    defense = build("defense", name, **DEFENSES.get(name, {}))
    model = defense.prepare_model(build("architecture", "cnn", filters=[4], hidden=16).build((8, 8, 1), 10))
    history = train_model(model, defense, TrainingSpec(epochs=2, learning_rate=0.01), digits.x_train, digits.y_train, seed=0)
    assert np.isfinite(history["loss"]).all()
    inference = defense.inference_model(model)
    target = Target(inference, num_classes=10, randomized=defense.randomized())
    assert target.predict(digits.x_test[:20]).shape == (20,)
    assert target.differs_between_calls(digits.x_test[:20]) == defense.randomized()


def test_randomness_check_survives_repeated_draws():
    """Random padding of a 32x32 image has only 29 outcomes, so two calls agree about 5% of
    the time; the check must look at more than two before calling a model deterministic."""
    keras.utils.set_random_seed(0)
    defense = build("defense", "randomization")
    model = build("architecture", "cnn", filters=[2], hidden=4).build((32, 32, 3), 3)
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    target = Target(defense.inference_model(model), num_classes=3, randomized=True)
    assert all(target.differs_between_calls(x) for _ in range(100))


def random_network(kind, seed=0):
    keras.utils.set_random_seed(seed)
    if kind == "cnn":
        return build("architecture", "cnn", filters=[3], hidden=8, activation="softplus").build((6, 6, 1), 4)
    return build("architecture", "mlp", hidden=12, activation=kind, alpha=3.0).build((5, 5, 1), 4)


def brute_force_cross_lipschitz(model, x):
    """K separate gradients per example, every pair explicitly."""
    x = backend.to_tensor(x)
    grads = []
    for k in range(4):
        grad, _ = backend.grad(lambda z: (keras.ops.sum(model(z)[:, k]), None), x)
        grads.append(backend.to_numpy(grad).reshape(len(x), -1))
    total = sum(np.sum((grads[l] - grads[m]) ** 2, axis=1) for l in range(4) for m in range(4))
    return np.mean(total) / 16


@pytest.mark.parametrize("kind", ["softplus", "relu", "cnn"])
def test_cross_lipschitz_equals_brute_force(kind):
    from advbench_plugins.defenses.cross_lipschitz import cross_lipschitz

    model = random_network(kind)
    x = np.random.default_rng(1).uniform(size=(9,) + model.input_shape[1:]).astype(np.float32)
    expected = brute_force_cross_lipschitz(model, x)
    generic = float(backend.to_numpy(cross_lipschitz(model, backend.to_tensor(x), closed_form=False)))
    np.testing.assert_allclose(generic, expected, rtol=1e-4)
    if kind != "cnn":
        closed = float(backend.to_numpy(cross_lipschitz(model, backend.to_tensor(x), closed_form=True)))
        np.testing.assert_allclose(closed, generic, rtol=1e-4)


def test_training_with_cross_lipschitz_lowers_the_regularizer(digits):
    from advbench_plugins.defenses.cross_lipschitz import cross_lipschitz

    values = {}
    for name, params in (("none", {}), ("cross_lipschitz", {"lambda": 0.1})):
        keras.utils.set_random_seed(0)
        model = build("architecture", "hein_mlp", hidden=64).build((8, 8, 1), 10)
        train_model(
            model,
            build("defense", name, **params),
            TrainingSpec(epochs=10, learning_rate=0.01),
            digits.x_train,
            digits.y_train,
            seed=0,
        )
        values[name] = float(backend.to_numpy(cross_lipschitz(model, backend.to_tensor(digits.x_test))))
    assert values["cross_lipschitz"] < 0.5 * values["none"]


def test_pgd_training_raises_pgd_robust_accuracy(digits):
    from advbench.runs.harness import attack_radii

    accuracy = {}
    for name, params in (("none", {}), ("pgd_training", {"eps": 0.1, "steps": 7}), ("fgsm_training", {"eps": 0.1})):
        keras.utils.set_random_seed(0)
        model = build("architecture", "mlp", hidden=64, activation="relu").build((8, 8, 1), 10)
        train_model(
            model,
            build("defense", name, **params),
            TrainingSpec(epochs=15, learning_rate=0.005),
            digits.x_train,
            digits.y_train,
            seed=0,
        )
        target = Target(model, num_classes=10)
        predicted = target.predict(digits.x_eval)
        outcome = attack_radii(
            build("attack", "pgd", steps=20), target, digits.x_eval, digits.y_eval, predicted, "linf", [0.1], 0.05, 0, 100
        )
        accuracy[name] = 1 - outcome.success[0].mean()
    assert accuracy["pgd_training"] > accuracy["none"] + 0.2, accuracy
    assert accuracy["fgsm_training"] > accuracy["none"] + 0.2, accuracy  # one FGSM step from a random start does it too


def test_fgsm_training_stops_at_catastrophic_overfitting_and_brings_back_the_best_weights(digits):
    keras.utils.set_random_seed(0)
    model = build("architecture", "mlp", hidden=32, activation="relu").build((8, 8, 1), 10)
    defense = build("defense", "fgsm_training", eps=0.1, check_steps=5)
    history = train_model(model, defense, TrainingSpec(epochs=6, learning_rate=0.01), digits.x_train, digits.y_train, seed=0)
    assert len(history["pgd_accuracy"]) == 6 and "stopped_after_epoch" not in history
    assert max(history["pgd_accuracy"]) > 0.4
    model.set_weights(defense._check[4])  # the best epoch's weights (what a collapse brings back)
    best = [w.copy() for w in model.get_weights()]
    probe = (digits.x_train, digits.y_train)
    first = defense.on_epoch_end(model, 3, 4, probe)
    assert "stop" not in first
    model.set_weights([np.zeros_like(w) for w in best])  # collapsed: every image gets the same logits
    collapsed = defense.on_epoch_end(model, 4, 5, probe)
    assert collapsed["stop"] is True and collapsed["catastrophic_overfitting"] == 5.0
    assert collapsed["pgd_accuracy"] < first["pgd_accuracy"] - 0.2
    assert all(np.array_equal(w, b) for w, b in zip(model.get_weights(), best))  # the best epoch's weights are back


def test_certified_training_schedule_warms_up_then_ramps_by_step():
    defense = build("defense", "crown_ibp_training", warmup_epochs=1, ramp_epochs=2)
    defense.on_train_begin(epochs=5, steps_per_epoch=10)
    (step,) = defense.variables
    progress = []
    for taken in (1, 10, 11, 16, 30, 31, 50):  # the step counter after training_batch of that step
        step.assign(float(taken))
        progress.append(float(backend.to_numpy(defense.progress())))
    np.testing.assert_allclose(progress, [0, 0, 0, 0.25, 0.95, 1, 1], atol=1e-6)


def test_certified_training_raises_certified_accuracy_and_stays_below_the_attacks(digits):
    """A small CNN certifies nothing at linf 0.1 when trained plainly; trained on IBP or
    CROWN-IBP bounds, the same certifiers prove a large share, never above PGD's radius."""
    from advbench.runs.harness import attack_radii, certified_radii

    certified = {}
    for name, params in (("none", {}), ("ibp_training", {"eps": 0.1}), ("crown_ibp_training", {"eps": 0.1})):
        keras.utils.set_random_seed(0)
        model = build("architecture", "cnn", filters=[8], hidden=32).build((8, 8, 1), 10)
        defense = build("defense", name, warmup_epochs=1, ramp_epochs=6, **params) if params else build("defense", name)
        train_model(model, defense, TrainingSpec(epochs=10, learning_rate=0.003), digits.x_train, digits.y_train, seed=0)
        target = Target(model, num_classes=10)
        x, y = digits.x_eval, digits.y_eval
        predicted = target.predict(x)
        radius, _ = certified_radii(build("certifier", "crown", tolerance=0.01), target, x, y, predicted, "linf", 100)
        outcome = attack_radii(build("attack", "pgd", steps=20), target, x, y, predicted, "linf", [0.1], 0.02, 0, 100)
        assert np.all(radius <= outcome.radius), name
        certified[name] = np.mean((radius >= 0.1) & (predicted == y))
    assert certified["none"] == 0
    assert certified["ibp_training"] > 0.05 and certified["crown_ibp_training"] > 0.05, certified


def test_certified_training_refuses_a_model_bound_propagation_cannot_read():
    from advbench.kit.structure import UnsupportedModel

    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.LayerNormalization()(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden))
    with pytest.raises(UnsupportedModel, match="ibp_training needs a model that bound propagation supports.*LayerNormalization"):
        build("defense", "ibp_training").prepare_model(model)


def test_prm_gradient_iou_rises_with_lambda(digits, tmp_path):
    ious = {}
    for lam in (0.0, 0.9):
        keras.utils.set_random_seed(0)
        defense = build("defense", "prm", **{"lambda": lam})
        model = defense.prepare_model(build("architecture", "cnn", filters=[8], hidden=32).build((8, 8, 1), 10))
        train_model(model, defense, TrainingSpec(epochs=8, learning_rate=0.01), digits.x_train, digits.y_train, seed=0)
        result = defense.diagnostics(Target(model, num_classes=10), digits.x_eval, digits.y_eval, tmp_path, f"l{lam}")
        ious[lam] = result["gradient_iou"]
        assert (tmp_path / result["figures"][0]).is_file()
    assert ious[0.9] > ious[0.0] + 0.2, ious


def test_augmentation_translates_and_flip_needs_a_mirror_invariant_dataset(tmp_path, digits):
    from typer.testing import CliRunner

    from advbench.cli import app
    from advbench.testing import tiny_spec

    keras.utils.set_random_seed(0)
    model = build("architecture", "mlp", hidden=16).build((8, 8, 1), 10)
    spec = TrainingSpec(epochs=1, augmentation=AugmentationSpec(crop=2))
    assert np.isfinite(train_model(model, build("defense", "none"), spec, digits.x_train, digits.y_train, seed=0)["loss"]).all()
    path = tiny_spec(
        tmp_path, models=[{"name": "m", "architecture": {"name": "mlp"}, "training": {"augmentation": {"flip": True}}}]
    )
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "does not allow horizontal flips" in result.output


def test_hein_training_points_lie_past_the_runner_up_boundary_and_training_raises_l2_radii(digits):
    from advbench.runs.harness import attack_radii
    from advbench_plugins.defenses.adversarial_training import runner_up_boundary_points

    keras.utils.set_random_seed(0)
    model = build("architecture", "mlp", hidden=64).build((8, 8, 1), 10)
    train_model(
        model, build("defense", "none"), TrainingSpec(epochs=10, learning_rate=0.01), digits.x_train, digits.y_train, seed=0
    )
    x, y = digits.x_eval, digits.y_eval
    points = backend.to_numpy(runner_up_boundary_points(model, backend.to_tensor(x), backend.to_tensor(y, "int32"), 4, 8))
    moved = np.abs(points - x).max(axis=(1, 2, 3)) > 0
    assert moved.mean() > 0.8 and points.min() >= 0 and points.max() <= 1
    assert np.all(np.argmax(backend.to_numpy(model(points[moved])), axis=1) != y[moved])  # on the far side of the boundary

    medians = {}
    for name in ("none", "hein_training"):
        keras.utils.set_random_seed(0)
        model = build("architecture", "mlp", hidden=64).build((8, 8, 1), 10)
        train_model(
            model, build("defense", name), TrainingSpec(epochs=15, learning_rate=0.005), digits.x_train, digits.y_train, seed=0
        )
        target = Target(model, num_classes=10)
        outcome = attack_radii(build("attack", "deepfool"), target, x, y, target.predict(x), "l2", [0.5], 0.05, 0, 100)
        medians[name] = np.median(outcome.radius)
    assert medians["hein_training"] > 1.2 * medians["none"], medians


def test_crown_ibp_training_gradient_is_the_same_bits_on_every_call():
    """CROWN-IBP's loss sums four gradient contributions to the first dense kernel; in a
    compiled TensorFlow step an AddN summed them in an order set by the thread schedule, so
    two trainings of one spec on one machine drifted apart (about 1 call in 10 differed at
    the 7th digit).  With determinism enabled, as every run has it, every call agrees."""
    backend.enable_determinism()
    keras.utils.set_random_seed(0)
    model = build("architecture", "ibp_small").build((28, 28, 1), 10)
    defense = build("defense", "crown_ibp_training", eps=0.4, warmup_epochs=0, ramp_epochs=2)
    defense.on_train_begin(epochs=1, steps_per_epoch=1)
    defense.variables[0].assign(2.0)  # halfway up the ramp: CROWN-IBP and IBP bounds blended
    rng = np.random.default_rng(0)
    x = rng.random((100, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 100)

    def gradient(x, y):
        def loss():
            logits = model(x)
            return defense.regularizer(model, x, y, logits), None

        return backend.variable_grad(loss, model.trainable_variables)[2]

    step = backend.compile(gradient, state=[model, defense], batch_args=(0, 1))
    calls = {b"".join(backend.to_numpy(g).tobytes() for g in step(x, y)) for _ in range(40)}
    assert len(calls) == 1, f"{len(calls)} different gradients in 40 calls"


def test_crown_ibp_training_leaves_the_crown_bound_out_once_beta_is_0_with_the_same_weights(digits, monkeypatch):
    """After the ramp (beta_end 0) a CROWN-IBP step is compiled without the CROWN bound (it
    would count 0 times): no CROWN pass is traced for those steps, and the trained weights
    are those of a training that computed it and multiplied it by 0."""
    from advbench.kit.bounds import crown as crown_module

    backend.enable_determinism()
    traced = []
    original = crown_module.Crown.margins
    monkeypatch.setattr(crown_module.Crown, "margins", lambda self, *a: traced.append(1) or original(self, *a))
    weights, phases = {}, {}
    for forced in (False, True):
        keras.utils.set_random_seed(0)
        model = build("architecture", "cnn", filters=[4], hidden=16).build((8, 8, 1), 10)
        defense = build("defense", "crown_ibp_training", eps=0.1, warmup_epochs=0, ramp_epochs=1)
        if forced:  # the CROWN bound throughout, as before phases
            monkeypatch.setattr(defense, "training_phase", lambda step: None)
        traced.clear()
        train_model(model, defense, TrainingSpec(epochs=3, batch_size=128), digits.x_train, digits.y_train, seed=0)
        weights[forced], phases[forced] = model.get_weights(), len(traced)
    assert phases[False] >= 1 and phases[True] >= 1
    traced.clear()  # no ramp: every step after it, none traces a CROWN pass
    model = build("architecture", "cnn", filters=[4], hidden=16).build((8, 8, 1), 10)
    defense = build("defense", "crown_ibp_training", eps=0.1, warmup_epochs=0, ramp_epochs=0)
    train_model(model, defense, TrainingSpec(epochs=1, batch_size=128), digits.x_train, digits.y_train, seed=0)
    assert not traced
    assert all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(weights[False], weights[True]))
    defense = build("defense", "crown_ibp_training", warmup_epochs=1, ramp_epochs=2)
    defense.on_train_begin(epochs=5, steps_per_epoch=10)
    assert [defense.training_phase(s) for s in (0, 29, 30, 49)] == ["crown", "crown", "ibp", "ibp"]
    kept = build("defense", "crown_ibp_training", warmup_epochs=1, ramp_epochs=2, beta_end=0.5)
    kept.on_train_begin(epochs=5, steps_per_epoch=10)
    assert kept.training_phase(49) == "crown"
