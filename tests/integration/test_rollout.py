"""Instances of a deployment are started and awaited at once (issue 16), on the real Docker Engine."""
from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.integration

DEPLOYMENT = "deployment.half-plus-two/tfserving"
SERVER = "python3 /opt/demo-tfserving/server.py"


def deployments(stack):
    return sorted(stack.containers(**{"org.reconciler.role": "deployment"}),
                  key=lambda c: c.labels["org.reconciler.instance"])


def test_instances_are_awaited_at_once_not_one_after_another(stack):
    # Each wait begins with initial_delay: one after another, 3 instances would take 3 x 5 s.
    stack.edit("deployment.yml", "instance_count: 1", "instance_count: 3")
    stack.edit("deployment.yml", "  initial_delay: 1\n  period: 1", "  initial_delay: 5\n  period: 1")
    started = time.monotonic()
    stack.apply()
    elapsed = time.monotonic() - started
    assert len(deployments(stack)) == 3
    assert stack.records()[DEPLOYMENT]["status"] == "ready"
    assert elapsed < 12, f"apply took {elapsed:.1f} s: the 3 readiness waits (5 s each) did not overlap"


def test_the_first_instance_to_fail_fails_the_step_and_the_others_stop_waiting(stack):
    # Instance 1 exits at once; instance 0 would answer 503 for 10 minutes. With one wait after
    # another, the step would sit 30 probes on instance 0 and blame it.
    stack.edit("deployment.yml", "instance_count: 1\n", "instance_count: 2\nlocal:\n"
               '  restart_policy: "no"\n'
               f"  command: {json.dumps(['sh', '-c', 'case $(hostname) in *-1) echo instance one gives up >&2; exit 1;; esac; exec env READY_AFTER_SECONDS=600 ' + SERVER])}\n")
    started = time.monotonic()
    result = stack.apply(expect=1)
    elapsed = time.monotonic() - started
    assert elapsed < 15, f"apply took {elapsed:.1f} s: instance 0's wait did not end with instance 1's failure"
    record = stack.records()[DEPLOYMENT]
    assert record["status"] == "tainted"
    assert [i["instance"] for i in record["outputs"]["instances"]] == [0, 1]
    names = [i["name"] for i in record["outputs"]["instances"]]
    assert f"never became ready: container stopped (container {names[1]}," in result.output, result.output
    assert "instance one gives up" in result.output
    for container in deployments(stack):
        container.reload()
        assert container.status == "exited", (container.name, container.status)


def test_surplus_instances_are_stopped_at_once_on_scale_in(stack):
    # sh as PID 1 ignores SIGTERM, so each stop takes the whole stop timeout (10 s): one after
    # another, removing 3 instances would take 30 s.
    command = json.dumps(["sh", "-c", f"trap '' TERM; {SERVER} & wait"])
    stack.edit("deployment.yml", "instance_count: 1\n", f"instance_count: 4\nlocal:\n  command: {command}\n")
    stack.apply()
    assert len(deployments(stack)) == 4
    stack.edit("deployment.yml", "instance_count: 4", "instance_count: 1")
    started = time.monotonic()
    stack.apply()
    elapsed = time.monotonic() - started
    assert [c.labels["org.reconciler.instance"] for c in deployments(stack)] == ["0"]
    assert elapsed < 22, f"scale-in took {elapsed:.1f} s: the 3 stops (10 s each) did not overlap"


def test_an_instance_is_ready_when_it_first_answers_not_a_whole_period_later(stack):
    # The server answers 503 for its first second; probes at 0 and every 10 s. On the schedule
    # alone it is ready at the probe at 10 s; the early polls between see it ready at about 1 s.
    command = json.dumps(["sh", "-c", f"exec env READY_AFTER_SECONDS=1 {SERVER}"])
    stack.edit("deployment.yml", "instance_count: 1\n", f"instance_count: 1\nlocal:\n  command: {command}\n")
    stack.edit("deployment.yml", "  initial_delay: 1\n  period: 1", "  initial_delay: 0\n  period: 10")
    started = time.monotonic()
    stack.apply()
    elapsed = time.monotonic() - started
    assert stack.records()[DEPLOYMENT]["status"] == "ready"
    assert elapsed < 8, f"apply took {elapsed:.1f} s: readiness waited for the scheduled probe at 10 s"
