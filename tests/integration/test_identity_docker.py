"""Issue 12 findings 2, 4 and 8 on the real Docker Engine: a stack's identity is its state's
lineage, not its folder name. Two stacks called the same (envs/staging/<name>, envs/prod/<name>)
whose state files share a folder never touch each other's containers, networks or model copies;
names stay within 63 characters whatever the names and the folder are; the default state does
not depend on the working directory; a lost state is refused a rebuild and recovered with its
port and keys."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway_client import GatewayClient
from harness import LABEL_STACK, ROOT, StackRun

pytestmark = pytest.mark.integration

SAMPLE = '{"instances": [1.0, 2.0, 5.0]}'
PREDICTIONS = [2.5, 3.0, 4.5]


class NamedStack(StackRun):
    """The demo stack copied to `root/<where>/<name>`, its state at `state`."""

    def __init__(self, root: Path, client, where: str, name: str, state: Path) -> None:
        super().__init__(root / "unused", client)
        shutil.rmtree(self.dir)
        self.name = name
        self.dir = root / where / name
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(ROOT / "stacks" / "half-plus-two", self.dir)
        self.state = state

    def ids(self) -> set[str]:
        """The containers this stack's state records, among those running."""
        recorded = {i["id"] for r in self.records().values() for i in r["outputs"].get("instances", [])}
        recorded |= {r["outputs"]["gateway"]["id"] for r in self.records().values() if r["outputs"].get("gateway")}
        return recorded & {c.id for c in self.containers() if c.status == "running"}

    def lineage(self) -> str:
        return json.loads(self.state.read_text())["lineage"]

    def score(self) -> list:
        outputs = self.endpoint("half-plus-two")
        return GatewayClient(outputs["port"], outputs["keys"]["primary"]).predictions()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """The CLI in a process of its own (so that two can run at once)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True,
                              env=env, timeout=300)


@pytest.fixture
def twins(tmp_path, docker_client):
    name = f"it-fraud-{secrets.token_hex(3)}"
    shared = tmp_path / "state"  # both state files in one folder: one model store, before
    staging = NamedStack(tmp_path, docker_client, "envs/staging", name, shared / "staging.json")
    prod = NamedStack(tmp_path, docker_client, "envs/prod", name, shared / "prod.json")
    yield staging, prod
    for run in (staging, prod):
        if run.state.exists():
            run.run("destroy", str(run.dir), "--state", str(run.state), "--auto-approve")
    staging.cleanup()


def test_two_stacks_of_one_folder_name_never_touch_each_other(twins):
    staging, prod = twins
    staging.apply()
    staging_ids = staging.ids()
    assert len(staging_ids) == 2  # the deployment and the gateway

    prod.apply()
    assert staging.ids() == staging_ids, "applying prod must not delete staging's objects as orphans"
    assert staging.lineage() != prod.lineage()
    plan = staging.plan("--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    assert "No changes." in plan.output
    assert f"belong to another state" in plan.output and str(prod.state.resolve()) in plan.output
    networks = {n.name for n in staging.client.networks.list(filters={"label": f"{LABEL_STACK}={staging.name}"})}
    assert len(networks) == 2, networks

    # Same model content, one state folder: destroying prod keeps staging's mounted copy.
    mounted = Path(staging.records()["model.tfserving-mounted:1"]["outputs"]["store_path"])
    files = sorted(p.relative_to(mounted) for p in mounted.rglob("*"))
    assert files
    result = prod.run("destroy", str(prod.dir), "--state", str(prod.state), "--auto-approve")
    assert result.exit_code == 0, result.output
    assert staging.ids() == staging_ids, "destroying prod must not touch staging's containers"
    assert sorted(p.relative_to(mounted) for p in mounted.rglob("*")) == files
    assert staging.score() == PREDICTIONS
    drift = staging.run("drift", str(staging.dir), "--state", str(staging.state))
    assert drift.exit_code == 0, drift.output
    assert "No changes." in staging.plan().output


def test_stacks_sharing_a_state_folder_keep_their_model_copies(stack, tmp_path, docker_client):
    """Finding 4: two stacks (other names) whose state files share a folder, same model content."""
    other = StackRun(tmp_path, docker_client)
    assert other.state.parent == stack.state.parent
    try:
        stack.apply()
        other.apply()
        mounted = Path(stack.records()["model.tfserving-mounted:1"]["outputs"]["store_path"])
        files = sorted(p.relative_to(mounted) for p in mounted.rglob("*"))
        result = other.run("destroy", str(other.dir), "--state", str(other.state), "--auto-approve")
        assert result.exit_code == 0, result.output
        assert files and sorted(p.relative_to(mounted) for p in mounted.rglob("*")) == files
        [container] = stack.containers(**{"org.reconciler.role": "deployment"})
        listed = container.exec_run(["ls", "/var/azureml-app/azureml-models/tfserving-mounted/1"]).output.decode()
        assert "half_plus_two" in listed, "the running deployment still sees its model files"
        drift = stack.run("drift", str(stack.dir), "--state", str(stack.state))
        assert drift.exit_code == 0, drift.output
        assert "No changes." in stack.plan().output
        assert NamedStack.score(stack) == PREDICTIONS
    finally:
        other.cleanup()


def test_two_stacks_of_one_name_applied_at_once_get_a_network_each(twins):
    staging, prod = twins
    runs = [subprocess.Popen([sys.executable, "-m", "reconciler", "apply", str(run.dir), "--state", str(run.state),
                              "--auto-approve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}) for run in twins]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    names = [n.name for n in staging.client.networks.list(filters={"label": f"{LABEL_STACK}={staging.name}"})]
    assert len(names) == 2 and len(set(names)) == 2, names
    for run in twins:  # and the next apply of each is a clean no-op (no "network is ambiguous")
        result = run.apply()
        assert "No changes." in result.output
        assert run.score() == PREDICTIONS


def test_long_names_and_an_odd_folder_name_stay_valid_dns_names(tmp_path, docker_client):
    endpoint, deployment = "e" * 31 + "1", "d" * 31 + "2"  # schema-valid: 32 characters each
    run = NamedStack(tmp_path, docker_client, "odd", f"fr aud;ü {secrets.token_hex(3)}", tmp_path / "s.json")
    try:
        for file in ("endpoint.yml", "deployment.yml"):
            run.edit(file, "half-plus-two", endpoint)
        run.edit("deployment.yml", "name: tfserving", f"name: {deployment}")
        run.edit("endpoint.yml", "tfserving: 100", f"{deployment}: 100")
        run.apply()
        records = run.records()
        instance = records[f"deployment.{endpoint}/{deployment}"]["outputs"]["instances"][0]
        gateway = records[f"endpoint.{endpoint}"]["outputs"]["gateway"]
        for name in (instance["name"], gateway["name"]):
            assert len(name) <= 63 and name.replace("-", "").isalnum() and name.isascii() and name == name.lower()
        labels = docker_client.containers.get(instance["id"]).labels
        assert labels[LABEL_STACK] == run.name, "the label keeps the folder's real name"
        outputs = records[f"endpoint.{endpoint}"]["outputs"]
        assert GatewayClient(outputs["port"], outputs["keys"]["primary"]).predictions() == PREDICTIONS
    finally:
        run.cleanup()


def test_default_state_does_not_depend_on_the_working_directory(tmp_path, docker_client, monkeypatch):
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "states"))
    run = NamedStack(tmp_path, docker_client, "repo", f"it-cwd-{secrets.token_hex(3)}", tmp_path / "unused.json")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        monkeypatch.chdir(tmp_path / "a")
        result = run.run("apply", str(run.dir), "--auto-approve")
        assert result.exit_code == 0, result.output
        [state] = list((tmp_path / "states").glob("*/state.json"))
        run.state = state
        port = run.endpoint("half-plus-two")["port"]
        monkeypatch.chdir(tmp_path / "b")
        plan = run.run("plan", str(run.dir), "--detailed-exitcode")
        assert plan.exit_code == 0 and "No changes." in plan.output, plan.output
        request = tmp_path / "request.json"
        request.write_text(SAMPLE)
        invoked = run.run("invoke", "half-plus-two", "--request-file", str(request))  # no --stack/--state
        assert invoked.exit_code == 0, invoked.output
        assert json.loads(invoked.output)["predictions"] == PREDICTIONS
        assert run.endpoint("half-plus-two")["port"] == port
    finally:
        run.cleanup()


def test_a_lost_state_is_refused_a_rebuild_and_recovered_with_port_and_keys(stack, tmp_path):
    stack.apply()
    before = stack.endpoint("half-plus-two")
    ids = {c.id for c in stack.containers()}
    stack.state.unlink()
    for command in ("plan", "apply"):
        extra = ("--auto-approve",) if command == "apply" else ()
        result = stack.run(command, str(stack.dir), "--state", str(stack.state), *extra)
        assert result.exit_code == 1, result.output
        assert "the state was lost" in result.output
        assert f"reconciler state recover {stack.dir}" in result.output
    assert {c.id for c in stack.containers()} == ids and not stack.state.exists()

    result = stack.run("state", "recover", str(stack.dir), "--state", str(stack.state))
    assert result.exit_code == 0, result.output
    after = stack.endpoint("half-plus-two")
    assert (after["port"], after["keys"]) == (before["port"], before["keys"])
    assert GatewayClient(before["port"], before["keys"]["primary"]).predictions() == PREDICTIONS
    plan = stack.plan("--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
