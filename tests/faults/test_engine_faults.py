"""Daemon down, concurrent operations, and a rollout whose new containers never become ready."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)


def test_daemon_down_is_a_clear_error_and_writes_nothing(stack, tmp_path):
    socket = f"unix://{tmp_path}/no-docker.sock"
    result = cli("apply", str(stack.dir), "--state", str(stack.state), "--auto-approve",
                 env={"DOCKER_HOST": socket})
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot reach the Docker Engine at {socket}" in result.stderr
    assert "start dockerd (or set DOCKER_HOST)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not stack.state.exists()
    assert not list(stack.state.parent.glob("*.json*")) if stack.state.parent.exists() else True


def test_daemon_down_during_plan_with_state(stack, tmp_path):
    stack.apply()
    before = stack.state.read_bytes()
    socket = f"unix://{tmp_path}/no-docker.sock"
    result = cli("plan", str(stack.dir), "--state", str(stack.state), env={"DOCKER_HOST": socket})
    assert result.returncode == 1 and f"cannot reach the Docker Engine at {socket}" in result.stderr
    assert stack.state.read_bytes() == before


def test_unreadable_socket_names_the_socket(stack, tmp_path):
    unreadable = tmp_path / "docker.sock"
    unreadable.write_text("")
    os.chmod(unreadable, 0)
    result = cli("apply", str(stack.dir), "--state", str(stack.state), "--auto-approve",
                 env={"DOCKER_HOST": f"unix://{unreadable}"})
    assert result.returncode == 1 and f"unix://{unreadable}" in result.stderr
    assert not stack.state.exists()


def test_second_apply_is_refused_with_the_holder_and_plan_reads_consistent_state(blue_green):
    blue_green.apply()
    blue_green.edit("blue.yml", "  DEPLOYMENT_NAME: blue", "  DEPLOYMENT_NAME: blue-2")
    first = subprocess.Popen([sys.executable, "-m", "reconciler", "apply", str(blue_green.dir),
                              "--state", str(blue_green.state), "--auto-approve"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = blue_green.state.with_name(blue_green.state.name + ".lock")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
            time.sleep(0.05)
        second = cli("apply", str(blue_green.dir), "--state", str(blue_green.state), "--auto-approve")
        assert second.returncode == 3, second.stdout + second.stderr
        assert "is locked by another operation" in second.stderr
        assert f"PID: {first.pid}" in second.stderr and "Operation: apply" in second.stderr
        serials = []
        while first.poll() is None:
            shown = cli("show", str(blue_green.dir), "--state", str(blue_green.state), "--json")
            assert shown.returncode == 0, shown.stderr
            serials.append(json.loads(shown.stdout)["serial"])
        assert serials == sorted(serials) and len(serials) >= 1
    finally:
        output = first.communicate(timeout=120)[0]
    assert first.returncode == 0, output


def test_rollout_that_never_becomes_ready_keeps_old_containers_serving(blue_green):
    from gateway_client import GatewayClient
    blue_green.apply()
    outputs = blue_green.endpoint("blue-green")
    client = GatewayClient(outputs["port"], outputs["keys"]["primary"])
    blue_green.edit("blue.yml", "  MODEL_NAME: half_plus_two", "  MODEL_NAME: missing_model")
    blue_green.edit("blue.yml", "readiness_probe: {initial_delay: 0, period: 1}",
                    "readiness_probe: {initial_delay: 0, period: 1, failure_threshold: 2}")
    result = blue_green.apply(expect=1)
    assert "never became ready" in result.output
    seen = Counter()
    for _ in range(200):
        status, headers, _ = client.score()
        assert status == 200
        seen[(headers["azureml-model-deployment"], headers.get("x-demo-deployment"))] += 1
    assert set(seen) <= {("blue", "blue"), ("green", "green")} and seen[("blue", "blue")] > 100
    records = blue_green.records()
    assert records["endpoint.blue-green"]["spec"]["traffic"] == {"blue": 90, "green": 10}
    assert records["deployment.blue-green/blue"]["status"] == "tainted"
    deposed = [r for a, r in records.items() if a.startswith("deployment.blue-green/blue~deposed-")]
    assert len(deposed) == 1 and deposed[0]["status"] == "ready"
    # Fixing the configuration converges: one blue generation left, serving the new settings.
    blue_green.edit("blue.yml", "  MODEL_NAME: missing_model", "  MODEL_NAME: half_plus_two")
    blue_green.apply()
    assert not [a for a in blue_green.records() if "~" in a]
    assert len(blue_green.containers(**{"org.reconciler.address": "deployment.blue-green/blue"})) == 1
