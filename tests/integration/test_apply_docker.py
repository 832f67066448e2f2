"""Apply, re-apply, replace, update in place and destroy on the real Docker Engine."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from gateway_client import GatewayClient
from harness import invoke_sample as invoke

pytestmark = pytest.mark.integration

DEPLOYMENT = "deployment.half-plus-two/tfserving"
MODEL = "model.tfserving-mounted:1"


def container_ids(stack) -> set[str]:
    return {c.id for c in stack.containers(**{"org.reconciler.role": "deployment"})}


def test_create_serves_and_is_configured_safely(stack, tmp_path):
    result = stack.apply()
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in result.output
    assert invoke(stack, tmp_path) == {"predictions": [2.5, 3.0, 4.5]}
    (container,) = stack.containers(**{"org.reconciler.address": DEPLOYMENT})
    attrs = container.attrs
    labels = container.labels
    assert labels["org.reconciler.managed-by"] == "reconciler"
    assert labels["org.reconciler.spec-hash"].startswith("sha256:")
    assert "no-new-privileges:true" in attrs["HostConfig"]["SecurityOpt"]
    # issue 12: deployment ports are not published at all (the gateway reaches them on the stack network).
    assert not attrs["HostConfig"]["PortBindings"]
    (mount,) = attrs["Mounts"]
    assert mount["Destination"] == "/var/azureml-app/azureml-models/tfserving-mounted/1"
    assert mount["RW"] is False
    assert "AZUREML_MODEL_DIR=/var/azureml-app/azureml-models/tfserving-mounted/1" in attrs["Config"]["Env"]
    record = stack.records()[DEPLOYMENT]
    assert record["outputs"]["instances"][0]["ports"] == {}
    assert oct(stack.state.stat().st_mode & 0o777) == "0o600"


def test_second_apply_is_a_no_op(stack):
    stack.apply()
    serial = json.loads(stack.state.read_text())["serial"]
    result = stack.plan("--detailed-exitcode")
    assert result.exit_code == 0, result.output
    assert "No changes." in stack.apply().output
    assert json.loads(stack.state.read_text())["serial"] == serial


def test_image_change_replaces_the_container(stack, docker_client):
    docker_client.images.get("reconciler/demo-tfserving:latest").tag("reconciler/demo-tfserving", "it-v2")
    stack.apply()
    before = container_ids(stack)
    stack.edit("deployment.yml", "reconciler/demo-tfserving:latest", "reconciler/demo-tfserving:it-v2")
    plan = stack.plan()
    assert '-/+ deployment "half-plus-two/tfserving"' in plan.output
    assert "# forces replacement" in plan.output
    result = stack.apply()
    assert "Resources: 1 added, 1 changed, 1 destroyed." in result.output  # endpoint follows
    after = container_ids(stack)
    assert before.isdisjoint(after) and len(after) == 1
    assert stack.containers()[0].image.tags  # still a real image


def test_env_change_replaces_and_tags_update_in_place(stack, tmp_path):
    stack.apply()
    first = container_ids(stack)
    stack.edit("deployment.yml", "  team: demo", "  team: platform")
    result = stack.apply()
    assert "Resources: 0 added, 1 changed, 0 destroyed." in result.output
    assert container_ids(stack) == first
    assert stack.records()[DEPLOYMENT]["spec"]["tags"] == {"team": "platform"}
    stack.edit("deployment.yml", "  MODEL_NAME: half_plus_two", "  MODEL_NAME: half_plus_two\n  EXTRA: '1'")
    stack.apply()
    assert container_ids(stack).isdisjoint(first)
    assert invoke(stack, tmp_path) == {"predictions": [2.5, 3.0, 4.5]}


def test_model_content_change_replaces_model_and_deployment(stack, tmp_path):
    stack.apply()
    assets = stack.dir / "half_plus_two" / "00000123" / "assets"
    (assets / "coefficients.json").write_text('{"a": 1.0, "b": 0.0}')
    plan = stack.plan()
    assert f"# {MODEL} must be replaced" in plan.output
    assert f"# {DEPLOYMENT} must be replaced" in plan.output
    stack.apply()
    assert invoke(stack, tmp_path) == {"predictions": [1.0, 2.0, 5.0]}
    stores = list((stack.state.parent / "models").iterdir())
    assert len(stores) == 1, "the old model copy is released"


def test_scale_out_and_in_place(stack):
    stack.apply()
    (first,) = container_ids(stack)
    stack.edit("deployment.yml", "instance_count: 1", "instance_count: 2")
    # The deployment scales in place and its gateway learns the new container.
    assert "Resources: 0 added, 2 changed, 0 destroyed." in stack.apply().output
    ids = container_ids(stack)
    assert len(ids) == 2 and first in ids
    stack.edit("deployment.yml", "instance_count: 2", "instance_count: 1")
    stack.apply()
    assert container_ids(stack) == {first}


def test_readiness_failure_fails_with_logs_and_taints(stack):
    stack.edit("deployment.yml", "  MODEL_NAME: half_plus_two", "  MODEL_NAME: no_such_model")
    stack.edit("deployment.yml", "  failure_threshold: 30", "  failure_threshold: 3")
    result = stack.apply(expect=1)
    assert "never became ready" in result.output
    assert "last log lines" in result.output and "no_such_model" in result.output
    assert stack.records()[DEPLOYMENT]["status"] == "tainted"
    # #16: the endpoint's gateway started beside the deployment (routing nothing); what depends
    # on the deployment, routing the gateway to it, is not attempted.
    assert "Not attempted because a dependency failed: endpoint.half-plus-two:route" in result.output
    assert stack.endpoint("half-plus-two")["routes"] == {}
    stack.edit("deployment.yml", "  MODEL_NAME: no_such_model", "  MODEL_NAME: half_plus_two")
    plan = stack.plan()
    assert "is tainted, so must be replaced" in plan.output
    stack.apply()
    assert stack.records()[DEPLOYMENT]["status"] == "ready"
    assert len(container_ids(stack)) == 1
    assert list(stack.endpoint("half-plus-two")["routes"]) == ["tfserving"]


def test_missing_image_is_a_clear_error_and_changes_nothing(stack):
    stack.edit("deployment.yml", "reconciler/demo-tfserving:latest", "reconciler/no-such-image:1")
    result = stack.apply(expect=1)
    assert "deployment.yml:11: image reconciler/no-such-image:1 is not present locally and could not be pulled" \
        in result.output
    assert not stack.state.exists()
    assert stack.containers() == []


def test_destroy_leaves_nothing_labelled_and_spares_unlabelled(stack, docker_client):
    impostor = docker_client.containers.run(
        "reconciler/base:bookworm", ["sleep", "300"], detach=True,
        name=f"rc-{stack.name}-half-plus-two-tfserving-impostor")
    try:
        stack.apply()
        result = stack.run("destroy", str(stack.dir), "--state", str(stack.state), "--auto-approve")
        assert result.exit_code == 0, result.output
        assert "Destroy complete! Resources: 0 added, 0 changed, 3 destroyed." in result.output
        assert stack.containers() == []
        assert docker_client.networks.list(filters={"label": f"org.reconciler.stack={stack.name}"}) == []
        impostor.reload()
        assert impostor.status == "running"
    finally:
        impostor.remove(force=True)


def test_logs_command(stack):
    stack.apply()
    result = stack.run("logs", "tfserving", "--state", str(stack.state), "--lines", "5")
    assert result.exit_code == 0, result.output
    assert "loaded half_plus_two" in result.output


def test_destroy_also_removes_leftovers_of_an_interrupted_apply(stack, docker_client):
    stack.apply()
    (container,) = stack.containers(**{"org.reconciler.role": "deployment"})
    # A container of ours that no record owns, as a `kill -9` between `docker run` and the state
    # write leaves behind.
    docker_client.containers.run("reconciler/base:bookworm", ["sleep", "300"], detach=True,
                                 labels={**container.labels, "org.reconciler.generation": "leftover"})
    result = stack.run("destroy", str(stack.dir), "--state", str(stack.state), "--auto-approve")
    assert result.exit_code == 0, result.output
    assert stack.containers() == []


def started_at(container) -> datetime:
    """A container's State.StartedAt (RFC 3339 with nanoseconds) as an aware datetime."""
    stamp = container.attrs["State"]["StartedAt"]
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{seconds}.{(fraction + '000000')[:6]}+00:00")


def test_a_new_endpoint_starts_its_gateway_while_its_deployments_start_and_routes_them_after(blue_green):
    """#16: from empty, the gateway is created beside the deployments (not after the last is
    ready) and routed to them by a later step; the endpoint then answers through it."""
    stack = blue_green
    # Green cannot be ready before 3 s after its start: far longer than a gateway's create.
    stack.edit("green.yml", "readiness_probe: {initial_delay: 0, period: 1}",
               "readiness_probe: {initial_delay: 3, period: 1}")
    result = stack.apply()
    lines = result.output.splitlines()
    endpoint, green = "endpoint.blue-green", "deployment.blue-green/green"

    def line_of(start: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(start))
    green_ready = line_of(f"{green}: Creation complete after ")
    assert line_of(f"{endpoint}: Creation complete after ") < green_ready, result.output
    assert green_ready < line_of(f"{endpoint}: Routing to its deployments...") \
        < line_of(f"{endpoint}: Routing complete after "), result.output
    assert "Apply complete! Resources: 4 added, 0 changed, 0 destroyed." in result.output
    (gateway,) = stack.containers(**{"org.reconciler.role": "gateway"})
    (green_container,) = stack.containers(**{"org.reconciler.address": green})
    assert started_at(gateway) < started_at(green_container) + timedelta(seconds=3), \
        "the gateway started only once green could be ready"
    outputs = stack.endpoint("blue-green")
    assert sorted(outputs["routes"]) == ["blue", "green"]
    client = GatewayClient(outputs["port"], outputs["keys"]["primary"])
    try:
        for deployment in ("blue", "green"):
            status, _, body = client.score(deployment=deployment)
            assert status == 200, body
        assert client.score(key="not-the-key")[0] == 401
    finally:
        client.close()
    assert stack.plan("--detailed-exitcode").exit_code == 0
