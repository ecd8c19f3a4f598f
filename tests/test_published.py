"""The published specs and leaderboards agree: every spec in specs/ is valid, every
leaderboard in leaderboards/ was computed from the spec of its name as that spec reads now
(the hash in its provenance), and leaderboards/README.md lists exactly the published ones."""

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
NOT_BOARDS = {"README.md", "PAPERS.md"}
BOARDS = sorted(p for p in (ROOT / "leaderboards").glob("*.md") if p.name not in NOT_BOARDS)


@cache
def spec(path: Path):
    """The spec at ``path``, loaded strictly (a plugin that fails to load fails the test), once."""
    from advbench.spec.loading import load_spec

    return load_spec(path, strict=True)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_published_spec_is_valid(path):
    assert spec(path).name == path.stem


@pytest.mark.parametrize("board", BOARDS, ids=lambda p: p.stem)
def test_every_leaderboard_was_computed_from_its_spec_as_it_reads_now(board):
    path = ROOT / "specs" / f"{board.stem}.yaml"
    assert path.exists(), f"{board.name} has no spec {path.name}"
    found = re.search(r"spec `([^`]+)`, hash `([0-9a-f]+)`", board.read_text(encoding="utf-8"))
    assert found, f"{board.name} names no spec hash in its provenance"
    name, digest = found.groups()
    assert name == board.stem
    # a spec changed after its run (a budget, a model, a parameter default) needs the run again
    assert spec(path).hash.startswith(digest), f"{board.name} was computed from another version of {path.name}"


@cache
def index() -> str:
    return (ROOT / "leaderboards" / "README.md").read_text(encoding="utf-8")


def test_the_index_lists_exactly_the_published_leaderboards():
    listed = set(re.findall(r"^\| \[([^\]]+)\]\(([^)]+)\.md\)", index(), flags=re.MULTILINE))
    assert all(name == link for name, link in listed), listed
    assert {name for name, _ in listed} == {board.stem for board in BOARDS}


def job_seconds(board: Path) -> float:
    """The run's job time, as its leaderboard's Cost section measured it."""
    found = re.search(r"^The run: ([\d,]+) s of job time in all", board.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert found, f"{board.name} states no job time in its Cost section"
    return float(found.group(1).replace(",", ""))


@pytest.mark.parametrize("board", BOARDS, ids=lambda p: p.stem)
def test_the_times_quoted_for_a_run_are_its_measured_job_time(board):
    """The index row and the spec's comment quote the time the leaderboard measured,
    rounded (a regenerated leaderboard with a stale time beside it fails)."""
    seconds = job_seconds(board)
    [row] = [line for line in index().splitlines() if line.startswith(f"| [{board.stem}](")]
    quoted = re.match(r"(\d+) min", row.rstrip(" |").rsplit("|", 1)[-1].strip())
    assert quoted, f"the index row of {board.stem} ends with no time in minutes"
    assert int(quoted.group(1)) == max(1, round(seconds / 60)), (
        f"the index quotes {quoted.group(0)}, the run took {seconds:.0f} s"
    )
    lines = (ROOT / "specs" / f"{board.stem}.yaml").read_text(encoding="utf-8").splitlines()
    comment = " ".join(
        " ".join(line.lstrip("#").split()) for line in lines if line.startswith("#")
    )  # one line: a phrase may wrap
    stated = re.search(r"([\d.,]+) (minutes|s) of job time", comment)
    if stated is None:  # a spec that quotes no time (quickstart: "about a minute") has nothing to hold
        return
    value = float(stated.group(1).replace(",", ""))
    measured = seconds / 60 if stated.group(2) == "minutes" else seconds
    assert abs(value - measured) <= 0.5 + 1e-9, f"specs/{board.stem}.yaml says {stated.group(0)}, the run took {seconds:.0f} s"
