"""The leaderboard's statistics and formats: intervals (against scipy's binomial test),
rank ranges, the ranking rule for missing numbers, budgets as people write them, one
number format per column, and terminal tables that fit 80 columns."""

import numpy as np
import pytest

from advbench.results.data import Bounds, Results
from advbench.results.statistics import clopper_pearson, rank_ranges
from advbench.results.table import format_eps, radius_column, ranked, table
from advbench.results.terminal import print_tables


def bounds(name, certified, empirical, eps=(0.1, 0.3), correct=None, flags=()):
    n = len(empirical)
    predicted = np.zeros(n, int) if correct is None else np.where(correct, 0, 1)
    b = Bounds(
        name,
        "none",
        "linf",
        list(eps),
        np.arange(n),
        np.zeros(n, int),
        predicted,
        certified={} if certified is None else {"c": np.asarray(certified, float)},
        empirical={"a": np.asarray(empirical, float)},
    )
    b.flags = list(flags)
    return b


@pytest.mark.parametrize("n", [1, 10, 30, 300, 1000])
def test_intervals_are_scipy_clopper_pearson_intervals(n):
    from scipy.stats import binomtest

    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        lower, upper = clopper_pearson(k, n)
        reference = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert lower == pytest.approx(reference.low, abs=1e-10) and upper == pytest.approx(reference.high, abs=1e-10)


def test_an_accuracy_carries_its_interval_over_the_evaluated_examples():
    b = bounds("m", [0.5] * 115 + [0.0] * 185, [0.5] * 300)  # 115 of 300 certified at 0.1: 38.3%
    lower, upper = b.interval("certified", 0.1)
    assert b.certified_accuracy(0.1) == pytest.approx(115 / 300)
    assert (lower, upper) == pytest.approx((0.3280, 0.4410), abs=1e-4)
    assert "38.3 ±5.8" in table([b]).rows[0].cells[4]


def test_models_whose_intervals_overlap_share_a_rank_range():
    assert rank_ranges([0.5, 0.45, 0.2], [0.6, 0.55, 0.3]) == [(1, 2), (1, 2), (3, 3)]
    strong = bounds("strong", [1.0] * 60 + [0.0] * 40, [1.0] * 100)
    close = bounds("close", [1.0] * 57 + [0.0] * 43, [1.0] * 100)
    weak = bounds("weak", [1.0] * 10 + [0.0] * 90, [1.0] * 100)
    shown = table([weak, close, strong])
    assert [(row.bounds.model, row.cells[0]) for row in shown.rows] == [("strong", "1–2"), ("close", "1–2"), ("weak", "3")]
    assert any("intervals of that accuracy overlap" in note for note in shown.notes)


def test_a_model_no_certifier_covers_is_not_ranked_below_a_certified_zero():
    certified_zero = bounds("zero", [0.0] * 40, [0.05] * 40)
    uncovered = bounds("uncovered", None, [0.5] * 40)  # stronger empirically, no certifier applies
    assert [b.model for b in ranked([uncovered, certified_zero], "certified")] == ["zero", "uncovered"]
    shown = table([uncovered, certified_zero])
    assert [row.cells[0] for row in shown.rows] == ["1", "—"]
    (note,) = [note for note in shown.notes if "not ranked" in note]
    assert "uncovered is not ranked" in note and "unknown, not 0" in note and "--rank-by empirical" in note
    assert not any("failed job" in note or "overlap" in note for note in shown.notes)  # only the notes that apply
    by_empirical = table([uncovered, certified_zero], "empirical")
    assert [row.cells[0] for row in by_empirical.rows] == ["1", "2"]
    assert not any("not ranked" in note for note in by_empirical.notes)


def test_a_certifier_not_run_yet_is_said_unfinished_not_inapplicable():
    certified_zero = bounds("zero", [0.0] * 40, [0.05] * 40)
    waiting = bounds("waiting", None, [0.5] * 40)
    waiting.pending = [("certify", "crown")]
    notes = table([waiting, certified_zero]).notes
    assert any("Unfinished: 1 attack and certifier job has no result yet (waiting)" in note for note in notes)
    assert not any("no certifier applies" in note for note in notes)


def test_when_every_model_is_zero_at_the_largest_eps_the_ranking_says_where_it_was_decided():
    a = bounds("a", [0.0] * 4, [0.2] * 4)
    c = bounds("c", [0.15, 0.15, 0.0, 0.0], [0.2] * 4)
    shown = table([a, c])
    assert shown.rows[0].bounds.model == "c"
    assert any("ranked by certified accuracy at ε=0.1" in note for note in shown.notes)
    assert any("same certified accuracy above ε=0.1" in note for note in shown.notes)


def test_budgets_show_as_people_write_them():
    assert [format_eps(e) for e in (2 / 255, 8 / 255, 0.2, 1.0, 0.25, 0.03137, 0.00784)] == [
        "2/255",
        "8/255",
        "0.2",
        "1",
        "0.25",
        "0.03137",
        "0.00784",
    ]


def test_a_spec_may_write_budgets_as_fractions(tmp_path):
    from advbench.spec import load_spec
    from advbench.testing import tiny_spec

    spec = tiny_spec(tmp_path, threat_models=[{"norm": "linf", "eps": ["2/255", "8/255"]}])
    assert load_spec(spec).threat_models[0].eps == [2 / 255, 8 / 255]


def test_one_number_format_perradius_column():
    assert radius_column([0.993, 1.0, 1.94e-07, None, float("inf")]) == ["0.993", "1.000", "0.000", "—", "∞"]
    assert radius_column([12.5, 0.5]) == ["12.50", "0.50"]


def test_the_median_gap_never_exceeds_the_median_empirical_radius():
    # half the examples misclassified (radius 0 for both bounds): the gap's median counts them too
    b = bounds("m", [0.01, 0.01, 0.0, 0.0], [0.05, 0.05, 0.0, 0.0], correct=[True, True, False, False])
    b.empirical["a"] = np.array([0.05, 0.05, 0.3, 0.3])
    assert b.median_gap() <= b.median_radius("empirical")


def test_terminal_tables_fit_80_columns_with_9_models_and_4_budgets():
    from rich.console import Console

    rng = np.random.default_rng(0)
    models = [
        bounds(
            f"defense-number-{i}",
            rng.uniform(0, 0.2, 50),
            rng.uniform(0, 2, 50),
            eps=(0.5, 1.0, 1.5, 2.0),
            flags=["randomized", "black-box square beats the white-box attacks at ε=0.5"] if i == 3 else [],
        )
        for i in range(9)
    ]
    results = Results(
        spec={"name": "wide", "threat_models": [{"norm": "linf", "eps": [0.5, 1.0, 1.5, 2.0]}]},
        records={},
        bounds=models,
        training={},
    )
    console = Console(width=80, record=True)
    print_tables(console, results)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for i in range(9):  # one line per model per table: nothing wrapped
        assert sum(f"defense-number-{i} " in line for line in text.splitlines() if "│" in line) >= 1
    assert all(f"ε={e}" in text for e in ("0.5", "1", "1.5", "2"))
    assert "defense-number-3: randomized, black-box square" in text  # flags printed in full under the table


def test_export_json_has_every_number_with_its_interval_and_matches_the_published_schema(tmp_path):
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from advbench.cli import app
    from advbench.results.json import Leaderboard, leaderboard_schema
    from advbench.testing import run_spec, tiny_spec

    published = Path(__file__).resolve().parents[1] / "schemas" / "leaderboard.schema.json"
    assert json.loads(published.read_text()) == leaderboard_schema(), "regenerate: advbench schema --leaderboard > schemas/..."
    spec = tiny_spec(
        tmp_path, threat_models=[{"norm": "linf", "eps": ["2/255", 0.1]}], evaluation={"examples": 20, "batch_size": 20}
    )
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 0, run.output
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "-o", "-", "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # standard output carries the document alone
    Leaderboard.model_validate(document)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(document, leaderboard_schema())
    entry = document["threat_models"][0]["entries"][0]
    bounds = run.results.for_norm("linf")[0]
    budget = entry["budgets"][0]
    assert budget["eps_text"] == "2/255" and budget["empirical"]["value"] == bounds.empirical_accuracy(2 / 255)
    assert budget["empirical"]["lower"] <= budget["empirical"]["value"] <= budget["empirical"]["upper"]
    assert entry["clean"]["value"] == bounds.clean_accuracy() and entry["rank_range"] == [1, 1]
    csv_out = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "-o", "-"])
    assert csv_out.stdout.splitlines()[0].startswith("model,norm,index") and len(csv_out.stdout.splitlines()) == 21


def test_the_plot_draws_one_panel_per_model_with_9_models(tmp_path):
    from advbench.results.plots import plot

    rng = np.random.default_rng(0)
    models = [
        bounds(f"m{i}", rng.uniform(0, 0.5, 60), rng.uniform(0, 2, 60), eps=(0.5, 1.0), flags=["randomized"] * (i == 3))
        for i in range(9)
    ]
    results = Results(
        spec={"name": "nine", "threat_models": [{"norm": "linf", "eps": [0.5, 1.0]}]}, records={}, bounds=models, training={}
    )
    plot(results, "linf", tmp_path / "nine.png")
    from matplotlib.image import imread

    height, width = imread(tmp_path / "nine.png").shape[:2]
    assert width >= 1000 and height >= 900  # a 3 x 3 grid of panels, not one crowded axis


EXPLODING = """
import numpy as np
from advbench import hookimpl
from advbench.contract.components import Attack


class Dumps(Attack):
    def perturb(self, target, x, y, eps, norm, seed):
        raise ValueError(f"bad values {np.arange(20000)}")


@hookimpl
def advbench_register_attacks(register):
    register("dumps", Dumps)
"""


def test_defense_diagnostics_figures_labels_and_short_errors_reach_the_leaderboard(tmp_path, clean_sys_path):
    import numpy as np

    from advbench.runs.store import RunStore
    from advbench.testing import run_spec, tiny_spec
    from advbench.text import MESSAGE_CHARACTERS, short_message

    assert short_message("x" * 1000).endswith("…") and len(short_message("x" * 1000)) == MESSAGE_CHARACTERS
    assert short_message("first\nsecond") == "first …"
    (tmp_path / "dumps.py").write_text(EXPLODING)
    spec = tiny_spec(
        tmp_path,
        plugins=["dumps.py"],
        threat_models=[{"norm": "linf", "eps": [0.1]}],
        models=[
            {
                "name": "prm",
                "architecture": {"name": "mlp", "hidden": 16},
                "defense": {"name": "prm"},
                "training": {"epochs": 2, "learning_rate": 0.01},
            }
        ],
        attacks=[{"name": "pgd", "steps": 10}, {"name": "dumps"}],
        evaluation={"examples": 20, "batch_size": 20},
    )
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 1
    board = (run.run_dir / "leaderboard.md").read_text()
    assert len(board.splitlines()) < 150 and "dumps failed: ValueError: bad values \\[" in board
    assert "(in full: jobs/prm/linf/attack-dumps.json)" in board
    assert "traceback" in (run.run_dir / "jobs/prm/linf/attack-dumps.json").read_text()
    # PRM's diagnostics: rendered by the leaderboard itself, its figure beside it
    assert "## Defense diagnostics" in board and "gradient_iou" in board
    assert "![prm](leaderboard-prm-gradients.png)" in board and (run.run_dir / "leaderboard-prm-gradients.png").is_file()
    # the adversarial examples are kept with their true and predicted class, for the figure's labels
    arrays = RunStore.open(run.run_dir).job_arrays("prm/linf/attack-pgd")
    record = run.results.records["prm/linf/attack-pgd"]
    found = np.isfinite(np.asarray(record["radius"][: len(arrays["label"])])) & (
        np.asarray(record["radius"][: len(arrays["label"])]) > 0
    )
    assert found.any() and (arrays["predicted"][found] != arrays["label"][found]).all()
    assert run.results.records["prm/clean"]["class_names"] == [str(d) for d in range(10)]
