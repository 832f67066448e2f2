"""Real-Docker test harness: a throwaway stack driven through the CLI, its state, and cleanup."""
from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.drivers.docker.engine import remove_released_network

ROOT = Path(__file__).resolve().parents[2]
STACKS_DEMO_IMAGE = "reconciler/demo-tfserving:latest"
# A variant under test (images/README.md): RECONCILER_DEMO_IMAGE is written into the copied
# stacks that ask for it (StackRun.use_demo_image_under_test), RECONCILER_GATEWAY_IMAGE is
# read by the drivers themselves.
DEMO_IMAGE = os.environ.get("RECONCILER_DEMO_IMAGE", STACKS_DEMO_IMAGE)
GATEWAY_IMAGE = os.environ.get("RECONCILER_GATEWAY_IMAGE", "reconciler/gateway:latest")
LABEL_STACK = "org.reconciler.stack"


SAMPLE_REQUEST = '{"instances": [1.0, 2.0, 5.0]}'


def invoke_sample(stack, tmp_path, endpoint: str = "half-plus-two") -> dict:
    """`reconciler invoke` with the demo model's sample request; the parsed answer."""
    request = tmp_path / "request.json"
    request.write_text(SAMPLE_REQUEST)
    result = stack.run("invoke", endpoint, "--request-file", str(request), "--state", str(stack.state))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="session")
def docker_client():
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as error:  # noqa: BLE001 - any failure means no engine to test against
        pytest.skip(f"no Docker Engine: {error}")
    for image in (DEMO_IMAGE, GATEWAY_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.skip(f"image {image} missing: run images/build.sh")
    return client


class StackRun:
    """A copy of the demo stack with its own name, driven through the CLI."""

    def __init__(self, root: Path, client, source: str = "half-plus-two") -> None:
        self.name = f"it-{secrets.token_hex(3)}"
        self.dir = root / self.name
        shutil.copytree(ROOT / "stacks" / source, self.dir)
        self.state = root / "state" / f"{self.name}.json"
        self.client = client
        self.runner = CliRunner()

    def use_demo_image_under_test(self) -> "StackRun":
        """The stack's documents name DEMO_IMAGE (a variant from RECONCILER_DEMO_IMAGE) for tests
        that need what only a rebuilt demo image does."""
        for document in self.dir.glob("*.yml"):
            document.write_text(document.read_text().replace(STACKS_DEMO_IMAGE, DEMO_IMAGE))
        return self

    def edit(self, file: str, old: str, new: str) -> None:
        path = self.dir / file
        text = path.read_text()
        assert old in text, f"{old!r} not in {file}"
        path.write_text(text.replace(old, new, 1))

    def run(self, *args: str, input: str | None = None):
        return self.runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    def apply(self, *extra: str, expect: int = 0):
        result = self.run("apply", str(self.dir), "--state", str(self.state), "--auto-approve", *extra)
        assert result.exit_code == expect, result.output
        return result

    def plan(self, *extra: str):
        return self.run("plan", str(self.dir), "--state", str(self.state), *extra)

    def endpoint(self, name: str) -> dict:
        return self.records()[f"endpoint.{name}"]["outputs"]

    def records(self) -> dict:
        return {r["address"]: r for r in json.loads(self.state.read_text())["records"]}

    def containers(self, **filters):
        labels = [f"{LABEL_STACK}={self.name}"] + [f"{k}={v}" for k, v in filters.items()]
        return self.client.containers.list(all=True, filters={"label": labels})

    def cleanup(self) -> None:
        if self.state.exists():
            self.run("destroy", str(self.dir), "--state", str(self.state), "--auto-approve")
        for container in self.containers():
            container.remove(force=True)
        for network in self.client.networks.list(filters={"label": f"{LABEL_STACK}={self.name}"}):
            remove_released_network(network)


@pytest.fixture
def stack(tmp_path, docker_client):
    run = StackRun(tmp_path, docker_client)
    yield run
    run.cleanup()


@pytest.fixture
def blue_green(tmp_path, docker_client):
    run = StackRun(tmp_path, docker_client, "blue-green")
    yield run
    run.cleanup()


@pytest.fixture
def hey():
    """Debian's hey: a load client that does not retry, for the zero-failed-requests tests."""
    path = shutil.which("hey")
    if path is None:
        pytest.skip("hey is not installed (scripts/setup.sh installs Debian's hey)")
    return path
