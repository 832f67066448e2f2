"""Issue 12, finding 10 on the real Docker Engine: deployment ports unpublished, containers
hardened (user, capabilities, read-only root, CPU/memory/pids limits), crash-looping instances
reported and replaced, failed containers stopped.

The demo and gateway images are the ones the code runs: RECONCILER_GATEWAY_IMAGE for the
gateway, RECONCILER_TEST_DEMO_IMAGE (default reconciler/demo-tfserving:latest) for the
deployment; images/build.sh builds both as non-root.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from harness import invoke_sample as invoke

from reconciler.drivers.common.gateway import GATEWAY_IMAGE

pytestmark = pytest.mark.integration

DEPLOYMENT = "deployment.half-plus-two/tfserving"
ENDPOINT = "endpoint.half-plus-two"
PREDICTIONS = {"predictions": [2.5, 3.0, 4.5]}
DEMO_IMAGE = os.environ.get("RECONCILER_TEST_DEMO_IMAGE", "reconciler/demo-tfserving:latest")
GIB = 1024 ** 3


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def drift_report(stack, expect: int) -> dict:
    result = stack.run("drift", str(stack.dir), "--state", str(stack.state), "--json")
    assert result.exit_code == expect, result.output
    return json.loads(result.output)


def use_demo_image(stack) -> None:
    stack.edit("deployment.yml", "image: reconciler/demo-tfserving:latest", f"image: {DEMO_IMAGE}")


def add_local(stack, text: str) -> None:
    stack.edit("deployment.yml", "instance_count: 1\n", f"instance_count: 1\nlocal:\n{text}")


def deployment_container(stack):
    (container,) = stack.containers(**{"org.reconciler.role": "deployment"})
    return container


def test_deployment_ports_are_not_published_and_the_endpoint_still_answers(stack, tmp_path):
    stack.apply()
    container = deployment_container(stack)
    assert not container.attrs["HostConfig"]["PortBindings"]
    assert not any(container.attrs["NetworkSettings"]["Ports"].values())
    record = stack.records()[DEPLOYMENT]
    (instance,) = record["outputs"]["instances"]
    assert instance["ports"] == {}
    # No loopback URL that does not exist: the container's name on the stack network.
    assert record["outputs"]["scoring_uri"] == f"http://{instance['name']}:8501/v1/models/half_plus_two:predict"
    assert invoke(stack, tmp_path) == PREDICTIONS
    assert drift_report(stack, expect=0)["drifted"] is False


def test_publish_ports_is_a_debug_option_on_loopback(stack, tmp_path):
    add_local(stack, "  publish_ports: true\n")
    stack.apply()
    bindings = deployment_container(stack).attrs["HostConfig"]["PortBindings"]["8501/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
    (instance,) = stack.records()[DEPLOYMENT]["outputs"]["instances"]
    assert instance["ports"] == {"8501": int(bindings[0]["HostPort"])}
    assert drift_report(stack, expect=0)["drifted"] is False
    assert invoke(stack, tmp_path) == PREDICTIONS


def test_deployment_and_gateway_run_hardened(stack, tmp_path, docker_client):
    use_demo_image(stack)
    stack.apply()
    engine_cpus = docker_client.info()["NCPU"]
    deployment = deployment_container(stack).attrs
    host = deployment["HostConfig"]
    assert deployment["Config"]["User"] not in ("", "0", "root", "0:0"), f"{DEMO_IMAGE} runs as root: rebuild it (images/build.sh)"
    assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == ["NET_BIND_SERVICE"]
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    # Standard_DS3_v2 (the stack's instance_type): 4 vCPU / 14 GiB; CPUs capped at the engine's.
    assert host["Memory"] == 14 * GIB
    assert host["NanoCpus"] == int(min(4, engine_cpus) * 1e9)
    assert host["PidsLimit"] == 1024
    (gateway,) = stack.containers(**{"org.reconciler.role": "gateway"})
    gateway = gateway.attrs
    host = gateway["HostConfig"]
    assert gateway["Config"]["Image"] == GATEWAY_IMAGE
    assert gateway["Config"]["User"].split(":")[0] not in ("", "0", "root")
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["ReadonlyRootfs"] is True and {"/tmp", "/run"} <= set(host["Tmpfs"])
    assert host["Memory"] > 0 and host["PidsLimit"] == 256
    top = docker("top", gateway["Id"], "-o", "pid,uid,args")
    assert "nginx" in top and not any(line.split()[1] == "0" for line in top.splitlines()[1:]), top
    assert invoke(stack, tmp_path) == PREDICTIONS
    # A reload (what every traffic change does) works as the unprivileged user too.
    stack.edit("endpoint.yml", "description: TF Serving", "description: TF Serving (edited)")
    assert "1 changed" in stack.apply().output
    assert invoke(stack, tmp_path) == PREDICTIONS


def test_local_memory_overrides_the_instance_type(stack):
    add_local(stack, "  memory: 300m\n")
    stack.apply()
    assert deployment_container(stack).attrs["HostConfig"]["Memory"] == 300 * 1024 ** 2


CRASH_AFTER_FIRST_START = ["sh", "-c", "if [ -e /var/tmp/started ]; then echo crash >&2; exit 3; fi; "
                                       "touch /var/tmp/started; exec python3 /opt/demo-tfserving/server.py"]


def test_crash_looping_deployment_is_reported_and_replaced(stack, tmp_path):
    # Serves on its first start, crashes on every restart (the marker survives in its writable layer).
    add_local(stack, f"  read_only_root_filesystem: false\n  command: {json.dumps(CRASH_AFTER_FIRST_START)}\n")
    stack.apply()
    looping = deployment_container(stack).id
    # A crash (`docker kill` would count as stopped by hand): the restart policy brings it back,
    # and it crashes again, and again.
    docker("exec", looping, "python3", "-c", "import os, signal; os.kill(1, signal.SIGTERM)")
    deadline, kinds = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        report = drift_report(stack, expect=2) if _drifts(stack) else {"drift": []}
        kinds = [(d["kind"], d["address"]) for d in report["drift"]]
        if kinds == [("crashlooping", DEPLOYMENT)]:
            break
        # Neither "stopped" nor an "orphan", whichever phase of the loop the container is in.
        assert all(kind not in ("stopped", "orphan") for kind, _ in kinds), kinds
        time.sleep(1)
    assert kinds == [("crashlooping", DEPLOYMENT)]
    plan = stack.plan()
    assert '-/+ deployment "half-plus-two/tfserving"' in plan.output, plan.output
    stack.apply()
    assert docker("ps", "-a", "-q", "--no-trunc", "--filter", f"id={looping}") == ""
    assert drift_report(stack, expect=0)["drifted"] is False
    assert invoke(stack, tmp_path) == PREDICTIONS


def _drifts(stack) -> bool:
    return stack.run("drift", str(stack.dir), "--state", str(stack.state)).exit_code == 2


def test_a_container_that_never_becomes_ready_is_stopped_not_left_looping(stack):
    stack.edit("deployment.yml", "failure_threshold: 30", "failure_threshold: 3")
    add_local(stack, '  command: ["sh", "-c", "echo no model server here >&2; exit 1"]\n')
    result = stack.apply(expect=1)
    assert "never became ready" in result.output
    container = deployment_container(stack)
    assert stack.records()[DEPLOYMENT]["status"] == "tainted"
    restarts = container.attrs["RestartCount"]
    time.sleep(3)
    container.reload()
    assert container.status == "exited", container.status
    assert container.attrs["RestartCount"] == restarts  # not restarted since apply gave up
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert "no model server here" in container.logs().decode()  # kept for `reconciler logs`
    # The next apply replaces the tainted deployment (and fails again, the command being what it is).
    assert "-/+" in stack.plan().output
