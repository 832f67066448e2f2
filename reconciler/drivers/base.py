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


def required_images(specs: list[tuple[str, dict]], gateway_image: str) -> list[str]:
    """Every image a plan's changes need: each deployment's, and the gateway's for endpoints."""
    images = {spec["image"] for address, spec in specs if address.startswith("deployment.")}
    if any(address.startswith("endpoint.") for address, _ in specs):
        images.add(gateway_image)
    return sorted(images)


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
    """What the engine shows for one managed object, keyed back to a state address.

    `attributes` is normalised by the driver so that refresh compares plain data:
    image (the reference the engine reports: the name, or the image id once that name
    points at another image), image_id, role, generation, instance, spec_hash,
    ports {"8501": ["127.0.0.1:32768"]} (published bindings by container port; "/udp" suffix
    for non-TCP), mounts [{"source", "destination", "read_only"}] sorted by destination.
    """

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

    # Refresh reads (see reconciler/refresh.py): each is called only when the fold needs it.
    def observe(self, container_ids: list[str]) -> list[Observed]: ...

    def inspect(self, container_id: str) -> dict | None: ...

    def model_digest(self, record: StateRecord) -> str | None: ...

    def gateway_config(self, state_dir: Path, stack: str, record: StateRecord) -> dict: ...
