"""Every adversarial example advbench reports is one: a point counts as adversarial only
if it is misclassified with a margin that survives float32 reordering, checked anew in a
batch of its own; boundary searches stop at the last point that passed; so every stored
adversarial example stays misclassified when reloaded and predicted in any batch size."""

import numpy as np
import pytest

from advbench.core.models import load_keras_model
from advbench.kit.lp import numpy_norm
from advbench.kit.target import MARGIN_RTOL, Target, adversarial_margin
from advbench.runs.store import RunStore
from advbench.testing import run_spec, tiny_spec
from helpers import trained_mlp

MODELS = [
    {
        "name": "relu",
        "architecture": {"name": "mlp", "hidden": 32, "activation": "relu"},
        "training": {"epochs": 6, "learning_rate": 0.01},
    },
    {
        "name": "noise",
        "architecture": {"name": "mlp", "hidden": 32, "activation": "relu"},
        "defense": {"name": "gaussian_noise", "sigma": 0.3},
        "training": {"epochs": 6, "learning_rate": 0.01},
    },
]
ATTACKS = [
    {"name": "deepfool", "steps": 20},
    {"name": "cw", "steps": 40, "search_steps": 3, "targets": 1},
    {"name": "fmn", "steps": 30},
    {"name": "fab", "steps": 20},
    {"name": "pgd", "steps": 10},
]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("validity")
    spec = tiny_spec(
        folder,
        models=MODELS,
        attacks=ATTACKS,
        certifiers=[{"name": "crown"}],
        threat_models=[{"norm": "l2", "eps": [0.5, 1.0]}, {"norm": "linf", "eps": [0.05, 0.1]}],
        evaluation={"examples": 40, "batch_size": 40, "radius_tolerance": 0.01},
    )
    result = run_spec(spec, folder / "run")
    assert result.exit_code == 0, result.output
    return folder / "run", result.results


@pytest.mark.slow
def test_every_stored_adversarial_example_is_misclassified_in_any_batch_inside_its_radius_and_the_box(stored):
    run_dir, results = stored
    store = RunStore.open(run_dir)
    checked = 0
    for model in ("relu", "noise"):
        train = results.records[f"{model}/train"]
        network = load_keras_model(store.model_path(model, train["key"]))
        for norm in ("l2", "linf"):
            for method in ATTACKS:
                record = results.records.get(f"{model}/{norm}/attack-{method['name']}")
                if record is None or record["status"] != "ok":
                    continue
                arrays = store.job_arrays(record["id"])
                radius = np.asarray(record["radius"])[: len(arrays["original"])]
                found = np.isfinite(radius) & (radius > 0)
                adversarial, original, label = arrays["adversarial"][found], arrays["original"][found], arrays["label"][found]
                assert adversarial.min() >= 0 and adversarial.max() <= 1
                assert np.all(numpy_norm(adversarial - original, norm) <= radius[found] * (1 + 1e-6) + 1e-9)
                for batch in (1, 5, len(adversarial)):
                    logits = np.concatenate(
                        [
                            np.asarray(network(adversarial[s : s + batch], training=False))
                            for s in range(0, len(adversarial), batch)
                        ]
                    )
                    assert np.all(logits.argmax(1) != label), (model, norm, method["name"], batch)
                checked += len(adversarial)
    assert checked > 100


def test_certified_never_exceeds_empirical_on_any_example(stored):
    _, results = stored
    for b in results.bounds:
        assert not b.violations(), (b.model, b.norm, b.violations())


def test_a_point_on_the_boundary_is_not_adversarial_and_the_margin_scales_with_the_logits():
    import keras

    inputs = keras.Input((1, 1, 2))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.kernel.assign(np.eye(2, dtype=np.float32) * 1000)
    dense.bias.assign(np.zeros(2, np.float32))
    target = Target(model, num_classes=2)
    x = np.array([[[[0.5, 0.5]]], [[[0.5, 0.500004]]], [[[0.5, 0.52]]]], np.float32)  # logits tie, 0.004 apart, 20 apart
    assert target.adversarial(x, np.zeros(3, np.int64)).tolist() == [False, False, True]
    assert target.predict(x[1:2])[0] == 1  # argmax says broken, the margin does not


def test_reordering_float32_sums_moves_logits_far_less_than_the_margin():
    model, data = trained_mlp(hidden=64, epochs=3, activation="relu")
    x = data.x_test[:60]
    reference = np.asarray(model(x, training=False), np.float64)
    scale = np.abs(reference).max(axis=1, keepdims=True)
    for batch in (1, 5, 7, 8):
        logits = np.concatenate([np.asarray(model(x[s : s + batch], training=False)) for s in range(0, len(x), batch)])
        assert np.max(np.abs(logits - reference) / scale) < MARGIN_RTOL / 8  # 32 units in the last place; measured: about 10
    assert np.array_equal(adversarial_margin(reference, data.y_test[:60]) > 0, reference.argmax(1) != data.y_test[:60])


# -- indicators of attack failure ---------------------------------------------------------


def indicator_run(tmp_path, models, attacks, norm="linf", eps=(0.05, 0.1)):
    spec = tiny_spec(
        tmp_path,
        models=models,
        attacks=attacks,
        certifiers=[],
        threat_models=[{"norm": norm, "eps": list(eps)}],
        evaluation={"examples": 30, "batch_size": 30},
        plugins=["attacks.py"],
    )
    (tmp_path / "attacks.py").write_text(FAKE_ATTACKS)
    result = run_spec(spec, tmp_path / "run")
    assert result.exit_code in (0, 1), result.output
    return result.results.for_norm(norm)[0]


FAKE_ATTACKS = '''
import numpy as np
from advbench import Attack, hookimpl


class Nothing(Attack):
    """Returns the clean image: finds nothing, whatever the budget."""

    def perturb(self, target, x, y, eps, norm, seed):
        return np.asarray(x)


class SmallOnly(Attack):
    """A real attack at budgets below 0.08 only (FGSM), and nothing above: at the larger
    budget it lets go of what it found at the smaller one."""

    def prepare(self, target, x, y, context):
        self.fgsm = context.attack("fgsm")

    def perturb(self, target, x, y, eps, norm, seed):
        found = np.asarray(self.fgsm.perturb(target, x, y, eps, norm, seed))
        return np.where((np.asarray(eps) < 0.08)[:, None, None, None], found, np.asarray(x))


@hookimpl
def advbench_register_attacks(register):
    register("nothing", Nothing)
    register("small_only", SmallOnly)
'''

PLAIN = {
    "name": "plain",
    "architecture": {"name": "mlp", "hidden": 32, "activation": "relu"},
    "training": {"epochs": 5, "learning_rate": 0.01},
}


@pytest.mark.slow
def test_each_indicator_triggers_where_it_should_and_stays_quiet_where_it_should_not(tmp_path):
    b = indicator_run(
        tmp_path,
        [PLAIN, {**PLAIN, "name": "other", "seed": 3}],
        [
            {"name": "nothing"},
            {"name": "small_only"},
            {"name": "pgd", "steps": 20, "step_size": 0.01},
            {"name": "apgd", "steps": 30},
            {"name": "transfer", "source": "other", "steps": 10},
        ],
    )
    nothing, small, pgd, apgd = (b.indicators[k] for k in ("nothing", "small_only", "pgd", "apgd"))
    assert nothing["unconstrained_failure"] == 1.0 and nothing["silent_success"] == 0.0
    assert small["silent_success"] > 0.2  # found at 0.05, let go at 0.1
    assert pgd["incomplete_optimization"] > 0.3  # 20 steps of 1% of eps: still climbing
    assert apgd["incomplete_optimization"] is not None and apgd["unconstrained_failure"] == 0.0
    assert nothing["incomplete_optimization"] is None and nothing["transfer_failure"] is None  # not measured there
    assert b.indicators["transfer"]["transfer_failure"] is not None
    for found in b.indicators.values():
        assert found["unavailable_gradients"] in (0.0, None) and found["unstable_predictions"] == 0.0
    assert any(flag.startswith("nothing: unconstrained failure 100%") for flag in b.flags)


def test_zero_gradients_and_unstable_predictions_are_the_models_and_apply_to_every_gradient_attack():
    from advbench.core.checks import attack_indicators
    from advbench.results.data import Bounds

    b = Bounds(
        model="m",
        defense="none",
        norm="linf",
        eps=[0.1],
        index=np.arange(4),
        label=np.zeros(4, int),
        predicted=np.array([0, 0, 0, 1]),
    )
    b.attack_records = {
        "pgd": {
            "radius": [0.2, np.inf, 0.3, 0.0],
            "uses_gradients": True,
            "success": [[False] * 4],
            "fixed_budget_success": [[False] * 4],
        },
        "square": {
            "radius": [0.2, 0.2, 0.2, 0.0],
            "uses_gradients": False,
            "success": [[False] * 4],
            "fixed_budget_success": [[False] * 4],
        },
    }
    found = attack_indicators(b, {"gradients": {"unavailable": [0, 3]}, "unstable_predictions": [2]})
    assert found["pgd"]["unavailable_gradients"] == pytest.approx(1 / 3)  # example 3 is misclassified: not counted
    assert found["square"]["unavailable_gradients"] is None  # no gradients used
    assert found["pgd"]["unstable_predictions"] == found["square"]["unstable_predictions"] == pytest.approx(1 / 3)
    assert found["pgd"]["unconstrained_failure"] == pytest.approx(1 / 3) and found["square"]["unconstrained_failure"] == 0.0
