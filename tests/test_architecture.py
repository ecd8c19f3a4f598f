"""The house in floors: every module of advbench imports only its own floor and those
below it (function-local imports included), there is no import cycle, and the built-in
plugins import only the contract and the kit, as a third-party plugin would."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOORS = [
    ("ground", ("advbench.errors", "advbench.lazy", "advbench.text")),
    ("contract", ("advbench.contract",)),
    ("kit", ("advbench.kit",)),
    ("core", ("advbench.core",)),
    ("spec", ("advbench.spec",)),
    ("runs", ("advbench.runs",)),
    ("results", ("advbench.results",)),
    ("api", ("advbench.api",)),
    ("cli", ("advbench.cli", "advbench.testing")),
]
"""From the ground up; ``advbench`` itself (the package's namespace) re-exports the contract
and, lazily, the API, and is left out."""

PLUGIN_FLOORS = {"ground", "contract", "kit"}


def modules() -> dict[str, Path]:
    """Every module of advbench and of the built-in plugins, by dotted name."""
    found = {}
    for package, folder in (("advbench", ROOT / "advbench"), ("advbench_plugins", ROOT / "plugins")):
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` imports, anywhere in it (not only at the top)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from package import submodule` depends on the submodule; `from module import name` on the module
            submodules = [f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in known]
            names = submodules + ([node.module] if len(submodules) < len(node.names) else [])
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def floor(module: str) -> int | None:
    for index, (_, prefixes) in enumerate(FLOORS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) - {name} for name, path in found.items()}


def test_every_module_of_advbench_has_a_floor():
    unplaced = [name for name in modules() if name.startswith("advbench.") and floor(name) is None]
    assert not unplaced, f"modules on no floor: {unplaced}"


def test_modules_import_only_their_floor_and_those_below():
    upward = []
    for module, imported in graph().items():
        level = floor(module)
        if level is None:
            continue
        for other in imported:
            other_level = floor(other)
            if other_level is not None and other_level > level:
                upward.append(f"{module} ({FLOORS[level][0]}) imports {other} ({FLOORS[other_level][0]})")
    assert not upward, "\n".join(sorted(upward))


def test_there_is_no_import_cycle():
    edges = {module: {other for other in imported if other != "advbench"} for module, imported in graph().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(module, path):
        state[module] = 1
        for other in sorted(edges.get(module, ())):
            if state.get(other) == 1:
                cycles.append(" -> ".join(path[path.index(other) :] + [other]))
            elif other not in state:
                visit(other, path + [other])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_built_in_plugins_import_only_the_contract_and_the_kit():
    strays = []
    for module, imported in graph().items():
        if not module.startswith("advbench_plugins"):
            continue
        for other in imported:
            if other == "advbench":
                continue  # the contract's names, re-exported (`from advbench import hookimpl, Attack`)
            if other.startswith("advbench_plugins"):
                if other != "advbench_plugins":
                    strays.append(f"{module} imports the plugin {other}")
            elif FLOORS[floor(other)][0] not in PLUGIN_FLOORS:
                strays.append(f"{module} imports {other} ({FLOORS[floor(other)][0]})")
    assert not strays, "\n".join(sorted(strays))


def test_the_check_sees_an_upward_and_a_function_local_import(tmp_path):
    # the test itself can fail: an import inside a function counts
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from advbench.runs.store import RunStore\n")
    assert imports(module, set(modules())) == {"advbench.runs.store"}


def test_the_code_is_formatted_and_its_imports_sorted():
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is part of the test extra (pip install -e '.[test]')"
    folders = [str(ROOT / name) for name in ("advbench", "plugins", "tests", "benchmarks")]
    formatted = subprocess.run([ruff, "format", "--check", *folders], capture_output=True, text=True, cwd=ROOT)
    assert formatted.returncode == 0, f"run `ruff format`:\n{formatted.stdout}{formatted.stderr}"
    checked = subprocess.run([ruff, "check", *folders], capture_output=True, text=True, cwd=ROOT)
    assert checked.returncode == 0, f"run `ruff check --fix`:\n{checked.stdout}{checked.stderr}"
