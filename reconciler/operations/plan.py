"""The plan operation: load the stack and its state, choose the driver, refresh, plan. Reads
the stack directory, the state file and (when refreshing) the engine; writes nothing.

`plan(PlanRequest(...))` returns the plan with the (refreshed) state it was made from and the
driver it chose. The plan records the state's location (the absolute path of a local state
file, or `pg:SCHEMA/NAME`), so that a saved plan is applied to the state it was made against.
`open_store` picks the state backend the stack settings name (`backend: local | pg`).

Objects labelled with this stack's name but another identity (another state: a stack of the
same folder name elsewhere) are named in the plan's warnings and never touched. When
the state holds nothing but such objects were made from this very stack directory or state file,
and their own state file is gone, the state was lost: planning would rebuild everything beside
them (new port, new keys), so it is refused with a pointer to `reconciler state recover`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from reconciler.config.graph import DesiredGraph
from reconciler.config.settings import BackendSettings, LoadOptions
from reconciler.config.stack import load_stack, read_backend_settings
from reconciler.drivers.common.fold import record_ids
from reconciler.drivers.common.labels import OtherOwner, other_owners
from reconciler.errors import ReconcilerError, StackInvalid
from reconciler.planning.plan import Plan
from reconciler.planning.planner import APPLY, DESTROY, REFRESH_ONLY, PlanOptions, make_plan
from reconciler.state.backend import PG_LOCATION_PREFIX, StateBackend, as_location
from reconciler.state.model import StateFile
from reconciler.state.store import StateStore, default_state_path, legacy_state_path

MODES = (APPLY, DESTROY, REFRESH_ONLY)

# name -> a driver instance; tests pass one that returns a fake.
DriverLookup = Callable[[str], object]


@dataclass(frozen=True)
class PlanRequest:
    stack_dir: Path
    variables: dict[str, str] = field(default_factory=dict)
    state_path: Path | None = None  # default: state.store.default_state_path(stack_dir)
    mode: str = APPLY  # apply | destroy | refresh-only
    targets: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    refresh: bool = True
    driver: str | None = None  # --driver; None: the stack settings, then what state was made with
    load: LoadOptions = LoadOptions()  # --root, --image: added to (and winning over) the stack settings


@dataclass(frozen=True)
class PlanOutcome:
    plan: Plan
    state: StateFile  # as refreshed: the plan's changes refer to it
    driver: object | None  # the chosen driver, when refreshing needed one
    state_path: str  # the state's location


def driver_lookup(drivers: DriverLookup | None) -> DriverLookup:
    if drivers is not None:
        return drivers
    # The registry imports a driver's module (and the Docker SDK) only when it is asked for.
    from reconciler.drivers.registry import driver_named
    return driver_named


def choose_driver(option: str | None, configured: str, state: StateFile) -> str:
    from reconciler.drivers.registry import choose_driver as choose
    return choose(option, configured, state)


def open_store(stack: str, state_path: Path | None, stack_dir: Path | None = None,
               backend: BackendSettings | None = None) -> StateBackend:
    """The state backend the stack settings choose (`backend`, when the caller has loaded them;
    else read from `stack_dir`): PostgreSQL for `backend: pg`, else the local file of `--state`
    or the stack directory's default one. A state file at the old default location
    (`state/<stack>.json` in the working directory) is not guessed at: it may be this stack's or
    another stack's of the same name."""
    if backend is None:
        backend = read_backend_settings(stack_dir) if stack_dir is not None else BackendSettings()
    if backend.kind == "pg":
        if state_path:
            raise ReconcilerError(
                f"stack {stack} keeps its state in PostgreSQL (`backend: pg` in its settings), but --state "
                f"names a local file ({state_path})",
                "drop --state; to move a state between backends: reconciler state migrate STACK_DIR --to pg|local")
        return pg_store(stack, backend, Path(stack_dir))
    return local_store(stack, state_path, stack_dir)


def pg_store(stack: str, backend: BackendSettings, stack_dir: Path) -> StateBackend:
    # Gateway configs and model copies stay in the stack directory's local state directory, as
    # with the local backend: `state migrate` then moves the state and nothing else.
    from reconciler.state.pg import PgStateStore
    return PgStateStore(stack, backend.name or stack, default_state_path(stack_dir).parent,
                        conn_str_env=backend.conn_str_env, schema=backend.schema_name)


def local_store(stack: str, state_path: Path | None, stack_dir: Path | None = None) -> StateStore:
    """The local backend of `--state`, else the stack directory's default file."""
    if state_path:
        return StateStore(Path(state_path), stack)
    if stack_dir is None:
        raise ReconcilerError(f"no state file for stack {stack!r}", "pass --stack STACK_DIR or --state PATH")
    path = default_state_path(stack_dir)
    legacy = legacy_state_path(stack)
    if not path.exists() and legacy.exists():
        raise ReconcilerError(
            f"found {legacy}, the old default state location (relative to the working directory); "
            f"the default for {Path(stack_dir).resolve()} is now {path}",
            f"if {legacy} is this stack's state, keep using it with --state {legacy} (its gateway configs "
            f"and model copies are beside it); if it belongs to another stack named {stack!r}, "
            f"pass --state {path}")
    return StateStore(path, stack)


def plan(request: PlanRequest, drivers: DriverLookup | None = None) -> PlanOutcome:
    """Plan `request.stack_dir` against its state (read, not locked: a plan changes nothing)."""
    desired = load_desired(request)
    store = open_store(desired.stack, request.state_path, Path(request.stack_dir), desired.backend)
    return plan_with_store(request, store, drivers, desired)


def load_desired(request: PlanRequest) -> DesiredGraph:
    if request.mode not in MODES:
        raise ReconcilerError(f"unknown plan mode {request.mode!r}", f"use one of {', '.join(MODES)}")
    return load_stack(Path(request.stack_dir), dict(request.variables), request.load)


def plan_with_store(request: PlanRequest, store: StateBackend, drivers: DriverLookup | None = None,
                    desired: DesiredGraph | None = None) -> PlanOutcome:
    """Plan against `store` (the caller may hold its lock); `desired`: the stack, when the
    caller has loaded it already (to choose the store)."""
    desired = desired if desired is not None else load_desired(request)
    if desired.unsupported and request.mode != DESTROY:
        raise StackInvalid(list(desired.unsupported))
    state = store.read()
    chosen = choose_driver(request.driver, desired.driver, state)
    driver = driver_lookup(drivers)(chosen) if request.refresh else None
    drift = ()
    if driver is not None:
        # Also with no records: an apply killed during its first step leaves objects labelled
        # with the identity it wrote before that step, which only a refresh finds.
        from reconciler.refresh import refresh_state
        state, drift = refresh_state(driver, state, store.work_dir)
        others = other_owners(driver.stack_objects(state.stack), state.lineage,
                              {cid for record in state.records.values() for cid in record_ids(record)})
        if request.mode != DESTROY:
            refuse_if_lost(state, others, store.location, Path(request.stack_dir))
    else:
        others = []
    known = {str(a) for a in desired.resources} | set(state.records)
    for address in (*request.targets, *request.replace):
        if address not in known:
            raise ReconcilerError(f"no resource at address {address!r}",
                                  "known addresses: " + ", ".join(sorted(known)))
    options = PlanOptions(mode=request.mode, targets=frozenset(request.targets),
                          replace=frozenset(request.replace),
                          created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), driver=chosen)
    made = make_plan(desired, state, options, drift)
    made = dataclasses.replace(made, state_path=store.location,
                               warnings=(*made.warnings, *other_state_warnings(others)))
    return PlanOutcome(made, state, driver, store.location)


def other_state_warnings(others: list[OtherOwner]) -> tuple[str, ...]:
    """One warning per other state whose objects carry this stack's name. Pure."""
    return tuple(f"{other.describe()} carry this stack's name but belong to another state; "
                 "reconciler leaves them alone" for other in others)


def refuse_if_lost(state: StateFile, others: list[OtherOwner], state_path, stack_dir: Path) -> None:
    """Raise when `state` is empty but live objects were made from this stack directory or state
    by a state that no longer exists (lost): a plan now would be a full rebuild."""
    if state.records:
        return
    here, path = str(Path(stack_dir).resolve()), as_location(state_path)
    lost = [o for o in others if o.identity and (o.state == path or o.stack_dir == here)
            and not _state_alive(o, path)]
    if lost:
        state_option = "" if _is_default_path(state_path, stack_dir) else f" --state {state_path}"
        raise ReconcilerError(
            f"state {state_path} holds nothing, but the engine runs "
            + "; ".join(o.describe() for o in lost) + f" made from {here}: the state was lost",
            f"rebuild it from the running objects (same port, same keys): reconciler state recover {stack_dir}"
            f"{state_option}; planning now would start everything again beside them on a new port with new keys")


def _is_default_path(state_path, stack_dir: Path) -> bool:
    if str(state_path).startswith(PG_LOCATION_PREFIX):
        return True  # found through the stack settings: there is no --state to suggest
    return as_location(state_path) == str(default_state_path(stack_dir).resolve())


def _state_alive(owner: OtherOwner, ours: str) -> bool:
    """Whether the state the objects' labels name still exists with their identity. A state in
    PostgreSQL other than ours is taken to be alive: checking it would need its connection."""
    if owner.state.startswith(PG_LOCATION_PREFIX):
        return owner.state != ours
    try:
        return json.loads(Path(owner.state).read_text()).get("lineage") == owner.identity
    except (OSError, ValueError, AttributeError):
        return False
