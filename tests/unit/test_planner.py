"""Planner tables: (desired, prior state, options) -> compact plan text. See tests/cases/."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler.addresses import Address
from reconciler.config.graph import DesiredGraph, DesiredResource, spec_hash
from reconciler.errors import ReconcilerError
from reconciler.planning.ordering import execution_order
from reconciler.planning.plan import CREATE, Change
from reconciler.planning.planner import PlanOptions, make_plan
from reconciler.state.model import StateFile, StateRecord

CASES = yaml.safe_load((Path(__file__).parents[1] / "cases" / "planner_cases.yaml").read_text())


def desired_graph(resources: dict) -> DesiredGraph:
    built = {}
    for address, entry in resources.items():
        parsed = Address.parse(address)
        built[parsed] = DesiredResource(parsed, entry["spec"], spec_hash(entry["spec"]),
                                        tuple(Address.parse(d) for d in entry.get("depends_on", ())),
                                        "test.yml:1")
    return DesiredGraph("test", dict(sorted(built.items())))


def state_file(records: dict) -> StateFile:
    state = StateFile(stack="test", lineage="lineage-1", serial=4)
    for address, entry in records.items():
        state = state.with_record(StateRecord(address, "fake", entry["spec"], spec_hash(entry["spec"]),
                                              tuple(entry.get("depends_on", ())), entry.get("status", "ready")))
    return state


def options(entry: dict) -> PlanOptions:
    raw = entry.get("options", {})
    return PlanOptions(mode=raw.get("mode", "apply"), targets=frozenset(raw.get("targets", ())),
                       replace=frozenset(raw.get("replace", ())), driver=raw.get("driver", "docker"))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_planner_table(case):
    plan = make_plan(desired_graph(case["desired"]), state_file(case["state"]), options(case))
    assert str(plan) + "\n" == case["expect"]


def test_plan_remembers_state_and_config():
    graph = desired_graph({"deployment.ep/a": {"spec": {"image": "x"}}})
    plan = make_plan(graph, state_file({}))
    assert (plan.state_lineage, plan.state_serial, plan.desired_digest) == ("lineage-1", 4, graph.digest)


def test_plan_round_trips_through_dict():
    graph = desired_graph({"deployment.ep/a": {"spec": {"image": "y", "tags": {"a": "1"}}}})
    plan = make_plan(graph, state_file({"deployment.ep/a": {"spec": {"image": "x", "tags": {}}}}))
    from reconciler.planning.plan import Plan
    assert Plan.from_dict(plan.to_dict()) == plan


def test_cycle_is_a_clear_error():
    changes = {
        "deployment.ep/a": Change("deployment.ep/a", CREATE, "not-in-state", None, {}, depends_on=("model.m:1",)),
        "model.m:1": Change("model.m:1", CREATE, "not-in-state", None, {}, depends_on=("deployment.ep/a",)),
    }
    with pytest.raises(ReconcilerError, match="dependency cycle: .*deployment.ep/a"):
        execution_order(changes)


def test_planner_core_never_imports_docker():
    import subprocess
    import sys
    code = ("import sys, reconciler.config.stack, reconciler.planning.planner, reconciler.render.text, "
            "reconciler.render.markdown, reconciler.state.store; "
            "sys.exit(1 if 'docker' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
