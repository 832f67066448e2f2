"""Scoring scripts served by the Azure ML inference server (issue 14), on the real Docker Engine:
the quickstart (managed/sample: blue model-1, green model-2) answers through its endpoint with
the model's real scikit-learn predictions, a traffic move under load fails no request, and a
scoring script whose init() raises fails its step with the server's log, is tainted, and the
deployment it was to replace goes on answering.

The stack is applied once for the module: its environment (the conda file, installed with pip
on the local inference base) is built once.
"""
from __future__ import annotations

import http.client
import json
import re
import subprocess
import threading
import time

import pytest

from scoring import ExampleStack, inference_base_or_skip, map_azureml_images

pytestmark = pytest.mark.integration

MODEL_1_ANSWER = [11055.977245525679, 4503.079536107787]   # model-1's LinearRegression on sample-request.json
MODEL_2_ANSWER = [0.5, 0.5]                                   # model-2's score.py answers a constant
BLUE, GREEN = "deployment.my-endpoint/blue", "deployment.my-endpoint/green"
LOAD_REQUESTS, LOAD_CONNECTIONS = 1500, 4


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, docker_client):
    """managed/sample as the quickstart deploys it, applied once for the module (its environment,
    built from the conda file, is the slow part): blue with all traffic, green beside it. Each
    test leaves it as it found it."""
    inference_base_or_skip(docker_client)
    stack = ExampleStack(tmp_path_factory.mktemp("quickstart"), docker_client, "managed/sample",
                         ["endpoint.yml", "blue-deployment.yml", "green-deployment.yml"])
    (stack.dir / "endpoint.yml").write_text((stack.dir / "endpoint.yml").read_text() + "traffic: {blue: 100}\n")
    # Room for the load test's connections: Azure ML's default (1 request per instance, 2 x that
    # in flight) answers 429 beyond 2 concurrent requests, as the gateway now does.
    for name in ("blue-deployment.yml", "green-deployment.yml"):
        path = stack.dir / name
        path.write_text(path.read_text().rstrip("\n") + "\nrequest_settings:\n"
                        f"  max_concurrent_requests_per_instance: {LOAD_CONNECTIONS}\n")
    map_azureml_images(stack)
    try:
        stack.apply()
        yield stack
    finally:
        stack.cleanup()


def docker_client_logs(stack, container_id: str) -> str:
    gateway = stack.containers(**{"org.reconciler.role": "gateway"})
    return stack.client.containers.get(container_id).logs(tail=10).decode(errors="replace") + \
        "".join(g.logs(tail=10).decode(errors="replace") for g in gateway)


def set_traffic(stack, traffic: str) -> None:
    endpoint = stack.dir / "endpoint.yml"
    endpoint.write_text(re.sub(r"traffic: .*", f"traffic: {traffic}", endpoint.read_text()))
    stack.apply()


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


def test_the_quickstart_answers_with_the_models_predictions(quickstart):
    stack = quickstart
    records = stack.records()
    assert records[BLUE]["status"] == records[GREEN]["status"] == "ready"
    # Each runs in the image built from its conda file (model-1's and model-2's have one content).
    built = {r["spec"]["image"] for a, r in records.items() if a.startswith("environment.")}
    assert records[BLUE]["spec"]["image"] in built and records[GREEN]["spec"]["image"] in built
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
    environment_variables = dict(v.split("=", 1) for v in container.attrs["Config"]["Env"])
    assert (environment_variables["AML_APP_ROOT"], environment_variables["AZUREML_ENTRY_SCRIPT"],
            environment_variables["AZUREML_MODEL_DIR"]) == \
        ("/var/azureml-app/onlinescoring/", "score.py", "/var/azureml-app/azureml-models/blue-model/1")
    assert stack.plan("--detailed-exitcode").exit_code == 0


def test_moving_traffic_from_blue_to_green_under_load_fails_no_request(quickstart, hey):
    stack = quickstart
    outputs = stack.endpoint("my-endpoint")
    load = subprocess.Popen(
        [hey, "-n", str(LOAD_REQUESTS), "-c", str(LOAD_CONNECTIONS), "-t", "20", "-m", "POST",
         "-T", "application/json", "-H", f"Authorization: Bearer {outputs['keys']['primary']}",
         "-D", str(stack.online / "model-1" / "sample-request.json"),
         f"http://127.0.0.1:{outputs['port']}/score"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1)
        for traffic in ("{blue: 90, green: 10}", "{blue: 0, green: 100}"):
            set_traffic(stack, traffic)
        output, _ = load.communicate(timeout=300)
        codes = {code: int(count) for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
        assert codes == {"200": LOAD_REQUESTS} and "Error distribution" not in output, output
        code, answer = stack.invoke("my-endpoint", stack.online / "model-1" / "sample-request.json")
        assert code == 0 and json.loads(answer) == MODEL_2_ANSWER
    finally:
        if load.poll() is None:
            load.kill()
        set_traffic(stack, "{blue: 100}")  # as the module's other tests expect it


def test_a_scoring_script_whose_init_raises_fails_its_step_and_the_old_deployment_serves(quickstart):
    stack = quickstart
    old = stack.records()[BLUE]["outputs"]["instances"][0]["id"]
    script = stack.online / "model-1" / "onlinescoring" / "score.py"
    working = script.read_text()
    script.write_text(working.replace("    global model\n",
                                      "    global model\n    raise RuntimeError('init refuses on purpose')\n", 1))
    try:
        client = Requests(stack, (stack.online / "model-1" / "sample-request.json").read_bytes())
        started = time.monotonic()
        result = stack.apply(expect=1)
        elapsed = time.monotonic() - started
        answers = client.stop()
        # The step fails with the server's own account of it, from the container's log.
        assert "deployment my-endpoint/blue never became ready" in result.output, result.output
        assert "its server exited" in result.output and "init refuses on purpose" in result.output, result.output
        assert "User's init function failed" in result.output
        # The server exits when init() fails: the step fails at the next probe, not after 30 of them.
        assert elapsed < 60, f"apply took {elapsed:.0f} s"
        records = stack.records()
        tainted = [r for r in records.values() if r["address"].startswith(BLUE) and r["status"] == "tainted"]
        assert len(tainted) == 1 and tainted[0]["outputs"]["instances"][0]["id"] != old
        # The deployment it was to replace answers throughout, and after.
        assert answers and all(status == 200 and json.loads(answer) == MODEL_1_ANSWER
                               for status, answer in answers), \
            (answers[:3], docker_client_logs(stack, old))
        [container] = [c for c in stack.containers(**{"org.reconciler.address": BLUE}) if c.id == old]
        assert container.status == "running"
        code, output = stack.invoke("my-endpoint", stack.online / "model-1" / "sample-request.json")
        assert code == 0 and json.loads(output) == MODEL_1_ANSWER
        assert "is tainted, so must be replaced" in stack.plan().output
    finally:
        script.write_text(working)
    stack.apply()   # the tainted deployment replaced by a working one
    assert stack.records()[BLUE]["status"] == "ready"
