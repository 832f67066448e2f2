"""Saved plans: round trip through a file, and refusal of a plan whose state has moved on."""
from __future__ import annotations

import stat

import pytest

from reconciler.addresses import Address
from reconciler.config.graph import DesiredGraph, DesiredResource, spec_hash
from reconciler.errors import ReconcilerError, StalePlan
from reconciler.planfile import check_not_stale, read_plan, write_plan
from reconciler.planning.planner import PlanOptions, make_plan
from reconciler.state.model import StateFile, StateRecord
from reconciler.state.store import StateStore

SPEC = {"image": "tfs:1"}
ADDRESS = Address("deployment", "ep/blue")


def graph() -> DesiredGraph:
    return DesiredGraph("demo", {ADDRESS: DesiredResource(ADDRESS, SPEC, spec_hash(SPEC), (), "d.yml:1")})


def plan_for(state: StateFile):
    return make_plan(graph(), state, PlanOptions(created_at="2024-01-01T00:00:00+00:00"))


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(tmp_path / "demo.json", "demo")


def save(store: StateStore, state: StateFile) -> StateFile:
    store.lock("test")
    with store:
        return store.write(state)


def test_plan_for_the_same_state_is_fresh(store):
    state = save(store, store.read())
    check_not_stale(plan_for(state), store.read())


def test_fresh_stack_without_a_state_file_matches_on_empty_lineage(store):
    plan = plan_for(store.read())
    assert (plan.state_lineage, plan.state_serial) == ("", 0)
    check_not_stale(plan, store.read())


def test_changed_serial_makes_the_plan_stale(store):
    state = save(store, store.read())
    plan = plan_for(state)
    save(store, state.with_record(StateRecord(str(ADDRESS), "docker", SPEC, spec_hash(SPEC))))
    with pytest.raises(StalePlan, match=r"serial 1 -> 2"):
        check_not_stale(plan, store.read())


def test_first_apply_after_planning_makes_the_plan_stale(store):
    plan = plan_for(store.read())  # made before any state existed
    save(store, store.read())      # someone else applied first: lineage assigned
    with pytest.raises(StalePlan, match="different state lineage"):
        check_not_stale(plan, store.read())


def test_other_lineage_with_the_same_serial_is_stale(store):
    state = save(store, store.read())
    plan = plan_for(state)
    other = StateFile(stack="demo", lineage="another-lineage", serial=state.serial)
    with pytest.raises(StalePlan, match="different state lineage") as caught:
        check_not_stale(plan, other)
    assert "make a new plan" in caught.value.hint


def test_saved_plan_round_trips_and_is_private(tmp_path, store):
    plan = plan_for(store.read())
    path = tmp_path / "tfplan"
    write_plan(plan, path)
    assert read_plan(path) == plan
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("content", ["", "{}", '{"kind": "something-else"}', "not json", "[]"])
def test_not_a_plan_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "tfplan"
    path.write_text(content)
    with pytest.raises(ReconcilerError, match="is not a valid saved plan"):
        read_plan(path)
