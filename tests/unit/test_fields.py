"""Field descriptors (planning/fields.py): one per deployment field; the policies derive from
them; the docker updaters implement exactly the fields they say; the gateway view is planned."""
from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config.graph import DEPLOYMENT_DEFAULTS
from reconciler.config.stack import load_stack
from reconciler.planning import fields
from reconciler.planning.field_policy import DRIVERS, IN_PLACE, POLICIES, REPLACE, policy_for
from reconciler.planning.plan import UPDATE, Change, Plan
from reconciler.planning.planner import PlanOptions, make_plan
from reconciler.render.text import render_plan
from reconciler.state.model import StateFile, StateRecord

ROOT = Path(__file__).resolve().parents[2]


def minimal_stack(tmp_path: Path) -> Path:
    """A deployment that states only what the schema requires: every other field is its default."""
    (tmp_path / "endpoint.yml").write_text(
        "$schema: https://azuremlsdk2.blob.core.windows.net/latest/managedOnlineEndpoint.schema.json\n"
        "name: minimal\n")
    (tmp_path / "deployment.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n"
        "name: blue\nendpoint_name: minimal\nenvironment:\n  image: x:1\n")
    return tmp_path


def test_one_descriptor_per_deployment_spec_key_in_spec_order():
    spec = load_stack(ROOT / "stacks" / "blue-green").by_kind("deployment")[0].spec
    assert [d.name for d in fields.DEPLOYMENT_FIELDS] == list(spec)


def test_defaults_are_what_the_spec_holds_when_the_yaml_does_not_say(tmp_path):
    spec = load_stack(minimal_stack(tmp_path)).by_kind("deployment")[0].spec
    defaults = {d.name: d.default for d in fields.DEPLOYMENT_FIELDS if d.default is not fields.REQUIRED}
    assert defaults == {k: v for k, v in spec.items() if k not in ("endpoint", "name", "image")}
    assert defaults == DEPLOYMENT_DEFAULTS
    assert [d.name for d in fields.DEPLOYMENT_FIELDS if d.default is fields.REQUIRED] == ["endpoint", "name", "image"]


def test_every_driver_entry_names_a_known_updater_and_says_how_it_creates():
    for descriptor in fields.DEPLOYMENT_FIELDS:
        for driver in DRIVERS:
            entry = descriptor.for_driver(driver)
            assert entry.update in (*fields.UPDATER_KINDS, None), (descriptor.name, driver)
            assert entry.create, (descriptor.name, driver)
    # Rolling is what a swarm service does; a container cannot roll.
    assert not fields.fields_updated_by("docker", fields.ROLL)


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_policy_tables_for_deployments_derive_from_the_descriptors(driver):
    rows = dict(policy_for(driver).fields["deployment"])
    assert rows == {d.name: IN_PLACE if d.for_driver(driver).update else REPLACE for d in fields.DEPLOYMENT_FIELDS}


def test_what_updates_in_place_per_driver():
    in_place = {driver: sorted(n for n, p in POLICIES[driver].fields["deployment"] if p == IN_PLACE)
                for driver in DRIVERS}
    # issue 12: instance_type sizes docker containers (CPUs, memory), so a change replaces, as on Azure ML.
    assert in_place["docker"] == ["app_insights_enabled", "description", "instance_count",
                                  "liveness_probe", "memory", "plain_environment_variables", "readiness_probe",
                                  "request_settings", "restart_policy", "tags"]
    assert sorted(set(in_place["swarm"]) - set(in_place["docker"])) == [
        "args", "command", "environment_variables", "image", "instance_type", "model", "publish_ports",
        "read_only_root_filesystem"]
    assert "routes" not in in_place["swarm"]


def test_docker_updaters_implement_exactly_the_engine_updated_fields():
    from reconciler.drivers.docker import updaters
    assert set(updaters.UPDATERS) == fields.fields_updated_by("docker", fields.ENGINE) == {"memory", "restart_policy"}


def test_docker_update_options_for_what_changed():
    from reconciler.drivers.docker.updaters import update_options
    before = {"memory": "256m", "restart_policy": "unless-stopped", "image": "a"}
    assert update_options(before, {**before, "image": "b"}) == {}
    assert update_options(before, {**before, "memory": "512m"}) == {
        "mem_limit": 512 * 2 ** 20, "memswap_limit": 1024 * 2 ** 20}
    assert update_options(before, {**before, "restart_policy": "on-failure"}) == {
        "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 0}}


def test_kubernetes_mapping_is_described_and_the_copied_container_fields_are_listed():
    from reconciler.render import kubernetes
    assert fields.kubernetes_container_fields() == (("image", "image"), ("command", "command"), ("args", "args"))
    assert fields.kubernetes_annotations() == ((kubernetes.DESCRIPTION_ANNOTATION, "description"),
                                               (kubernetes.INSTANCE_TYPE_ANNOTATION, "instance_type"))
    assert fields.DEPLOYMENT["instance_count"].kubernetes == "Deployment.spec.replicas"
    assert [d.name for d in fields.DEPLOYMENT_FIELDS if d.kubernetes is None] == [
        "tags", "code", "app_insights_enabled", "restart_policy", "plain_environment_variables", "publish_ports",
        "read_only_root_filesystem"]


def test_with_defaults_fills_only_what_the_desired_spec_has():
    record = {"image": "i", "request_settings": {"request_timeout_ms": 1000}}
    desired = {"image": "i", "restart_policy": "always", "request_settings": {"request_timeout_ms": 1000,
                                                                            "max_queue_wait_ms": 7}}
    assert fields.with_defaults("deployment", record, desired) == {
        "image": "i", "restart_policy": "unless-stopped",
        "request_settings": {"request_timeout_ms": 1000, "max_queue_wait_ms": 500}}
    assert fields.with_defaults("deployment", record, {"image": "i"}) is record
    assert fields.with_defaults("endpoint", {}, {"tags": {}}) == {}
    assert fields.with_defaults("deployment", {}, {"image": "i"}) == {}


# -- the gateway view in plans --------------------------------------------------------------
def applied_state(graph) -> StateFile:
    state = StateFile.empty(graph.stack)
    for address, resource in graph.resources.items():
        state = state.with_record(StateRecord(str(address), "docker", resource.spec, resource.spec_hash,
                                              depends_on=tuple(map(str, resource.depends_on))))
    return state


def timeout_plan(tmp_path: Path, driver: str = "docker") -> Plan:
    import shutil
    stack = tmp_path / "stack"
    shutil.copytree(ROOT / "stacks" / "half-plus-two", stack)
    state = applied_state(load_stack(stack))
    deployment = stack / "deployment.yml"
    deployment.write_text(deployment.read_text() + "request_settings:\n  request_timeout_ms: 1000\n")
    return make_plan(load_stack(stack), state, PlanOptions(driver=driver))


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_changed_request_timeout_plans_the_endpoint(tmp_path, driver):
    plan = timeout_plan(tmp_path, driver)
    assert str(plan).splitlines() == [
        "~ deployment.half-plus-two/tfserving (request_settings.request_timeout_ms)",
        "~ endpoint.half-plus-two (gateway.tfserving.request_timeout_ms) [gateway-view-changed]",
        "Plan: 0 to add, 2 to change, 0 to destroy."]
    assert Plan.from_dict(plan.to_dict()) == plan


def test_the_text_plan_shows_the_view_fields_under_their_own_heading(tmp_path):
    text = render_plan(timeout_plan(tmp_path))
    endpoint = text[text.index("  # endpoint.half-plus-two"):]
    assert endpoint.splitlines()[:5] == [
        "  # endpoint.half-plus-two will be updated in-place: the gateway's view of its deployments changed",
        '  ~ endpoint "half-plus-two" {',
        "      ~ gateway.tfserving.request_timeout_ms = 5000 -> 1000",
        "        # (6 unchanged attributes hidden)",
        "    }"]


def test_compact_form_of_a_view_change():
    change = Change("endpoint.ep", UPDATE, "gateway-view-changed", {}, {},
                    fields=(fields_change("gateway.blue.request_timeout_ms", 5000, 1000),))
    assert change.compact() == "~ endpoint.ep (gateway.blue.request_timeout_ms) [gateway-view-changed]"


def fields_change(path, before, after):
    from reconciler.planning.diff import FieldChange
    return FieldChange(path, before, after, False)


class RecordingContainers:
    def __init__(self, missing=()):
        self.calls: list[tuple[str, dict]] = []
        self.missing = set(missing)

    def get(self, container_id):
        import docker
        if container_id in self.missing:
            raise docker.errors.NotFound("gone")
        containers = self

        class Container:
            def update(self, **options):
                containers.calls.append((container_id, options))
        return Container()


def deployment_record(spec: dict, ids=("c0", "c1")) -> StateRecord:
    instances = [{"id": i, "name": f"rc-{i}", "instance": n} for n, i in enumerate(ids)]
    return StateRecord("deployment.ep/blue", "docker", spec, "sha256:x", outputs={"instances": instances})


def test_apply_in_place_updates_every_instance_with_what_changed_only():
    from types import SimpleNamespace

    from reconciler.drivers.docker.updaters import apply_in_place
    client = SimpleNamespace(containers=RecordingContainers())
    before = {"memory": None, "restart_policy": "unless-stopped", "tags": {}}
    apply_in_place(client, deployment_record(before), {**before, "tags": {"a": "1"}})
    assert client.containers.calls == []
    apply_in_place(client, deployment_record(before), {**before, "restart_policy": "always"})
    assert client.containers.calls == [("c0", {"restart_policy": {"Name": "always", "MaximumRetryCount": 0}}),
                                       ("c1", {"restart_policy": {"Name": "always", "MaximumRetryCount": 0}})]


def test_apply_in_place_on_a_vanished_container_says_what_to_do():
    from types import SimpleNamespace

    from reconciler.drivers.docker.updaters import apply_in_place
    from reconciler.errors import DriverError
    client = SimpleNamespace(containers=RecordingContainers(missing={"c1"}))
    with pytest.raises(DriverError, match="rc-c1 of deployment.ep/blue is gone") as error:
        apply_in_place(client, deployment_record({"memory": "1g"}), {"memory": "2g"})
    assert "reconciler plan" in error.value.hint
