"""The state store: atomic writes with serial/lineage/backup, the flock-based lock, corruption.

Locks are taken from a child process (fixture `hold_lock`) so that the holder's PID is a
different process's, as it is when two people run reconciler at once.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import time
import uuid
from pathlib import Path

import pytest

from reconciler.errors import ReconcilerError, StateCorrupt, StateLocked
from reconciler.state import store as store_module
from reconciler.state.model import StateFile, StateRecord
from reconciler.state.store import StateStore

STACK = "demo"


def record(address: str, **spec) -> StateRecord:
    return StateRecord(address, "docker", spec, "sha256:" + "0" * 64)


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(tmp_path / "state" / f"{STACK}.json", STACK)


def write(store: StateStore, state: StateFile) -> StateFile:
    store.lock("test")
    with store:
        return store.write(state)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# -- atomic write ---------------------------------------------------------------------------
def test_missing_file_reads_as_empty_state_without_lineage(store):
    state = store.read()
    assert (state.stack, state.lineage, state.serial, state.records) == (STACK, "", 0, {})
    assert not store.path.exists()


def test_first_write_assigns_lineage_and_serial_1(store):
    written = write(store, store.read().with_record(record("model.m:1", digest="a")))
    assert written.serial == 1
    assert uuid.UUID(written.lineage)
    assert store.read() == written
    assert not store.backup_path.exists(), "nothing to back up before the first write"


def test_each_write_adds_one_to_serial_and_keeps_lineage(store):
    first = write(store, store.read())
    second = write(store, store.read().with_record(record("model.m:1", digest="a")))
    third = write(store, store.read().without("model.m:1"))
    assert [first.serial, second.serial, third.serial] == [1, 2, 3]
    assert first.lineage == second.lineage == third.lineage
    assert store.read().serial == 3


def test_backup_holds_the_previous_version_byte_for_byte(store):
    write(store, store.read().with_record(record("model.m:1", digest="a")))
    before = store.path.read_bytes()
    write(store, store.read().with_record(record("model.m:1", digest="b")))
    assert store.backup_path.read_bytes() == before
    backup = json.loads(store.backup_path.read_text())
    assert backup["serial"] == 1 and backup["records"][0]["spec"] == {"digest": "a"}
    assert store.read().records["model.m:1"].spec == {"digest": "b"}


def test_state_and_backup_are_private_even_with_a_lax_umask(store):
    old_umask = os.umask(0)
    try:
        write(store, store.read())
        store.path.chmod(0o644)  # as if someone loosened it; the next write must not keep that
        write(store, store.read())
    finally:
        os.umask(old_umask)
    assert mode(store.path) == 0o600
    assert mode(store.backup_path) == 0o600


def test_writes_leave_no_temp_files_and_unlock_removes_the_lock_file(store):
    for digest in "abc":
        write(store, store.read().with_record(record("model.m:1", digest=digest)))
    assert leftovers(store.path.parent) == []
    assert sorted(p.name for p in store.path.parent.iterdir()) == [f"{STACK}.json", f"{STACK}.json.backup"]


def test_failed_rename_keeps_the_old_file_and_leaves_no_temp_file(store, monkeypatch):
    write(store, store.read().with_record(record("model.m:1", digest="a")))
    before = store.path.read_bytes()

    def refuse(source, target):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(store_module.os, "replace", refuse)
    store.lock("test")
    with store, pytest.raises(OSError):
        store.write(store.read().with_record(record("model.m:1", digest="b")))
    assert store.path.read_bytes() == before
    assert leftovers(store.path.parent) == []


def test_write_without_the_lock_is_refused(store):
    with pytest.raises(RuntimeError, match="without holding the lock"):
        store.write(store.read())
    assert not store.path.exists()


def test_state_file_is_json_with_records_sorted_by_address(store):
    state = store.read()
    for address in ("endpoint.ep", "deployment.ep/blue", "model.m:1"):
        state = state.with_record(record(address, x=1))
    write(store, state)
    data = json.loads(store.path.read_text())
    assert data["format_version"] == 1 and data["stack"] == STACK
    assert [r["address"] for r in data["records"]] == ["deployment.ep/blue", "endpoint.ep", "model.m:1"]


# -- lock -----------------------------------------------------------------------------------
def test_lock_file_says_who_holds_it_and_is_private(store):
    info = store.lock("plan")
    try:
        assert store.lock_holder() == info
        assert (info.operation, info.pid) == ("plan", os.getpid())
        assert mode(store.lock_path) == 0o600
    finally:
        store.unlock()
    assert not store.lock_path.exists()
    assert store.lock_holder() is None


def test_flock_conflicts_within_one_process_too(store):
    # flock belongs to the open file description, so two stores in one process exclude each
    # other as well; the cross-process tests below are the case that matters.
    store.lock("first")
    try:
        with pytest.raises(StateLocked):
            StateStore(store.path, STACK).lock("second")
    finally:
        store.unlock()


def test_lock_held_by_another_process_is_refused_with_the_holder_in_the_hint(store, hold_lock):
    held = hold_lock(store.path, STACK, "apply")
    with pytest.raises(StateLocked) as caught:
        StateStore(store.path, STACK).lock("state rm")
    hint = caught.value.hint
    assert held.info["pid"] == held.process.pid != os.getpid()
    assert f"ID: {held.info['id']}" in hint
    assert f"PID: {held.info['pid']}" in hint
    assert "Operation: apply" in hint
    assert f"reconciler force-unlock {held.info['id']} --stack {STACK} --state {store.path} --force" in hint


def test_lock_timeout_waits_for_the_holder_to_release(store, hold_lock):
    hold_lock(store.path, STACK, "apply", seconds=0.6)
    started = time.monotonic()
    waiter = StateStore(store.path, STACK)
    info = waiter.lock("plan", timeout=10)
    try:
        assert time.monotonic() - started >= 0.3
        assert waiter.lock_holder() == info
    finally:
        waiter.unlock()


def test_lock_timeout_too_short_still_fails(store, hold_lock):
    held = hold_lock(store.path, STACK, "apply")
    started = time.monotonic()
    with pytest.raises(StateLocked, match="is locked"):
        StateStore(store.path, STACK).lock("plan", timeout=0.5)
    assert time.monotonic() - started >= 0.5
    held.release()


def test_lock_is_released_when_the_holder_is_killed(store, hold_lock):
    held = hold_lock(store.path, STACK, "apply")
    os.kill(held.process.pid, signal.SIGKILL)
    held.process.wait(timeout=10)
    # The dead holder's note is still on disk, but the kernel dropped its flock.
    assert store.lock_holder().pid == held.process.pid
    info = store.lock("apply")
    try:
        assert store.lock_holder() == info
    finally:
        store.unlock()


def test_force_unlock_with_the_wrong_id_is_refused(store, hold_lock):
    held = hold_lock(store.path, STACK, "apply")
    with pytest.raises(ReconcilerError, match="does not match"):
        StateStore(store.path, STACK).force_unlock(str(uuid.uuid4()))
    assert store.lock_holder().id == held.info["id"]
    with pytest.raises(StateLocked):
        StateStore(store.path, STACK).lock("plan")


def test_force_unlock_refuses_while_the_holder_is_alive(store, hold_lock):
    held = hold_lock(store.path, STACK, "apply")
    with pytest.raises(ReconcilerError) as caught:
        StateStore(store.path, STACK).force_unlock(held.info["id"])
    assert f"the lock is held by a running process (PID {held.info['pid']} on this machine, apply" in str(caught.value)
    assert f"kill {held.info['pid']}" in caught.value.hint
    assert store.lock_holder().id == held.info["id"]
    with pytest.raises(StateLocked):
        StateStore(store.path, STACK).lock("plan")


def test_force_unlock_of_a_dead_holders_note_needs_no_force(store, hold_lock):
    held = hold_lock(store.path, STACK, "apply")
    os.kill(held.process.pid, signal.SIGKILL)
    held.process.wait(timeout=10)
    assert StateStore(store.path, STACK).force_unlock(held.info["id"]).pid == held.info["pid"]
    assert not store.lock_path.exists()


def test_force_unlock_with_the_right_id_and_force_removes_the_lock(store, hold_lock):
    held = hold_lock(store.path, STACK, "apply")
    holder = StateStore(store.path, STACK).force_unlock(held.info["id"], force=True)
    assert holder.pid == held.info["pid"]
    assert not store.lock_path.exists()
    info = store.lock("apply")  # a new lock file; the hung holder keeps only the unlinked one
    try:
        assert store.lock_holder() == info
    finally:
        store.unlock()
    held.release()
    assert held.process.returncode == 0


def test_force_unlock_when_nothing_is_locked(store):
    with pytest.raises(ReconcilerError, match="is not locked"):
        store.force_unlock("anything")


# -- corruption and the wrong stack -----------------------------------------------------------
CORRUPTIONS = {
    "truncated-json": b'{"format_version": 1, "stack": "demo", "lin',
    "not-utf8": b"\xff\xfe\x00garbage",
    "json-array": b"[]",
    "json-null": b"null",
    "missing-keys": b'{"format_version": 1}',
    "future-format": b'{"format_version": 99, "stack": "demo", "lineage": "x", "serial": 1, "records": []}',
    "bad-record": b'{"format_version": 1, "stack": "demo", "lineage": "x", "serial": 1, "records": [7]}',
    "bad-serial": b'{"format_version": 1, "stack": "demo", "lineage": "x", "serial": "many", "records": []}',
}


@pytest.mark.parametrize("content", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_state_names_the_backup_and_is_left_untouched(store, content):
    write(store, store.read())
    write(store, store.read())
    store.path.write_bytes(content)
    with pytest.raises(StateCorrupt) as caught:
        store.read()
    assert str(store.path) in caught.value.summary
    assert str(store.backup_path) in caught.value.hint
    assert store.path.read_bytes() == content


def test_corrupt_state_without_backup_says_there_is_none(store):
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b"{")
    with pytest.raises(StateCorrupt, match="is corrupt") as caught:
        store.read()
    assert "no backup" in caught.value.hint
    assert store.path.read_bytes() == b"{"


def test_state_of_another_stack_is_refused(store):
    other = StateStore(store.path, "other-stack")
    write(other, other.read())
    with pytest.raises(ReconcilerError, match="belongs to stack 'other-stack', not 'demo'") as caught:
        store.read()
    assert not isinstance(caught.value, StateCorrupt)
    assert "--state" in caught.value.hint
