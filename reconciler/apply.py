"""The apply engine: runs a Plan's changes through a Driver in dependency order.

Side effects through the driver and the state store only. Independent steps run in parallel
(bounded); state is saved after every step, so an interrupted apply loses at most the step in
flight. A replaced resource that is created before its old self is destroyed keeps the old
record in state as `<address>~deposed-<n>` until it is gone, so a crash never forgets it.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from typing import Callable

from reconciler.config.graph import spec_hash
from reconciler.drivers.base import StepContext
from reconciler.errors import ReconcilerError
from reconciler.planning.ordering import change_predecessors
from reconciler.planning.plan import CREATE, DELETE, REPLACE, UPDATE, Change, Plan
from reconciler.state.model import StateFile, StateRecord
from reconciler.state.store import StateStore

STILL_EVERY_SECONDS = 10
VERBS = {"create": ("Creating", "Creation", "creating"), "update": ("Modifying", "Modifications", "modifying"),
         "delete": ("Destroying", "Destruction", "destroying"),
         "destroy-deposed": ("Destroying old", "Destruction of old", "destroying")}


@dataclass(frozen=True)
class Step:
    id: str
    address: str
    operation: str  # create | update | delete | destroy-deposed
    change: Change


@dataclass
class ApplyResult:
    completed: list[str] = field(default_factory=list)
    failed: list[tuple[str, ReconcilerError]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=lambda: {"added": 0, "changed": 0, "destroyed": 0})

    @property
    def ok(self) -> bool:
        return not self.failed


def plan_steps(plan: Plan) -> tuple[list[Step], dict[str, set[str]]]:
    """The steps of a plan and, for each, the steps that must finish first. Pure."""
    changes = {c.address: c for c in plan.actionable}
    steps: list[Step] = []
    first: dict[str, str] = {}
    ready: dict[str, str] = {}  # the step after which dependents may start
    needs: dict[str, set[str]] = {}
    for address, change in changes.items():
        if change.action == REPLACE and change.replace_mode == "create-then-delete":
            ops = ["create", "destroy-deposed"]
        elif change.action == REPLACE:
            ops = ["delete", "create"]
        else:
            ops = [{CREATE: "create", UPDATE: "update", DELETE: "delete"}[change.action]]
        ids = [f"{address}:{op}" for op in ops]
        for index, (step_id, op) in enumerate(zip(ids, ops)):
            steps.append(Step(step_id, address, op, change))
            needs[step_id] = {ids[index - 1]} if index else set()
        first[address] = ids[0]
        ready[address] = ids[0] if ops[-1] == "destroy-deposed" else ids[-1]
    for address, predecessors in change_predecessors(changes).items():
        needs[first[address]] |= {ready[p] for p in predecessors}
    for address, change in changes.items():
        if f"{address}:destroy-deposed" in needs:
            # The old one goes only after everything that pointed at it has moved to the new one.
            users = {a for a, c in changes.items() if address in c.depends_on or address in c.prior_depends_on}
            needs[f"{address}:destroy-deposed"] |= {ready[u] for u in users if u != address}
    return steps, needs


class Applier:
    def __init__(self, driver, store: StateStore, state: StateFile, plan: Plan, ctx: dict,
                 parallelism: int = 10, echo: Callable[[str], None] = print) -> None:
        self.driver = driver
        self.store = store
        self.state = state
        self.plan = plan
        self.parallelism = max(1, parallelism)
        self.echo = echo
        self._state_lock = threading.Lock()
        self._deleted_for_replace: dict[str, StateRecord] = {}
        self.ctx = StepContext(records=lambda: dict(self.state.records), progress=echo, **ctx)

    # -- state -----------------------------------------------------------------------------
    def _commit(self, mutate: Callable[[StateFile], StateFile]) -> None:
        with self._state_lock:
            self.state = self.store.write(mutate(self.state))

    # -- one step --------------------------------------------------------------------------
    def _run_step(self, step: Step) -> str:
        change, address = step.change, step.address
        if step.operation == "create":
            prior = self.state.records.get(address) or self._deleted_for_replace.get(address)
            if prior is not None and step.change.action == REPLACE and change.replace_mode == "create-then-delete":
                deposed = f"{address}~deposed-{self.state.serial}"
                self._commit(lambda s: s.without(address).with_record(dataclasses.replace(prior, address=deposed)))
            record = self._call_driver(lambda: self.driver.create(address, change.after, spec_hash(change.after),
                                                                  self.ctx, prior))
            record = dataclasses.replace(record, depends_on=change.depends_on)
            self._commit(lambda s: s.with_record(record))
            return getattr(record, "driver_ids", {}).get("generation", "") or address
        if step.operation == "update":
            current = self.state.records[address]
            record = self._call_driver(lambda: self.driver.update(current, change.after, spec_hash(change.after),
                                                                  self.ctx))
            record = dataclasses.replace(record, depends_on=change.depends_on)
            self._commit(lambda s: s.with_record(record))
            return address
        if step.operation == "delete":
            current = self.state.records[address]
            if change.action == REPLACE:
                # What the new one keeps from the old (an endpoint's port and keys).
                self._deleted_for_replace[address] = current
            self.driver.delete(current, self.ctx)
            self._commit(lambda s: s.without(address))
            return address
        for deposed in [a for a in self.state.records if a.startswith(f"{address}~deposed-")]:
            self.driver.delete(self.state.records[deposed], self.ctx)
            self._commit(lambda s, d=deposed: s.without(d))
        return address

    def _call_driver(self, call):
        try:
            return call()
        except ReconcilerError as error:
            partial = getattr(error, "record", None)
            if partial is not None:
                self._commit(lambda s: s.with_record(dataclasses.replace(partial, status="tainted")))
            raise

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> ApplyResult:
        steps, needs = plan_steps(self.plan)
        by_id = {s.id: s for s in steps}
        result = ApplyResult()
        sorter = TopologicalSorter(needs)
        sorter.prepare()
        blocked: set[str] = set()
        running: dict[Future, tuple[Step, float]] = {}
        last_still: dict[str, float] = {}
        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            while sorter.is_active():
                for step_id in sorter.get_ready():
                    step = by_id[step_id]
                    if needs[step_id] & blocked:
                        blocked.add(step_id)
                        result.skipped.append(step_id)
                        sorter.done(step_id)
                        continue
                    self.echo(f"{step.address}: {VERBS[step.operation][0]}...")
                    started = time.monotonic()
                    running[pool.submit(self._run_step, step)] = (step, started)
                    last_still[step_id] = started
                if not running:
                    continue
                done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                now = time.monotonic()
                for future, (step, started) in list(running.items()):
                    if future in done:
                        continue
                    if now - last_still[step.id] >= STILL_EVERY_SECONDS:
                        last_still[step.id] = now
                        self.echo(f"{step.address}: Still {VERBS[step.operation][2]}... "
                                  f"[{int(now - started)}s elapsed]")
                for future in done:
                    step, started = running.pop(future)
                    elapsed = int(time.monotonic() - started)
                    error = future.exception()
                    if error is None:
                        self.echo(f"{step.address}: {VERBS[step.operation][1]} complete after {elapsed}s")
                        result.completed.append(step.id)
                        _count(result, step)
                    else:
                        if not isinstance(error, ReconcilerError):
                            error = ReconcilerError(f"{type(error).__name__}: {error}",
                                                    "this is a bug in reconciler; please report it")
                        self.echo(f"{step.address}: {VERBS[step.operation][1]} failed after {elapsed}s")
                        result.failed.append((step.address, error))
                        blocked.add(step.id)
                    sorter.done(step.id)
        if result.ok:
            self.driver.finish(self.ctx)
        return result


def _count(result: ApplyResult, step: Step) -> None:
    if step.operation == "create":
        result.counts["added"] += 1
    elif step.operation == "update":
        result.counts["changed"] += 1
    else:
        result.counts["destroyed"] += 1
