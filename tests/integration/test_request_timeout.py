"""Issue 11, bug 1: a changed request_settings.request_timeout_ms reaches the gateway.

Before the fix the plan held only `~ deployment ...`; the gateway kept the old timeout while
apply reported success. The gateway's view of a deployment is planned now, so the endpoint is
updated in place and a request slower than the new timeout is cut at the gateway.
"""
from __future__ import annotations

import http.client
import json

import pytest

pytestmark = pytest.mark.integration

ENDPOINT = "half-plus-two"
SAMPLE = b'{"instances": [1.0, 2.0, 5.0]}'
# The demo model server waits this long before it answers (images/README.md).
DELAY_HEADER = "x-demo-scoring-delay"


def score_slowly(stack, delay_seconds: float) -> tuple[int, bytes]:
    outputs = stack.endpoint(ENDPOINT)
    connection = http.client.HTTPConnection("127.0.0.1", outputs["port"], timeout=30)
    try:
        connection.request("POST", "/score", body=SAMPLE, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {outputs['keys']['primary']}",
            DELAY_HEADER: str(delay_seconds)})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_lower_request_timeout_is_planned_applied_and_cuts_slow_requests(stack):
    stack.apply()
    status, body = score_slowly(stack, 2)
    assert (status, json.loads(body)) == (200, {"predictions": [2.5, 3.0, 4.5]})
    gateway_before = stack.endpoint(ENDPOINT)["gateway"]["id"]

    stack.edit("deployment.yml", "instance_count: 1",
               "instance_count: 1\nrequest_settings:\n  request_timeout_ms: 1000")
    plan = stack.plan()
    assert plan.exit_code == 0, plan.output
    assert "# endpoint.half-plus-two will be updated in-place: the gateway's view of its deployments changed" \
        in plan.output
    assert "~ gateway.tfserving.request_timeout_ms = 5000 -> 1000" in plan.output
    assert "Plan: 0 to add, 2 to change, 0 to destroy." in plan.output

    result = stack.apply()
    assert "Apply complete! Resources: 0 added, 2 changed, 0 destroyed." in result.output
    # Reloaded, not restarted: the same gateway container, with the new timeout.
    assert stack.endpoint(ENDPOINT)["gateway"]["id"] == gateway_before
    status, _ = score_slowly(stack, 2)
    assert status == 408  # Azure ML's answer (issue 15; nginx's 504 before)
    status, body = score_slowly(stack, 0)
    assert (status, json.loads(body)) == (200, {"predictions": [2.5, 3.0, 4.5]})
    assert "No changes." in stack.plan().output
