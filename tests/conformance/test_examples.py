"""Every public Azure ML example the corpus drives, assembled as its script deploys it, has
exactly the outcome its entry in conformance_examples.EXAMPLES says (#13): it plans; it plans,
applies and answers its sample request through the endpoint; or validate and plan both refuse it
with located problems, one of them the precise one named."""
from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conformance_examples import EXAMPLES, Answers, ApplyFails, Plans, Refused, assemble
from reconciler.cli.main import cli

LOCATED = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): ")


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def variables(example) -> list[str]:
    return [f"--var={name}={value}" for name, value in example.vars.items()]


def plan(example, stack: Path, state: Path):
    return run("plan", str(stack), "--no-refresh", "--state", str(state), *variables(example))


def problems(output: str, stack: Path) -> list[str]:
    """The `file:line: ...` lines of an output, with paths relative to the stack."""
    prefix = f"{stack}/"
    return [line[len(prefix):] for line in output.splitlines() if line.startswith(prefix) and LOCATED.match(line)]


def by_outcome(kind):
    return [pytest.param(e, id=e.id) for e in EXAMPLES if isinstance(e.expect, kind)]


@pytest.mark.parametrize("example", by_outcome(Plans))
def test_plans(example, online, tmp_path, record):
    stack = assemble(example, online)
    result = plan(example, stack, tmp_path / "state.json")
    assert result.exit_code == 0, result.output
    assert "Plan: " in result.output and '+ deployment "' in result.output
    assert any(stand_in.rpartition(":")[0] in result.output for stand_in in example.images.values()) \
        or not example.images
    record(example, "plans", _warning(result.output).replace(f"{stack}/", ""))


@pytest.mark.parametrize("example", by_outcome(Refused))
def test_refused_precisely(example, online, tmp_path, record):
    stack = assemble(example, online)
    planned = plan(example, stack, tmp_path / "state.json")
    validated = run("validate", str(stack), *variables(example))
    assert planned.exit_code == 1 and validated.exit_code == 1, planned.output + validated.output
    found = problems(planned.output, stack)
    assert found == problems(validated.output, stack), "validate and plan must refuse alike"
    precise = [line for line in found if line.startswith(f"{example.expect.file}:") and example.expect.fragment in line]
    assert len(precise) == 1, "\n".join(found)
    assert len(found) == example.expect.count, "\n".join(found)
    assert not (tmp_path / "state.json").exists()
    record(example, "refused", precise[0])


@pytest.mark.integration
@pytest.mark.parametrize("example", by_outcome(Answers))
def test_answers_through_the_endpoint(example, online, tmp_path, record, docker_client):
    expect: Answers = example.expect
    stack = assemble(example, online)
    state = tmp_path / "state.json"
    with destroyed_afterwards(example, stack, state):
        if expect.torchserve_archive:
            tiny_archive_in_place_of(docker_client, stack / expect.torchserve_archive, tmp_path)
        planned = plan(example, stack, state)
        assert planned.exit_code == 0, planned.output
        applied = run("apply", str(stack), "--state", str(state), "--auto-approve", *variables(example))
        assert applied.exit_code == 0, applied.output
        if expect.upload:
            answer = upload(state, expect.endpoint, expect.upload[0], [stack / name for name in expect.upload[1:]])
            assert answer == expect.expected, answer
            record(example, "answers", f"`curl -F {expect.upload[0]}=@{expect.upload[1]} ...` (multipart) answers "
                                       f"`{json.dumps(expect.expected)}`")
            return
        for deployment, request, expected in ((expect.deployment, expect.request, expect.expected),) + expect.also:
            header = ("--deployment", deployment) if deployment else ()
            invoked = run("invoke", expect.endpoint, "--request-file", str(stack / request), "--state", str(state),
                          *header)
            assert invoked.exit_code == 0, invoked.output
            assert json.loads(invoked.output) == expected, (deployment, request)
        record(example, "answers", f"`invoke {expect.endpoint} --request-file {expect.request}` answers "
                                   f"`{json.dumps(expect.expected)}`")


@pytest.mark.integration
@pytest.mark.parametrize("example", by_outcome(ApplyFails))
def test_apply_fails(example, online, tmp_path, record, docker_client):
    expect: ApplyFails = example.expect
    stack = assemble(example, online)
    state = tmp_path / "state.json"
    with destroyed_afterwards(example, stack, state):
        planned = plan(example, stack, state)
        assert planned.exit_code == 0, planned.output
        applied = run("apply", str(stack), "--state", str(state), "--auto-approve", *variables(example))
        assert applied.exit_code == 1 and expect.fragment in applied.output, applied.output
        record(example, "refused", f"apply fails: `{expect.fragment}`")


@contextlib.contextmanager
def destroyed_afterwards(example, stack: Path, state: Path):
    """Whatever the test found, what it applied is destroyed (and the destroy must succeed)."""
    try:
        yield
    finally:
        if state.exists():
            destroyed = run("destroy", str(stack), "--state", str(state), "--auto-approve", *variables(example))
            assert destroyed.exit_code == 0, destroyed.output


def upload(state: Path, endpoint: str, field: str, files: list[Path]):
    """POST FILES as multipart/form-data to ENDPOINT's scoring URI with its key (what the script's
    `curl -F FIELD=@FILE -H "Authorization: Bearer $KEY" $SCORING_URL` does); the JSON answer."""
    import urllib.request
    import uuid
    [outputs] = [r["outputs"] for r in json.loads(state.read_text())["records"] if r["address"] == f"endpoint.{endpoint}"]
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{path.name}\"\r\n"
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
                    for path in files) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(outputs["scoring_uri"], data=body, method="POST", headers={
        "Authorization": f"Bearer {outputs['keys']['primary']}",
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def tiny_archive_in_place_of(client, target: Path, tmp_path: Path) -> None:
    """A tiny real TorchServe archive named like `target` (its model: tests/integration/torchserve)."""
    from torchserve_stack import TORCHSERVE_IMAGE, make_archives
    try:
        client.images.get(TORCHSERVE_IMAGE)
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound
        pytest.skip(f"image {TORCHSERVE_IMAGE} missing: run images/build.sh")
    made = make_archives(client, tmp_path / "archives", [f"out/{target.stem}:0.5,-0.5:0"])
    shutil.copy2(made / "out" / target.name, target)


def _warning(output: str) -> str:
    warnings = [line.strip() for line in output.splitlines() if "no live traffic" in line.lower()]
    return warnings[0] if warnings else ""


def test_every_example_has_one_entry_and_a_stack_of_its_own():
    ids = [e.id for e in EXAMPLES]
    stacks = [e.stack for e in EXAMPLES]
    assert len(set(ids)) == len(ids) and len(set(stacks)) == len(stacks)
    scripts = {e.script for e in EXAMPLES if e.script}
    assert len(scripts) == 16, sorted(scripts)
