"""Errors advbench reports to users: a message, never a traceback."""

from __future__ import annotations

from dataclasses import dataclass, field


class AdvbenchError(Exception):
    """An error the CLI prints as a message and turns into a non-zero exit code."""

    exit_code = 1


@dataclass
class Problem:
    """One thing wrong with a spec: where it is and what was expected."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


@dataclass
class SpecError(AdvbenchError):
    """A spec failed validation; holds every problem found, not just the first."""

    problems: list[Problem] = field(default_factory=list)
    exit_code = 2

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


class PluginError(AdvbenchError):
    """A plugin could not be loaded or registered something invalid (fatal under --strict)."""

    exit_code = 2


class DataError(AdvbenchError):
    """Dataset files are missing, corrupt or cannot be fetched."""

    exit_code = 2


class UsageError(AdvbenchError):
    """A command-line option the command cannot honour (exit code 2, like a bad spec)."""

    exit_code = 2


class RunDirectoryError(AdvbenchError):
    """A run directory that is not what a run writes (damaged, planted, or not one): bad input."""

    exit_code = 2
