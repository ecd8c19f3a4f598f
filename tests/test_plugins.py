"""The plugin host: hooks, registries, entry points, spec-local files, isolation."""

import inspect
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from advbench import Defense
from advbench.cli import app
from advbench.contract import hookspecs
from advbench.contract.plugins import HOOKS, PluginWarning, load_plugins
from advbench.contract.registry import Registry, UnknownComponentError
from advbench.errors import PluginError
from advbench.testing import entry_point_plugin, run_spec, tiny_spec


def test_every_hook_is_documented_and_prefixed():
    specs = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "advbench_spec")]
    assert {f.__name__ for f in specs} == set(HOOKS.values())
    for function in specs:
        assert function.__name__.startswith("advbench_register_")
        assert ":param register:" in function.__doc__


def test_registry_rejects_duplicates_and_wrong_base_class_and_suggests_names():
    class Mine(Defense):
        pass

    registry = Registry()
    registry.register("defense", "mine", Mine, plugin="a")
    with pytest.raises(PluginError, match="already registered"):
        registry.register("defense", "mine", Mine, plugin="b")
    with pytest.raises(PluginError, match="not a subclass of advbench.Attack"):
        registry.register("attack", "mine", Mine, plugin="a")
    with pytest.raises(UnknownComponentError, match=r"did you mean 'mine'\?.*known: mine"):
        registry.get("defense", "mien")
    assert registry.get("defense", "mine").name == "mine"


def test_builtins_are_registered_through_entry_points():
    host = load_plugins(strict=True)
    names = {(kind, name) for info in host.plugins.values() for kind, name in info.components}
    assert {
        ("dataset", "digits"),
        ("architecture", "mlp"),
        ("architecture", "cnn"),
        ("defense", "none"),
        ("defense", "weight_decay"),
        ("defense", "dropout"),
        ("attack", "fgsm"),
        ("attack", "pgd"),
        ("certifier", "lipschitz"),
    } <= names
    assert all(info.source == "advbench" for info in host.plugins.values() if info.components)


BROKEN = "raise RuntimeError('this plugin is broken')\n"


def test_a_broken_plugin_is_reported_and_the_rest_still_work(tmp_path, clean_sys_path):
    entry_point_plugin(tmp_path, "broken_plugin", BROKEN, distribution="broken-dist")
    with pytest.warns(PluginWarning, match="broken_plugin.*this plugin is broken"):
        host = load_plugins()
    assert host.plugins["broken_plugin"].error
    assert "pgd" in host.registry.names("attack")
    with pytest.raises(PluginError, match="this plugin is broken"):
        load_plugins(strict=True)
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0
    assert "broken_plugin" in result.output and "not loaded" in result.output
    assert CliRunner().invoke(app, ["plugins", "--strict"]).exit_code == 2


def test_a_plugin_registering_a_duplicate_name_is_reported_not_fatal(tmp_path, clean_sys_path):
    source = textwrap.dedent("""
        from advbench import hookimpl, Defense
        class Again(Defense):
            pass
        @hookimpl
        def advbench_register_defenses(register):
            register("again", Again)
            register("none", Again)
    """)
    entry_point_plugin(tmp_path, "example_duplicate", source)
    with pytest.warns(PluginWarning, match="already registered"):
        host = load_plugins()
    assert "again" not in host.registry.names("defense")  # nothing half-registered
    assert host.registry.get("defense", "none").__module__ == "advbench_plugins.defenses.basic"


def readme_plugin_source():
    """The packaged example plugin as docs/plugins.md shows it: the test runs exactly that code."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    start = readme.index("```python\n# advbench_noise.py")
    return readme[start + len("```python\n") : readme.index("```", start + 10)]


def test_readme_third_party_plugin_runs_through_advbench_run(tmp_path, clean_sys_path):
    entry_point_plugin(tmp_path / "site", "advbench_noise", readme_plugin_source(), distribution="advbench-noise", version="0.3")
    result = CliRunner().invoke(app, ["plugins"])
    assert "advbench-noise" in result.output and "0.3" in result.output
    shown = CliRunner().invoke(app, ["plugins", "random_corners"])
    assert shown.exit_code == 0, shown.output
    assert "tries" in shown.output and "20" in shown.output and "Random corners of the ball tried" in shown.output
    spec = tiny_spec(
        tmp_path,
        models=[
            {
                "name": "noisy",
                "architecture": {"name": "mlp", "hidden": 32},
                "defense": {"name": "noisy_training", "sigma": 0.2},
                "training": {"epochs": 3, "learning_rate": 0.01},
            }
        ],
        attacks=[{"name": "random_corners", "tries": 5}, {"name": "pgd", "steps": 10}],
    )
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 0, run.output
    linf = run.results.for_norm("linf")[0]
    assert set(linf.empirical) == {"random_corners", "pgd"}
    l2 = run.results.for_norm("l2")[0]
    assert set(l2.empirical) == {"pgd"} and any("random_corners" in note for note in l2.notes)  # linf only


LOCAL_PLUGIN = textwrap.dedent("""
    from pydantic import Field
    from advbench import Defense, Params, hookimpl

    class ShrinkParams(Params):
        factor: float = Field(0.5, gt=0, le=1, description="Scale of the inputs at inference.")

    class Shrink(Defense):
        \"\"\"Scales inputs towards 0 at inference.\"\"\"
        Params = ShrinkParams

        def inference_model(self, model):
            import keras
            inputs = keras.Input(model.input_shape[1:])
            return keras.Model(inputs, model(inputs * self.params.factor))

    @hookimpl
    def advbench_register_defenses(register):
        register("shrink", Shrink)
""")


def test_spec_local_plugin_file_runs_through_advbench_run(tmp_path, clean_sys_path):
    (tmp_path / "my_defense.py").write_text(LOCAL_PLUGIN)
    spec = tiny_spec(
        tmp_path,
        plugins=["my_defense.py"],
        models=[
            {
                "name": "shrunk",
                "architecture": {"name": "mlp", "hidden": 32},
                "defense": {"name": "shrink", "factor": 0.9},
                "training": {"epochs": 3, "learning_rate": 0.01},
            }
        ],
    )
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 0, run.output
    assert run.results.for_norm("linf")[0].defense == "shrink"


def test_importing_the_cli_and_all_plugins_does_not_import_tensorflow_or_ray():
    code = (
        "import sys, advbench, advbench.cli, advbench.api, advbench.spec, advbench.results.markdown, advbench.runs.runner\n"
        "import advbench.runs.executors, advbench.results.json, advbench.kit.bounds, advbench.kit.pgd\n"
        "from advbench.contract.plugins import load_plugins\n"
        "host = load_plugins(strict=True)\n"
        "from advbench.spec.jsonschema import spec_schema; spec_schema(host.registry)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "assert 'keras' not in sys.modules, 'keras was imported'\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_schema_includes_plugin_parameters():
    import json

    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    text = json.dumps(schema)
    assert '"pgd"' in text and "Gradient steps per restart." in text
    assert '"lambda"' in text  # weight_decay's aliased parameter


def test_plugins_name_lists_parameters_of_spec_local_plugins_and_suggests_names(tmp_path, clean_sys_path):
    (tmp_path / "advbench_noise.py").write_text(readme_plugin_source())
    spec = tiny_spec(tmp_path, plugins=["advbench_noise.py"])
    runner = CliRunner()
    assert "noisy_training" not in runner.invoke(app, ["plugins"]).output
    shown = runner.invoke(app, ["plugins", "noisy_training", "--spec", str(spec)])
    assert shown.exit_code == 0, shown.output
    assert "sigma" in shown.output and "float" in shown.output and "0.1" in shown.output
    assert "Standard deviation of the training noise" in shown.output
    builtin = runner.invoke(app, ["plugins", "pgd"])
    assert builtin.exit_code == 0 and "restarts" in builtin.output and "Random restarts" in builtin.output
    wrong = runner.invoke(app, ["plugins", "pdg"])
    assert wrong.exit_code == 2 and "did you mean pgd" in wrong.output


@pytest.mark.parametrize("damage", ["no name", "no module"])
def test_a_broken_dist_info_is_one_plugins_failure_not_every_commands(tmp_path, clean_sys_path, damage):
    site = tmp_path / "site"
    entry_point_plugin(site, "fine_plugin", "", distribution="broken-dist")
    info = next(site.glob("broken_dist-*.dist-info"))
    if damage == "no name":
        (info / "METADATA").write_text("Metadata-Version: 2.1\\nVersion: 1.0\\n")
    else:
        (info / "entry_points.txt").write_text("[advbench]\\nweird = :not a module\\n")
    for command in (["plugins"], ["schema"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
    assert (
        "builtin" in CliRunner().invoke(app, ["plugins"]).output.lower() or "fgsm" in CliRunner().invoke(app, ["plugins"]).output
    )


def test_escape_sequences_in_a_plugins_metadata_are_shown_not_obeyed(tmp_path, clean_sys_path):
    """A distribution's name and version come from files anyone can write: `advbench plugins`
    shows their control characters as codes instead of sending them to the terminal."""
    site = tmp_path / "site"
    entry_point_plugin(site, "osc_plugin", "", distribution="evil\x1b[31m-dist", version="1.0\x1b]0;owned\x07")
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b" in result.output
