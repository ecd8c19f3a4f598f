"""The bound engine's open table of rules: a plugin registers a rule for its own layer
(one Operator class, one register_bound_rule call) and every bound certifier reads it."""

from pathlib import Path

import numpy as np
import pytest

from advbench.testing import run_spec, tiny_spec


def doc_plugin() -> str:
    """The example of docs/bound-rules.md, run exactly as the page shows it."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "bound-rules.md").read_text()
    start = page.index("```python\n") + len("```python\n")
    return page[start : page.index("```", start)]


def test_a_plugin_registers_a_bound_rule_for_its_layer_and_certifiers_use_it(tmp_path, clean_sys_path):
    (tmp_path / "double.py").write_text(doc_plugin())
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
