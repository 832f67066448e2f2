"""The pg state backend with real applies: the demo stack on the real Docker Engine, its state in
the session's own PostgreSQL (tests/pgcluster.py), every command a separate `reconciler` process,
as two CI jobs would be.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness import SAMPLE_REQUEST, StackRun
from tests.pgcluster import use_pg_backend

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_stack(tmp_path, docker_client, pg_schema, monkeypatch):
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "states"))
    run = StackRun(tmp_path, docker_client)
    use_pg_backend(run.dir, pg_schema)
    yield run
    reconciler("destroy", run.dir, "--auto-approve", "--lock-timeout", "30")
    for container in run.containers():
        container.remove(force=True)
    for network in run.client.networks.list(filters={"label": f"org.reconciler.stack={run.name}"}):
        network.remove()


def reconciler(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "reconciler", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def read_until(process: subprocess.Popen, marker: str, seconds: float = 120) -> list[str]:
    """Lines of `process` up to the first one containing `marker` (bounded in time)."""
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"exited before {marker!r}:\n" + "".join(lines))
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} within {seconds}s:\n" + "".join(lines))


def pulled(stack) -> dict:
    result = reconciler("state", "pull", "--stack", stack.dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def serials(stack) -> list[int]:
    result = reconciler("state", "history", "--stack", stack.dir, "--json")
    assert result.returncode == 0, result.stderr
    return [version["serial"] for version in json.loads(result.stdout)]


def converged(stack, tmp_path) -> None:
    check = reconciler("plan", stack.dir, "--detailed-exitcode")
    assert check.returncode == 0, check.stdout + check.stderr
    drift = reconciler("drift", stack.dir)
    assert drift.returncode == 0, drift.stdout + drift.stderr
    request = tmp_path / "request.json"
    request.write_text(SAMPLE_REQUEST)
    answer = reconciler("invoke", "half-plus-two", "--request-file", request, "--stack", stack.dir)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"predictions": [2.5, 3.0, 4.5]}


def test_two_concurrent_applies_the_second_is_refused_with_the_holder(pg_stack, pg_schema, tmp_path):
    first = start("apply", pg_stack.dir, "--auto-approve")
    try:
        read_until(first, "Creating...")
        second = reconciler("apply", pg_stack.dir, "--auto-approve")
        assert second.returncode == 3, second.stdout + second.stderr
        assert f"state pg:{pg_schema}/{pg_stack.name} is locked by another operation" in second.stderr
        assert f"PID: {first.pid} on " in second.stderr and "Operation: apply" in second.stderr
    finally:
        output = first.communicate(timeout=300)[0]
    assert first.returncode == 0, output
    converged(pg_stack, tmp_path)
    history = serials(pg_stack)
    assert history == list(range(1, len(history) + 1)) and history[-1] == pulled(pg_stack)["serial"]


def test_a_holder_killed_with_9_frees_the_lock_and_the_next_apply_converges(pg_stack, tmp_path):
    first = start("apply", pg_stack.dir, "--auto-approve")
    read_until(first, "Creating...")
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    # The server ends the dead session (and drops its lock) when its socket closes.
    again = reconciler("apply", pg_stack.dir, "--auto-approve", "--lock-timeout", "10")
    assert again.returncode == 0, again.stdout + again.stderr
    converged(pg_stack, tmp_path)


def test_server_stopped_mid_apply_keeps_the_last_committed_step_and_a_reapply_converges(
        pg_stack, pg_cluster, tmp_path):
    # A deployment that takes a few seconds to become ready: the server stops while it runs.
    pg_stack.edit("deployment.yml", "  initial_delay: 1\n", "  initial_delay: 4\n")
    first = start("apply", pg_stack.dir, "--auto-approve")
    try:
        read_until(first, "model.tfserving-mounted:1: Creation complete")
        pg_cluster.stop("immediate")
        output = first.communicate(timeout=120)[0]
    finally:
        pg_cluster.start()
    assert first.returncode == 1, output
    assert "lost the connection to the PostgreSQL state backend at 127.0.0.1:" in output
    assert "Traceback" not in output
    state = pulled(pg_stack)
    # Serial 1 is the identity written before the first step, 2 the model's step.
    assert (state["serial"], [r["address"] for r in state["records"]]) == (2, ["model.tfserving-mounted:1"])
    assert serials(pg_stack) == [1, 2]
    again = reconciler("apply", pg_stack.dir, "--auto-approve")
    assert again.returncode == 0, again.stdout + again.stderr
    converged(pg_stack, tmp_path)
    history = serials(pg_stack)
    assert history == list(range(1, len(history) + 1))
