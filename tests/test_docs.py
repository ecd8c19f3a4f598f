"""The README and docs/: a newcomer reads what advbench is first and finds how to write a
plugin early; every code block runs or validates; nothing points outside the repository."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advbench.cli import app
from advbench.testing import run_spec, tiny_spec

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "CHANGELOG.md"]


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def test_the_readme_says_what_advbench_is_first_and_how_to_write_a_plugin_early():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    opening = "\n".join(lines[:12])
    assert "certified lower bound" in opening and "empirical upper bound" in opening
    assert lines.index("## Writing a plugin") < 150 and len(lines) < 200
    first_code = next(k for k, line in enumerate(lines) if line.startswith("```"))
    assert first_code > lines.index("## Install and run")  # what it is comes before how to install it


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_points_outside_the_repository_and_every_link_resolves(page):
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_the_flags_page_is_generated_from_the_flag_meanings():
    from advbench.core.checks import checks_page

    assert (ROOT / "docs" / "checks.md").read_text(encoding="utf-8") == checks_page()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_block_compiles_and_every_spec_block_validates(page, tmp_path):
    for k, source in enumerate(blocks(page, "python")):
        compile(source, f"{page.name} block {k}", "exec")
    for k, text in enumerate(blocks(page, "yaml")):
        if not re.search(r"^name:", text, re.M):
            continue  # a fragment of a spec, not a spec
        path = tmp_path / f"block{k}.yaml"
        path.write_text(text)
        result = CliRunner().invoke(app, ["validate", str(path)])
        assert result.exit_code == 0, f"{page.name} yaml block {k}: {result.output}"


def test_the_readmes_plugin_runs_through_advbench_run(tmp_path, clean_sys_path):
    (source,) = [b for b in blocks(ROOT / "README.md", "python") if b.startswith("# advbench_corners.py")]
    (tmp_path / "advbench_corners.py").write_text(source)
    spec = tiny_spec(
        tmp_path,
        plugins=["advbench_corners.py"],
        threat_models=[{"norm": "linf", "eps": [0.1, 0.3]}],
        attacks=[{"name": "corners", "tries": 5}],
        certifiers=[],
    )
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 0, run.output
    (bounds,) = run.results.for_norm("linf")
    assert set(bounds.empirical) == {"corners"} and not bounds.errors
    assert bounds.empirical_accuracy(0.3) < bounds.clean_accuracy()  # the corners of a large ball do fool it
