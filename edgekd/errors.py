"""Errors a user can act on, and the exit codes every command shares.

User errors print one line and a hint, no traceback. Anything else is a bug and keeps its
traceback (exit 70).
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_BUDGET = 1
EXIT_USER = 2
EXIT_TOOLCHAIN = 3
EXIT_INTERNAL = 70


class EdgekdError(Exception):
    """An error the user can fix; `str()` names the input, `hint` says what to do."""

    exit_code = EXIT_USER

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        text = str(self).replace("\n", " ")
        return f"{text} (hint: {self.hint})" if self.hint else text


class ConfigError(EdgekdError):
    """A project, target or profile file (or name) is wrong."""


class DataError(EdgekdError):
    """A data factory returned something edgekd cannot use."""


class ToolchainMissing(EdgekdError):
    """A runtime or library the requested work needs is not installed."""

    exit_code = EXIT_TOOLCHAIN


class BudgetViolated(EdgekdError):
    """A stage broke one of the profile's budgets; the report has been written."""

    exit_code = EXIT_BUDGET
