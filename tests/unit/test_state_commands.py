"""The pg backend chosen in the stack settings, and `state pull|push|history|migrate`, through
click's CliRunner and the operations, against the session's own PostgreSQL (tests/pgcluster.py).
The engine is the recording fake: these tests are about where state goes, not about Docker.
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.config.stack import read_backend_settings
from reconciler.errors import ReconcilerError, StackInvalid
from reconciler.operations.apply import APPLIED, ApplyRequest, apply
from reconciler.operations.plan import PlanRequest, open_store, plan
from reconciler.operations.state import push_refusal
from reconciler.planfile import write_plan
from reconciler.state.model import StateFile
from reconciler.state.store import StateStore, default_state_path
from tests.pgcluster import use_pg_backend
from tests.unit.fakes import RecordingDriver
from tests.unit.store_child import start_store_child

STACK = "half-plus-two"


@pytest.fixture(autouse=True)
def state_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "states"))


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def fake_apply(stack_dir, **request):
    fake = RecordingDriver()
    outcome = apply(ApplyRequest(stack_dir, refresh=False, **request), drivers=lambda name: fake)
    assert outcome.status == APPLIED
    return outcome


# -- choosing the backend --------------------------------------------------------------------
def test_backend_is_local_unless_the_settings_say_pg(demo_stack, tmp_path):
    assert read_backend_settings(demo_stack).kind == "local"
    assert open_store(STACK, None, demo_stack).kind == "local"
    use_pg_backend(demo_stack, "s1", name="team-hpt")
    settings = read_backend_settings(demo_stack)
    assert (settings.kind, settings.schema_name, settings.name, settings.conn_str_env) == \
        ("pg", "s1", "team-hpt", "PG_CONN_STR")
    store = open_store(STACK, None, demo_stack)
    assert (store.kind, store.location, store.work_dir) == ("pg", "pg:s1/team-hpt", default_state_path(demo_stack).parent)


def test_a_connection_string_in_the_stack_is_refused_with_its_line(demo_stack):
    (demo_stack / "reconciler.yml").write_text("backend: pg\npg:\n  conn_str: postgresql://u:secret@db/x\n")
    with pytest.raises(StackInvalid) as caught:
        read_backend_settings(demo_stack)
    assert "reconciler.yml:" in str(caught.value) and "environment" in str(caught.value)
    result = run("validate", demo_stack, ok=False)
    assert result.exit_code == 1 and "reconciler.yml:" in result.output


def test_pg_without_a_connection_string_is_a_clear_error(demo_stack, monkeypatch):
    monkeypatch.delenv("PG_CONN_STR", raising=False)
    use_pg_backend(demo_stack, "s1")
    result = run("plan", demo_stack, "--no-refresh", ok=False)
    assert result.exit_code == 1
    assert "the pg state backend needs a connection string in $PG_CONN_STR, which is not set" in result.output


def test_an_unreachable_server_is_a_clear_error(demo_stack, monkeypatch):
    monkeypatch.setenv("PG_CONN_STR", "postgresql://nobody@127.0.0.1:1/none")
    use_pg_backend(demo_stack, "s1")
    result = run("state", "list", "--stack", demo_stack, ok=False)
    assert result.exit_code == 1
    assert "Error: cannot connect to the PostgreSQL state backend at 127.0.0.1:1/none (pg:s1/half-plus-two)" \
        in result.output
    assert "Traceback" not in result.output


def test_state_option_beside_a_pg_backend_is_refused(demo_stack, pg_schema, tmp_path):
    use_pg_backend(demo_stack, pg_schema)
    result = run("plan", demo_stack, "--no-refresh", "--state", tmp_path / "x.json", ok=False)
    assert result.exit_code == 1 and "keeps its state in PostgreSQL" in result.output


# -- apply and plan through pg ---------------------------------------------------------------
def test_apply_writes_to_pg_and_a_saved_plan_from_another_process_applies_there(demo_stack, pg_schema, tmp_path):
    use_pg_backend(demo_stack, pg_schema)
    outcome = fake_apply(demo_stack)
    assert outcome.state_path == f"pg:{pg_schema}/{STACK}"
    assert not default_state_path(demo_stack).exists()  # nothing went to the local file
    assert run("state", "list", "--stack", demo_stack).output.split() == [
        "deployment.half-plus-two/tfserving", "endpoint.half-plus-two", "model.tfserving-mounted:1"]
    (demo_stack / "deployment.yml").write_text(
        (demo_stack / "deployment.yml").read_text().replace("team: demo", "team: ml-platform"))
    planned = plan(PlanRequest(demo_stack, refresh=False))
    assert planned.plan.state_path == f"pg:{pg_schema}/{STACK}"
    write_plan(planned.plan, tmp_path / "tfplan")
    fake = RecordingDriver()
    applied = apply(ApplyRequest(tmp_path / "tfplan"), drivers=lambda name: fake)
    assert applied.status == APPLIED and applied.counts["changed"] == 1
    history = json.loads(run("state", "history", "--stack", demo_stack, "--json").output)
    assert [v["serial"] for v in history] == list(range(1, len(history) + 1))
    assert history[-1]["written_by"].endswith("(apply)")


# -- pull / push -----------------------------------------------------------------------------
def test_push_refusal_rule():
    current = StateFile(STACK, "L", 5)
    assert push_refusal(current, StateFile(STACK, "L", 6)) == ""
    assert push_refusal(StateFile(STACK, "", 0), StateFile(STACK, "M", 1)) == ""
    assert "lineage M" in push_refusal(current, StateFile(STACK, "M", 9))
    assert "serial 4, lower than the stored 5" in push_refusal(current, StateFile(STACK, "L", 4))
    assert "other content" in push_refusal(current, StateFile(STACK, "L", 5, format_version=2))
    assert push_refusal(current, StateFile(STACK, "L", 5)) == ""


def test_pull_then_push_refuses_another_lineage_or_a_lower_serial_without_force(demo_stack, pg_schema, tmp_path):
    use_pg_backend(demo_stack, pg_schema)
    fake_apply(demo_stack)
    pulled = json.loads(run("state", "pull", "--stack", demo_stack).output)
    assert pulled["serial"] == 4 and len(pulled["records"]) == 3
    saved = tmp_path / "pulled.json"
    saved.write_text(json.dumps(pulled))
    assert "nothing pushed" in run("state", "push", saved, "--stack", demo_stack).output

    older = tmp_path / "older.json"
    older.write_text(json.dumps({**pulled, "serial": 2,
                                 "records": [r for r in pulled["records"] if r["address"].startswith("model.")]}))
    refused = run("state", "push", older, "--stack", demo_stack, ok=False)
    assert refused.exit_code == 1 and "serial 2, lower than the stored 4" in refused.output
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**pulled, "lineage": "another-lineage", "serial": 9}))
    refused = run("state", "push", other, "--stack", demo_stack, ok=False)
    assert refused.exit_code == 1 and "lineage another-lineage" in refused.output
    assert json.loads(run("state", "pull", "--stack", demo_stack).output) == pulled  # untouched

    forced = run("state", "push", older, "--stack", demo_stack, "--force").output
    assert "serial 5" in forced  # the stored serial only grows
    assert run("state", "list", "--stack", demo_stack).output.split() == ["model.tfserving-mounted:1"]
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**pulled, "serial": 7}))
    assert "serial 7" in run("state", "push", newer, "--stack", demo_stack).output
    serials = [v["serial"] for v in json.loads(run("state", "history", "--stack", demo_stack, "--json").output)]
    assert serials == [1, 2, 3, 4, 5, 7]
    text = run("state", "history", "--stack", demo_stack).output.splitlines()
    assert text[0].split() == ["SERIAL", "WRITTEN", "(UTC)", "RECORDS", "LINEAGE", "BY"]
    assert [line.split()[0] for line in text[1:]] == ["1", "2", "3", "4", "5", "7"]


def test_push_of_another_stacks_state_is_refused(demo_stack, pg_schema, tmp_path):
    use_pg_backend(demo_stack, pg_schema)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(StateFile("fraud", "L", 3).to_dict()))
    result = run("state", "push", foreign, "--stack", demo_stack, ok=False)
    assert result.exit_code == 1 and "is the state of stack 'fraud', not 'half-plus-two'" in result.output


# -- migrate ---------------------------------------------------------------------------------
def test_migrate_local_to_pg_and_back_keeps_lineage_serial_and_records(demo_stack, pg_schema):
    fake_apply(demo_stack)  # local, at the default path
    local = StateStore(default_state_path(demo_stack), STACK).read()
    (demo_stack / "reconciler.yml").write_text(f"pg:\n  schema_name: {pg_schema}\n")  # still backend: local
    moved = run("state", "migrate", demo_stack, "--to", "pg").output
    assert f"from {default_state_path(demo_stack)} to pg:{pg_schema}/{STACK}" in moved
    use_pg_backend(demo_stack, pg_schema)
    in_pg = open_store(STACK, None, demo_stack).read()
    assert in_pg == local
    refused = run("state", "migrate", demo_stack, "--to", "pg", ok=False)
    assert refused.exit_code == 1 and "already holds a state" in refused.output
    refused = run("state", "migrate", demo_stack, "--to", "local", ok=False)
    assert refused.exit_code == 1 and "already holds a state" in refused.output
    run("state", "migrate", demo_stack, "--to", "local", "--force")
    back = StateStore(default_state_path(demo_stack), STACK).read()
    assert (back.lineage, back.records) == (local.lineage, local.records) and back.serial > local.serial


def test_migrate_with_nothing_to_move_is_an_error(demo_stack, pg_schema):
    (demo_stack / "reconciler.yml").write_text(f"pg:\n  schema_name: {pg_schema}\n")
    result = run("state", "migrate", demo_stack, "--to", "pg", ok=False)
    assert result.exit_code == 1 and "no state to migrate" in result.output


def test_operations_raise_reconciler_errors_not_driver_errors(demo_stack, monkeypatch):
    monkeypatch.setenv("PG_CONN_STR", "not a connection string")
    use_pg_backend(demo_stack, "s1")
    with pytest.raises(ReconcilerError, match="PostgreSQL state backend"):
        open_store(STACK, None, demo_stack).read()


def test_force_unlock_of_a_pg_lock_ends_the_holders_session_only_with_force(demo_stack, pg_schema):
    use_pg_backend(demo_stack, pg_schema)
    holder, held = start_store_child({"kind": "pg", "stack": STACK, "name": STACK, "schema": pg_schema}, "apply")
    try:
        refused = run("force-unlock", held["id"], "--stack", demo_stack, ok=False)
        assert refused.exit_code == 1
        assert f"the lock is held by a running process (PID {held['pid']} on {held['host']}, apply" in refused.output
        locked = run("state", "rm", "model.x:1", "--stack", demo_stack, ok=False)
        assert locked.exit_code == 3 and f"ID: {held['id']}" in locked.output
        freed = run("force-unlock", held["id"], "--stack", demo_stack, "--force")
        assert f"pid {held['pid']}, apply" in freed.output
        store = open_store(STACK, None, demo_stack)
        store.lock("test", timeout=10)  # the holder's session, and its lock, are gone
        store.unlock()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdin.close()
        holder.stdout.close()


def test_local_history_is_the_file_and_its_backup(demo_stack):
    fake_apply(demo_stack)
    lines = run("state", "history", "--stack", demo_stack).output.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["1", "4"]


def test_migrate_of_a_state_whose_gateways_live_elsewhere_is_refused(demo_stack, pg_schema, tmp_path):
    state = tmp_path / "elsewhere" / "state.json"
    fake_apply(demo_stack, state_path=state)
    (state.parent / "gateways").mkdir()  # what the docker driver keeps beside the file
    (demo_stack / "reconciler.yml").write_text(f"pg:\n  schema_name: {pg_schema}\n")
    refused = run("state", "migrate", demo_stack, "--to", "pg", "--state", state, ok=False)
    assert refused.exit_code == 1 and f"are in {state.parent}, but a pg state keeps them in" in refused.output
    run("state", "migrate", demo_stack, "--to", "pg", "--state", state, "--force")
