"""The Driver protocol and what apply hands to it. Pure definitions, no engine access."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from reconciler.state.model import StateRecord

LABEL_PREFIX = "org.reconciler."
LABEL_MANAGED_BY = LABEL_PREFIX + "managed-by"
LABEL_STACK = LABEL_PREFIX + "stack"
LABEL_ADDRESS = LABEL_PREFIX + "address"
LABEL_SPEC_HASH = LABEL_PREFIX + "spec-hash"
LABEL_GENERATION = LABEL_PREFIX + "generation"
LABEL_INSTANCE = LABEL_PREFIX + "instance"
LABEL_ROLE = LABEL_PREFIX + "role"
MANAGED_BY = "reconciler"


@dataclass(frozen=True)
class StepContext:
    """What a driver may know while it carries out one step."""

    stack: str
    stack_dir: Path
    state_dir: Path
    records: Callable[[], dict[str, StateRecord]]
    progress: Callable[[str], None] = field(default=lambda message: None)


@dataclass(frozen=True)
class Observed:
    """What the engine shows for one managed object, keyed back to a state address."""

    address: str
    driver_id: str
    name: str
    running: bool
    status: str
    labels: dict
    attributes: dict


class Driver(Protocol):
    name: str

    def preflight(self, specs: list[tuple[str, dict]]) -> None: ...

    def create(self, address: str, spec: dict, spec_hash: str, ctx: StepContext,
               prior: StateRecord | None = None) -> StateRecord: ...

    def update(self, record: StateRecord, spec: dict, spec_hash: str, ctx: StepContext) -> StateRecord: ...

    def delete(self, record: StateRecord, ctx: StepContext) -> None: ...

    def list_managed(self, stack: str) -> list[Observed]: ...
