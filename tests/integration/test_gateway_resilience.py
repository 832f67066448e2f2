"""The gateway keeps serving its healthy deployments while others are stopped (#12, finding 5).

On the real Docker Engine: a stopped deployment plus a gateway restart (as after a reboot)
used to put nginx in a restart loop ("host not found in upstream"), taking every deployment
of the endpoint down. Names are now resolved per request through Docker's embedded DNS.
"""
from __future__ import annotations

import subprocess
import time
from collections import Counter

import pytest

from gateway_client import GatewayClient

pytestmark = pytest.mark.integration


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True, timeout=60).stdout


def client_for(stack) -> GatewayClient:
    outputs = stack.endpoint("blue-green")
    return GatewayClient(outputs["port"], outputs["keys"]["primary"], timeout=5)


def gateway_of(stack):
    (gateway,) = stack.containers(**{"org.reconciler.role": "gateway"})
    return gateway


def first_answer(client: GatewayClient, seconds: float, **kwargs) -> tuple[int, dict, bytes]:
    """The first answer within `seconds` (the gateway may still be starting), or the last error."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return client.score(**kwargs)
        except OSError:
            client.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_stopped_deployment_and_a_gateway_restart_leave_the_others_serving(blue_green):
    blue_green.apply()
    (blue,) = blue_green.containers(**{"org.reconciler.address": "deployment.blue-green/blue"})
    gateway = gateway_of(blue_green)
    docker("stop", "-t", "1", blue.id)
    docker("restart", "-t", "2", gateway.id)
    client = client_for(blue_green)
    status, headers, body = first_answer(client, 15, deployment="green")
    assert status == 200 and headers["azureml-model-deployment"] == "green", body
    for _ in range(20):
        status, headers, _ = client.score(deployment="green")
        assert status == 200 and headers["azureml-model-deployment"] == "green"
    # Traffic for the stopped deployment gets a clean error from a live gateway.
    status, headers, body = client.score(deployment="blue")
    assert status in (502, 503) and headers["azureml-model-deployment"] == "blue", (status, body)
    time.sleep(2)  # a crash loop would show by now
    gateway.reload()
    assert gateway.status == "running" and gateway.attrs["RestartCount"] == 0, gateway.attrs["State"]
    assert client.score(deployment="green")[0] == 200
    # The deployment comes back: served again without touching the gateway.
    docker("start", blue.id)
    deadline = time.monotonic() + 30
    while client.score(deployment="blue")[0] != 200:
        assert time.monotonic() < deadline, "blue never came back behind the gateway"
        time.sleep(0.5)


def test_every_instance_of_a_deployment_gets_requests_and_a_stopped_one_is_skipped(blue_green):
    blue_green.edit("blue.yml", "instance_count: 1", "instance_count: 3\nrequest_settings: {request_timeout_ms: 1000}")
    blue_green.edit("green.yml", "instance_count: 1", "instance_count: 1\nrequest_settings: {request_timeout_ms: 1000}")
    blue_green.apply()
    client = client_for(blue_green)
    seen = Counter()
    for _ in range(90):
        status, headers, _ = client.score(deployment="blue")
        assert status == 200
        seen[headers["x-demo-hostname"]] += 1
    assert set(seen) == {"blue-0", "blue-1", "blue-2"} and min(seen.values()) >= 10, seen
    # One instance stops: its requests are retried on the others, none fails.
    stopped = next(c for c in blue_green.containers(**{"org.reconciler.address": "deployment.blue-green/blue"})
                   if c.attrs["Config"]["Hostname"] == "blue-1")
    docker("stop", "-t", "1", stopped.id)
    seen = Counter()
    for _ in range(60):
        status, headers, body = client.score(deployment="blue")
        assert status == 200, (body, gateway_of(blue_green).logs(tail=10))
        seen[headers["x-demo-hostname"]] += 1
    assert set(seen) == {"blue-0", "blue-2"}, seen
    # A request that reached a server and timed out is not sent to the next one (nor twice);
    # the client gets Azure ML's 408 for it (issue 15; it was nginx's 504).
    started = time.monotonic()
    status, headers, body = client.score(deployment="blue", headers={"x-demo-scoring-delay": "2"})
    assert status == 408 and time.monotonic() - started < 1.9, (status, body, time.monotonic() - started)
