"""The driver contract: what every driver does, what some can also do, and what apply hands to
them. Pure definitions, no engine access.

`Driver` declares every method the rest of the code calls on a driver. Optional capabilities
are separate small interfaces (`SupportsImport`, `SupportsRecover`, `SupportsKeyRotation`):
callers check `isinstance` through `require`, which says clearly which driver lacks what, so no
driver carries methods that only raise.

Refresh is split in two: `read` is the driver's one side-effecting read of its engine (into an
observation of its own shape); `fold` is pure and turns state plus that observation into
refreshed records, drift, and the objects of ours no record owns (`FoldResult`, see
reconciler/drivers/common/fold.py). The orphan and deposed bookkeeping is shared
(reconciler/refresh.py).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager

from reconciler.addresses import Address
from reconciler.errors import ReconcilerError
from reconciler.state.model import StateFile, StateRecord

if TYPE_CHECKING:
    from reconciler.drivers.common.fold import FoldResult


@dataclass(frozen=True)
class StepContext:
    """What a driver may know while it carries out one step."""

    stack: str
    stack_dir: Path
    state_dir: Path
    records: Callable[[], dict[str, StateRecord]]
    progress: Callable[[str], None] = field(default=lambda message: None)
    # The state's lineage: every object made is labelled with it (drivers/common/labels.py).
    identity: str = ""
    state_path: str | None = None  # the state's location (StateBackend.location), for labels
    # `with ctx.waiting():` around a part of a step that only waits (readiness probes): the
    # apply engine lets another step start meanwhile, so --parallelism bounds the steps working
    # the engine, not the steps asleep between probes (#16).
    waiting: Callable[[], ContextManager[None]] = field(default=nullcontext)


class Driver(ABC):
    """One container engine. Steps are side effects only: the planner has decided everything."""

    name: str = ""
    # Whether an endpoint's gateway can start before its deployments and be re-pointed to them
    # cheaply afterwards: then the apply engine creates a new endpoint in parallel with them and
    # routes it (`update`) once they are ready (apply.step_graph, #16). False where a re-point
    # is as dear as the create (a swarm gateway config change replaces its task).
    routes_endpoint_after_create: bool = False

    # -- apply -------------------------------------------------------------------------------
    @abstractmethod
    def preflight(self, specs: list[tuple[Address, dict]]) -> None:
        """Fail before any change when the plan cannot work here (engine, images)."""

    @abstractmethod
    def create(self, address: Address, spec: dict, spec_hash: str, ctx: StepContext,
               prior: StateRecord | None = None) -> StateRecord:
        """Make the resource; `prior` is the record being replaced (an endpoint keeps port and keys)."""

    @abstractmethod
    def update(self, record: StateRecord, spec: dict, spec_hash: str, ctx: StepContext) -> StateRecord:
        """Change the resource in place to `spec`."""

    @abstractmethod
    def delete(self, record: StateRecord, ctx: StepContext) -> None:
        """Remove what `record` names (deposed and orphan records included); gone is fine."""

    @abstractmethod
    def finish(self, ctx: StepContext) -> None:
        """After a successful apply: shared objects (the stack's network) once nothing uses them."""

    def new_record(self, address: str, spec: dict, spec_hash: str) -> StateRecord:
        """The record a create step fills in: this driver's, ready unless the step fails."""
        return StateRecord(address, self.name, spec, spec_hash, status="ready")

    # -- refresh -----------------------------------------------------------------------------
    @abstractmethod
    def read(self, state: StateFile, state_dir: Path | None) -> Any:
        """Everything refresh needs from the engine for `state`, as this driver's observation."""

    @abstractmethod
    def fold(self, state: StateFile, observation: Any) -> FoldResult:
        """Pure: the records refresh changes, the drift, and the objects no record owns."""

    # -- operations --------------------------------------------------------------------------
    @abstractmethod
    def logs(self, record: StateRecord, lines: int) -> list[tuple[str, str]]:
        """(object name, last lines) for each container or service of `record`."""

    def stack_objects(self, stack: str) -> list[tuple[str, dict]]:
        """(id, labels) of every object labelled with this stack name, whatever its identity:
        plan names those of other states, and refuses to rebuild a lost state over them."""
        return []


class SupportsImport(ABC):
    """`reconciler import`: adopt an existing container as a deployment's instance."""

    @abstractmethod
    def inspect_container(self, reference: str) -> dict | None:
        """What the container runs (image, env, ports, mounts, labels, ...), None when there is none."""

    @abstractmethod
    def adopt(self, ctx: StepContext, info: dict) -> str | None:
        """Make the container reachable by the stack's gateway; the network name when it had to."""


class SupportsRecover(ABC):
    """`reconciler state recover`: rebuild a lost state file from labels."""

    @abstractmethod
    def list_managed(self, stack: str) -> list:
        """Every object with this stack's labels, as the driver observes them."""

    @abstractmethod
    def inspect_container(self, reference: str) -> dict | None: ...

    @abstractmethod
    def stored_models(self, state_dir: Path, digests: list[str]) -> dict[str, str | None]:
        """For each content digest, where an intact copy of the model is stored (None: no copy)."""

    @abstractmethod
    def recover_gateway(self, record: StateRecord, ctx: StepContext) -> tuple[StateRecord, str]:
        """A found gateway with fresh keys (keys live only in state), and a note saying what happened."""


class SupportsKeyRotation(ABC):
    """`reconciler endpoint keys --regenerate-keys`."""

    @abstractmethod
    def regenerate_keys(self, record: StateRecord, which: str, ctx: StepContext) -> StateRecord: ...


class SupportsStatus(ABC):
    """`reconciler status STACK`: each instance's runtime health, as the engine shows it now."""

    @abstractmethod
    def runtime_status(self, state: StateFile, state_dir: Path) -> dict:
        """{"containers": {id: {state, restarts, started}}, "health": {endpoint name: what its
        health supervisor last wrote (instances: {name: {in_rotation, readiness_failing_since,
        readiness_error, ...}}, restarts: {container id: count})}}; read only."""


_WHAT_TO_DO = {
    SupportsImport: "remove what reconciler does not track by hand (`docker service rm`), then `reconciler apply`",
    SupportsRecover: "destroy what is left by hand (`docker service rm`, by the org.reconciler.stack label), "
                     "then `reconciler apply` to start the stack again",
    SupportsKeyRotation: "replace the endpoint (`reconciler apply --replace endpoint.NAME`) to get new keys",
    SupportsStatus: "use `reconciler drift` and `docker service ps` for now",
}


def require(driver: Driver, capability: type, command: str):
    """The driver as `capability`, or a clear error naming the command, the driver and what to do."""
    if isinstance(driver, capability):
        return driver
    raise ReconcilerError(f"`{command}` is not supported by the {driver.name} driver",
                          _WHAT_TO_DO.get(capability, "use a driver that supports it"))
