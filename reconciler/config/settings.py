"""Stack settings: the one optional document of a stack that is not Azure ML's (conventionally
reconciler.yml), found by `$schema` or by its keys. Pure.

Everything a stack can say about how reconciler runs it, rather than what it runs: the
driver, and which environment variables are no secret (plans mask every other value).
"""
from __future__ import annotations

from dataclasses import dataclass

from reconciler.config.loader import Document
from reconciler.errors import Problem

# Keys only a settings document has; used to tell its kind when `$schema` is absent.
SETTINGS_KEYS = frozenset({"driver", "plain_environment_variables"})


@dataclass(frozen=True)
class StackSettings:
    # "" when the stack does not say (then --driver, then the driver state was made with).
    driver: str = ""
    # Environment variables whose values plans, drift reports and `state show` print in clear.
    plain_environment_variables: tuple[str, ...] = ()


def read_settings(documents: list[Document]) -> tuple[StackSettings, list[Problem]]:
    """The settings of a stack's (schema-valid) settings documents; a second one is an error."""
    if not documents:
        return StackSettings(), []
    first = documents[0]
    problems = [document.problem((), "stack settings are given twice",
                                 f"the first ones are at {first.file}:{first.line_of(())}; keep one")
                for document in documents[1:]]
    data = first.data
    return StackSettings(driver=data.get("driver", ""),
                         plain_environment_variables=tuple(sorted(set(data.get("plain_environment_variables", ()))))), \
        problems
