"""Issue 15: a real Prometheus (Debian's `prometheus`, scripts/setup.sh installs it) scrapes an
endpoint's /metrics with the endpoint's key and answers a PromQL query over them.

Prometheus runs on loopback with its own data directory and a scrape config pointing at the
endpoint's gateway; it is stopped at the end whatever happens.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from test_request_semantics import ENDPOINT, ERROR, score

pytestmark = pytest.mark.integration

SCRAPE_SECONDS = 1
WAIT_SECONDS = 40


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def prometheus(tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus is not installed: run scripts/setup.sh")
    started = []

    def start(gateway_port: int, key: str) -> int:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        # JSON is YAML: no YAML writer needed.
        config.write_text(json.dumps({
            "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
            "scrape_configs": [{"job_name": "endpoint", "metrics_path": "/metrics",
                                "authorization": {"type": "Bearer", "credentials": key},
                                "static_configs": [{"targets": [f"127.0.0.1:{gateway_port}"]}]}]}))
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))
        started.append(process)
        return port

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def query(port: int, promql: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_prometheus_scrapes_the_endpoint_and_answers_promql(stack, prometheus, tmp_path):
    stack.use_demo_image_under_test().apply()
    outputs = stack.endpoint(ENDPOINT)
    for _ in range(5):
        assert score(outputs)[0] == 200
    for _ in range(2):
        assert score(outputs, {ERROR: "500"})[0] == 424
    port = prometheus(outputs["port"], outputs["keys"]["primary"])
    promql = f'sum by (status) (reconciler_requests_total{{endpoint="{ENDPOINT}",deployment="tfserving"}})'
    deadline = time.monotonic() + WAIT_SECONDS
    result = []
    while time.monotonic() < deadline:
        try:
            result = query(port, promql)
        except OSError:
            result = []  # not listening yet
        if len(result) == 2:
            break
        time.sleep(0.5)
    log = (tmp_path / "prometheus.log").read_text(errors="replace")[-2000:]
    assert {r["metric"]["status"]: r["value"][1] for r in result} == {"200": "5", "424": "2"}, (result, log)
    up = query(port, 'up{job="endpoint"}')
    assert [r["value"][1] for r in up] == ["1"], up  # scraped with the key
    histogram = query(port, f'reconciler_request_duration_seconds_count{{deployment="tfserving"}}')
    assert [r["value"][1] for r in histogram] == ["7"], histogram
