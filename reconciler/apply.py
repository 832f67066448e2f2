"""The apply engine: runs a Plan's changes through a Driver in dependency order.

Side effects through the driver and the state store only; no decisions (the planner made them)
and no text (it emits typed step events, reconciler/events.py, to hooks; render/progress.py
turns them into lines). Independent steps run in parallel, at most `parallelism` of them working
at a time: a step inside `ctx.waiting()` (a readiness wait) gives its slot to the next step
until it works again (`Slots`). State is saved after
every step, so an interrupted apply loses at most the step in flight. A replaced resource that
is created before its old self is destroyed keeps the old record in state as
`<address>~deposed-<n>` until it is gone, so a crash never forgets it.

`step_graph(plan)` (pure) is the schedule: which steps a plan needs and what each waits for;
`str()` of it is the compact form the engine's tests assert on.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from typing import Callable, Sequence

from reconciler.addresses import Address
from reconciler.config.graph import spec_hash
from reconciler.drivers.base import StepContext
from reconciler.errors import ReconcilerError
from reconciler.events import (CREATE_STEP, DELETE_STEP, DESTROY_DEPOSED_STEP, ROUTE_STEP, UPDATE_STEP, ApplyStarted,
                               DriverMessage, Hook, Step, StepCompleted, StepEvent, StepFailedEvent, StepSkipped,
                               StepStarted, StepStillRunning)
from reconciler.planning.ordering import change_predecessors
from reconciler.planning.plan import CREATE, CREATE_THEN_DELETE, DELETE, UPDATE, Plan
from reconciler.state.model import StateFile, StateRecord
from reconciler.state.backend import StateBackend

STILL_EVERY_SECONDS = 10

__all__ = ["Applier", "ApplyResult", "Step", "StepGraph", "describe_steps", "step_graph", "Hook"]


@dataclass
class ApplyResult:
    completed: list[str] = field(default_factory=list)
    failed: list[tuple[str, ReconcilerError]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=lambda: {"added": 0, "changed": 0, "destroyed": 0})

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class StepGraph:
    """A plan's steps in plan order and, for each step id, the step ids that must finish first."""

    steps: tuple[Step, ...]
    needs: dict[str, frozenset[str]]

    def __str__(self) -> str:
        """One line per step, `create deployment.ep/blue <- create model.m:1`."""
        label = {s.id: s.label for s in self.steps}
        lines = []
        for step in self.steps:
            waits = sorted(label[n] for n in self.needs[step.id])
            lines.append(step.label + (f" <- {', '.join(waits)}" if waits else ""))
        return "\n".join(lines)


def step_graph(plan: Plan, route_after_create: bool = False) -> StepGraph:
    """The steps of a plan and, for each, the steps that must finish first. Pure.

    `route_after_create` (the driver's `routes_endpoint_after_create`): an endpoint the plan
    creates (plainly, not as a replacement) while it also changes deployments the endpoint
    depends on is two steps: `create` starts its gateway at once, routing only what is ready
    then (Azure ML's 404 "no live traffic" until routed), in parallel with its deployments;
    `route` (the driver's update of that record) re-points it once they are all ready."""
    changes = {c.address: c for c in plan.actionable}
    predecessors = change_predecessors(changes)
    steps: list[Step] = []
    first: dict[str, str] = {}
    ready: dict[str, str] = {}  # the step after which dependents may start
    last: dict[str, str] = {}  # the step after which nothing of the old resource is left
    needs: dict[str, set[str]] = {}
    routed_later: dict[Address, set[Address]] = {}  # endpoint -> the deployments its route step waits for
    for address, change in changes.items():
        if change.action is CREATE_THEN_DELETE:
            ops = [CREATE_STEP, DESTROY_DEPOSED_STEP]
        elif change.action.is_replace:
            ops = [DELETE_STEP, CREATE_STEP]
        elif route_after_create and (routed := _routed_deployments(change, predecessors[address])):
            ops = [CREATE_STEP, ROUTE_STEP]
            routed_later[address] = routed
        else:
            ops = [{CREATE: CREATE_STEP, UPDATE: UPDATE_STEP, DELETE: DELETE_STEP}[change.action]]
        ids = [f"{address}:{op}" for op in ops]
        for index, (step_id, op) in enumerate(zip(ids, ops)):
            steps.append(Step(step_id, address, op, change))
            needs[step_id] = {ids[index - 1]} if index else set()
        first[address] = ids[0]
        ready[address] = ids[0] if ops[-1] == DESTROY_DEPOSED_STEP else ids[-1]
        last[address] = ids[-1]
    for address, before in predecessors.items():
        routed = routed_later.get(address, set())
        needs[first[address]] |= {ready[p] for p in before - routed}
        if routed:
            needs[f"{address}:{ROUTE_STEP}"] |= {ready[p] for p in routed}
    for address, change in changes.items():
        if f"{address}:{DESTROY_DEPOSED_STEP}" in needs:
            # The old one goes only after everything that pointed at it has moved to the new one.
            users = {a for a, c in changes.items() if address in c.depends_on or address in c.prior_depends_on}
            # An old image goes only once the old containers made from it are gone too.
            after = last if address.kind == "environment" else ready
            needs[f"{address}:{DESTROY_DEPOSED_STEP}"] |= {after[u] for u in users if u != address}
    return StepGraph(tuple(steps), {step_id: frozenset(ids) for step_id, ids in needs.items()})


def _routed_deployments(change, before: set[Address]) -> set[Address]:
    """The deployment changes a plainly created endpoint would wait for (empty: one step)."""
    if change.action is not CREATE or change.address.kind != "endpoint":
        return set()
    return {p for p in before if p.kind == "deployment" and p in change.depends_on}


def describe_steps(plan: Plan, route_after_create: bool = False) -> str:
    return str(step_graph(plan, route_after_create))


class Slots:
    """At most `size` steps working at once. `take` blocks until a slot is free; `try_take` does
    not; every `give` also completes `wake`, so the engine's loop (which waits on futures) starts
    the next step at once instead of at its next poll."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._condition = threading.Condition()
        self.wake: Future = Future()

    def try_take(self) -> bool:
        with self._condition:
            if self.used >= self.size:
                return False
            self.used += 1
            return True

    def take(self) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self.used < self.size)
            self.used += 1

    def give(self) -> None:
        with self._condition:
            self.used -= 1
            self._condition.notify_all()
            if not self.wake.done():
                self.wake.set_result(None)

    def rearm(self) -> None:
        """A new `wake` once the loop has seen the old one complete."""
        with self._condition:
            if self.wake.done():
                self.wake = Future()


class Applier:
    """Carries out one plan. `hooks` receive every step event; `echo`, if given, receives the
    rendered progress lines (shorthand for a render.progress.ProgressPrinter hook)."""

    def __init__(self, driver, store: StateBackend, state: StateFile, plan: Plan, ctx: dict,
                 parallelism: int = 10, echo: Callable[[str], None] | None = None,
                 hooks: Sequence[Hook] = (), still_every: float = STILL_EVERY_SECONDS) -> None:
        self.driver = driver
        self.store = store
        self.state = state
        self.plan = plan
        self.parallelism = max(1, parallelism)
        self.hooks = list(hooks)
        if echo is not None:
            from reconciler.render.progress import ProgressPrinter
            self.hooks.append(ProgressPrinter(echo))
        self.still_every = still_every
        self._state_lock = threading.Lock()
        self._hook_lock = threading.Lock()
        self._deleted_for_replace: dict[str, StateRecord] = {}
        self._ctx_fields = ctx
        self._slots = Slots(self.parallelism)
        self.ctx = self._context()

    def _context(self) -> StepContext:
        fields = {"identity": self.state.lineage, "state_path": self.store.location, **self._ctx_fields}
        return StepContext(records=lambda: dict(self.state.records),
                           progress=lambda text: self._emit(DriverMessage(text)), waiting=self._waiting, **fields)

    @contextmanager
    def _waiting(self):
        """The calling step's slot is free while it only waits; it works again once one is free."""
        self._slots.give()
        try:
            yield
        finally:
            self._slots.take()

    def _run_step_in_slot(self, step: Step) -> None:
        try:
            self._run_step(step)
        finally:
            self._slots.give()

    def _emit(self, event: StepEvent) -> None:
        with self._hook_lock:
            for hook in self.hooks:
                hook.on_event(event)

    # -- state -----------------------------------------------------------------------------
    def _commit(self, mutate: Callable[[StateFile], StateFile], *changed: Address) -> None:
        # One journal line per step (the store folds the journal into the file when the lock
        # is released): durable after every step without rewriting the whole state each time.
        with self._state_lock:
            self.state = self.store.write_step(mutate(self.state), changed)

    # -- one step --------------------------------------------------------------------------
    def _run_step(self, step: Step) -> None:
        change, address = step.change, step.address
        if step.operation == CREATE_STEP:
            prior = self.state.records.get(address) or self._deleted_for_replace.get(address)
            if prior is not None and change.action is CREATE_THEN_DELETE:
                deposed = address.deposed_as(str(self.state.serial))
                self._commit(lambda s: s.without(address).with_record(dataclasses.replace(prior, address=deposed)),
                             address, deposed)
            record = self._call_driver(lambda: self.driver.create(address, change.after, spec_hash(change.after),
                                                                  self.ctx, prior))
            record = dataclasses.replace(record, depends_on=change.depends_on)
            self._commit(lambda s: s.with_record(record), address)
        elif step.operation in (UPDATE_STEP, ROUTE_STEP):
            # A route step is the update of the record its create step just saved.
            current = self.state.records[address]
            record = self._call_driver(lambda: self.driver.update(current, change.after, spec_hash(change.after),
                                                                  self.ctx))
            record = dataclasses.replace(record, depends_on=change.depends_on)
            self._commit(lambda s: s.with_record(record), address)
        elif step.operation == DELETE_STEP:
            current = self.state.records[address]
            if change.action.is_replace:
                # What the new one keeps from the old (an endpoint's port and keys).
                self._deleted_for_replace[address] = current
            self.driver.delete(current, self.ctx)
            self._commit(lambda s: s.without(address), address)
        else:
            for deposed in [a for a in self.state.records if a.is_deposed and a.base == address]:
                self.driver.delete(self.state.records[deposed], self.ctx)
                self._commit(lambda s, d=deposed: s.without(d), deposed)

    def _call_driver(self, call):
        try:
            return call()
        except ReconcilerError as error:
            partial = getattr(error, "record", None)
            if partial is not None:
                self._commit(lambda s: s.with_record(dataclasses.replace(partial, status="tainted")),
                             partial.address)
            raise

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> ApplyResult:
        if not self.state.lineage:
            # The identity every object is labelled with (drivers/common/labels.py) exists
            # before the first object does; a plan saved against the empty state stays valid.
            self.state = self.store.write(self.state.ensure_lineage())
            self.ctx = self._context()
        graph = step_graph(self.plan, self.driver.routes_endpoint_after_create)
        by_id = {s.id: s for s in graph.steps}
        result = ApplyResult()
        sorter = TopologicalSorter(graph.needs)
        sorter.prepare()
        blocked: set[str] = set()
        running: dict[Future, tuple[Step, float]] = {}
        last_still: dict[str, float] = {}
        poll = min(1.0, self.still_every)
        self._emit(ApplyStarted(len(graph.steps)))
        ready: deque[str] = deque()
        # A thread per step in flight: steps asleep in ctx.waiting() hold a thread but no slot,
        # and a step given a slot must never queue behind them for a thread.
        with ThreadPoolExecutor(max_workers=max(self.parallelism, len(graph.steps))) as pool:
            while sorter.is_active():
                # Before the slots are counted: a slot given from here on completes the new wake.
                self._slots.rearm()
                ready.extend(sorter.get_ready())
                # At most `parallelism` working: a step starts when it has a slot, and waiting on
                # every queued future per loop would make a large apply quadratic.
                while ready:
                    step_id = ready[0]
                    step = by_id[step_id]
                    if graph.needs[step_id] & blocked:
                        ready.popleft()
                        blocked.add(step_id)
                        result.skipped.append(step_id)
                        self._emit(StepSkipped(step, tuple(sorted(graph.needs[step_id] & blocked))))
                        sorter.done(step_id)
                        continue
                    if not self._slots.try_take():
                        break
                    ready.popleft()
                    self._emit(StepStarted(step))
                    started = time.monotonic()
                    running[pool.submit(self._run_step_in_slot, step)] = (step, started)
                    last_still[step_id] = started
                if not running:
                    continue
                done, _ = wait([*running, self._slots.wake], timeout=poll, return_when=FIRST_COMPLETED)
                done = {future for future in done if future in running}
                now = time.monotonic()
                for future, (step, started) in list(running.items()):
                    if future not in done and now - last_still[step.id] >= self.still_every:
                        last_still[step.id] = now
                        self._emit(StepStillRunning(step, now - started))
                for future in done:
                    step, started = running.pop(future)
                    elapsed = time.monotonic() - started
                    error = future.exception()
                    if error is None:
                        result.completed.append(step.id)
                        _count(result, step)
                        self._emit(StepCompleted(step, elapsed))
                    else:
                        if not isinstance(error, ReconcilerError):
                            error = ReconcilerError(f"{type(error).__name__}: {error}",
                                                    "this is a bug in reconciler; please report it")
                        result.failed.append((step.address, error))
                        blocked.add(step.id)
                        self._emit(StepFailedEvent(step, error, elapsed))
                    sorter.done(step.id)
        if result.ok:
            self.driver.finish(self.ctx)
        return result


def _count(result: ApplyResult, step: Step) -> None:
    if step.operation == ROUTE_STEP:
        return  # the second half of an endpoint's create, counted as added there
    if step.operation == CREATE_STEP:
        result.counts["added"] += 1
    elif step.operation == UPDATE_STEP:
        result.counts["changed"] += 1
    else:
        result.counts["destroyed"] += 1
