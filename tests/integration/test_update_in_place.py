"""Memory and restart policy change in place on docker (`docker update`): the same container
runs on with the new limits. They follow from the field descriptors (planning/fields.py)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

DEPLOYMENT = "deployment.half-plus-two/tfserving"
MIB = 2 ** 20


def deployment_container(stack):
    (container,) = stack.containers(**{"org.reconciler.address": DEPLOYMENT})
    return container


def test_memory_and_restart_policy_update_the_running_container(stack):
    stack.edit("deployment.yml", "instance_count: 1", "instance_count: 1\nlocal:\n  memory: 256m")
    stack.apply()
    before = deployment_container(stack)
    assert before.attrs["HostConfig"]["Memory"] == 256 * MIB
    assert before.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"

    stack.edit("deployment.yml", "  memory: 256m", "  memory: 512m\n  restart_policy: on-failure")
    plan = stack.plan()
    assert plan.exit_code == 0, plan.output
    assert "# deployment.half-plus-two/tfserving will be updated in-place" in plan.output
    assert '~ memory = "256m" -> "512m"' in plan.output
    assert '~ restart_policy = "unless-stopped" -> "on-failure"' in plan.output
    assert "-/+" not in plan.output and "forces replacement" not in plan.output
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in plan.output

    result = stack.apply()
    assert "Apply complete! Resources: 0 added, 1 changed, 0 destroyed." in result.output
    after = deployment_container(stack)
    assert after.id == before.id
    host = after.attrs["HostConfig"]
    # As a container created with a 512m limit: swap defaults to as much again.
    assert (host["Memory"], host["MemorySwap"]) == (512 * MIB, 1024 * MIB)
    assert host["RestartPolicy"]["Name"] == "on-failure"
    assert after.status == "running"
    assert stack.records()[DEPLOYMENT]["spec"]["memory"] == "512m"
    assert "No changes." in stack.plan().output
