"""The plan operation: load the stack and its state, choose the driver, refresh, plan. Reads
the stack directory, the state file and (when refreshing) the engine; writes nothing.

`plan(PlanRequest(...))` returns the plan with the (refreshed) state it was made from and the
driver it chose. The plan records the absolute path of the state file, so that a saved plan is
applied to the state it was made against.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from reconciler.config.settings import LoadOptions
from reconciler.config.stack import load_stack, stack_name
from reconciler.errors import ReconcilerError, StackInvalid
from reconciler.planning.plan import Plan
from reconciler.planning.planner import APPLY, DESTROY, REFRESH_ONLY, PlanOptions, make_plan
from reconciler.state.model import StateFile
from reconciler.state.store import StateStore, default_state_path

MODES = (APPLY, DESTROY, REFRESH_ONLY)

# name -> a driver instance; tests pass one that returns a fake.
DriverLookup = Callable[[str], object]


@dataclass(frozen=True)
class PlanRequest:
    stack_dir: Path
    variables: dict[str, str] = field(default_factory=dict)
    state_path: Path | None = None  # default: state/<stack>.json, relative to the working directory
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
    state_path: Path


def driver_lookup(drivers: DriverLookup | None) -> DriverLookup:
    if drivers is not None:
        return drivers
    # The registry imports a driver's module (and the Docker SDK) only when it is asked for.
    from reconciler.drivers.registry import driver_named
    return driver_named


def choose_driver(option: str | None, configured: str, state: StateFile) -> str:
    from reconciler.drivers.registry import choose_driver as choose
    return choose(option, configured, state)


def open_store(stack: str, state_path: Path | None) -> StateStore:
    return StateStore(Path(state_path) if state_path else default_state_path(stack), stack)


def plan(request: PlanRequest, drivers: DriverLookup | None = None) -> PlanOutcome:
    """Plan `request.stack_dir` against its state (read, not locked: a plan changes nothing)."""
    store = open_store(stack_name(Path(request.stack_dir)), request.state_path)
    return plan_with_store(request, store, drivers)


def plan_with_store(request: PlanRequest, store: StateStore, drivers: DriverLookup | None = None) -> PlanOutcome:
    if request.mode not in MODES:
        raise ReconcilerError(f"unknown plan mode {request.mode!r}", f"use one of {', '.join(MODES)}")
    desired = load_stack(Path(request.stack_dir), dict(request.variables), request.load)
    if desired.unsupported and request.mode != DESTROY:
        raise StackInvalid(list(desired.unsupported))
    state = store.read()
    chosen = choose_driver(request.driver, desired.driver, state)
    driver = driver_lookup(drivers)(chosen) if request.refresh else None
    drift = ()
    if driver is not None:
        # Also with no records: an apply killed before its first state write leaves labelled
        # objects that only a refresh finds.
        from reconciler.refresh import refresh_state
        state, drift = refresh_state(driver, state, store.path.parent)
    known = {str(a) for a in desired.resources} | set(state.records)
    for address in (*request.targets, *request.replace):
        if address not in known:
            raise ReconcilerError(f"no resource at address {address!r}",
                                  "known addresses: " + ", ".join(sorted(known)))
    options = PlanOptions(mode=request.mode, targets=frozenset(request.targets),
                          replace=frozenset(request.replace),
                          created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), driver=chosen)
    made = make_plan(desired, state, options, drift)
    made = dataclasses.replace(made, state_path=str(store.path.resolve()))
    return PlanOutcome(made, state, driver, store.path)
