"""Integration tests for the offline images built by ``images/build.sh``.

They run real containers from ``reconciler/demo-tfserving:latest`` and
``reconciler/gateway:latest`` on the local Docker Engine. Every container gets
the label ``org.reconciler.test=1``, publishes ports on 127.0.0.1 only, and is
force-removed by a fixture finalizer even when a test fails.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.integration

DEMO_IMAGE = os.environ.get("RECONCILER_DEMO_IMAGE", "reconciler/demo-tfserving:latest")
GATEWAY_IMAGE = "reconciler/gateway:latest"
TEST_LABEL = {"org.reconciler.test": "1"}
MODEL = "half_plus_two"
READY_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def client():
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"Docker Engine not reachable: {exc}")
    for image in (DEMO_IMAGE, GATEWAY_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.skip(f"{image} missing; run images/build.sh")
    yield client
    client.close()


@pytest.fixture
def run(client):
    """Start a detached container; returns (container, host port of `port`)."""
    started = []

    def _run(image: str, port: int, **kwargs):
        container = client.containers.run(
            image,
            detach=True,
            labels=TEST_LABEL,
            # None lets Docker pick a free host port, avoiding clashes between runs.
            ports={f"{port}/tcp": ("127.0.0.1", None)},
            **kwargs,
        )
        started.append(container)
        container.reload()
        host_port = int(container.ports[f"{port}/tcp"][0]["HostPort"])
        return container, host_port

    yield _run
    for container in started:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


def make_model_dir(root: Path, coefficients: dict | None = None) -> Path:
    """A TF-Serving-style layout; the lower version proves the newest is chosen."""
    model_dir = root / MODEL
    for version in ("9", "00000123"):
        (model_dir / version).mkdir(parents=True)
        (model_dir / version / "saved_model.pb").write_bytes(b"stand-in")
    (model_dir / "9" / "assets").mkdir()
    (model_dir / "9" / "assets" / "coefficients.json").write_text('{"a": 100, "b": 100}')
    if coefficients is not None:
        (model_dir / "00000123" / "assets").mkdir()
        (model_dir / "00000123" / "assets" / "coefficients.json").write_text(json.dumps(coefficients))
    return model_dir


def request(port: int, path: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_for(port: int, path: str, container, status: int | None = None) -> int:
    """Poll until the server answers (with `status`, if given); returns the status seen."""
    deadline = time.monotonic() + READY_TIMEOUT
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = request(port, path)[0]
            if status is None or seen == status:
                return seen
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException):
            pass  # not listening yet
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.1)
    logs = container.logs().decode(errors="replace")
    pytest.fail(f"{path} did not answer {status or 'at all'} (last: {seen}); logs:\n{logs}")


def predict(port: int, body: bytes) -> tuple[int, dict]:
    status, _, payload = request(port, f"/v1/models/{MODEL}:predict", body)
    return status, json.loads(payload)


@pytest.fixture
def demo(run, tmp_path):
    """A demo-tfserving container serving the default half_plus_two model."""
    model_dir = make_model_dir(tmp_path)
    container, port = run(
        DEMO_IMAGE,
        8501,
        environment={"MODEL_NAME": MODEL, "DEPLOYMENT_NAME": "blue"},
        volumes={str(model_dir): {"bind": f"/models/{MODEL}", "mode": "ro"}},
    )
    wait_for(port, f"/v1/models/{MODEL}", container, status=200)
    return container, port


def test_demo_status_and_predict(demo):
    container, port = demo
    status, headers, body = request(port, f"/v1/models/{MODEL}")
    assert status == 200
    assert json.loads(body) == {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert headers["x-demo-hostname"] == container.id[:12]
    assert headers["x-demo-deployment"] == "blue"
    assert predict(port, b'{"instances": [1.0, 2.0, 5.0]}') == (200, {"predictions": [2.5, 3.0, 4.5]})


def test_demo_rejects_bad_requests(demo):
    _, port = demo
    status, body = predict(port, b"{not json")
    assert status == 400 and "error" in body
    status, body = predict(port, b'{"rows": [1.0]}')
    assert status == 400 and "instances" in body["error"]
    status, body = predict(port, b'{"instances": [1.0], "inputs": [1.0]}')
    assert status == 400 and "both" in body["error"]


def test_demo_answers_the_columnar_format(demo):
    # TF Serving's {"inputs": ...} -> {"outputs": ...}, as half-plus-two-integrated's sample request asks (#13).
    _, port = demo
    assert predict(port, b'{"inputs": [[[1, 2, 3, 4]], [[0, 1, 1, 1]]]}') == (
        200, {"outputs": [[[2.5, 3.0, 3.5, 4.0]], [[2.0, 2.5, 2.5, 2.5]]]})
    status, _, body = request(port, "/v1/models/other:predict", b'{"instances": [1.0]}')
    assert status == 404 and "other" in json.loads(body)["error"]


def test_demo_keep_alive(demo):
    # nginx reuses upstream connections, so several requests must share one socket.
    _, port = demo
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.connect()
        sock = conn.sock
        for _ in range(3):
            conn.request("POST", f"/v1/models/{MODEL}:predict", body=b'{"instances": [4.0]}',
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert json.loads(resp.read()) == {"predictions": [4.0]}
            assert conn.sock is sock
    finally:
        conn.close()


def test_demo_wrong_mount_fails_readiness(run, tmp_path):
    model_dir = make_model_dir(tmp_path)
    container, port = run(
        DEMO_IMAGE,
        8501,
        environment={"MODEL_NAME": MODEL},
        volumes={str(model_dir): {"bind": "/models/somewhere-else", "mode": "ro"}},
    )
    assert wait_for(port, f"/v1/models/{MODEL}", container) == 404
    _, _, body = request(port, f"/v1/models/{MODEL}")
    assert f"/models/{MODEL}" in json.loads(body)["error"]
    assert f"/models/{MODEL}" in container.logs(stdout=False, stderr=True).decode()


def test_demo_coefficients_change_answer(run, tmp_path):
    model_dir = make_model_dir(tmp_path, coefficients={"a": 2.0, "b": -1.0})
    container, port = run(
        DEMO_IMAGE,
        8501,
        environment={"MODEL_NAME": MODEL},
        volumes={str(model_dir): {"bind": f"/models/{MODEL}", "mode": "ro"}},
    )
    wait_for(port, f"/v1/models/{MODEL}", container, status=200)
    assert predict(port, b'{"instances": [1.0, 2.0, 5.0]}') == (200, {"predictions": [1.0, 3.0, 9.0]})


def test_demo_slow_readiness_and_fast_stop(run, tmp_path):
    model_dir = make_model_dir(tmp_path)
    container, port = run(
        DEMO_IMAGE,
        8501,
        environment={"MODEL_NAME": MODEL, "READY_AFTER_SECONDS": "2"},
        volumes={str(model_dir): {"bind": f"/models/{MODEL}", "mode": "ro"}},
    )
    assert wait_for(port, f"/v1/models/{MODEL}", container) == 503
    wait_for(port, f"/v1/models/{MODEL}", container, status=200)
    began = time.monotonic()
    container.stop(timeout=10)
    # A SIGKILL after the timeout would also "stop" it; require the SIGTERM path.
    assert time.monotonic() - began < 3
    assert container.wait(timeout=5)["StatusCode"] == 0


def keep_alive_predict(port: int, delay: float = 0.0) -> http.client.HTTPConnection:
    """A kept-alive connection with one prediction sent (its answer not read yet)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", f"/v1/models/{MODEL}:predict", body=b'{"instances": [4.0]}',
                       headers={"Content-Type": "application/json", "x-demo-scoring-delay": str(delay)})
    return connection


def test_demo_stop_answers_the_requests_it_holds_then_waits_for_its_connections(demo):
    """A stop (SIGTERM) cuts no request: the one in progress is answered, with Connection:
    close, and a kept-alive connection that is still open keeps the server up (a proxy may
    still send on it while the stop spreads) until its client closes it."""
    container, port = demo
    idle = keep_alive_predict(port)
    assert json.loads(idle.getresponse().read()) == {"predictions": [4.0]}
    slow = keep_alive_predict(port, delay=1.5)
    time.sleep(0.3)  # the request is in the server's hands
    container.kill(signal="SIGTERM")
    answer = slow.getresponse()
    assert (answer.status, json.loads(answer.read())) == (200, {"predictions": [4.0]})
    assert answer.getheader("Connection") == "close"
    slow.close()
    time.sleep(1.0)
    container.reload()
    assert container.status == "running", "exited while a client still had a connection open"
    idle.request("GET", f"/v1/models/{MODEL}")
    answer = idle.getresponse()
    assert answer.status == 200 and answer.getheader("Connection") == "close"
    answer.read()
    idle.close()
    assert container.wait(timeout=5)["StatusCode"] == 0


def test_demo_stop_waits_at_most_its_grace_period_for_open_connections(run, tmp_path):
    model_dir = make_model_dir(tmp_path)
    container, port = run(DEMO_IMAGE, 8501, environment={"MODEL_NAME": MODEL, "STOP_GRACE_SECONDS": "1"},
                          volumes={str(model_dir): {"bind": f"/models/{MODEL}", "mode": "ro"}})
    wait_for(port, f"/v1/models/{MODEL}", container, status=200)
    idle = keep_alive_predict(port)
    idle.getresponse().read()
    try:
        container.kill(signal="SIGTERM")
        assert container.wait(timeout=5)["StatusCode"] == 0
        assert "closing 1 connection(s) still open after 1 s" in container.logs().decode()
    finally:
        idle.close()


def test_gateway_default_config_and_reload(run):
    # Read-only root with tmpfs /tmp and /run is how the gateway is meant to be runnable.
    container, port = run(GATEWAY_IMAGE, 8080, read_only=True, tmpfs={"/tmp": "", "/run": ""})
    assert wait_for(port, "/", container) == 503
    assert b"no deployments" in request(port, "/anything")[2]
    result = container.exec_run(["nginx", "-s", "reload"])
    assert result.exit_code == 0, result.output.decode(errors="replace")
    assert wait_for(port, "/", container) == 503
