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


def test_the_index_lists_exactly_the_published_leaderboards():
    index = (ROOT / "leaderboards" / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| \[([^\]]+)\]\(([^)]+)\.md\)", index, flags=re.MULTILINE))
    assert all(name == link for name, link in listed), listed
    assert {name for name, _ in listed} == {board.stem for board in BOARDS}
