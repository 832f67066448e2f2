"""What the apply engine reports while it runs: typed step events and the Hook that receives them.

Pure definitions. The engine (reconciler/apply.py) emits these and never formats text; the
progress lines a user reads ("deployment.x: Creating...") are rendered from them in
reconciler/render/progress.py. Kept apart from the engine so that render/ can depend on them
without importing the engine (which imports the driver contract).
"""
from __future__ import annotations

from dataclasses import dataclass

from reconciler.addresses import Address
from reconciler.errors import ReconcilerError
from reconciler.planning.plan import Change

# The operations a step carries out on one address.
CREATE_STEP, UPDATE_STEP, DELETE_STEP, DESTROY_DEPOSED_STEP = "create", "update", "delete", "destroy-deposed"
# The second half of an endpoint created unrouted (its gateway starts while its deployments
# do): the driver's update of the just-created record, re-pointing the gateway at them (#16).
ROUTE_STEP = "route"


@dataclass(frozen=True)
class Step:
    id: str
    address: Address
    operation: str  # create | update | delete | destroy-deposed | route
    change: Change

    @property
    def label(self) -> str:
        """`create deployment.ep/blue`: how the step graph and the fake driver name a step."""
        return f"{self.operation} {self.address}"


@dataclass(frozen=True)
class ApplyStarted:
    """The engine is about to run the first of `step_count` steps (preflight has passed)."""
    step_count: int


@dataclass(frozen=True)
class StepStarted:
    step: Step


@dataclass(frozen=True)
class StepStillRunning:
    step: Step
    elapsed: float  # seconds since the step started


@dataclass(frozen=True)
class StepCompleted:
    step: Step
    elapsed: float


@dataclass(frozen=True)
class StepFailedEvent:
    step: Step
    error: ReconcilerError
    elapsed: float


@dataclass(frozen=True)
class StepSkipped:
    """Not attempted: a step it waits for failed or was skipped itself."""
    step: Step
    blocked_by: tuple[str, ...]  # ids of the failed or skipped steps it waited for


@dataclass(frozen=True)
class DriverMessage:
    """A line a driver reports through StepContext.progress while it works."""
    text: str


StepEvent = ApplyStarted | StepStarted | StepStillRunning | StepCompleted | StepFailedEvent | StepSkipped | DriverMessage


class Hook:
    """Receives every event of an apply, in order. Subclass and override `on_event`.

    Called from the engine's scheduling thread, except DriverMessage, which comes from the
    worker running the step (the engine serialises calls, so a hook needs no lock of its own).
    An exception raised by a hook stops the apply, as a failing terminal would.
    """

    def on_event(self, event: StepEvent) -> None:  # pragma: no cover - the default ignores everything
        pass


class RecordingHook(Hook):
    """Keeps every event: for tests and for front ends that show a summary at the end."""

    def __init__(self) -> None:
        self.events: list[StepEvent] = []

    def on_event(self, event: StepEvent) -> None:
        self.events.append(event)
