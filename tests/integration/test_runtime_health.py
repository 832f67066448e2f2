"""Runtime health and a reachable endpoint on the real Docker Engine (issue 15).

* an instance whose readiness fails leaves rotation (the other one serves every request, none
  fails), is reported by `status`, `drift` and `plan`, and rejoins when ready again;
* an instance whose liveness fails is restarted by the endpoint's health supervisor;
* an https endpoint listening on a veth address is called from a network namespace of the
  test's own, with certificate verification against the generated CA.

The demo image needs its health switches (`/-/ready`, `/-/live`: images/demo-tfserving): set
RECONCILER_HEALTH_DEMO_IMAGE to a build of it (default reconciler/demo-tfserving:latest, which
has them once images/build.sh has been run again).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from gateway_client import GatewayClient

pytestmark = pytest.mark.integration

IMAGE = os.environ.get("RECONCILER_HEALTH_DEMO_IMAGE", "reconciler/demo-tfserving:latest")
WAIT_SECONDS = 30


def has_health_switches(client) -> bool:
    try:
        client.containers.run(IMAGE, ["grep", "-q", "not-ready", "/opt/demo-tfserving/server.py"], remove=True,
                              labels={"org.reconciler.stack": "it-health-check"})
        return True
    except Exception:  # noqa: BLE001 - ContainerError or ImageNotFound: no switches
        return False


@pytest.fixture
def watched(stack, docker_client):
    """The demo stack with two instances, health routes that can be failed on demand, and
    quick probes: out after 2 failed readiness probes (1 s apart), restarted after 3 failed
    liveness probes."""
    if not has_health_switches(docker_client):
        pytest.skip(f"{IMAGE} has no health switches: rebuild it (images/build.sh)")
    stack.edit("deployment.yml", "image: reconciler/demo-tfserving:latest", f"image: {IMAGE}")
    stack.edit("deployment.yml", "    liveness_route:\n      port: 8501\n      path: /v1/models/half_plus_two",
               "    liveness_route:\n      port: 8501\n      path: /-/live")
    stack.edit("deployment.yml", "    readiness_route:\n      port: 8501\n      path: /v1/models/half_plus_two",
               "    readiness_route:\n      port: 8501\n      path: /-/ready")
    stack.edit("deployment.yml", "instance_count: 1", "instance_count: 2")
    stack.edit("deployment.yml", "  failure_threshold: 30", "  failure_threshold: 2\n  success_threshold: 1")
    stack.edit("deployment.yml", "liveness_probe:\n  initial_delay: 5\n  period: 5",
               "liveness_probe:\n  initial_delay: 3\n  period: 1\n  failure_threshold: 3")
    return stack


def instance(stack, n: int):
    (container,) = stack.containers(**{"org.reconciler.role": "deployment", "org.reconciler.instance": str(n)})
    return container


def status_text(stack) -> str:
    result = stack.run("status", str(stack.dir), "--state", str(stack.state))
    assert result.exit_code == 0, result.output
    return result.output


def wait_for_status(stack, pattern: str) -> str:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        text = status_text(stack)
        if re.search(pattern, text):
            return text
        assert time.monotonic() < deadline, f"status never showed {pattern!r}:\n{text}"
        time.sleep(0.5)


class Load:
    """Requests to the endpoint, one after another, until stopped (bounded: 60 s, 20,000
    requests): by status, and by which container answered."""

    def __init__(self, port: int, key: str) -> None:
        self.client = GatewayClient(port, key, timeout=10)
        self.statuses: Counter = Counter()
        self.hosts: Counter = Counter()
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        deadline = time.monotonic() + 60
        for _ in range(20000):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status, headers, _ = self.client.score()
            except OSError as error:
                self.errors.append(str(error))
                continue
            self.statuses[status] += 1
            self.hosts[headers.get("x-demo-hostname", "?")] += 1
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.client.close()


def test_failing_readiness_leaves_rotation_and_ready_again_rejoins_without_a_failed_request(watched):
    stack = watched
    stack.apply()
    outputs = stack.endpoint("half-plus-two")
    failing = instance(stack, 1)
    wait_for_status(stack, rf"{failing.name}  running  in rotation")
    with Load(outputs["port"], outputs["keys"]["primary"]) as load:
        time.sleep(1)
        failing.exec_run(["touch", "/tmp/not-ready"])
        text = wait_for_status(stack, rf"{failing.name}  running  out of rotation: readiness failing since \S+ "
                                      r"\(GET /-/ready answered HTTP 503\)")
        assert re.search(rf"{instance(stack, 0).name}  running  in rotation", text)
        time.sleep(1)  # the reload has drained the old workers by now
        before = Counter(load.hosts)
        time.sleep(2)
        during = Counter(load.hosts) - before
        assert set(during) == {"tfserving-0"}, during   # the container's hostname: <deployment>-<n>
        drift = stack.run("drift", str(stack.dir), "--state", str(stack.state))
        assert drift.exit_code == 2 and f"instance {failing.name} is out of rotation" in drift.output, drift.output
        plan = stack.plan()
        assert f"instance {failing.name} is out of rotation" in plan.output and "No changes." in plan.output, \
            plan.output
        failing.exec_run(["rm", "/tmp/not-ready"])
        wait_for_status(stack, rf"{failing.name}  running  in rotation")
        time.sleep(1)
        before = Counter(load.hosts)
        time.sleep(3)
        after = Counter(load.hosts) - before
        assert len(after) == 2, after   # both serve again
    assert not load.errors and set(load.statuses) == {200}, (load.statuses, load.errors[:3])
    assert sum(load.statuses.values()) > 100


def test_failing_liveness_restarts_the_instance(watched):
    stack = watched
    stack.apply()
    dying = instance(stack, 0)
    started = dying.attrs["State"]["StartedAt"]
    wait_for_status(stack, rf"{dying.name}  running  in rotation  restarts 0")
    dying.exec_run(["touch", "/tmp/not-live"])
    # 3 failed probes 1 s apart, then the restart (stop timeout up to 10 s), then ready again.
    wait_for_status(stack, rf"{dying.name}  running  in rotation  restarts 1")
    dying.reload()
    assert dying.attrs["State"]["StartedAt"] != started and dying.status == "running"
    assert dying.exec_run(["test", "-e", "/tmp/not-live"]).exit_code != 0   # a fresh /tmp
    from harness import invoke_sample
    assert invoke_sample(stack, stack.dir.parent)["predictions"] == [2.5, 3.0, 4.5]
    drift = stack.run("drift", str(stack.dir), "--state", str(stack.state))
    assert drift.exit_code == 0, drift.output   # a liveness restart is the supervisor's work, not drift


def supervisor_starts(stack) -> dict[str, tuple[str, str]]:
    """Per supervisor role, its container's id and when it last started."""
    found = {}
    for role in ("health-probe", "health-restarter"):
        (container,) = stack.containers(**{"org.reconciler.role": role})
        found[role] = (container.id, container.attrs["State"]["StartedAt"])
    return found


def test_a_re_point_leaves_the_supervisor_running_and_it_follows_the_new_instances(watched, docker_client):
    stack = watched
    stack.apply()
    old = [instance(stack, n).name for n in (0, 1)]
    wait_for_status(stack, rf"{old[1]}  running  in rotation")
    before = supervisor_starts(stack)
    repository = IMAGE.rsplit(":", 1)[0]
    docker_client.images.get(IMAGE).tag(repository, "it-follows")
    try:
        stack.edit("deployment.yml", f"image: {IMAGE}", f"image: {repository}:it-follows")
        stack.apply()   # replaces both instances and re-points the gateway
        assert supervisor_starts(stack) == before   # neither stopped nor restarted
        new = [instance(stack, n) for n in (0, 1)]
        assert not {c.name for c in new} & set(old)
        text = wait_for_status(stack, rf"{new[1].name}  running  in rotation")
        assert not any(name in text for name in old), text
        # The probe watches the new containers: one failing readiness leaves rotation.
        new[1].exec_run(["touch", "/tmp/not-ready"])
        wait_for_status(stack, rf"{new[1].name}  running  out of rotation")
        from harness import invoke_sample
        assert invoke_sample(stack, stack.dir.parent)["predictions"] == [2.5, 3.0, 4.5]
    finally:
        stack.cleanup()   # the containers go before the tag they use
        docker_client.images.remove(f"{repository}:it-follows", noprune=True)


# -- an https endpoint called from another network namespace ----------------------------------
def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespace():
    """A network namespace joined to the host by a veth pair on a private /30 (10.213.N.0/30:
    the host side .1, the namespace side .2); removed after."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 (ip netns)")
    tag = secrets.token_hex(3)
    subnet = int(tag[:2], 16)
    name, host_side, inner_side = f"rch-{tag}", f"rchh{tag}", f"rchn{tag}"
    host_ip, inner_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    ip("netns", "add", name)
    try:
        ip("link", "add", host_side, "type", "veth", "peer", "name", inner_side)
        ip("link", "set", inner_side, "netns", name)
        ip("addr", "add", f"{host_ip}/30", "dev", host_side)
        ip("link", "set", host_side, "up")
        ip("-n", name, "addr", "add", f"{inner_ip}/30", "dev", inner_side)
        ip("-n", name, "link", "set", inner_side, "up")
        ip("-n", name, "link", "set", "lo", "up")
        yield {"name": name, "host_ip": host_ip, "inner_ip": inner_ip}
    finally:
        subprocess.run(["ip", "link", "del", host_side], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


CLIENT = """
import http.client, json, ssl, sys
url_host, port, key, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
connection = http.client.HTTPSConnection(url_host, port, timeout=10, context=context)
try:
    connection.request("POST", "/score", body=b'{"instances": [1.0, 2.0, 5.0]}',
                       headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    response = connection.getresponse()
    print(json.dumps({"status": response.status, "body": response.read().decode()}))
except ssl.SSLCertVerificationError as error:
    print(json.dumps({"verify_error": error.verify_message}))
"""


def call_from(namespace: dict, host: str, port: int, key: str, ca: str) -> dict:
    result = subprocess.run(["ip", "netns", "exec", namespace["name"], "python3", "-c", CLIENT, host, str(port), key, ca],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_https_endpoint_on_a_veth_address_answers_another_namespace_with_a_verified_certificate(stack, namespace):
    from reconciler.drivers.common.engine import free_host_port
    port = free_host_port("0.0.0.0")
    (stack.dir / "reconciler.yml").write_text(
        f"endpoints:\n  half-plus-two:\n    listen: {{address: {namespace['host_ip']}, port: {port}}}\n"
        "    tls: {generate: true}\n")
    stack.apply()
    outputs = stack.endpoint("half-plus-two")
    assert outputs["scoring_uri"] == f"https://{namespace['host_ip']}:{port}/score"
    ca = outputs["tls"]["ca"]
    assert oct(os.stat(Path(ca).with_name("ca.key")).st_mode & 0o777) == "0o600"
    assert "BEGIN" not in stack.state.read_text()   # no key material in state
    answer = call_from(namespace, namespace["host_ip"], port, outputs["keys"]["primary"], ca)
    assert answer == {"status": 200, "body": '{"predictions": [2.5, 3.0, 4.5]}'}, answer
    # Verification is on: the system trust store does not know the generated CA.
    assert "verify_error" in call_from(namespace, namespace["host_ip"], port, outputs["keys"]["primary"], "")
    # `reconciler invoke` verifies against the generated CA too.
    from harness import invoke_sample
    assert invoke_sample(stack, stack.dir.parent)["predictions"] == [2.5, 3.0, 4.5]
    # Not on loopback any more: only the veth address.
    with pytest.raises(OSError):
        GatewayClient(port, timeout=2).score()
    drift = stack.run("drift", str(stack.dir), "--state", str(stack.state))
    assert drift.exit_code == 0, drift.output
    # A lost state file recovered from the running gateway keeps its TLS outputs (they used to
    # be dropped until the next apply, so `invoke` had no CA to verify against).
    stack.state.unlink()
    recovered = stack.run("state", "recover", str(stack.dir), "--state", str(stack.state))
    assert recovered.exit_code == 0, recovered.output
    assert stack.endpoint("half-plus-two")["tls"] == outputs["tls"]
    assert invoke_sample(stack, stack.dir.parent)["predictions"] == [2.5, 3.0, 4.5]
