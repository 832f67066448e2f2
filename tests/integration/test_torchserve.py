"""A real TorchServe (reconciler/torchserve:latest-cpu, a tiny real model archive) on the real
daemon, in a stack shaped like Azure ML's custom-container/torchserve/densenet (#14): it applies
and answers through the endpoint's gateway with the model's output; TorchServe answers /ping
while its model is still loading, so liveness is not readiness; with readiness on the model's
own route the deployment is not routed to before its model has loaded.

The readiness route: TorchServe has none that answers non-2xx while a model loads. /ping answers
200 as soon as the frontend is up (a worker that is still loading counts as healthy); the
management API's GET :8081/models/<name> answers 200 with the worker's status (UNLOADING, then
READY) in its body, which a status-only probe cannot read. What does track the model is
GET /predictions/<model>: TorchServe queues it until a worker has loaded the model, so a probe
times out (a failed probe) while loading and answers once the model is there; the tiny handler
answers a body-less request with {"ready": true}. That is the readiness route used here."""
from __future__ import annotations

import json
import secrets
import shutil
import threading
import time
import urllib.request
import zipfile

import pytest
from click.testing import CliRunner

from gateway_client import GatewayClient
from reconciler.cli.main import cli
from torchserve_stack import (SAMPLE, TORCHSERVE_IMAGE, answer, build_example_image, deployment_yaml,
                              make_archives, set_traffic, write_stack)

pytestmark = pytest.mark.integration

LOAD_SECONDS = 10
FAST, SLOW = (0.5, -0.5), (100.5, 99.5)
MODEL_READY = "/predictions/tiny"


@pytest.fixture(scope="module")
def torchserve(docker_client, tmp_path_factory):
    """The module's archives (fast: loads at once; slow: initialize sleeps LOAD_SECONDS) and its
    serving image, built once."""
    try:
        docker_client.images.get(TORCHSERVE_IMAGE)
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound
        pytest.skip(f"image {TORCHSERVE_IMAGE} missing: run images/build.sh")
    root = make_archives(docker_client, tmp_path_factory.mktemp("torchserve"), [
        f"fast/torchserve/tiny:{FAST[0]},{FAST[1]}:0", f"slow/torchserve/tiny:{SLOW[0]},{SLOW[1]}:{LOAD_SECONDS}"])
    tag = build_example_image(docker_client, f"reconciler/torchserve-example:it-{secrets.token_hex(3)}")
    yield root, tag
    docker_client.images.remove(tag, force=True)


class Stack:
    def __init__(self, root, tmp_path, client, image):
        self.name = f"it-ts-{secrets.token_hex(3)}"
        self.dir = tmp_path / self.name
        self.dir.mkdir()
        for variant in ("fast", "slow"):
            shutil.copytree(root / variant, self.dir / variant)
        self.state = tmp_path / f"{self.name}.json"
        self.client, self.image = client, image

    def deployment(self, name: str, variant: str, readiness: str) -> str:
        return deployment_yaml(name, self.name, self.image, f"{variant}/torchserve", "tiny=tiny.mar", readiness)

    def run(self, *args):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    def apply(self):
        result = self.run("apply", str(self.dir), "--state", str(self.state), "--auto-approve")
        assert result.exit_code == 0, result.output
        return result

    def outputs(self, address: str) -> dict:
        records = {r["address"]: r for r in json.loads(self.state.read_text())["records"]}
        return records[address]["outputs"]

    def gateway(self, timeout: float = 30) -> GatewayClient:
        endpoint = self.outputs(f"endpoint.{self.name}")
        port = int(endpoint["scoring_uri"].split(":")[2].split("/")[0])
        return GatewayClient(port, endpoint["keys"]["primary"], timeout=timeout)

    def container_address(self, deployment: str) -> str:
        instance = self.outputs(f"deployment.{self.name}/{deployment}")["instances"][0]
        container = self.client.containers.get(instance["id"])
        return next(iter(container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]

    def cleanup(self):
        if self.state.exists():
            self.run("destroy", str(self.dir), "--state", str(self.state), "--auto-approve")
        for container in self.client.containers.list(all=True, filters={"label": f"org.reconciler.stack={self.name}"}):
            container.remove(force=True)


@pytest.fixture
def stack(torchserve, tmp_path, docker_client):
    root, image = torchserve
    run = Stack(root, tmp_path, docker_client, image)
    yield run
    run.cleanup()


def get(host: str, port: int, path: str, timeout: float = 2) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def worker_status(host: str) -> str:
    _, body = get(host, 8081, "/models/tiny")
    return json.loads(body)[0]["workers"][0]["status"]


def score(gateway: GatewayClient) -> tuple[int, dict, float]:
    started = time.monotonic()
    status, _, body = gateway.score(json.dumps(SAMPLE).encode())
    return status, (json.loads(body) if status == 200 else {"error": body.decode(errors="replace")}), \
        time.monotonic() - started


def test_the_densenet_shaped_stack_answers_with_the_models_output(stack):
    write_stack(stack.dir, stack.name, {"blue": stack.deployment("blue", "fast", MODEL_READY)}, {"blue": 100})
    stack.apply()
    gateway = stack.gateway()
    status, body, _ = score(gateway)
    assert (status, body) == (200, answer(FAST))
    # The model folder is mounted as Azure ML mounts it, and the example's CMD found it there.
    host = stack.container_address("blue")
    assert json.loads(get(host, 8081, "/models/tiny")[1])[0]["modelUrl"] == "tiny.mar"


def test_ping_answers_while_the_model_loads_so_ping_readiness_routes_to_a_loading_model(stack):
    # The example's own choice, readiness on /ping: apply returns while the model still loads.
    write_stack(stack.dir, stack.name, {"blue": stack.deployment("blue", "slow", "/ping")}, {"blue": 100})
    stack.apply()
    host = stack.container_address("blue")
    assert get(host, 8080, "/ping")[0] == 200
    assert worker_status(host) != "READY", "the model loaded before /ping answered: no loading window to show"
    # A request now is routed to the loading model: TorchServe holds it until the model is there,
    # longer than the gateway waits (408, as Azure ML answers past request_timeout_ms) or at least
    # far longer than a loaded model takes.
    status, body, elapsed = score(stack.gateway(timeout=LOAD_SECONDS * 6))
    assert status == 408 or (status == 200 and elapsed > 2), (status, body, elapsed)


def test_readiness_on_the_model_route_waits_for_the_model(stack):
    write_stack(stack.dir, stack.name, {"blue": stack.deployment("blue", "slow", MODEL_READY)}, {"blue": 100})
    stack.apply()
    host = stack.container_address("blue")
    assert worker_status(host) == "READY"
    status, body, elapsed = score(stack.gateway())
    assert (status, body) == (200, answer(SLOW)) and elapsed < 2, (status, body, elapsed)


def test_a_rollout_to_a_loading_deployment_serves_every_request_from_the_ready_one(stack):
    write_stack(stack.dir, stack.name, {"blue": stack.deployment("blue", "fast", MODEL_READY)}, {"blue": 100})
    stack.apply()
    gateway = stack.gateway(timeout=LOAD_SECONDS * 6)
    assert score(gateway)[:2] == (200, answer(FAST))
    # green loads for LOAD_SECONDS; the apply creates it, awaits its readiness, then moves traffic.
    (stack.dir / "green.yml").write_text(stack.deployment("green", "slow", MODEL_READY))
    set_traffic(stack.dir, {"blue": 0, "green": 100})
    applied: list = []
    applying = threading.Thread(target=lambda: applied.append(stack.apply()))
    applying.start()
    answers = []
    deadline = time.monotonic() + 240
    while applying.is_alive() and time.monotonic() < deadline and len(answers) < 5000:
        answers.append(score(gateway))
        time.sleep(0.05)
    applying.join(timeout=max(1.0, deadline - time.monotonic()))
    assert applied, "apply did not finish"
    answers.append(score(gateway))
    failed = [a for a in answers if a[0] != 200]
    assert not failed, failed[:3]
    blue = [a for a in answers if a[1] == answer(FAST)]
    green = [a for a in answers if a[1] == answer(SLOW)]
    assert len(blue) + len(green) == len(answers), answers[:3]
    assert len(blue) > 10, f"only {len(blue)} requests answered while green loaded"
    assert answers[-1][1] == answer(SLOW)
    # A request routed to green while it loaded would have waited for its model: none did.
    slowest = max(a[2] for a in answers)
    assert slowest < 2, f"a request took {slowest:.1f} s: it was routed to the loading deployment"
    # Blue answers until the switch, green after: never back and forth.
    first_green = next(i for i, a in enumerate(answers) if a[1] == answer(SLOW))
    assert all(a[1] == answer(SLOW) for a in answers[first_green:])


def test_archives_are_real_torchserve_archives(torchserve):
    root, _ = torchserve
    with zipfile.ZipFile(root / "slow" / "torchserve" / "tiny.mar") as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
    assert {"tiny.pt", "tiny.json", "tiny_handler.py", "MAR-INF/MANIFEST.json"} <= names, names
    assert manifest["model"]["modelName"] == "tiny" and manifest["model"]["handler"] == "tiny_handler.py"
