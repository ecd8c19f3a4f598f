"""The bound engine's open table of rules: a plugin registers a rule for its own layer
(one Operator class, one register_bound_rule call) and every bound certifier reads it."""

import textwrap

import numpy as np
import pytest

from advbench.testing import run_spec, tiny_spec

PLUGIN = textwrap.dedent('''
    """A toy layer (y = 2x) and its bound rule, registered from outside advbench."""
    import keras
    from advbench import hookimpl, Architecture
    from advbench.kit.bounds import register_bound_rule
    from advbench.kit.bounds.operators import Rescaling

    class Double(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    class DoubleRule(Rescaling):
        """y = 2x: Rescaling's rules with a scale of 2 and no offset."""
        def __init__(self, layer, inputs):
            super().__init__(keras.layers.Rescaling(2.0, 0.0), inputs)

    register_bound_rule(Double, DoubleRule, replace=True)

    class Doubled(Architecture):
        """Flatten, Double, Dense 16 ReLU, Dense logits."""
        def build(self, input_shape, num_classes):
            inputs = keras.Input(input_shape)
            z = Double()(keras.layers.Flatten()(inputs))
            z = keras.layers.Dense(16, activation="relu")(z)
            return keras.Model(inputs, keras.layers.Dense(num_classes)(z))

    @hookimpl
    def advbench_register_architectures(register):
        register("doubled", Doubled)
''')


def test_a_plugin_registers_a_bound_rule_for_its_layer_and_certifiers_use_it(tmp_path, clean_sys_path):
    (tmp_path / "double.py").write_text(PLUGIN)
    spec = tiny_spec(
        tmp_path,
        plugins=["double.py"],
        models=[{"name": "d", "architecture": {"name": "doubled"}, "defense": {"name": "none"}, "training": {"epochs": 2}}],
        threat_models=[{"norm": "linf", "eps": [0.01, 0.05]}],
        attacks=[{"name": "pgd", "steps": 10}],
        certifiers=[{"name": "ibp"}, {"name": "crown"}],
    )
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 0, run.output
    (bounds,) = run.results.for_norm("linf")
    assert not bounds.errors, bounds.errors
    assert set(bounds.certified) == {"ibp", "crown"} and all(np.any(r > 0) for r in bounds.certified.values())
    assert np.all(bounds.certified["crown"] >= bounds.certified["ibp"] * (1 - 1e-3))  # CROWN is at least as tight
    assert not bounds.violations()  # and sound: no certified radius above an attack's


def test_without_its_rule_the_layer_is_refused_by_name():
    import keras

    from advbench.kit.bounds import read_graph
    from advbench.kit.structure import UnsupportedModel

    class Halve(keras.layers.Layer):
        def call(self, x):
            return x / 2

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(Halve(name="halve")(inputs)))
    with pytest.raises(UnsupportedModel, match="'halve' \\(Halve\\).*register_bound_rule"):
        read_graph(model)


def test_a_class_with_a_rule_is_not_silently_replaced():
    import keras

    from advbench.kit.bounds import register_bound_rule
    from advbench.kit.bounds.operators import Reshape

    with pytest.raises(ValueError, match="has a bound rule already"):
        register_bound_rule(keras.layers.Dense, Reshape)
    with pytest.raises(TypeError, match="not a subclass"):
        register_bound_rule(type("Mine", (keras.layers.Layer,), {}), int)
