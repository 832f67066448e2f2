"""`reconciler plan`, `show`, `state list|show|rm` and `force-unlock` through click's CliRunner.

Every test plans a copy of stacks/half-plus-two with --no-refresh and a state file in
tmp_path, so nothing here needs a container engine.
"""
from __future__ import annotations

import json
import re
import stat

import pytest
from click.testing import CliRunner

from fakes import timeless
from reconciler.cli.main import cli
from reconciler.config.stack import load_stack
from reconciler.state.model import StateRecord
from reconciler.state.store import StateStore

STACK = "half-plus-two"
ANSI = re.compile(r"\x1b\[")
PRIMARY, SECONDARY, API_KEY = "pr1mary-k3y-value", "s3condary-k3y-value", "api-k3y-value"
ENDPOINT, DEPLOYMENT = "endpoint.half-plus-two", "deployment.half-plus-two/tfserving"


@pytest.fixture
def state_path(tmp_path):
    return tmp_path / "state" / f"{STACK}.json"


@pytest.fixture
def run(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)

    def invoke(*args):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return invoke


def plan_args(stack, state_path, *extra):
    return ("plan", stack, "--state", state_path, "--no-refresh", *extra)


def write_state(state_path, records) -> StateStore:
    """A state file written the way apply writes it: lock, write, unlock."""
    store = StateStore(state_path, STACK)
    store.lock("test setup")
    with store:
        state = store.read()
        for record in records:
            state = state.with_record(record)
        store.write(state)
    return store


def secret_records() -> list[StateRecord]:
    deployment = {"name": "tfserving", "image": "reconciler/demo-tfserving:latest",
                  "environment_variables": {"API_KEY": API_KEY, "MODEL_NAME": "half_plus_two"},
                  "plain_environment_variables": ["MODEL_NAME"]}
    endpoint = {"name": STACK, "auth_mode": "key", "traffic": {"tfserving": 100}}
    return [
        StateRecord(DEPLOYMENT, "docker", deployment, "sha256:d", driver_ids={"container": "abc123"}),
        StateRecord(ENDPOINT, "docker", endpoint, "sha256:e", depends_on=(DEPLOYMENT,),
                    outputs={"scoring_uri": "http://127.0.0.1:18080/score",
                             "keys": {"primary": PRIMARY, "secondary": SECONDARY}}),
    ]


def matching_records(stack) -> list[StateRecord]:
    """Records equal to the desired specs: what state looks like right after an apply."""
    graph = load_stack(stack)
    return [StateRecord(str(r.address), "docker", r.spec, r.spec_hash, tuple(map(str, r.depends_on)))
            for r in graph.resources.values()]


# -- plan -----------------------------------------------------------------------------------
def test_plan_of_a_new_stack_adds_three_and_touches_no_state(run, demo_stack, state_path):
    result = run(*plan_args(demo_stack, state_path))
    assert result.exit_code == 0, result.output
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in result.output
    assert "+ model \"tfserving-mounted:1\" {" in result.output
    assert not ANSI.search(result.output), "no colour when stdout is not a terminal"
    assert not state_path.parent.exists() or list(state_path.parent.iterdir()) == []


def test_no_color_env_gives_plain_text(run, demo_stack, state_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert not ANSI.search(run(*plan_args(demo_stack, state_path)).output)


def test_detailed_exitcode_is_2_with_changes(run, demo_stack, state_path):
    result = run(*plan_args(demo_stack, state_path, "--detailed-exitcode"))
    assert result.exit_code == 2
    assert "Plan: 3 to add" in result.output


def test_detailed_exitcode_is_0_when_state_matches(run, demo_stack, state_path):
    write_state(state_path, matching_records(demo_stack))
    result = run(*plan_args(demo_stack, state_path, "--detailed-exitcode"))
    assert result.exit_code == 0, result.output
    assert "No changes." in result.output


def test_json_plan(run, demo_stack, state_path):
    result = run(*plan_args(demo_stack, state_path, "--json"))
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["summary"] == {"add": 3, "change": 0, "destroy": 0}
    assert (data["stack"], data["mode"], data["state_lineage"], data["state_serial"]) == (STACK, "apply", "", 0)
    assert [c["address"] for c in data["changes"]] == ["model.tfserving-mounted:1", DEPLOYMENT, ENDPOINT]


def test_markdown_plan(run, demo_stack, state_path):
    result = run(*plan_args(demo_stack, state_path, "--markdown"))
    assert result.exit_code == 0
    assert result.output.startswith(f"### reconciler plan for `{STACK}`")
    assert "**Plan: 3 to add, 0 to change, 0 to destroy.**" in result.output
    assert f"| + create | `{ENDPOINT}` | not-in-state |" in result.output


def test_saved_plan_shows_the_same_plan(run, demo_stack, state_path, tmp_path):
    plan_file = tmp_path / "tfplan"
    planned = run(*plan_args(demo_stack, state_path, "-out", plan_file))
    assert planned.exit_code == 0
    assert f"Saved the plan to: {plan_file}" in planned.output
    assert stat.S_IMODE(plan_file.stat().st_mode) == 0o600
    shown = run("show", plan_file)
    assert shown.exit_code == 0
    assert planned.output.startswith(shown.output.rstrip("\n") + "\n\nSaved the plan to:")
    as_json = json.loads(run("show", plan_file, "--json").stdout)
    # The saved file keeps values (apply needs them); what is shown is masked (#12).
    from reconciler.render.masking import masked_plan_dict
    assert as_json == masked_plan_dict(json.loads(plan_file.read_text())["plan"])


def test_saved_json_plan_equals_printed_json(run, demo_stack, state_path, tmp_path):
    plan_file = tmp_path / "tfplan"
    printed = json.loads(run(*plan_args(demo_stack, state_path, "--json", "-out", plan_file)).stdout)
    assert printed == json.loads(run("show", plan_file, "--json").stdout)


def test_saved_plan_is_applied_to_the_state_it_was_made_against(run, demo_stack, state_path, tmp_path,
                                                                 monkeypatch):
    """Bug 2: `plan --state X -out P` then `apply P` (no --state) applied to ./state/<stack>.json."""
    from fakes import RecordingDriver
    monkeypatch.setattr("reconciler.drivers.registry.driver_named", lambda name: RecordingDriver())
    plan_file = tmp_path / "tfplan"
    assert run(*plan_args(demo_stack, state_path, "-out", plan_file)).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run("apply", plan_file)
    assert result.exit_code == 0, result.output
    model = "model.tfserving-mounted:1"
    assert timeless(result.output).endswith(progress_of([(model, "create"), (DEPLOYMENT, "create"), (ENDPOINT, "create")]))
    assert sorted(StateStore(state_path, STACK).read().records) == [DEPLOYMENT, ENDPOINT, model]
    assert not (elsewhere / "state").exists()


def test_apply_from_empty_starts_the_endpoint_at_once_and_routes_it_last(run, demo_stack, state_path, monkeypatch):
    """#16: with a driver that re-points gateways cheaply (docker), the endpoint is created
    beside its deployment and routed to it after; the route step is not counted."""
    from fakes import RecordingDriver
    monkeypatch.setattr("reconciler.drivers.registry.driver_named",
                        lambda name: RecordingDriver(routes_after_create=True))
    result = run("apply", demo_stack, "--state", state_path, "--auto-approve", "--no-refresh",
                 "--parallelism", "1")
    assert result.exit_code == 0, result.output
    model = "model.tfserving-mounted:1"
    assert timeless(result.output).endswith(progress_of([(model, "create"), (ENDPOINT, "create"), (DEPLOYMENT, "create"),
                                               (ENDPOINT, "route")]))


def progress_of(steps: list[tuple[str, str]], added: int = 3) -> str:
    """The end of an apply's output (`timeless`) whose steps are (address, operation)."""
    starting = {"create": "Creating...", "route": "Routing to its deployments..."}
    finished = {"create": "Creation complete after 0s", "route": "Routing complete after 0s"}
    lines = "".join(f"{address}: {starting[op]}\n{address}: {finished[op]}\n" for address, op in steps)
    return f"\n\n{lines}\nApply complete! Resources: {added} added, 0 changed, 0 destroyed.\n"


def test_saved_plan_refuses_a_state_option_naming_another_file(run, demo_stack, state_path, tmp_path):
    plan_file = tmp_path / "tfplan"
    assert run(*plan_args(demo_stack, state_path, "-out", plan_file)).exit_code == 0
    other = tmp_path / "other.json"
    result = run("apply", plan_file, "--state", other)
    assert result.exit_code == 1
    assert (f"Error: saved plan {plan_file} was made against state {state_path}, not {other}\n"
            f"  apply it without --state (it applies to {state_path})") in result.stderr
    assert not other.exists() and not state_path.exists()


@pytest.mark.parametrize("option", ["--target", "--replace"])
def test_unknown_address_is_a_clear_error(run, demo_stack, state_path, option):
    result = run(*plan_args(demo_stack, state_path, option, "endpoint.nope"))
    assert result.exit_code == 1
    assert "Error: no resource at address 'endpoint.nope'" in result.stderr
    assert f"known addresses: {DEPLOYMENT}, {ENDPOINT}, model.tfserving-mounted:1" in result.stderr


def test_target_brings_its_dependencies(run, demo_stack, state_path):
    result = run(*plan_args(demo_stack, state_path, "--target", DEPLOYMENT))
    assert result.exit_code == 0
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in result.output
    assert ENDPOINT not in result.output


def test_destroy_with_empty_state_has_no_changes(run, demo_stack, state_path):
    result = run(*plan_args(demo_stack, state_path, "--destroy", "--detailed-exitcode"))
    assert result.exit_code == 0
    assert "No changes." in result.output


def test_destroy_plans_to_delete_everything_in_state(run, demo_stack, state_path):
    write_state(state_path, matching_records(demo_stack))
    result = run(*plan_args(demo_stack, state_path, "--destroy"))
    assert "Plan: 0 to add, 0 to change, 3 to destroy." in result.output


def test_plan_with_corrupt_state_fails_and_names_the_backup(run, demo_stack, state_path):
    store = write_state(state_path, [])
    write_state(state_path, matching_records(demo_stack))  # second write: a backup exists
    state_path.write_text('{"format_version": 1, "stack": ')
    result = run(*plan_args(demo_stack, state_path))
    assert result.exit_code == 1
    assert f"Error: state file {state_path} is corrupt" in result.stderr
    assert str(store.backup_path) in result.stderr
    assert state_path.read_text() == '{"format_version": 1, "stack": '


def test_plan_refuses_the_state_of_another_stack(run, demo_stack, state_path):
    other = StateStore(state_path, "other-stack")
    other.lock("test")
    with other:
        other.write(other.read())
    result = run(*plan_args(demo_stack, state_path))
    assert result.exit_code == 1
    assert "belongs to stack 'other-stack'" in result.stderr


# -- state list / show / rm --------------------------------------------------------------------
def test_state_list(run, state_path):
    write_state(state_path, secret_records())
    result = run("state", "list", "--state", state_path)
    assert result.exit_code == 0
    assert result.output.splitlines() == [DEPLOYMENT, ENDPOINT]


def test_state_list_by_stack_directory(run, demo_stack, state_path):
    write_state(state_path, secret_records())
    result = run("state", "list", "--stack", demo_stack, "--state", state_path)
    assert result.output.splitlines() == [DEPLOYMENT, ENDPOINT]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_state_show_masks_keys_and_secret_env_vars(run, state_path, as_json):
    write_state(state_path, secret_records())
    extra = ("--json",) if as_json else ()
    endpoint = run("state", "show", ENDPOINT, "--state", state_path, *extra)
    deployment = run("state", "show", DEPLOYMENT, "--state", state_path, *extra)
    assert endpoint.exit_code == deployment.exit_code == 0
    for secret in (PRIMARY, SECONDARY, API_KEY):
        assert secret not in endpoint.output + deployment.output
    assert "(sensitive value)" in endpoint.output and "(sensitive value)" in deployment.output
    assert "http://127.0.0.1:18080/score" in endpoint.output  # not a secret
    assert "half_plus_two" in deployment.output
    if as_json:
        data = json.loads(endpoint.stdout)
        assert data["outputs"]["keys"] == {"primary": "(sensitive value)", "secondary": "(sensitive value)"}


def test_show_stack_masks_state_too(run, demo_stack, state_path):
    write_state(state_path, secret_records())
    for extra in ((), ("--json",)):
        result = run("show", demo_stack, "--state", state_path, *extra)
        assert result.exit_code == 0
        assert ENDPOINT in result.output
        for secret in (PRIMARY, SECONDARY, API_KEY):
            assert secret not in result.output


def test_state_show_unknown_address(run, state_path):
    write_state(state_path, secret_records())
    result = run("state", "show", "endpoint.nope", "--state", state_path)
    assert result.exit_code == 1
    assert "no resource at address 'endpoint.nope' in state" in result.stderr


def test_state_rm_forgets_a_record_and_writes_a_new_serial(run, state_path):
    store = write_state(state_path, secret_records())
    before = store.read()
    result = run("state", "rm", DEPLOYMENT, "--state", state_path)
    assert result.exit_code == 0, result.output
    assert f"Removed {DEPLOYMENT}" in result.output
    after = store.read()
    assert set(after.records) == {ENDPOINT}
    assert (after.serial, after.lineage) == (before.serial + 1, before.lineage)
    assert json.loads(store.backup_path.read_text())["serial"] == before.serial
    assert not store.lock_path.exists()


def test_state_rm_unknown_address_changes_nothing(run, state_path):
    store = write_state(state_path, secret_records())
    before = state_path.read_bytes()
    result = run("state", "rm", "endpoint.nope", "--state", state_path)
    assert result.exit_code == 1
    assert state_path.read_bytes() == before
    assert not store.lock_path.exists()


def test_state_rm_on_locked_state_exits_3_and_names_the_holder(run, state_path, hold_lock):
    write_state(state_path, secret_records())
    before = state_path.read_bytes()
    held = hold_lock(state_path, STACK, "apply")
    result = run("state", "rm", DEPLOYMENT, "--state", state_path)
    assert result.exit_code == 3
    assert f"Error: state {state_path} is locked" in result.stderr
    assert f"ID: {held.info['id']}" in result.stderr
    assert f"PID: {held.info['pid']}" in result.stderr
    assert "Operation: apply" in result.stderr
    assert state_path.read_bytes() == before


def test_state_rm_waits_with_lock_timeout(run, state_path, hold_lock):
    write_state(state_path, secret_records())
    hold_lock(state_path, STACK, "apply", seconds=0.5)
    result = run("state", "rm", DEPLOYMENT, "--state", state_path, "--lock-timeout", "10")
    assert result.exit_code == 0, result.output


# -- force-unlock ------------------------------------------------------------------------------
def test_force_unlock_with_the_wrong_id_exits_1(run, state_path, hold_lock):
    write_state(state_path, [])
    held = hold_lock(state_path, STACK, "apply")
    result = run("force-unlock", "not-the-id", "--state", state_path)
    assert result.exit_code == 1
    assert f"does not match the current lock {held.info['id']}" in result.stderr
    assert StateStore(state_path, STACK).lock_holder().id == held.info["id"]


def test_force_unlock_with_the_id_from_the_lock_error(run, state_path, hold_lock):
    held = hold_lock(state_path, STACK, "apply")  # no state file yet: the first apply hangs
    locked = run("state", "rm", DEPLOYMENT, "--stack", STACK, "--state", state_path)
    assert locked.exit_code == 3
    command = re.search(r"reconciler (force-unlock .*)", locked.stderr).group(1).split()
    result = run(*command)
    assert result.exit_code == 0, result.output
    assert f"pid {held.info['pid']}, apply" in result.output
    assert not StateStore(state_path, STACK).lock_path.exists()


def test_force_unlock_when_not_locked_exits_1(run, state_path):
    write_state(state_path, [])
    result = run("force-unlock", "some-id", "--state", state_path)
    assert result.exit_code == 1
    assert "is not locked" in result.stderr


def test_force_unlock_refuses_a_live_holder_without_force(run, state_path, hold_lock):
    write_state(state_path, [])
    held = hold_lock(state_path, STACK, "apply")
    result = run("force-unlock", held.info["id"], "--state", state_path)
    assert result.exit_code == 1
    assert f"the lock is held by a running process (PID {held.info['pid']} on this machine" in result.stderr
    assert StateStore(state_path, STACK).lock_holder().id == held.info["id"]
