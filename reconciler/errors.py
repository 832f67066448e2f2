"""The error tree: every failure a user can cause carries a summary and what to do about it.

Pure. Exit codes are chosen only in the CLI layer (reconciler.cli.exits).
"""
from __future__ import annotations

from dataclasses import dataclass


class ReconcilerError(Exception):
    """A failure explained to the user: `summary` says what went wrong, `hint` what to do."""

    def __init__(self, summary: str, hint: str = "") -> None:
        super().__init__(summary)
        self.summary = summary
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.summary}\n  {self.hint}" if self.hint else self.summary


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the stack, located as precisely as we can: file:line: path."""

    file: str
    line: int
    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.path}:" if self.path else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}:{field} {self.message}{hint}"

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "path": self.path,
                "message": self.message, "hint": self.hint}


class StackInvalid(ReconcilerError):
    """The stack directory has one or more problems; nothing was planned or changed."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        count = len(self.problems)
        super().__init__(
            f"stack is invalid: {count} problem{'s' if count != 1 else ''}",
            "fix the lines above, then run `reconciler validate` again",
        )

    def __str__(self) -> str:
        return "\n".join([*(str(p) for p in self.problems), self.summary])


class StateLocked(ReconcilerError):
    """Another process holds the state lock."""


class StateCorrupt(ReconcilerError):
    """The state file cannot be read; it is never silently replaced."""


class StalePlan(ReconcilerError):
    """A saved plan no longer matches the state or the configuration it was made from."""


class DriverError(ReconcilerError):
    """The container engine refused or failed an operation. `about`: the addresses of the
    resources whose settings caused it (an image they name), so that the caller, which knows
    where each was written, can say file:line."""

    def __init__(self, summary: str, hint: str = "", about: tuple[str, ...] = ()) -> None:
        super().__init__(summary, hint)
        self.about = tuple(about)
