"""The apply engine and the apply/destroy operations, without Docker.

Plans come from the real planner (small DesiredGraph / StateFile values, as in test_planner);
the driver is tests/unit/fakes.py's RecordingDriver, which records every call together with
what the state file on disk held at that moment; the state store is the real one, in tmp_path.
Assertions are on three compact strings: the step graph (`describe_steps`), the driver-call
log, and the saved state.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fakes import RecordingDriver, timeless
from reconciler.addresses import Address
from reconciler.apply import Applier, describe_steps, step_graph
from reconciler.config.graph import DesiredGraph, DesiredResource, spec_hash
from reconciler.errors import DriverError, ReconcilerError
from reconciler.events import (ApplyStarted, DriverMessage, RecordingHook, Step, StepCompleted, StepFailedEvent,
                               StepSkipped, StepStarted, StepStillRunning)
from reconciler.operations.apply import APPLIED, CANCELLED, NO_CHANGES, ApplyRequest, apply, destroy
from reconciler.operations.plan import PlanRequest, plan as plan_operation
from reconciler.planfile import read_plan, write_plan
from reconciler.planning.plan import CREATE, Change
from reconciler.planning.planner import DESTROY, PlanOptions, make_plan
from reconciler.render.progress import progress_line
from reconciler.state.model import StateFile
from reconciler.state.store import StateStore

STACK = "test"
MODEL = {"name": "m", "version": "1", "digest": "a"}
CHAIN = {
    "model.m:1": (MODEL, ()),
    "deployment.ep/blue": ({"image": "i1"}, ("model.m:1",)),
    "endpoint.ep": ({"traffic": {"blue": 100}}, ("deployment.ep/blue",)),
}


def graph(resources: dict) -> DesiredGraph:
    built = {}
    for address, (spec, depends_on) in resources.items():
        parsed = Address.parse(address)
        built[parsed] = DesiredResource(parsed, spec, spec_hash(spec), tuple(Address.parse(d) for d in depends_on),
                                        "test.yml:1")
    return DesiredGraph(STACK, dict(sorted(built.items())))


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(tmp_path / "state" / f"{STACK}.json", STACK)


def run(store: StateStore, plan, driver, parallelism: int = 1, hooks=(), **kwargs):
    """Apply `plan` to what `store` holds, as the apply operation does: under the lock."""
    store.lock("test")
    with store:
        return Applier(driver, store, store.read(), plan,
                       {"stack": STACK, "stack_dir": store.path.parent, "state_dir": store.path.parent},
                       parallelism=parallelism, hooks=hooks, **kwargs).run()


def applied(store: StateStore, resources: dict, **options):
    """A state holding `resources`, made by applying them with a driver nobody watches."""
    run(store, make_plan(graph(resources), store.read(), PlanOptions(**options)), RecordingDriver())
    return store.read()


def saved_state(store: StateStore) -> str:
    """`address <- depends_on [tainted]` per record."""
    lines = []
    for address, record in sorted(store.read().records.items()):
        line = str(address) + (f" <- {', '.join(map(str, record.depends_on))}" if record.depends_on else "")
        lines.append(line + (" [tainted]" if record.status == "tainted" else ""))
    return "\n".join(lines)


def with_image(resources: dict, address: str, image: str) -> dict:
    spec, depends_on = resources[address]
    return {**resources, address: ({**spec, "image": image}, depends_on)}


# -- the step graph (pure) ---------------------------------------------------------------------
def test_create_chain_waits_model_then_deployment_then_endpoint(store):
    plan = make_plan(graph(CHAIN), store.read())
    assert describe_steps(plan) == (
        "create model.m:1\n"
        "create deployment.ep/blue <- create model.m:1\n"
        "create endpoint.ep <- create deployment.ep/blue")
    assert str(step_graph(plan)) == describe_steps(plan)


def test_create_then_delete_destroys_the_old_one_after_the_endpoint_moved(store):
    applied(store, CHAIN)
    plan = make_plan(graph(with_image(CHAIN, "deployment.ep/blue", "i2")), store.read())
    assert describe_steps(plan) == (
        "create deployment.ep/blue\n"
        "destroy-deposed deployment.ep/blue <- create deployment.ep/blue, update endpoint.ep\n"
        "update endpoint.ep <- create deployment.ep/blue")


BUILT = {
    "environment.env:1": ({"digest": "d1", "image": "env:1-d1"}, ()),
    "deployment.ep/blue": ({"image": "env:1-d1"}, ("environment.env:1",)),
    "endpoint.ep": ({"traffic": {"blue": 100}}, ("deployment.ep/blue",)),
}


def test_a_rebuilt_environment_image_goes_only_after_the_old_containers_made_from_it(store):
    applied(store, BUILT)
    rebuilt = with_image(with_image(BUILT, "environment.env:1", "env:1-d2"), "deployment.ep/blue", "env:1-d2")
    plan = make_plan(graph(rebuilt), store.read())
    assert describe_steps(plan) == (
        "create environment.env:1\n"
        "destroy-deposed environment.env:1 <- create environment.env:1, destroy-deposed deployment.ep/blue\n"
        "create deployment.ep/blue <- create environment.env:1\n"
        "destroy-deposed deployment.ep/blue <- create deployment.ep/blue, update endpoint.ep\n"
        "update endpoint.ep <- create deployment.ep/blue")


def test_delete_then_create_endpoint_is_two_steps_in_that_order(store):
    applied(store, CHAIN)
    plan = make_plan(graph(CHAIN), store.read(), PlanOptions(replace=frozenset({"endpoint.ep"})))
    assert describe_steps(plan) == "delete endpoint.ep\ncreate endpoint.ep <- delete endpoint.ep"


def test_destroy_steps_run_in_reverse_dependency_order(store):
    applied(store, CHAIN)
    plan = make_plan(graph(CHAIN), store.read(), PlanOptions(mode=DESTROY))
    assert describe_steps(plan) == (
        "delete endpoint.ep\n"
        "delete deployment.ep/blue <- delete endpoint.ep\n"
        "delete model.m:1 <- delete deployment.ep/blue")


def test_no_changes_have_no_steps(store):
    applied(store, CHAIN)
    assert describe_steps(make_plan(graph(CHAIN), store.read())) == ""


# An endpoint created from empty by a driver that re-points gateways cheaply (docker): its
# gateway starts at once, beside its deployments, and a route step points it at them (#16).
TWO = {**CHAIN, "deployment.ep/green": ({"image": "i1"}, ("model.m:1",)),
       "endpoint.ep": ({"traffic": {"blue": 100}}, ("deployment.ep/blue", "deployment.ep/green"))}
NO_DEPLOYMENTS = {"endpoint.ep": ({"traffic": {}}, ())}


def routed_case(store, case: str):
    """The plan of one routed-endpoint case against `store` (set up as the case needs)."""
    if case == "from empty":
        return make_plan(graph(CHAIN), store.read())
    if case == "two deployments":
        return make_plan(graph(TWO), store.read())
    if case == "no deployments":
        return make_plan(graph(NO_DEPLOYMENTS), store.read())
    if case == "deployments unchanged":
        applied(store, CHAIN)
        state = store.read()
        return make_plan(graph(CHAIN), state.without(Address.parse("endpoint.ep")))
    if case == "lost endpoint, deployment rolled out":
        applied(store, CHAIN)
        state = store.read().without(Address.parse("endpoint.ep"))
        return make_plan(graph(with_image(CHAIN, "deployment.ep/blue", "i2")), state)
    if case == "replaced endpoint":
        applied(store, CHAIN)
        return make_plan(graph(CHAIN), store.read(), PlanOptions(replace=frozenset({"endpoint.ep"})))
    if case == "rollout":
        applied(store, CHAIN)
        return make_plan(graph(with_image(CHAIN, "deployment.ep/blue", "i2")), store.read())
    raise AssertionError(case)


@pytest.mark.parametrize("case, expected", [
    ("from empty",
     "create model.m:1\n"
     "create deployment.ep/blue <- create model.m:1\n"
     "create endpoint.ep\n"
     "route endpoint.ep <- create deployment.ep/blue, create endpoint.ep"),
    ("two deployments",
     "create model.m:1\n"
     "create deployment.ep/blue <- create model.m:1\n"
     "create deployment.ep/green <- create model.m:1\n"
     "create endpoint.ep\n"
     "route endpoint.ep <- create deployment.ep/blue, create deployment.ep/green, create endpoint.ep"),
    # Nothing to wait for: one step, as before.
    ("no deployments", "create endpoint.ep"),
    ("deployments unchanged", "create endpoint.ep"),
    # The old blue goes once the gateway routes to the new one: after the route step.
    ("lost endpoint, deployment rolled out",
     "create deployment.ep/blue\n"
     "destroy-deposed deployment.ep/blue <- create deployment.ep/blue, route endpoint.ep\n"
     "create endpoint.ep\n"
     "route endpoint.ep <- create deployment.ep/blue, create endpoint.ep"),
    # Deletes and replaces are unchanged.
    ("replaced endpoint", "delete endpoint.ep\ncreate endpoint.ep <- delete endpoint.ep"),
    ("rollout",
     "create deployment.ep/blue\n"
     "destroy-deposed deployment.ep/blue <- create deployment.ep/blue, update endpoint.ep\n"
     "update endpoint.ep <- create deployment.ep/blue"),
])
def test_a_created_endpoint_is_routed_after_its_deployments_by_a_second_step(store, case, expected):
    assert describe_steps(routed_case(store, case), route_after_create=True) == expected


def test_without_cheap_re_pointing_a_created_endpoint_stays_one_step_after_its_deployments(store):
    plan = make_plan(graph(CHAIN), store.read())
    assert describe_steps(plan, route_after_create=False) == describe_steps(plan) == (
        "create model.m:1\n"
        "create deployment.ep/blue <- create model.m:1\n"
        "create endpoint.ep <- create deployment.ep/blue")


def test_the_route_step_updates_the_created_endpoint_and_is_not_counted(store):
    driver = RecordingDriver(store, routes_after_create=True)
    hook = RecordingHook()
    result = run(store, make_plan(graph(CHAIN), store.read()), driver, hooks=[hook])
    # Parallelism 1: the endpoint's create is ready at once, before the model's is done; the
    # route step is the driver's update of the record that create saved.
    assert driver.log() == (
        "create model.m:1 | \n"
        "create endpoint.ep | model.m:1\n"
        "create deployment.ep/blue | endpoint.ep, model.m:1\n"
        "update endpoint.ep | deployment.ep/blue, endpoint.ep, model.m:1\n"
        "finish | deployment.ep/blue, endpoint.ep, model.m:1")
    record = store.read().records["endpoint.ep"]
    assert record.outputs["routes"] == ["deployment.ep/blue"], "created routing nothing, then routed"
    assert record.depends_on == ("deployment.ep/blue",)
    assert (result.ok, result.counts) == (True, {"added": 3, "changed": 0, "destroyed": 0})
    assert [timeless(progress_line(e)) for e in hook.events if isinstance(e, (StepStarted, StepCompleted))
            and e.step.address == "endpoint.ep"] == [
        "endpoint.ep: Creating...", "endpoint.ep: Creation complete after 0s",
        "endpoint.ep: Routing to its deployments...", "endpoint.ep: Routing complete after 0s"]


def test_a_failed_deployment_leaves_the_created_endpoint_unrouted_and_skips_only_its_route(store):
    driver = RecordingDriver(store, fail={"create deployment.ep/blue": "boom"}, routes_after_create=True)
    result = run(store, make_plan(graph(CHAIN), store.read()), driver)
    assert [address for address, _ in result.failed] == ["deployment.ep/blue"]
    assert result.skipped == ["endpoint.ep:route"]
    assert store.read().records["endpoint.ep"].outputs["routes"] == []
    # The next plan finishes the job: the deployment, then the endpoint's re-point.
    assert describe_steps(make_plan(graph(CHAIN), store.read()), route_after_create=True) == (
        "create deployment.ep/blue\n"
        "update endpoint.ep <- create deployment.ep/blue")


# -- running the steps -------------------------------------------------------------------------
def test_create_chain_calls_the_driver_in_order_and_saves_state_after_every_step(store):
    driver = RecordingDriver(store)
    result = run(store, make_plan(graph(CHAIN), store.read()), driver)
    assert driver.log() == (
        "create model.m:1 | \n"
        "create deployment.ep/blue | model.m:1\n"
        "create endpoint.ep | deployment.ep/blue, model.m:1\n"
        "finish | deployment.ep/blue, endpoint.ep, model.m:1")
    assert saved_state(store) == (
        "deployment.ep/blue <- model.m:1\n"
        "endpoint.ep <- deployment.ep/blue\n"
        "model.m:1")
    assert (result.ok, result.counts) == (True, {"added": 3, "changed": 0, "destroyed": 0})
    assert result.completed == ["model.m:1:create", "deployment.ep/blue:create", "endpoint.ep:create"]
    state = store.read()
    # Issue 12: the identity (lineage) is written before the first step creates anything.
    assert state.serial == 4 and state.lineage, "the identity's write, then one write per step"
    # Steps after the first went to the journal, folded into the file at unlock: the backup is
    # the file as it was before that fold (#16).
    assert StateFile.from_dict(__import__("json").loads(store.backup_path.read_text())).serial == 1
    assert not store.journal_path.exists()


def test_create_then_delete_keeps_the_old_record_deposed_until_the_endpoint_moved(store):
    applied(store, CHAIN)
    driver = RecordingDriver(store)
    plan = make_plan(graph(with_image(CHAIN, "deployment.ep/blue", "i2")), store.read())
    result = run(store, plan, driver)
    assert driver.log() == (
        "create deployment.ep/blue (prior deployment.ep/blue) | deployment.ep/blue~deposed-4, endpoint.ep, model.m:1\n"
        "update endpoint.ep | deployment.ep/blue, deployment.ep/blue~deposed-4, endpoint.ep, model.m:1\n"
        "delete deployment.ep/blue~deposed-4 | deployment.ep/blue, deployment.ep/blue~deposed-4, endpoint.ep, "
        "model.m:1\n"
        "finish | deployment.ep/blue, endpoint.ep, model.m:1")
    records = store.read().records
    assert records["deployment.ep/blue"].spec["image"] == "i2"
    # The gateway was re-pointed while the old deployment still existed beside the new one.
    assert records["endpoint.ep"].outputs["routes"] == ["deployment.ep/blue", "deployment.ep/blue~deposed-4"]
    assert result.counts == {"added": 1, "changed": 1, "destroyed": 1}


def test_delete_then_create_hands_the_old_record_to_create_as_prior(store):
    applied(store, CHAIN)
    old = store.read().records["endpoint.ep"]
    driver = RecordingDriver(store)
    plan = make_plan(graph(CHAIN), store.read(), PlanOptions(replace=frozenset({"endpoint.ep"})))
    run(store, plan, driver)
    assert driver.log() == (
        "delete endpoint.ep | deployment.ep/blue, endpoint.ep, model.m:1\n"
        "create endpoint.ep (prior endpoint.ep) | deployment.ep/blue, model.m:1\n"
        "finish | deployment.ep/blue, endpoint.ep, model.m:1")
    new = store.read().records["endpoint.ep"]
    assert new.driver_ids != old.driver_ids, "a new gateway"
    assert (new.outputs["port"], new.outputs["keys"]) == (old.outputs["port"], old.outputs["keys"])
    assert new.depends_on == ("deployment.ep/blue",)


TWO_ENDPOINTS = {
    "model.m:1": (MODEL, ()),
    "deployment.a/blue": ({"image": "i1"}, ("model.m:1",)),
    "endpoint.a": ({"traffic": {"blue": 100}}, ("deployment.a/blue",)),
    "deployment.b/green": ({"image": "i1"}, ("model.m:1",)),
    "endpoint.b": ({"traffic": {"green": 100}}, ("deployment.b/green",)),
}


def test_a_failed_step_blocks_its_dependents_while_independent_steps_complete(store):
    driver = RecordingDriver(store, fail={"create deployment.b/green": "image not found"})
    hook = RecordingHook()
    result = run(store, make_plan(graph(TWO_ENDPOINTS), store.read()), driver, hooks=[hook])
    assert [line.split(" | ")[0] for line in driver.calls] == [
        "create model.m:1", "create deployment.a/blue", "create deployment.b/green", "create endpoint.a"]
    assert [(address, error.summary) for address, error in result.failed] == [("deployment.b/green",
                                                                               "image not found")]
    assert result.skipped == ["endpoint.b:create"]
    assert result.completed == ["model.m:1:create", "deployment.a/blue:create", "endpoint.a:create"]
    assert saved_state(store) == (
        "deployment.a/blue <- model.m:1\n"
        "endpoint.a <- deployment.a/blue\n"
        "model.m:1")
    (skipped,) = [e for e in hook.events if isinstance(e, StepSkipped)]
    assert (skipped.step.label, skipped.blocked_by) == ("create endpoint.b", ("deployment.b/green:create",))
    assert "finish" not in driver.log(), "shared resources are kept after a failed apply"


def test_a_skipped_step_blocks_its_own_dependents_too(store):
    resources = {**CHAIN, "deployment.ep/green": ({"image": "i1"}, ("endpoint.ep",))}  # odd, but a chain of 4
    driver = RecordingDriver(store, fail={"create deployment.ep/blue": "boom"})
    result = run(store, make_plan(graph(resources), store.read()), driver)
    assert result.skipped == ["endpoint.ep:create", "deployment.ep/green:create"]


def test_a_failure_after_creating_something_saves_it_tainted_and_the_next_plan_replaces_it(store):
    driver = RecordingDriver(store, fail={"create deployment.ep/blue": "not ready after 30s"},
                             leave_behind=frozenset({"create deployment.ep/blue"}))
    result = run(store, make_plan(graph(CHAIN), store.read()), driver)
    assert not result.ok and result.skipped == ["endpoint.ep:create"]
    assert saved_state(store) == "deployment.ep/blue [tainted]\nmodel.m:1"
    assert str(make_plan(graph(CHAIN), store.read())) == (
        "-/+ deployment.ep/blue [tainted]\n+ endpoint.ep\nPlan: 2 to add, 0 to change, 1 to destroy.")


def test_a_failed_update_keeps_the_record_tainted(store):
    applied(store, CHAIN)
    driver = RecordingDriver(store, fail={"update endpoint.ep": "reload failed"},
                             leave_behind=frozenset({"update endpoint.ep"}))
    changed = {**CHAIN, "endpoint.ep": ({"traffic": {"blue": 100}, "description": "x"}, ("deployment.ep/blue",))}
    result = run(store, make_plan(graph(changed), store.read()), driver)
    assert [address for address, _ in result.failed] == ["endpoint.ep"]
    assert "endpoint.ep <- deployment.ep/blue [tainted]" in saved_state(store).splitlines()


def test_an_unexpected_exception_is_reported_as_a_bug_not_raised(store):
    class Broken(RecordingDriver):
        def create(self, address, spec, spec_hash, ctx, prior=None):
            raise KeyError("oops")
    result = run(store, make_plan(graph(CHAIN), store.read()), Broken(store))
    ((address, error),) = result.failed
    assert address == "model.m:1" and isinstance(error, ReconcilerError)
    assert error.summary == "KeyError: 'oops'" and "bug in reconciler" in error.hint


def test_destroy_deletes_in_reverse_dependency_order(store):
    applied(store, CHAIN)
    driver = RecordingDriver(store)
    result = run(store, make_plan(graph(CHAIN), store.read(), PlanOptions(mode=DESTROY)), driver)
    assert driver.log() == (
        "delete endpoint.ep | deployment.ep/blue, endpoint.ep, model.m:1\n"
        "delete deployment.ep/blue | deployment.ep/blue, model.m:1\n"
        "delete model.m:1 | model.m:1\n"
        "finish | ")
    assert store.read().records == {} and result.counts == {"added": 0, "changed": 0, "destroyed": 3}


def test_independent_steps_run_at_the_same_time(store):
    both_started = threading.Barrier(2, timeout=10)

    class Meeting(RecordingDriver):
        def create(self, address, spec, spec_hash, ctx, prior=None):
            if address.kind == "deployment":
                both_started.wait()  # breaks (and fails the step) unless the other is running too
            return super().create(address, spec, spec_hash, ctx, prior)
    result = run(store, make_plan(graph(TWO_ENDPOINTS), store.read()), Meeting(), parallelism=2)
    assert result.ok, result.failed


def test_steps_waiting_for_readiness_give_their_slots_to_the_next_steps(store):
    """--parallelism 2 and 5 deployments: all 5 are waiting at once (each started while the
    others waited), and never more than 2 work at once (#16: a readiness wait held its slot,
    so 20 deployments with --parallelism 10 started in two waves)."""
    names = [f"d{i}" for i in range(5)]
    resources = {"model.m:1": (MODEL, ())}
    resources.update({f"deployment.ep/{n}": ({"image": "i1"}, ("model.m:1",)) for n in names})
    all_waiting = threading.Barrier(len(names), timeout=10)
    lock = threading.Lock()
    working = [0, 0]  # now, most

    def work() -> None:
        with lock:
            working[0] += 1
            working[1] = max(working)
        time.sleep(0.05)  # working: a third step working now would be counted
        with lock:
            working[0] -= 1

    class Waits(RecordingDriver):
        def create(self, address, spec, spec_hash, ctx, prior=None):
            if address.kind == "deployment":
                work()
                with ctx.waiting():
                    all_waiting.wait()  # breaks (and fails the step) unless all 5 wait at once
                work()
            return super().create(address, spec, spec_hash, ctx, prior)
    result = run(store, make_plan(graph(resources), store.read()), Waits(), parallelism=2)
    assert result.ok, result.failed
    assert working[1] <= 2


# -- events and their rendering ----------------------------------------------------------------
def test_events_in_order_with_their_progress_lines(store):
    hook = RecordingHook()
    run(store, make_plan(graph(CHAIN), store.read(), PlanOptions(targets=frozenset({"model.m:1"}))),
        RecordingDriver(), hooks=[hook])
    assert [type(e).__name__ for e in hook.events] == ["ApplyStarted", "StepStarted", "StepCompleted"]
    assert [timeless(progress_line(e)) for e in hook.events] == ["", "model.m:1: Creating...",
                                                        "model.m:1: Creation complete after 0s"]


def test_a_slow_step_reports_that_it_is_still_running(store):
    hook = RecordingHook()
    driver = RecordingDriver(delay={"create model.m:1": 0.5})
    run(store, make_plan(graph({"model.m:1": (MODEL, ())}), store.read()), driver, hooks=[hook], still_every=0.1)
    still = [e for e in hook.events if isinstance(e, StepStillRunning)]
    assert len(still) >= 2 and all(e.elapsed >= 0.1 for e in still)
    assert [e.elapsed for e in still] == sorted(e.elapsed for e in still)
    assert isinstance(hook.events[-1], StepCompleted) and hook.events[-1].elapsed >= 0.5


def test_echo_is_a_progress_printer(store):
    lines: list[str] = []
    run(store, make_plan(graph({"model.m:1": (MODEL, ())}), store.read()), RecordingDriver(), echo=lines.append)
    assert [timeless(line) for line in lines] == ["", "model.m:1: Creating...", "model.m:1: Creation complete after 0s"]


def test_driver_messages_reach_the_hooks(store):
    class Chatty(RecordingDriver):
        def create(self, address, spec, spec_hash, ctx, prior=None):
            ctx.progress(f"{address}: pulling image")
            return super().create(address, spec, spec_hash, ctx, prior)
    hook = RecordingHook()
    run(store, make_plan(graph({"model.m:1": (MODEL, ())}), store.read()), Chatty(), hooks=[hook])
    assert DriverMessage("model.m:1: pulling image") in hook.events


CHANGE = Change("deployment.ep/blue", CREATE, "not-in-state", None, {})
ERROR = ReconcilerError("boom")


@pytest.mark.parametrize("event, line", [
    (ApplyStarted(3), ""),
    (StepStarted(Step("x", "deployment.ep/blue", "create", CHANGE)), "deployment.ep/blue: Creating..."),
    (StepStarted(Step("x", "endpoint.ep", "update", CHANGE)), "endpoint.ep: Modifying..."),
    (StepStarted(Step("x", "endpoint.ep", "delete", CHANGE)), "endpoint.ep: Destroying..."),
    (StepStarted(Step("x", "deployment.ep/blue", "destroy-deposed", CHANGE)), "deployment.ep/blue: Destroying old..."),
    (StepStillRunning(Step("x", "deployment.ep/blue", "create", CHANGE), 10.7),
     "deployment.ep/blue: Still creating... [10s elapsed]"),
    (StepStillRunning(Step("x", "endpoint.ep", "update", CHANGE), 20.0), "endpoint.ep: Still modifying... [20s elapsed]"),
    (StepStillRunning(Step("x", "deployment.ep/blue", "destroy-deposed", CHANGE), 30.0),
     "deployment.ep/blue: Still destroying... [30s elapsed]"),
    (StepCompleted(Step("x", "deployment.ep/blue", "create", CHANGE), 1.9), "deployment.ep/blue: Creation complete after 1s"),
    (StepCompleted(Step("x", "endpoint.ep", "update", CHANGE), 0.2), "endpoint.ep: Modifications complete after 0s"),
    (StepCompleted(Step("x", "model.m:1", "delete", CHANGE), 2.0), "model.m:1: Destruction complete after 2s"),
    (StepCompleted(Step("x", "deployment.ep/blue", "destroy-deposed", CHANGE), 4.0),
     "deployment.ep/blue: Destruction of old complete after 4s"),
    (StepFailedEvent(Step("x", "deployment.ep/blue", "create", CHANGE), ERROR, 3.2),
     "deployment.ep/blue: Creation failed after 3s"),
    (StepStarted(Step("x", "endpoint.ep", "route", CHANGE)), "endpoint.ep: Routing to its deployments..."),
    (StepStillRunning(Step("x", "endpoint.ep", "route", CHANGE), 10.0), "endpoint.ep: Still routing... [10s elapsed]"),
    (StepCompleted(Step("x", "endpoint.ep", "route", CHANGE), 0.4), "endpoint.ep: Routing complete after 0s"),
    (StepFailedEvent(Step("x", "endpoint.ep", "route", CHANGE), ERROR, 1.0), "endpoint.ep: Routing failed after 1s"),
    (StepSkipped(Step("x", "endpoint.ep", "update", CHANGE), ("deployment.ep/blue:create",)), None),
    (DriverMessage("anything"), "anything"),
])
def test_progress_lines(event, line):
    assert progress_line(event) == line


# -- the operations ----------------------------------------------------------------------------
@pytest.fixture
def fake():
    return RecordingDriver()


def by_name(driver):
    return lambda name: driver


def test_apply_operation_plans_confirms_and_runs(demo_stack, tmp_path, fake):
    state_path = tmp_path / "x" / "state.json"
    shown, asked = [], []
    outcome = apply(ApplyRequest(demo_stack, state_path=state_path, refresh=False), show=shown.append,
                    confirm=lambda plan: asked.append(plan) or True, drivers=by_name(fake))
    assert outcome.status == APPLIED and outcome.counts == {"added": 3, "changed": 0, "destroyed": 0}
    assert shown == asked == [outcome.plan]
    assert [line.split(" (")[0] for line in fake.calls] == [
        "preflight model.tfserving-mounted:1 deployment.half-plus-two/tfserving endpoint.half-plus-two",
        "create model.tfserving-mounted:1", "create deployment.half-plus-two/tfserving",
        "create endpoint.half-plus-two", "finish"]
    assert sorted(StateStore(state_path, "half-plus-two").read().records) == [
        "deployment.half-plus-two/tfserving", "endpoint.half-plus-two", "model.tfserving-mounted:1"]
    again = apply(ApplyRequest(demo_stack, state_path=state_path, refresh=False), drivers=by_name(fake))
    assert again.status == NO_CHANGES


def test_apply_operation_cancelled_writes_nothing(demo_stack, tmp_path, fake):
    state_path = tmp_path / "state.json"
    outcome = apply(ApplyRequest(demo_stack, state_path=state_path, refresh=False), confirm=lambda plan: False,
                    drivers=by_name(fake))
    assert outcome.status == CANCELLED and fake.calls == [] and not state_path.exists()
    assert not StateStore(state_path, "half-plus-two").lock_path.exists()


def test_destroy_operation(demo_stack, tmp_path, fake):
    state_path = tmp_path / "state.json"
    apply(ApplyRequest(demo_stack, state_path=state_path, refresh=False), drivers=by_name(fake))
    outcome = destroy(ApplyRequest(demo_stack, state_path=state_path, refresh=False), drivers=by_name(fake))
    assert outcome.plan.mode == DESTROY and outcome.counts["destroyed"] == 3
    assert StateStore(state_path, "half-plus-two").read().records == {}


def test_saved_plan_applies_to_the_state_it_was_made_against_from_any_directory(demo_stack, tmp_path, fake,
                                                                                monkeypatch):
    """Bug 2: `plan --state X -out P`, then `apply P` applied to ./state/<stack>.json."""
    state_path = tmp_path / "ci" / "state.json"
    planned = plan_operation(PlanRequest(demo_stack, state_path=state_path, refresh=False))
    assert planned.plan.state_path == str(state_path.resolve())
    plan_file = tmp_path / "tfplan"
    write_plan(planned.plan, plan_file)
    assert read_plan(plan_file).state_path == str(state_path.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    outcome = apply(ApplyRequest(plan_file), drivers=by_name(fake))
    assert outcome.status == APPLIED and outcome.state_path == str(state_path.resolve())
    assert len(StateStore(state_path, "half-plus-two").read().records) == 3
    assert not (elsewhere / "state").exists()


def test_saved_plan_with_a_relative_state_path_resolves_it_when_planning(demo_stack, tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    planned = plan_operation(PlanRequest(demo_stack, state_path=Path("mine.json"), refresh=False))
    write_plan(planned.plan, tmp_path / "tfplan")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    apply(ApplyRequest(tmp_path / "tfplan", state_path=Path("../mine.json")), drivers=by_name(fake))  # same file
    assert len(StateStore(tmp_path / "mine.json", "half-plus-two").read().records) == 3


def test_saved_plan_refuses_another_state_file(demo_stack, tmp_path, fake):
    state_path = tmp_path / "x.json"
    planned = plan_operation(PlanRequest(demo_stack, state_path=state_path, refresh=False))
    write_plan(planned.plan, tmp_path / "tfplan")
    with pytest.raises(ReconcilerError, match=rf"was made against state {state_path}, not .*y\.json") as caught:
        apply(ApplyRequest(tmp_path / "tfplan", state_path=tmp_path / "y.json"), drivers=by_name(fake))
    assert "without --state" in caught.value.hint
    assert fake.calls == [] and not state_path.exists() and not (tmp_path / "y.json").exists()


def test_plan_saved_before_state_path_was_recorded_uses_the_given_state(demo_stack, tmp_path, fake):
    import dataclasses
    state_path = tmp_path / "old.json"
    old = dataclasses.replace(plan_operation(PlanRequest(demo_stack, state_path=state_path, refresh=False)).plan,
                              state_path="")
    assert "state_path" not in old.to_dict()
    write_plan(old, tmp_path / "tfplan")
    apply(ApplyRequest(tmp_path / "tfplan", state_path=state_path), drivers=by_name(fake))
    assert len(StateStore(state_path, "half-plus-two").read().records) == 3


# -- the CLI front end over the operations -----------------------------------------------------
@pytest.fixture
def cli_run(monkeypatch):
    from click.testing import CliRunner

    from reconciler.cli.main import cli
    monkeypatch.setenv("NO_COLOR", "1")

    def invoke(driver, *args, input=None):
        monkeypatch.setattr("reconciler.drivers.registry.driver_named", lambda name: driver)
        return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)
    return invoke


def test_cli_asks_and_a_no_cancels(cli_run, demo_stack, tmp_path, fake):
    state_path = tmp_path / "state.json"
    result = cli_run(fake, "apply", demo_stack, "--state", state_path, "--no-refresh", input="no\n")
    assert result.exit_code == 1
    assert result.output.endswith("\nDo you want to perform these actions?\n  Only 'yes' will be accepted to "
                                  "approve.\n\n  Enter a value: no\n\nApply cancelled.\n")
    assert fake.calls == [] and not state_path.exists()


def test_cli_reports_a_failed_step_and_what_it_blocked(cli_run, demo_stack, tmp_path):
    deployment = "deployment.half-plus-two/tfserving"
    driver = RecordingDriver(fail={f"create {deployment}": "image not found"})
    result = cli_run(driver, "apply", demo_stack, "--state", tmp_path / "state.json", "--no-refresh",
                     input="yes\n")
    assert result.exit_code == 1
    assert timeless(result.stdout).endswith(f"{deployment}: Creating...\n{deployment}: Creation failed after 0s\n")
    assert result.stderr == (
        f"\nError: {deployment}: image not found\n  fix the fake\n"
        "\nNot attempted because a dependency failed: endpoint.half-plus-two:create\n"
        "\nApply failed. Resources: 1 added, 0 changed, 0 destroyed. What already ran keeps serving; failed "
        "resources are marked tainted and will be replaced by the next apply.\n")


def test_cli_destroy(cli_run, demo_stack, tmp_path, fake):
    state_path = tmp_path / "state.json"
    assert cli_run(fake, "apply", demo_stack, "--state", state_path, "--no-refresh", "--auto-approve").exit_code == 0
    result = cli_run(fake, "destroy", demo_stack, "--state", state_path, "--no-refresh", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert result.output.endswith("\nDestroy complete! Resources: 0 added, 0 changed, 3 destroyed.\n")
    assert [line for line in fake.calls if line.startswith("delete")] == [
        "delete endpoint.half-plus-two", "delete deployment.half-plus-two/tfserving",
        "delete model.tfserving-mounted:1"]


class RefusingPreflight(RecordingDriver):
    """Refuses the plan in preflight as a driver does for an image no engine has."""

    def __init__(self, about: tuple[str, ...]) -> None:
        super().__init__()
        self.about = about

    def preflight(self, specs) -> None:
        raise DriverError("image x:1 is not present locally and could not be pulled", "load it", about=self.about)


@pytest.mark.parametrize("about, prefix", [
    (("deployment.half-plus-two/tfserving",), "{stack}/deployment.yml:11: image x:1"),  # its image: line
    ((), "image x:1"),  # nothing of the stack named: the driver's words as they are
])
def test_a_preflight_refusal_says_where_the_resource_was_written(demo_stack, tmp_path, about, prefix):
    state_path = tmp_path / "state.json"
    with pytest.raises(DriverError) as refused:
        apply(ApplyRequest(demo_stack, state_path=state_path, refresh=False), drivers=by_name(RefusingPreflight(about)))
    assert refused.value.summary.startswith(prefix.format(stack=demo_stack)) and refused.value.hint == "load it"
    assert not state_path.exists()
