"""Issue 15: the endpoint answers as an Azure ML managed online endpoint does, per deployment.

Each status code under its condition, on the real daemon (docs/endpoint.md has the rules and
their sources): 408 after request_timeout_ms, 429 beyond 2 x max_concurrent_requests_per_instance
x instance_count in flight (a request cut by its 408 keeps its slot until the model finishes),
404 without live traffic, 424 with the model's status and reason in headers, x-request-id on
every answer and x-ms-client-request-id echoed. The demo model is slowed and failed per
request by its headers (images/demo-tfserving/server.py).
"""
from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

pytestmark = pytest.mark.integration

ENDPOINT = "half-plus-two"
SAMPLE = b'{"instances": [1.0, 2.0, 5.0]}'
DELAY = "x-demo-scoring-delay"
ERROR = "x-demo-error-status"


def score(outputs: dict, headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, bytes, float]:
    connection = http.client.HTTPConnection("127.0.0.1", outputs["port"], timeout=timeout)
    started = time.monotonic()
    try:
        connection.request("POST", "/score", body=SAMPLE, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {outputs['keys']['primary']}",
            **(headers or {})})
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body, time.monotonic() - started
    finally:
        connection.close()


def in_background(outputs: dict, headers: dict, count: int) -> tuple[list, list[threading.Thread]]:
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(score(outputs, headers)), daemon=True)
               for _ in range(count)]
    for thread in threads:
        thread.start()
    return results, threads


def wait_in_flight(outputs: dict, expected: int, deadline: float = 10) -> None:
    """Until the gateway's metrics show `expected` requests in flight at the model."""
    connection_deadline = time.monotonic() + deadline
    text = ""
    while time.monotonic() < connection_deadline:
        text = metrics(outputs)[1]
        if f'reconciler_requests_in_flight{{endpoint="{ENDPOINT}",deployment="tfserving"}} {expected}' in text:
            return
        time.sleep(0.05)
    raise AssertionError(f"never {expected} in flight:\n{text}")


def metrics(outputs: dict, key: str | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", outputs["port"], timeout=10)
    try:
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {key or outputs['keys']['primary']}"})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def limited(stack):
    """The demo stack with 1 s request timeout: 2 x 1 x 1 = 2 requests in flight at most."""
    stack.use_demo_image_under_test()
    stack.edit("deployment.yml", "instance_count: 1",
               "instance_count: 1\nrequest_settings:\n  request_timeout_ms: 1000\n  max_concurrent_requests_per_instance: 1")
    stack.apply()
    return stack


def test_a_burst_beyond_the_limit_is_answered_429_at_once(limited):
    outputs = limited.endpoint(ENDPOINT)
    slow, threads = in_background(outputs, {DELAY: "0.8"}, 2)
    wait_in_flight(outputs, 2)
    status, headers, body, seconds = score(outputs)
    assert status == 429 and seconds < 0.5, (status, body, seconds)
    assert "too many pending requests" in json.loads(body)["error"]
    assert headers["x-request-id"]
    for thread in threads:
        thread.join(10)
    assert sorted(r[0] for r in slow) == [200, 200]
    assert score(outputs)[0] == 200  # the slots are free again


def test_a_slow_model_gets_408_and_keeps_its_slot_until_it_finishes(limited):
    outputs = limited.endpoint(ENDPOINT)
    cut, threads = in_background(outputs, {DELAY: "3"}, 2)
    for thread in threads:
        thread.join(10)
    assert [r[0] for r in cut] == [408, 408], cut
    assert all(0.9 < r[3] < 2.5 for r in cut), [r[3] for r in cut]
    assert "request_timeout_ms" in json.loads(cut[0][2])["error"]
    # The model still works on both (about 2 s more): their slots are taken, so the limit holds.
    status, _, body, _ = score(outputs)
    assert status == 429, (status, body)
    wait_in_flight(outputs, 0)
    status, _, body, _ = score(outputs)
    assert status == 200, body


def test_a_model_error_is_424_with_the_models_status_and_reason(limited):
    outputs = limited.endpoint(ENDPOINT)
    status, headers, body, _ = score(outputs, {ERROR: "503"})
    assert status == 424, body
    assert headers["ms-azureml-model-error-statuscode"] == "503"
    assert headers["ms-azureml-model-error-reason"] == "Service Unavailable"
    assert "failed on demand" in json.loads(body)["error"]  # the model's own body
    assert headers["azureml-model-deployment"] == "tfserving"


def test_request_ids_on_every_answer_and_the_clients_id_echoed(limited):
    outputs = limited.endpoint(ENDPOINT)
    seen = set()
    for headers, expected_status in (({}, 200), ({ERROR: "500"}, 424), ({"Authorization": "Bearer wrong"}, 401)):
        status, answer, _, _ = score(outputs, {"x-ms-client-request-id": "my-id-42", **headers})
        assert status == expected_status
        assert len(answer["x-request-id"]) == 32 and answer["x-request-id"] not in seen
        seen.add(answer["x-request-id"])
        assert answer["x-ms-client-request-id"] == "my-id-42"
    # Not a plain id: not echoed.
    _, answer, _, _ = score(outputs, {"x-ms-client-request-id": "a b<c>"})
    assert "x-ms-client-request-id" not in answer and answer["x-request-id"]


def test_no_live_traffic_is_404(stack):
    stack.use_demo_image_under_test()
    stack.edit("endpoint.yml", "tfserving: 100", "tfserving: 0")
    stack.apply()
    outputs = stack.endpoint(ENDPOINT)
    status, headers, body, _ = score(outputs)
    assert status == 404 and "no live traffic" in json.loads(body)["error"], body
    assert headers["x-request-id"]
    # A pinned request still reaches the deployment, as in Azure ML.
    assert score(outputs, {"azureml-model-deployment": "tfserving"})[0] == 200


def test_metrics_count_by_status_behind_the_key_and_the_access_log_has_a_json_line(limited, tmp_path):
    outputs = limited.endpoint(ENDPOINT)
    assert score(outputs)[0] == 200
    assert score(outputs, {ERROR: "500"})[0] == 424
    status, text = metrics(outputs)
    assert status == 200
    assert f'reconciler_requests_total{{endpoint="{ENDPOINT}",deployment="tfserving",status="200"}} 1' in text
    assert f'reconciler_requests_total{{endpoint="{ENDPOINT}",deployment="tfserving",status="424"}} 1' in text
    assert f'reconciler_request_duration_seconds_count{{endpoint="{ENDPOINT}",deployment="tfserving"}} 2' in text
    assert f'reconciler_requests_in_flight{{endpoint="{ENDPOINT}",deployment="tfserving"}} 0' in text
    assert metrics(outputs, key="wrong")[0] == 401

    deadline = time.monotonic() + 10  # the access log is flushed every second
    failed: list = []
    while not failed and time.monotonic() < deadline:
        time.sleep(0.5)
        result = limited.run("logs", ENDPOINT, "--gateway", "--state", str(limited.state))
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
        failed = [line for line in lines if line["status"] == 424]
    assert failed and failed[-1]["deployment"] == "tfserving" and failed[-1]["model_status"] == "500"
    assert all(line["request_id"] and "duration_s" in line and "upstream_s" in line for line in lines)


def test_only_unpinned_live_traffic_is_mirrored(blue_green):
    """Azure ML mirrors live traffic that no header pins (how-to-safely-rollout-online-endpoints)."""
    blue_green.use_demo_image_under_test()
    blue_green.edit("endpoint.yml", "  blue: 90\n  green: 10", "  blue: 100\nmirror_traffic:\n  green: 50")
    blue_green.apply()
    outputs = blue_green.endpoint("blue-green")
    (green,) = blue_green.containers(**{"org.reconciler.address": "deployment.blue-green/green"})

    def green_requests() -> int:
        return sum(1 for line in green.logs().decode().splitlines() if '"POST ' in line)

    for _ in range(40):
        status, headers, _, _ = score(outputs, {"azureml-model-deployment": "blue"})
        assert status == 200 and headers["azureml-model-deployment"] == "blue"
    time.sleep(0.5)
    assert green_requests() == 0
    for _ in range(40):
        status, headers, _, _ = score(outputs)
        assert status == 200 and headers["azureml-model-deployment"] == "blue"
    time.sleep(0.5)
    # 50 % of 40 by request id: at least 8 is over 99.99 % likely.
    assert 8 <= green_requests() <= 32
