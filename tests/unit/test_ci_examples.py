"""The GitHub Actions examples in examples/ci/ parse, and every `reconciler ...` they run names
a real command with real options (so that a renamed flag breaks a test, not a user's pipeline)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from reconciler.cli.main import load_command

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "ci").glob("*.yml"))


def invocations(workflow: dict) -> list[list[str]]:
    found = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            script = step.get("run", "").replace("\\\n", " ")
            for line in script.splitlines():
                for match in re.finditer(r"(?:^|[\s(])reconciler (.*)", line):
                    command = re.split(r"\s(?:\||>|;|&&|\|\|)\s?", match.group(1))[0]
                    found.append(shlex.split(command))
    return found


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_workflow_uses_real_commands_and_options(path):
    workflow = yaml.safe_load(path.read_text())
    assert workflow["jobs"] and (workflow.get("on") or workflow.get(True))  # YAML 1.1 reads `on` as True
    calls = invocations(workflow)
    assert calls, f"{path.name} runs no reconciler command"
    for tokens in calls:
        command, rest = load_command(tokens[0]), tokens[1:]
        while isinstance(command, click.Group) and rest and rest[0] in command.commands:
            command, rest = command.commands[rest[0]], rest[1:]  # `state history --stack`
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for token in rest:
            if token.startswith("-"):
                assert token.split("=")[0] in options, f"{path.name}: reconciler {tokens[0]} has no {token}"


def test_the_three_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"plan-on-pr.yml", "apply-on-main.yml", "nightly-drift.yml"}


def test_the_pg_state_example_exists():
    assert "apply-with-pg-state.yml" in {p.name for p in EXAMPLES}


def test_the_remote_engine_example_reaches_the_engine_over_tls():
    workflow = yaml.safe_load((EXAMPLES[0].parent / "apply-remote-engine.yml").read_text())
    env = workflow["env"]
    assert env["DOCKER_HOST"].startswith("tcp://") and env["DOCKER_HOST"].endswith(":2376")
    assert env["DOCKER_TLS_VERIFY"] == "1"
    steps = " ".join(step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"])
    assert all(f"$dir/{name}" in steps for name in ("ca.pem", "cert.pem", "key.pem")), "DOCKER_CERT_PATH layout"
    assert "DOCKER_CERT_PATH=" in steps and any(call[0] == "invoke" for call in invocations(workflow))
