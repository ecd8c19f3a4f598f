"""The static leaderboard site: what it contains, that nothing a plugin wrote becomes markup,
and, in a real headless Chromium, that it opens from disk, sorts, shows every model and its
figures and logs no error.

The browser test needs ``chromium`` and ``chromium-driver`` (Debian) and ``selenium``
(the test extra); it skips without them unless ``ADVBENCH_BROWSER_TEST=required`` (as
``.ci/run`` sets, having installed them), where their absence fails it.
"""

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advbench.cli import app
from advbench.testing import run_spec, tiny_spec

MODELS = ["plain", "wide", "decay"]

LOUD = '''
import numpy as np
from advbench import Attack, hookimpl

class Loud(Attack):
    """Fails with markup in its message."""
    def perturb(self, target, x, y, eps, norm, seed):
        raise RuntimeError("<script>alert(1)</script><img src=x onerror=alert(2)>")

@hookimpl
def advbench_register_attacks(register):
    register("loud", Loud)
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("site")
    (directory / "loud.py").write_text(LOUD)
    models = [
        {"name": "plain", "architecture": {"name": "mlp", "hidden": 32}, "training": {"epochs": 3, "learning_rate": 0.01}},
        {"name": "wide", "architecture": {"name": "mlp", "hidden": 64}, "training": {"epochs": 3, "learning_rate": 0.01}},
        {
            "name": "decay",
            "architecture": {"name": "mlp", "hidden": 32},
            "defense": {"name": "weight_decay", "lambda": 0.01},
            "training": {"epochs": 3, "learning_rate": 0.01},
        },
    ]
    first = tiny_spec(
        directory,
        "first.yaml",
        name="first",
        plugins=["loud.py"],
        models=models,
        attacks=[{"name": "fgsm"}, {"name": "pgd", "steps": 5}, {"name": "loud"}],
    )
    second = tiny_spec(directory, "second.yaml", name="second", models=models[:1], attacks=[{"name": "fgsm"}])
    done = [run_spec(first, directory / "first"), run_spec(second, directory / "second")]
    assert [r.exit_code for r in done] == [1, 0], [r.output for r in done]  # the loud attack fails, the rest stands
    return directory


def site(runs, *names, out="site"):
    result = CliRunner().invoke(app, ["leaderboard", *[str(runs / n) for n in names], "--format", "html", "-o", str(runs / out)])
    assert result.exit_code == 0, result.output
    return runs / out


def test_a_run_is_a_page_with_every_model_its_figures_cost_provenance_and_a_card_per_model(runs):
    folder = site(runs, "first")
    page = (folder / "index.html").read_text()
    for model in MODELS:
        assert f'data-model="{model}"' in page and (folder / "models" / f"{model}.html").is_file()
    assert page.count('<table class="ranked sortable"') == 2  # linf and l2
    for piece in ("figure-linf-overlay.png", "figure-linf.png", "figure-l2-examples.png", "Cost", "Provenance", "95% interval ["):
        assert piece in page
    assert all((folder / name).stat().st_size > 1000 for name in ("figure-linf-overlay.png", "figure-l2.png"))
    card = (folder / "models" / "decay.html").read_text()
    assert (
        "weight_decay" in card and "fgsm (emp)" in card and "lipschitz (cert)" in card and "Indicators of attack failure" in card
    )


def test_nothing_a_plugin_wrote_becomes_markup_and_flags_are_explained(runs):
    page = (site(runs, "first") / "index.html").read_text()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    assert page.count("<script>") == 1  # the sorting script, with no data inside
    assert '<dl class="legend">' in page and "⚑ ERROR" in page and "A job failed" in page


def test_several_runs_get_an_index_with_a_page_each(runs):
    folder = site(runs, "first", "second", out="both")
    index = (folder / "index.html").read_text()
    assert 'href="first/index.html"' in index and 'href="second/index.html"' in index
    assert (folder / "first" / "models" / "wide.html").is_file() and (folder / "second" / "index.html").is_file()


def test_a_markdown_leaderboard_is_of_one_run_and_figure_formats_are_checked(runs):
    two = CliRunner().invoke(app, ["leaderboard", str(runs / "first"), str(runs / "second")])
    assert two.exit_code == 2 and "--format html" in two.output
    bad = CliRunner().invoke(app, ["leaderboard", str(runs / "first"), "--figure-format", "jpg"])
    assert bad.exit_code == 2 and "expected one of png, pdf, svg" in bad.output
    pdf = CliRunner().invoke(
        app, ["leaderboard", str(runs / "second"), "-o", str(runs / "paper" / "board.md"), "--figure-format", "pdf"]
    )
    assert pdf.exit_code == 0, pdf.output
    assert (runs / "paper" / "board-linf-overlay.pdf").read_bytes().startswith(b"%PDF")
    assert (
        "[linf: every model's robust accuracy against ε (PDF)](board-linf-overlay.pdf)"
        in (runs / "paper" / "board.md").read_text()
    )


def _browser():
    required = os.environ.get("ADVBENCH_BROWSER_TEST") == "required"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
    if not (chromium and driver and webdriver):
        missing = [n for n, v in (("chromium", chromium), ("chromedriver", driver), ("selenium", webdriver)) if not v]
        if required:
            pytest.fail(f"ADVBENCH_BROWSER_TEST=required but {', '.join(missing)} missing")
        pytest.skip(f"no headless browser ({', '.join(missing)} missing; apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))


def test_the_site_works_in_a_real_browser_opened_from_disk(runs, tmp_path):
    folder = site(runs, "first")
    browser = _browser()
    try:
        browser.get((folder / "index.html").resolve().as_uri())
        assert browser.title == "advbench: first"
        table = browser.find_element("css selector", 'table.ranked[data-norm="linf"]')
        models = [row.get_attribute("data-model") for row in table.find_elements("css selector", "tbody tr")]
        assert sorted(models) == sorted(MODELS)
        images = browser.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        assert len(images) == 6 and all(width > 0 for _, width in images), images  # every figure loads from disk
        headers = table.find_elements("css selector", "thead th")
        clean = next(h for h in headers if h.text.strip().startswith("clean"))
        clean.click()
        values = browser.execute_script(
            "return Array.from(arguments[0].tBodies[0].rows).map(r => parseFloat(r.cells[3].getAttribute('data-value')))", table
        )
        assert values == sorted(values) and clean.get_attribute("aria-sort") == "ascending"
        clean.click()
        again = browser.execute_script(
            "return Array.from(arguments[0].tBodies[0].rows).map(r => parseFloat(r.cells[3].getAttribute('data-value')))", table
        )
        assert again == sorted(values, reverse=True) and clean.get_attribute("aria-sort") == "descending"
        model = next(h for h in headers if h.text.strip() == "model")
        model.click()
        names = [row.get_attribute("data-model") for row in table.find_elements("css selector", "tbody tr")]
        assert names == sorted(MODELS)
        shots = Path(os.environ.get("ADVBENCH_SCREENSHOTS", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shots / "site-index.png"))
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
        table.find_element("link text", "decay").click()
        assert browser.find_element("tag name", "h1").text == "decay"
        assert browser.save_screenshot(str(shots / "site-model.png"))
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        browser.quit()
