"""The apply and destroy operations: lock the state, plan (or read a saved plan), ask the
caller to confirm, preflight, run the apply engine. Side effects through the state store and
the driver only; nothing here prints or prompts: the front end passes `show` (render the plan),
`confirm` (ask) and hooks (render progress), and reads the outcome.

A saved plan is applied to the state it was made against (`Plan.state_path`: a file, or a pg
state found through the stack settings); a `state_path` in the request that names another one is
refused.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from reconciler.apply import Applier, ApplyResult
from reconciler.config.settings import LoadOptions
from reconciler.errors import DriverError, ReconcilerError, StalePlan
from reconciler.events import Hook
from reconciler.operations.plan import (DriverLookup, PlanRequest, choose_driver, driver_lookup, load_desired,
                                        open_store, plan_with_store)
from reconciler.planfile import check_not_stale, read_plan
from reconciler.planning.plan import Plan
from reconciler.planning.planner import APPLY, DESTROY, REFRESH_ONLY
from reconciler.state.backend import PG_LOCATION_PREFIX, StateBackend
from reconciler.state.model import StateFile

# What an apply ended with.
APPLIED = "applied"            # every step ran
FAILED = "failed"              # some step failed: result.failed, result.skipped
NO_CHANGES = "no-changes"      # nothing to do; nothing written
STATE_REFRESHED = "state-refreshed"  # refresh-only: the refreshed state was saved, the engine untouched
CANCELLED = "cancelled"        # confirm() said no; nothing written


@dataclass(frozen=True)
class ApplyRequest:
    source: Path  # a stack directory, or a plan file saved by `plan -out`
    variables: dict[str, str] = field(default_factory=dict)
    state_path: Path | None = None  # with a saved plan: only to check it is the plan's own
    mode: str = APPLY  # apply | destroy | refresh-only; a saved plan has its own
    targets: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    refresh: bool = True
    driver: str | None = None
    parallelism: int = 10
    lock_timeout: float = 0.0
    load: LoadOptions = LoadOptions()


@dataclass(frozen=True)
class ApplyOutcome:
    plan: Plan
    status: str  # APPLIED | FAILED | NO_CHANGES | STATE_REFRESHED | CANCELLED
    state_path: str  # the state's location
    saved_plan: bool  # the plan came from a file (it was confirmed when it was made)
    result: ApplyResult | None = None  # when steps ran

    @property
    def ok(self) -> bool:
        return self.status not in (FAILED, CANCELLED)

    @property
    def counts(self) -> dict:
        return self.result.counts if self.result else {"added": 0, "changed": 0, "destroyed": 0}


def _show_nothing(plan: Plan) -> None:
    pass


def _approve(plan: Plan) -> bool:
    return True


def apply(request: ApplyRequest, *, show: Callable[[Plan], None] = _show_nothing,
          confirm: Callable[[Plan], bool] = _approve, hooks: Sequence[Hook] = (),
          drivers: DriverLookup | None = None) -> ApplyOutcome:
    """Make the engine match `request.source`, or carry out a saved plan exactly.

    `show(plan)` is called once the plan is known (under the state lock); `confirm(plan)` only
    for a plan made now that would change something (a saved plan was reviewed when it was
    saved). Step failures are in the outcome (status FAILED), not raised; bad input, a stale
    plan, a locked state or a preflight refusal raise ReconcilerError before anything runs.
    """
    source = Path(request.source)
    saved = source.is_file()
    plan = read_plan(source) if saved else None
    # The stack is read before the lock (its settings choose the store); nothing locks its files.
    desired = None if saved else load_desired(_plan_request(request))
    store = _store_for(request, plan, source, desired)
    store.lock("destroy" if request.mode == DESTROY else "apply", request.lock_timeout)
    with store:
        if plan is not None:
            state = store.read()
            check_not_stale(plan, state)
            driver = driver_lookup(drivers)(choose_driver(plan.driver, "", state))
            if plan.drift or plan.mode == REFRESH_ONLY:
                state = refreshed_as_planned(plan, state, driver, store)
        else:
            planned = plan_with_store(_plan_request(request), store, drivers, desired)
            plan, state = planned.plan, planned.state
            driver = planned.driver or driver_lookup(drivers)(plan.driver)
        show(plan)

        def outcome(status: str, result: ApplyResult | None = None) -> ApplyOutcome:
            return ApplyOutcome(plan, status, store.location, saved, result)

        if not plan.has_changes():
            if plan.drift and plan.mode == REFRESH_ONLY:
                if not saved and not confirm(plan):
                    return outcome(CANCELLED)
                store.write(state)
                return outcome(STATE_REFRESHED)
            return outcome(NO_CHANGES)
        if not saved and not confirm(plan):
            return outcome(CANCELLED)
        preflight(driver, plan)
        applier = Applier(driver, store, state, plan,
                          {"stack": plan.stack, "stack_dir": Path(plan.stack_dir).resolve(),
                           "state_dir": store.work_dir},
                          parallelism=request.parallelism, hooks=hooks)
        result = applier.run()
    return outcome(APPLIED if result.ok else FAILED, result)


def preflight(driver, plan) -> None:
    """The driver's whole-plan checks; a refusal about resources of the stack (an image they name)
    says where each one's image was written."""
    try:
        driver.preflight([(c.address, c.after) for c in plan.actionable if c.after])
    except DriverError as error:
        sources = located_sources(plan, error.about)
        if not sources:
            raise
        raise DriverError(f"{', '.join(sources)}: {error.summary}", error.hint) from error


def located_sources(plan, addresses: tuple[str, ...]) -> list[str]:
    """`file:line` of each named resource's image (of its document when the plan has no image
    line), in the plan's order, each place once. Pure."""
    wanted = set(addresses)
    found = [c.image_source or c.source for c in plan.actionable if str(c.address) in wanted]
    return list(dict.fromkeys(place for place in found if place))


def destroy(request: ApplyRequest, **kwargs) -> ApplyOutcome:
    """Destroy everything the stack's state manages, in reverse dependency order."""
    return apply(dataclasses.replace(request, mode=DESTROY, replace=()), **kwargs)


def _plan_request(request: ApplyRequest) -> PlanRequest:
    return PlanRequest(stack_dir=request.source, variables=request.variables, state_path=request.state_path,
                       mode=request.mode, targets=request.targets, replace=request.replace,
                       refresh=request.refresh, driver=request.driver, load=request.load)


def _store_for(request: ApplyRequest, plan: Plan | None, source: Path, desired=None) -> StateBackend:
    if plan is None:
        return open_store(source.resolve().name, request.state_path, source, desired.backend if desired else None)
    stack_dir = Path(plan.stack_dir) if plan.stack_dir else None
    if plan.state_path.startswith(PG_LOCATION_PREFIX):
        store = open_store(plan.stack, request.state_path, stack_dir)
        if store.location != plan.state_path:
            raise ReconcilerError(f"saved plan {source} was made against state {plan.state_path}, but the stack "
                                  f"settings now name {store.location}",
                                  "run `reconciler plan` again and apply the new plan")
        return store
    return open_store(plan.stack, saved_plan_state_path(plan, request.state_path, source), stack_dir)


def saved_plan_state_path(plan: Plan, requested: Path | None, plan_file: Path) -> Path | None:
    """Where a saved plan is applied: the state it was made against. Plans saved before that
    was recorded fall back to `requested` (or the default). Pure."""
    if not plan.state_path:
        return requested
    recorded = Path(plan.state_path)
    if requested is not None and Path(requested).resolve() != recorded.resolve():
        raise ReconcilerError(
            f"saved plan {plan_file} was made against state {recorded}, not {requested}",
            f"apply it without --state (it applies to {recorded}), or run `reconciler plan` again "
            f"with --state {requested}")
    return recorded


def refreshed_as_planned(plan: Plan, state: StateFile, driver, store: StateBackend) -> StateFile:
    """The refreshed state a saved plan was made from: its changes (a scale-up after a missing
    container, an orphan's removal) refer to it. Refused when the engine has moved on since."""
    from reconciler.refresh import refresh_state
    refreshed, drift = refresh_state(driver, state, store.work_dir)
    if [d.to_dict() for d in drift] != [d.to_dict() for d in plan.drift]:
        raise StalePlan("saved plan is stale: the objects in Docker changed since it was made",
                        "run `reconciler plan` again and apply the new plan")
    return refreshed
