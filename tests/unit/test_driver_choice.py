"""Which driver serves a stack: the `driver:` stack setting, `--driver`, and what state was made
with; and how the choice changes the plan. No container engine is needed (plans use
--no-refresh)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from reconciler.drivers.registry import choose_driver, recorded_driver
from reconciler.cli.main import cli
from reconciler.config.stack import load_stack
from reconciler.errors import ReconcilerError, StackInvalid
from reconciler.planning.planner import PlanOptions, make_plan
from reconciler.state.model import StateFile, StateRecord
from reconciler.state.store import StateStore


def state_made_with(driver: str | None) -> StateFile:
    state = StateFile.empty("s")
    if driver:
        state = state.with_record(StateRecord("model.m:1", driver, {}, "h"))
    return state


@pytest.mark.parametrize("option, configured, recorded, expected", [
    (None, "", None, "docker"),
    (None, "swarm", None, "swarm"),
    ("docker", "swarm", None, "docker"),       # the command line wins over the stack file
    (None, "", "swarm", "swarm"),              # a stack applied on swarm keeps planning for swarm
    ("swarm", "", "swarm", "swarm"),
])
def test_choice(option, configured, recorded, expected):
    assert choose_driver(option, configured, state_made_with(recorded)) == expected


@pytest.mark.parametrize("option, configured, recorded, source", [
    ("swarm", "", "docker", "--driver"),
    (None, "swarm", "docker", "the stack settings"),
    (None, "docker", "swarm", "the stack settings"),
])
def test_switching_engines_under_existing_state_is_refused(option, configured, recorded, source):
    with pytest.raises(ReconcilerError) as caught:
        choose_driver(option, configured, state_made_with(recorded))
    assert f"applied with the {recorded} driver, but {source} asks for" in caught.value.summary
    assert f"reconciler destroy STACK_DIR --driver {recorded}" in caught.value.hint


def test_recorded_driver_of_empty_state_is_unknown():
    assert recorded_driver(StateFile.empty("s")) == ""


def test_stack_setting_is_read_from_its_document(demo_stack):
    assert load_stack(demo_stack).driver == ""
    (demo_stack / "reconciler.yml").write_text("driver: swarm\n")
    assert load_stack(demo_stack).driver == "swarm"


@pytest.mark.parametrize("text, line, field, message", [
    ("driver: kubernetes\n", 1, "driver", "kubernetes"),
    ("description: x\ndriver: swarm\nreplicas: 3\n", 3, "replicas", "replicas"),
])
def test_bad_stack_setting_is_located(demo_stack, text, line, field, message):
    (demo_stack / "reconciler.yml").write_text(text)
    with pytest.raises(StackInvalid) as caught:
        load_stack(demo_stack)
    (problem,) = caught.value.problems
    assert (problem.file.endswith("reconciler.yml"), problem.line) == (True, line)
    assert field in problem.path and message in problem.message


def test_second_stack_setting_is_an_error(demo_stack):
    (demo_stack / "reconciler.yml").write_text("driver: swarm\n")
    (demo_stack / "settings-again.yml").write_text("# settings again\ndriver: docker\n")
    with pytest.raises(StackInvalid) as caught:
        load_stack(demo_stack)
    (problem,) = caught.value.problems
    assert problem.file.endswith("settings-again.yml") and problem.line == 2
    assert "given twice" in problem.message and "reconciler.yml:1" in problem.hint


def applied(demo_stack, driver: str) -> StateFile:
    desired = load_stack(demo_stack)
    state = StateFile.empty(desired.stack)
    for address, resource in desired.resources.items():
        state = state.with_record(StateRecord(str(address), driver, resource.spec, resource.spec_hash,
                                              depends_on=tuple(map(str, resource.depends_on))))
    return state


@pytest.mark.parametrize("driver, expected", [
    # A container cannot change its image: new containers, then the old ones go.
    ("docker", "-/+ deployment.half-plus-two/tfserving (image!)"),
    # A service rolls onto the new image, task by task.
    ("swarm", "~ deployment.half-plus-two/tfserving (image)"),
])
def test_the_driver_decides_what_updates_in_place(demo_stack, driver, expected):
    state = applied(demo_stack, driver)
    deployment = demo_stack / "deployment.yml"
    deployment.write_text(deployment.read_text().replace("reconciler/demo-tfserving:latest", "other/image:2"))
    plan = make_plan(load_stack(demo_stack), state, PlanOptions(driver=driver))
    assert expected in str(plan).splitlines()
    assert plan.driver == driver


def test_plan_cli_names_the_driver_and_refuses_a_switch(demo_stack, tmp_path):
    state_path = tmp_path / "state.json"
    runner = CliRunner()
    result = runner.invoke(cli, ["plan", str(demo_stack), "--state", str(state_path), "--no-refresh",
                                 "--driver", "swarm", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["driver"] == "swarm"
    store = StateStore(state_path, "half-plus-two")
    store.lock("test")
    with store:
        store.write(applied(demo_stack, "docker"))
    result = runner.invoke(cli, ["plan", str(demo_stack), "--state", str(state_path), "--no-refresh",
                                 "--driver", "swarm"])
    assert result.exit_code == 1
    assert "applied with the docker driver, but --driver asks for swarm" in result.output


@pytest.mark.parametrize("driver, expected", [
    # The gateway lists each container: it must learn of the new ones.
    ("docker", ["~ deployment.half-plus-two/tfserving (instance_count)",
                "~ endpoint.half-plus-two [dependency-replaced]", "Plan: 0 to add, 2 to change, 0 to destroy."]),
    # The gateway resolves the service's name, but holds 2 x 1 x instance_count requests in
    # flight (issue 15): it is re-rendered for the limit only.
    ("swarm", ["~ deployment.half-plus-two/tfserving (instance_count)",
               "~ endpoint.half-plus-two (gateway.tfserving.max_requests_in_flight) [gateway-view-changed]",
               "Plan: 0 to add, 2 to change, 0 to destroy."]),
])
def test_scaling_re_points_the_gateway_only_where_it_lists_containers(demo_stack, driver, expected):
    state = applied(demo_stack, driver)
    deployment = demo_stack / "deployment.yml"
    deployment.write_text(deployment.read_text().replace("instance_count: 1", "instance_count: 3"))
    assert str(make_plan(load_stack(demo_stack), state, PlanOptions(driver=driver))).splitlines() == expected


def test_a_state_whose_records_name_different_drivers_is_an_error():
    """Bug 3 left states like this behind (swarm records, "docker" orphans); min() then chose docker."""
    state = state_made_with("swarm").with_record(StateRecord("deployment.e/b~orphan-1.abc", "docker", {}, ""))
    for call in (lambda: recorded_driver(state), lambda: choose_driver(None, "swarm", state)):
        with pytest.raises(ReconcilerError) as caught:
            call()
        assert caught.value.summary == ("state of stack s has records of different drivers "
                                        "(docker: deployment.e/b~orphan-1.abc; swarm: model.m:1)")
        assert "reconciler state rm ADDRESS" in caught.value.hint


def test_an_unknown_driver_name_never_falls_back_to_docker():
    from reconciler.drivers.registry import driver_named
    with pytest.raises(ReconcilerError) as caught:
        driver_named("podman")
    assert "known drivers: docker, swarm" in caught.value.summary


def test_the_driver_option_offers_the_registered_drivers(demo_stack):
    result = CliRunner().invoke(cli, ["plan", str(demo_stack), "--no-refresh", "--driver", "podman"])
    assert result.exit_code == 2 and "'docker', 'swarm'" in result.output, result.output
