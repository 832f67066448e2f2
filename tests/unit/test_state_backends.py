"""The lock and crash behaviour every state backend must have, run against the local file and
against PostgreSQL (the session's own server, tests/pgcluster.py; skipped when PostgreSQL is not
installed). Holders and crashing writers are child processes (tests/unit/store_child.py), as two
reconciler runs are.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.errors import ReconcilerError, StateLocked
from reconciler.state.model import StateFile, StateRecord
from reconciler.state.store import StateStore
from tests.unit.store_child import start_store_child

STACK = "demo"

@dataclass
class Backend:
    kind: str
    spec: dict

    def open(self):
        if self.kind == "pg":
            from reconciler.state.pg import PgStateStore
            return PgStateStore(STACK, self.spec["name"], Path("/tmp"), schema=self.spec["schema"])
        return StateStore(Path(self.spec["path"]), STACK)


@pytest.fixture(params=["local", "pg"])
def backend(request, tmp_path) -> Backend:
    if request.param == "pg":
        schema = request.getfixturevalue("pg_schema")
        return Backend("pg", {"kind": "pg", "stack": STACK, "name": STACK, "schema": schema})
    return Backend("local", {"kind": "local", "stack": STACK, "path": str(tmp_path / "state" / "demo.json")})


@pytest.fixture
def child():
    started: list[subprocess.Popen] = []

    def start(backend: Backend, mode: str = "hold", operation: str = "apply"):
        process, info = start_store_child(backend.spec, operation, mode)
        started.append(process)
        return process, info

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        process.stdin.close()
        process.stdout.close()


def release(process: subprocess.Popen) -> None:
    process.stdin.close()
    assert process.stdout.read().strip() == "released"
    process.wait(timeout=10)


def lock_when_free(store, seconds: float = 10.0):
    """Lock `store` once its holder's lock is gone: at once for local; pg's server drops a dead
    session's lock when it sees the socket close, within moments."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return store.lock("apply")
        except StateLocked:
            assert time.monotonic() < deadline, "the holder's lock was never released"
            time.sleep(0.1)


def record(address: str) -> StateRecord:
    return StateRecord(address, "docker", {}, "sha256:" + "0" * 64)


def test_a_second_writer_is_refused_with_the_holder(backend, child):
    _, held = child(backend, operation="apply")
    with pytest.raises(StateLocked) as caught:
        backend.open().lock("state rm")
    hint = caught.value.hint
    assert held["pid"] != os.getpid()
    for line in (f"ID: {held['id']}", f"PID: {held['pid']} on {held['host']}", "Operation: apply",
                 f"reconciler force-unlock {held['id']}"):
        assert line in hint


def test_lock_timeout_waits_for_the_holder_to_release(backend, child):
    process, _ = child(backend)
    waiter = backend.open()
    started = time.monotonic()
    threading.Timer(0.6, process.stdin.close).start()  # the holder unlocks when its stdin closes
    info = waiter.lock("plan", timeout=10)
    try:
        assert time.monotonic() - started >= 0.5
        assert waiter.lock_holder() == info
    finally:
        waiter.unlock()


def test_lock_timeout_too_short_still_fails(backend, child):
    process, _ = child(backend)
    started = time.monotonic()
    with pytest.raises(StateLocked, match="is locked"):
        backend.open().lock("plan", timeout=0.5)
    assert time.monotonic() - started >= 0.5
    release(process)


def test_a_holder_killed_with_9_frees_the_lock(backend, child):
    process, held = child(backend)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    store = backend.open()
    info = lock_when_free(store)
    try:
        assert store.lock_holder() == info != held
    finally:
        store.unlock()


def test_force_unlock_refuses_while_the_holder_runs_and_frees_it_with_force(backend, child):
    process, held = child(backend)
    with pytest.raises(ReconcilerError, match="does not match"):
        backend.open().force_unlock(str(uuid.uuid4()))
    with pytest.raises(ReconcilerError, match=f"the lock is held by a running process \\(PID {held['pid']}"):
        backend.open().force_unlock(held["id"])
    with pytest.raises(StateLocked):
        backend.open().lock("plan")
    assert backend.open().force_unlock(held["id"], force=True).pid == held["pid"]
    store = backend.open()
    lock_when_free(store)
    store.unlock()


def test_force_unlock_of_a_dead_holders_note_needs_no_force(backend, child):
    process, held = child(backend)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    time.sleep(0.2)
    assert backend.open().force_unlock(held["id"]).pid == held["pid"]
    with pytest.raises(ReconcilerError, match="is not locked"):
        backend.open().force_unlock(held["id"])


def test_a_write_without_the_lock_is_refused(backend):
    with pytest.raises(RuntimeError, match="without holding the lock"):
        backend.open().write(StateFile.empty(STACK))


def test_each_write_adds_one_to_serial_keeps_lineage_and_is_read_by_another_process(backend):
    store = backend.open()
    store.lock("test")
    with store:
        first = store.write(StateFile.empty(STACK))
        second = store.write_step(first.with_record(record("model.a:1")), ("model.a:1",))
    assert (first.serial, second.serial, second.lineage) == (1, 2, first.lineage)
    read = subprocess.run([sys.executable, "-c", "import json, sys; from pathlib import Path\n"
                           + _reader(backend)], capture_output=True, text=True, timeout=60)
    assert read.stdout.split() == ["2", first.lineage, "model.a:1"], read.stderr


def _reader(backend: Backend) -> str:
    opened = (f"from reconciler.state.pg import PgStateStore; s = PgStateStore('{STACK}', '{STACK}', Path('/tmp'), "
              f"schema='{backend.spec.get('schema')}')" if backend.kind == "pg" else
              f"from reconciler.state.store import StateStore; s = StateStore(Path('{backend.spec.get('path')}'), '{STACK}')")
    return opened + "\nstate = s.read(); print(state.serial, state.lineage, *map(str, state.records))"


def test_a_writer_killed_mid_apply_leaves_its_last_committed_step(backend, child):
    process, _ = child(backend, "steps:400")
    acknowledged = 0
    while acknowledged < 25:
        acknowledged = int(process.stdout.readline())
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    state = backend.open().read()
    # Every step it was told is durable is there, and the steps form a whole prefix.
    assert state.serial >= acknowledged
    assert sorted(str(a) for a in state.records) == sorted(f"model.m{n}:1" for n in range(state.serial))
    store = backend.open()
    store.lock("apply")  # the next writer continues from there
    with store:
        after = store.write_step(store.read().with_record(record("endpoint.ep")), ("endpoint.ep",))
    assert after.serial == state.serial + 1 and backend.open().read() == after


def test_history_lists_every_serial(backend):
    store = backend.open()
    store.lock("apply")
    with store:
        state = store.write(StateFile.empty(STACK))
        for number in range(4):
            state = store.write_step(state.with_record(record(f"model.m{number}:1")), (f"model.m{number}:1",))
    serials = [v.serial for v in backend.open().history()]
    # Local keeps the file and its .backup (the journal is folded in at unlock); pg every version.
    assert serials == ([1, 2, 3, 4, 5] if backend.kind == "pg" else [1, 5])
    if backend.kind == "pg":
        assert {v.lineage for v in backend.open().history()} == {state.lineage}
        assert [v.records for v in backend.open().history()] == [0, 1, 2, 3, 4]
