"""Output formats come from one table (advbench.results.renderers): a new format is one
function and one registration, and the CLI's --format offers it."""

from typer.testing import CliRunner

from advbench.cli import app
from advbench.testing import run_spec, tiny_spec


def test_a_renderer_added_in_a_few_lines_is_offered_by_the_cli(tmp_path):
    from advbench.results.data import load_results
    from advbench.results.formats import percent
    from advbench.results.renderers import RENDERERS, Rendered, Renderer, register_renderer

    def clean_accuracy_tsv(run_dirs, output, options):
        results = load_results(run_dirs[0])
        lines = [f"{b.model}\t{b.norm}\t{percent(b.clean_accuracy())}" for b in results.bounds]
        return Rendered([results], text="\n".join(lines) + "\n", what=f"{len(lines)} rows")

    register_renderer(Renderer("clean-tsv", "export", "clean accuracy per model", clean_accuracy_tsv, document=True))
    try:
        spec = tiny_spec(tmp_path, threat_models=[{"norm": "linf", "eps": [0.1]}], attacks=[{"name": "fgsm"}], certifiers=[])
        assert run_spec(spec, tmp_path / "run").exit_code == 0
        result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--format", "clean-tsv", "-o", "-"])
        assert result.exit_code == 0, result.output
        model, norm, accuracy = result.output.strip().split("\t")
        assert norm == "linf" and 0 < float(accuracy) <= 100
        wrong = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--format", "markdown", "-o", "-"])
        assert wrong.exit_code == 2 and "expected one of csv, json, clean-tsv" in wrong.output
    finally:
        RENDERERS.pop("clean-tsv", None)


def test_every_format_shares_the_radius_formatter():
    from advbench.results import formats, website

    assert website._radius(0.0123456) == formats.radius(0.0123456) == "0.0123"
    assert formats.radius("inf") == "∞" and formats.radius(None) == "—"
