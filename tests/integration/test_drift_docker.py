"""Drift on the real Docker Engine: each kind made by hand with the docker CLI, then detected
(`reconciler drift`, exit 2 and its reports), shown by plan, and repaired by apply, or accepted
into state with --refresh-only. Also `reconciler import` and `reconciler state recover`."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time

import pytest

pytestmark = pytest.mark.integration

DEPLOYMENT = "deployment.half-plus-two/tfserving"
ENDPOINT = "endpoint.half-plus-two"
MODEL = "model.tfserving-mounted:1"
SAMPLE = '{"instances": [1.0, 2.0, 5.0]}'
PREDICTIONS = {"predictions": [2.5, 3.0, 4.5]}


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def drift(stack, *extra: str, expect: int):
    result = stack.run("drift", str(stack.dir), "--state", str(stack.state), *extra)
    assert result.exit_code == expect, result.output
    return result.output


def drift_json(stack, expect: int = 2) -> dict:
    return json.loads(drift(stack, "--json", expect=expect))


def kinds(report: dict) -> list[tuple[str, str]]:
    return [(d["kind"], d["address"].split("~")[0]) for d in report["drift"]]


def invoke(stack, tmp_path, key: str | None = None):
    request = tmp_path / "request.json"
    request.write_text(SAMPLE)
    if key is None:
        result = stack.run("invoke", "half-plus-two", "--request-file", str(request), "--state", str(stack.state))
        assert result.exit_code == 0, result.output
        return json.loads(result.output)
    from gateway_client import GatewayClient
    return GatewayClient(stack.endpoint("half-plus-two")["port"], key).score()[0]


def instance_name(stack) -> str:
    return stack.records()[DEPLOYMENT]["outputs"]["instances"][0]["name"]


def gateway_name(stack) -> str:
    return stack.endpoint("half-plus-two")["gateway"]["name"]


def recreate(name: str, *changes: str, drop_ports: bool = False, drop_mounts: bool = False) -> str:
    """`docker rm -f` a container and `docker run` it again by hand, as someone would, copying
    its labels, environment, mounts, network and published ports, plus `changes`."""
    info = json.loads(docker("inspect", name))[0]
    args = ["run", "-d", "--name", name, "--network", next(iter(info["NetworkSettings"]["Networks"]))]
    for key, value in info["Config"]["Labels"].items():
        args += ["--label", f"{key}={value}"]
    for item in info["Config"]["Env"]:
        args += ["-e", item]
    if not drop_mounts:
        for mount in info["Mounts"]:
            args += ["-v", f"{mount['Source']}:{mount['Destination']}:ro"]
    if not drop_ports:
        for port, bindings in (info["HostConfig"]["PortBindings"] or {}).items():
            args += ["-p", f"{bindings[0]['HostIp']}:{bindings[0]['HostPort']}:{port}"]
    docker("rm", "-f", name)
    return docker(*args, *changes, info["Config"]["Image"])


def test_no_drift_then_missing_instance_repaired_through_a_saved_plan(stack, tmp_path):
    stack.apply()
    report = drift_json(stack, expect=0)
    assert report["drifted"] is False and report["resources_checked"] == 3
    assert "No drift" in drift(stack, expect=0)
    docker("rm", "-f", instance_name(stack))
    assert kinds(drift_json(stack)) == [("missing", DEPLOYMENT)]
    plan = stack.plan("-out", str(tmp_path / "repair.plan"))
    assert "changed outside of reconciler" in plan.output
    assert f"# {DEPLOYMENT} changed outside reconciler, so will be repaired" in plan.output
    assert "~ instance_count = 0 -> 1" in plan.output
    result = stack.run("apply", str(tmp_path / "repair.plan"), "--state", str(stack.state))
    assert result.exit_code == 0, result.output
    drift(stack, expect=0)
    assert invoke(stack, tmp_path) == PREDICTIONS


@pytest.mark.parametrize("how", ["stop", "pause"])
def test_stopped_or_paused_instance_is_replaced_and_removed(stack, tmp_path, how):
    stack.apply()
    stopped = stack.records()[DEPLOYMENT]["outputs"]["instances"][0]["id"]
    docker(*(["stop", "-t", "1"] if how == "stop" else ["pause"]), stopped)
    report = drift_json(stack)
    assert kinds(report) == [("stopped", DEPLOYMENT), ("orphan", DEPLOYMENT)]
    assert ("exited" if how == "stop" else "paused") in report["drift"][0]["detail"]
    stack.apply()
    assert docker("ps", "-a", "-q", "--no-trunc", "--filter", f"id={stopped}") == ""
    states = docker("ps", "-a", "--filter", f"label=org.reconciler.stack={stack.name}",
                    "--format", "{{.State}}").split()
    # gateway + one fresh instance + the health probe and restarter (#15), nothing exited left
    assert states == ["running"] * 4
    drift(stack, expect=0)
    assert invoke(stack, tmp_path) == PREDICTIONS


@pytest.mark.parametrize("change,field", [
    (("-e", "DEBUG=1"), "environment_variables.DEBUG"),
    (("-p", "0.0.0.0::8501"), "ports"),
    (("--mount", "type=bind,source=/tmp,target=/var/azureml-app/azureml-models/tfserving-mounted/1,readonly"),
     "mounts"),
], ids=["env", "port", "mount"])
def test_container_recreated_by_hand_is_reported_field_by_field_and_replaced(stack, tmp_path, change, field):
    stack.apply()
    name = instance_name(stack)
    hand_made = recreate(name, *change, drop_ports=field == "ports", drop_mounts=field == "mounts")
    report = drift_json(stack)
    assert kinds(report) == [("recreated", DEPLOYMENT)]
    assert field in [f["path"] for f in report["drift"][0]["fields"]]
    markdown = drift(stack, "--markdown", expect=2)
    assert f"| `{DEPLOYMENT}` | recreated |" in markdown and field in markdown
    plan = stack.plan()
    assert '-/+ deployment "half-plus-two/tfserving"' in plan.output
    assert "changed outside reconciler, so will be repaired" in plan.output
    stack.apply()
    assert docker("ps", "-a", "-q", "--no-trunc", "--filter", f"id={hand_made}") == ""
    drift(stack, expect=0)
    assert invoke(stack, tmp_path) == PREDICTIONS


def test_image_tag_moved_under_a_running_container(stack, tmp_path):
    tag = f"reconciler/demo-tfserving:drift-{secrets.token_hex(3)}"
    docker("tag", "reconciler/demo-tfserving:latest", tag)
    try:
        stack.edit("deployment.yml", "reconciler/demo-tfserving:latest", tag)
        stack.apply()
        # A different image under the same name (one more label, so another id), as a push would.
        subprocess.run(["docker", "build", "-q", "-t", tag, "-"], check=True, capture_output=True, text=True,
                       input=f"FROM {tag}\nLABEL org.reconciler.test-rebuilt=1\n")
        report = drift_json(stack)
        assert kinds(report) == [("changed", DEPLOYMENT)]
        (image,) = [f for f in report["drift"][0]["fields"] if f["path"] == "image"]
        assert image["before"] == tag and image["after"].startswith("sha256:")
        stack.apply()
        drift(stack, expect=0)
        (container,) = stack.containers(**{"org.reconciler.role": "deployment"})
        assert container.labels.get("org.reconciler.test-rebuilt") == "1"  # runs what the tag names now
    finally:
        stack.cleanup()
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_model_store_content_changed(stack, tmp_path):
    stack.apply()
    store = stack.state.parent / "models"
    (copy,) = store.iterdir()
    coefficients = next(copy.rglob("assets")) / "coefficients.json"
    os.chmod(coefficients.parent, 0o755)
    coefficients.write_text('{"a": 1.0, "b": 0.0}')
    assert kinds(drift_json(stack)) == [("model-content", MODEL)]
    plan = stack.plan()
    assert f"# {MODEL} changed outside reconciler, so will be repaired" in plan.output
    assert f"# {DEPLOYMENT} must be replaced" in plan.output or DEPLOYMENT in plan.output
    stack.apply()
    drift(stack, expect=0)
    assert invoke(stack, tmp_path) == PREDICTIONS  # the store holds the stack's files again


def test_orphan_containers_with_our_labels_are_removed(stack, tmp_path):
    stack.apply()
    strays = []
    for role, address in (("deployment", DEPLOYMENT), ("gateway", ENDPOINT)):
        # Issue 12: "this stack's labels" include its identity (the state's lineage).
        strays.append(docker("run", "-d", "--label", "org.reconciler.managed-by=reconciler",
                             "--label", f"org.reconciler.stack={stack.name}", "--label", f"org.reconciler.role={role}",
                             "--label", f"org.reconciler.identity={json.loads(stack.state.read_text())['lineage']}",
                             "--label", f"org.reconciler.address={address}", "--init", "reconciler/base:bookworm",
                             "sleep", "300"))
    unlabelled = docker("run", "-d", "--init", "reconciler/base:bookworm", "sleep", "300")
    try:
        assert sorted(kinds(drift_json(stack))) == [("orphan", DEPLOYMENT), ("orphan", ENDPOINT)]
        assert "Plan: 0 to add, 0 to change, 2 to destroy." in stack.plan().output
        stack.apply()
        for stray in strays:
            assert docker("ps", "-a", "-q", "--filter", f"id={stray}") == ""
        assert docker("inspect", "-f", "{{.State.Status}}", unlabelled) == "running"  # never touched
        drift(stack, expect=0)
        assert invoke(stack, tmp_path) == PREDICTIONS
    finally:
        docker("rm", "-f", unlabelled)


@pytest.mark.parametrize("how", ["rm", "stop"])
def test_gateway_gone_or_stopped_is_replaced_on_its_port_with_its_keys(stack, tmp_path, how):
    stack.apply()
    before = stack.endpoint("half-plus-two")
    docker(*(["rm", "-f"] if how == "rm" else ["stop", "-t", "1"]), gateway_name(stack))
    assert kinds(drift_json(stack)) == [("missing" if how == "rm" else "stopped", ENDPOINT)]
    assert '-/+ endpoint "half-plus-two"' in stack.plan().output
    stack.apply()
    after = stack.endpoint("half-plus-two")
    assert after["gateway"]["id"] != before["gateway"]["id"]
    assert (after["port"], after["keys"]) == (before["port"], before["keys"])
    drift(stack, expect=0)
    assert invoke(stack, tmp_path, key=before["keys"]["primary"]) == 200


def test_gateway_config_edited_by_hand_is_rewritten_and_reloaded(stack, tmp_path):
    stack.apply()
    keys = stack.endpoint("half-plus-two")["keys"]
    config = stack.state.parent / "gateways" / json.loads(stack.state.read_text())["lineage"] / "half-plus-two" / "nginx.conf"
    config.write_text(config.read_text().replace(keys["primary"], "replaced-by-hand"))
    docker("exec", gateway_name(stack), "nginx", "-s", "reload", "-c", "/etc/reconciler/nginx.conf")
    deadline = time.monotonic() + 30  # `nginx -s reload` returns before the new workers serve
    while invoke(stack, tmp_path, key=keys["primary"]) != 401 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert invoke(stack, tmp_path, key=keys["primary"]) == 401
    report = drift_json(stack)
    assert kinds(report) == [("gateway-config", ENDPOINT)] and report["drift"][0]["repair"] == "update"
    plan = stack.plan()
    assert f"# {ENDPOINT} changed outside reconciler, so will be repaired" in plan.output
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in plan.output
    stack.apply()
    assert invoke(stack, tmp_path, key=keys["primary"]) == 200
    drift(stack, expect=0)


def test_refresh_only_accepts_drift_into_state(stack, tmp_path):
    stack.apply()
    serial = json.loads(stack.state.read_text())["serial"]
    docker("rm", "-f", instance_name(stack))
    plan = stack.plan("--refresh-only", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert "Refresh only: 1 change(s) made outside reconciler would be accepted" in plan.output
    assert "will perform the following actions" not in plan.output
    assert json.loads(stack.state.read_text())["serial"] == serial  # plan writes nothing
    cancelled = stack.run("apply", str(stack.dir), "--state", str(stack.state), "--refresh-only", input="no\n")
    assert cancelled.exit_code == 1 and "Apply cancelled." in cancelled.output
    result = stack.apply("--refresh-only")
    assert "The state now records 1 change(s) made outside reconciler" in result.output
    assert stack.records()[DEPLOYMENT]["spec"]["instance_count"] == 0
    assert stack.containers(**{"org.reconciler.role": "deployment"}) == []  # nothing started
    drift(stack, expect=0)
    plan = stack.plan()
    assert "~ instance_count = 0 -> 1" in plan.output and "changed outside" not in plan.output
    stack.apply()
    assert invoke(stack, tmp_path) == PREDICTIONS


def test_import_a_labelled_container_back_into_state(stack, tmp_path):
    stack.apply()
    name = instance_name(stack)
    assert stack.run("state", "rm", DEPLOYMENT, "--state", str(stack.state)).exit_code == 0
    assert kinds(drift_json(stack)) == [("orphan", DEPLOYMENT)]
    result = stack.run("import", DEPLOYMENT, name, "--stack", str(stack.dir), "--state", str(stack.state))
    assert result.exit_code == 0, result.output
    assert "match the configuration: apply keeps it running" in result.output
    assert stack.records()[DEPLOYMENT]["outputs"]["instances"][0]["name"] == name
    drift(stack, expect=0)
    assert stack.plan("--detailed-exitcode").exit_code == 0
    assert invoke(stack, tmp_path) == PREDICTIONS
    again = stack.run("import", DEPLOYMENT, name, "--stack", str(stack.dir), "--state", str(stack.state))
    assert again.exit_code == 1 and "already in state" in again.output
    wrong = stack.run("import", "endpoint.half-plus-two", name, "--stack", str(stack.dir), "--state", str(stack.state))
    assert wrong.exit_code == 1 and "only deployments can be imported" in wrong.output


def test_import_an_unlabelled_container_then_apply_replaces_it(stack, tmp_path):
    stack.apply()
    assert stack.run("state", "rm", DEPLOYMENT, "--state", str(stack.state)).exit_code == 0
    for container in stack.containers(**{"org.reconciler.role": "deployment"}):
        container.remove(force=True)
    model = stack.dir / "half_plus_two"
    by_hand = f"byhand-{stack.name}"
    docker("run", "-d", "--name", by_hand, "-p", "8501", "-e", "MODEL_NAME=half_plus_two", "-e", "DEBUG=1",
           "-e", "MODEL_BASE_PATH=/var/azureml-app/azureml-models/tfserving-mounted/1",
           "-v", f"{model}:/var/azureml-app/azureml-models/tfserving-mounted/1:ro", "reconciler/demo-tfserving:latest")
    try:
        missing = stack.run("import", DEPLOYMENT, "no-such-container", "--stack", str(stack.dir),
                            "--state", str(stack.state))
        assert missing.exit_code == 1 and "no container 'no-such-container'" in missing.output
        result = stack.run("import", DEPLOYMENT, by_hand, "--stack", str(stack.dir), "--state", str(stack.state))
        assert result.exit_code == 0, result.output
        assert "no reconciler labels" in result.output and "published on 0.0.0.0:" in result.output
        assert "the next apply replaces it" in result.output
        record = stack.records()[DEPLOYMENT]
        assert record["outputs"]["instances"][0]["adopted"] is True
        assert record["spec"]["environment_variables"]["DEBUG"] == "1"  # what it runs, not the YAML
        drift(stack, expect=0)  # state says exactly what runs
        plan = stack.plan()
        assert "- environment_variables.DEBUG" in plan.output and "# forces replacement" in plan.output
        stack.apply()
        assert docker("ps", "-a", "-q", "--filter", f"name=^{by_hand}$") == ""  # adopted, so apply may remove it
        assert not stack.records()[DEPLOYMENT]["outputs"]["instances"][0].get("adopted")
        drift(stack, expect=0)
        assert invoke(stack, tmp_path) == PREDICTIONS
    finally:
        subprocess.run(["docker", "rm", "-f", by_hand], capture_output=True)


def test_recover_a_lost_state_file_from_labels(stack, tmp_path):
    stack.apply()
    old_keys = stack.endpoint("half-plus-two")["keys"]
    before = stack.records()
    before_lineage = json.loads(stack.state.read_text())["lineage"]
    refused = stack.run("state", "recover", str(stack.dir), "--state", str(stack.state))
    assert refused.exit_code == 1 and "recover only rebuilds a lost one" in refused.output
    stack.state.unlink()
    result = stack.run("state", "recover", str(stack.dir), "--state", str(stack.state))
    assert result.exit_code == 0, result.output
    # Issue 12 finding 8: the keys the live gateway config admits are read back (they used to
    # be replaced by new ones, so every client's key stopped working).
    assert "Recovered 3 record(s)" in result.output and "keys were read back" in result.output
    after = stack.records()
    for address in (DEPLOYMENT, MODEL):
        assert after[address]["spec"] == before[address]["spec"]
        assert after[address]["outputs"] == before[address]["outputs"]
    assert after[ENDPOINT]["outputs"]["port"] == before[ENDPOINT]["outputs"]["port"]
    assert after[ENDPOINT]["outputs"]["gateway"]["id"] == before[ENDPOINT]["outputs"]["gateway"]["id"]
    assert after[ENDPOINT]["outputs"]["keys"] == old_keys
    assert json.loads(stack.state.read_text())["lineage"] == before_lineage, "same identity as its objects"
    assert invoke(stack, tmp_path, key=old_keys["primary"]) == 200
    assert invoke(stack, tmp_path, key=old_keys["secondary"]) == 200
    drift(stack, expect=0)
    assert stack.plan("--detailed-exitcode").exit_code == 0

    # The whole state directory lost (model store and gateway config too): what cannot be
    # reloaded in place is tainted and replaced by the next apply.
    shutil.rmtree(stack.state.parent)
    result = stack.run("state", "recover", str(stack.dir), "--state", str(stack.state))
    assert result.exit_code == 0, result.output
    assert f"{DEPLOYMENT} (tainted)" in result.output and f"{ENDPOINT} (tainted)" in result.output
    assert "Plan: 3 to add, 0 to change, 2 to destroy." in stack.plan().output
    stack.apply()
    assert stack.endpoint("half-plus-two")["port"] == before[ENDPOINT]["outputs"]["port"]
    drift(stack, expect=0)
    assert invoke(stack, tmp_path) == PREDICTIONS
