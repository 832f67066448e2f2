"""Traffic moves and image replacements that a client which never retries does not notice
(#12 finding 11): hey, 16 connections, every request answered 200.

hey reuses keep-alive connections and reports an EOF as an error rather than retrying, as many
real clients do. When the reloaded nginx itself kept idle client connections, each reload (a
traffic move, a replacement's re-point) cost such a client a request now and then: the old
nginx workers close idle connections, and a request sent on one just then is lost. Since issue
15 the gateway's edge keeps them (it is not reloaded) and retries a request that met a closed
connection to the reloaded nginx, so hey runs here with its connections kept alive.
"""
from __future__ import annotations

import re
import subprocess
import time

import pytest

pytestmark = pytest.mark.integration

REQUESTS, CONNECTIONS = 8000, 16


def allow_all_connections_in_flight(stack) -> None:
    """Issue 15: a deployment holds 2 x max_concurrent_requests_per_instance x instance_count
    requests (429 beyond, as on Azure ML); 2 x 16 x 1 = 32 takes every connection whatever the
    split, with room for a slot that frees a moment after its answer reached the client (one
    429 in 8,000 with exactly 16)."""
    for document in ("blue.yml", "green.yml"):
        path = stack.dir / document
        path.write_text(path.read_text() + "request_settings: {max_concurrent_requests_per_instance: 16}\n")


def start_load(hey: str, stack, body_path) -> subprocess.Popen:
    outputs = stack.endpoint("blue-green")
    return subprocess.Popen(
        [hey, "-n", str(REQUESTS), "-c", str(CONNECTIONS), "-t", "20", "-m", "POST", "-T", "application/json",
         "-H", f"Authorization: Bearer {outputs['keys']['primary']}", "-D", str(body_path),
         f"http://127.0.0.1:{outputs['port']}/score"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def answered(load: subprocess.Popen) -> dict[str, int]:
    output, _ = load.communicate(timeout=120)
    codes = {code: int(count) for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
    errors = output.split("Error distribution:", 1)[1] if "Error distribution:" in output else ""
    return {**codes, "errors": sum(int(count) for count in re.findall(r"\[(\d+)\]", errors))}


def test_traffic_moves_lose_no_request(blue_green, hey, tmp_path):
    allow_all_connections_in_flight(blue_green)
    blue_green.apply()
    body = tmp_path / "body.json"
    body.write_text('{"instances": [1.0, 2.0, 5.0]}')
    load = start_load(hey, blue_green, body)
    time.sleep(1)
    for blue, green in ((50, 50), (10, 90), (90, 10)):
        endpoint = blue_green.dir / "endpoint.yml"
        endpoint.write_text(re.sub(r"green: \d+", f"green: {green}",
                                   re.sub(r"blue: \d+", f"blue: {blue}", endpoint.read_text())))
        blue_green.apply()
    assert answered(load) == {"200": REQUESTS, "errors": 0}


def test_an_image_replacement_loses_no_request(blue_green, hey, tmp_path, docker_client):
    allow_all_connections_in_flight(blue_green)
    blue_green.apply()
    docker_client.images.get("reconciler/demo-tfserving:latest").tag("reconciler/demo-tfserving", "zero-loss")
    try:
        body = tmp_path / "body.json"
        body.write_text('{"instances": [1.0, 2.0, 5.0]}')
        load = start_load(hey, blue_green, body)
        time.sleep(1)
        blue_green.edit("blue.yml", "image: reconciler/demo-tfserving:latest", "image: reconciler/demo-tfserving:zero-loss")
        blue_green.apply()
        assert answered(load) == {"200": REQUESTS, "errors": 0}
    finally:
        blue_green.cleanup()
        docker_client.images.remove("reconciler/demo-tfserving:zero-loss")
