"""Scoring scripts served by the Azure ML inference server (issue 14), on the real Docker Engine:
the quickstart (managed/sample: blue model-1, green model-2) answers through its endpoint with
the model's real scikit-learn predictions, a traffic move under load fails no request, and a
scoring script whose init() raises fails its step with the server's log, is tainted, and the
deployment it was to replace goes on answering.

One image with the quickstart's packages is built once for the module (scoring.scoring_image).
"""
from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import threading
import time

import pytest

from scoring import ExampleStack, scoring_image, with_image

pytestmark = pytest.mark.integration

MODEL_1_ANSWER = [11055.977245525679, 4503.079536107787]   # model-1's LinearRegression on sample-request.json
MODEL_2_ANSWER = [0.5, 0.5]                                   # model-2's score.py answers a constant
BLUE, GREEN = "deployment.my-endpoint/blue", "deployment.my-endpoint/green"
LOAD_REQUESTS, LOAD_CONNECTIONS = 1500, 4


@pytest.fixture(scope="module")
def image(docker_client):
    return scoring_image(docker_client)


def quickstart(tmp_path, client, image: str, traffic: str = "{blue: 100}") -> ExampleStack:
    """managed/sample as the quickstart deploys it: blue with all traffic, green beside it."""
    stack = ExampleStack(tmp_path, client, "managed/sample", ["endpoint.yml", "blue-deployment.yml",
                                                              "green-deployment.yml"])
    (stack.dir / "endpoint.yml").write_text((stack.dir / "endpoint.yml").read_text() + f"traffic: {traffic}\n")
    for name in ("blue-deployment.yml", "green-deployment.yml"):
        with_image(stack.dir / name, image)
    return stack


def post(port: int, key: str, body: bytes, headers: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/score", body=body, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class Requests:
    """A client that sends the sample request over and over (at most `limit` requests, at most
    `seconds`) and keeps every answer, until stopped."""

    def __init__(self, stack, body: bytes, limit: int = 2000, seconds: float = 180) -> None:
        outputs = stack.endpoint("my-endpoint")
        self.port, self.key, self.body = outputs["port"], outputs["keys"]["primary"], body
        self.limit, self.deadline = limit, time.monotonic() + seconds
        self.answers: list[tuple[int, bytes]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set() and len(self.answers) < self.limit and time.monotonic() < self.deadline:
            try:
                self.answers.append(post(self.port, self.key, self.body))
            except OSError as error:
                self.answers.append((0, str(error).encode()))
            time.sleep(0.02)

    def stop(self) -> list[tuple[int, bytes]]:
        self.stopped.set()
        self.thread.join(timeout=30)
        return self.answers


def test_the_quickstart_answers_with_the_models_predictions(tmp_path, docker_client, image):
    stack = quickstart(tmp_path, docker_client, image)
    try:
        stack.apply()
        records = stack.records()
        assert records[BLUE]["status"] == records[GREEN]["status"] == "ready"
        request = stack.online / "model-1" / "sample-request.json"
        code, output = stack.invoke("my-endpoint", request)
        assert code == 0 and json.loads(output) == MODEL_1_ANSWER, output
        # The header picks a deployment as Azure ML's does: green serves model-2's script.
        code, output = stack.invoke("my-endpoint", request, "--deployment", "green")
        assert code == 0 and json.loads(output) == MODEL_2_ANSWER, output
        # The code folder is the store's read-only copy at /var/azureml-app/<folder>/, and the
        # server found the script and the model where Azure ML's variables say.
        [container] = stack.containers(**{"org.reconciler.address": BLUE})
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        assert mounts["/var/azureml-app/onlinescoring"]["RW"] is False
        assert mounts["/var/azureml-app/onlinescoring"]["Source"].startswith(str(stack.state.parent))
        environment = dict(v.split("=", 1) for v in container.attrs["Config"]["Env"])
        assert (environment["AML_APP_ROOT"], environment["AZUREML_ENTRY_SCRIPT"], environment["AZUREML_MODEL_DIR"]) \
            == ("/var/azureml-app/onlinescoring/", "score.py", "/var/azureml-app/azureml-models/blue-model/1")
        assert stack.plan("--detailed-exitcode").exit_code == 0
    finally:
        stack.cleanup()


@pytest.fixture
def hey():
    path = shutil.which("hey")
    if path is None:
        pytest.skip("hey is not installed (scripts/setup.sh installs Debian's hey)")
    return path


def test_moving_traffic_from_blue_to_green_under_load_fails_no_request(tmp_path, docker_client, image, hey):
    stack = quickstart(tmp_path, docker_client, image)
    try:
        stack.apply()
        outputs = stack.endpoint("my-endpoint")
        load = subprocess.Popen(
            [hey, "-n", str(LOAD_REQUESTS), "-c", str(LOAD_CONNECTIONS), "-t", "20", "-m", "POST",
             "-T", "application/json", "-H", f"Authorization: Bearer {outputs['keys']['primary']}",
             "-D", str(stack.online / "model-1" / "sample-request.json"),
             f"http://127.0.0.1:{outputs['port']}/score"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1)
        endpoint = stack.dir / "endpoint.yml"
        for traffic in ("{blue: 90, green: 10}", "{blue: 0, green: 100}"):
            endpoint.write_text(re.sub(r"traffic: .*", f"traffic: {traffic}", endpoint.read_text()))
            stack.apply()
        output, _ = load.communicate(timeout=300)
        codes = {code: int(count) for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
        assert codes == {"200": LOAD_REQUESTS} and "Error distribution" not in output, output
        code, answer = stack.invoke("my-endpoint", stack.online / "model-1" / "sample-request.json")
        assert code == 0 and json.loads(answer) == MODEL_2_ANSWER
    finally:
        stack.cleanup()


def test_a_scoring_script_whose_init_raises_fails_its_step_and_the_old_deployment_serves(
        tmp_path, docker_client, image):
    stack = quickstart(tmp_path, docker_client, image)
    try:
        stack.apply()
        old = stack.records()[BLUE]["outputs"]["instances"][0]["id"]
        script = stack.online / "model-1" / "onlinescoring" / "score.py"
        script.write_text(script.read_text().replace(
            "    global model\n", "    global model\n    raise RuntimeError('init refuses on purpose')\n", 1))
        body = (stack.online / "model-1" / "sample-request.json").read_bytes()
        client = Requests(stack, body)
        started = time.monotonic()
        result = stack.apply(expect=1)
        elapsed = time.monotonic() - started
        answers = client.stop()
        # The step fails with the server's own account of it, from the container's log.
        assert "deployment my-endpoint/blue never became ready" in result.output, result.output
        assert "init refuses on purpose" in result.output and "User's init function failed" in result.output
        # The server exits when init() fails: the step fails then, not after 30 probes.
        assert elapsed < 60, f"apply took {elapsed:.0f} s"
        records = stack.records()
        tainted = [r for r in records.values() if r["address"].startswith(BLUE) and r["status"] == "tainted"]
        assert len(tainted) == 1 and tainted[0]["outputs"]["instances"][0]["id"] != old
        # The deployment it was to replace answers throughout, and after.
        assert answers and all(status == 200 and json.loads(answer) == MODEL_1_ANSWER for status, answer in answers), \
            answers[:5]
        [container] = [c for c in stack.containers(**{"org.reconciler.address": BLUE}) if c.id == old]
        assert container.status == "running"
        code, output = stack.invoke("my-endpoint", stack.online / "model-1" / "sample-request.json")
        assert code == 0 and json.loads(output) == MODEL_1_ANSWER
        assert "is tainted, so must be replaced" in stack.plan().output
    finally:
        stack.cleanup()
