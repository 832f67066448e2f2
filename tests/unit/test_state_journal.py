"""The state journal: per-step durability without rewriting the whole state file (#16).

write_step appends one checksummed line per step; a read folds intact lines in; unlock folds
the journal into the file. A crash may cut the journal at any byte: every prefix reads as the
state after some whole number of steps, never as anything else.
"""
from __future__ import annotations

import json

import pytest

from reconciler.addresses import Address
from reconciler.state.model import StateFile, StateRecord
from reconciler.state.store import StateStore, journal_line, replay_journal

STACK = "demo"


def record(address: str, **spec) -> StateRecord:
    return StateRecord(address, "docker", spec, "sha256:" + "0" * 64)


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(tmp_path / "state" / f"{STACK}.json", STACK)


def steps(store: StateStore, count: int) -> list[StateFile]:
    """A lock session with a first whole write and `count` journalled steps; returns every
    state written, in order. The lock is left held (no checkpoint yet)."""
    store.lock("apply")
    written = [store.write_step(StateFile.empty(STACK).with_record(record("model.m:1", v=1)))]
    for index in range(count):
        state = written[-1].with_record(record(f"deployment.ep/d{index}", i=index))
        if index % 3 == 2:
            state = state.without(f"deployment.ep/d{index - 1}")
        written.append(store.write_step(state))
    return written


def test_the_first_write_is_a_whole_file_and_steps_go_to_the_journal(store):
    written = steps(store, 4)
    try:
        on_file = json.loads(store.path.read_text())
        assert on_file["serial"] == written[0].serial == 1
        assert len(store.journal_path.read_bytes().splitlines()) == 4
        assert store.read() == written[-1]
    finally:
        store.unlock()


def test_unlock_folds_the_journal_into_the_file_and_keeps_a_backup(store):
    written = steps(store, 5)
    store.unlock()
    assert not store.journal_path.exists()
    assert StateFile.from_dict(json.loads(store.path.read_text())) == written[-1]
    assert json.loads(store.backup_path.read_text())["serial"] == written[0].serial


def test_a_journal_cut_at_every_byte_reads_as_a_whole_number_of_steps(store):
    written = steps(store, 6)
    data = store.journal_path.read_bytes()
    store._release()  # the process "dies" holding the journal: no checkpoint
    base = StateFile.from_dict(json.loads(store.path.read_text()))
    expected = {state.serial: state for state in written}
    for cut in range(len(data) + 1):
        replayed = replay_journal(base, data[:cut])
        assert replayed == expected[replayed.serial], cut
        whole_lines = data[:cut].count(b"\n")
        assert replayed.serial == base.serial + whole_lines, cut


def test_a_corrupt_line_ends_the_replay_there(store):
    written = steps(store, 3)
    lines = store.journal_path.read_bytes().splitlines(keepends=True)
    store._release()
    lines[1] = lines[1].replace(b"d1", b"dX")  # checksum no longer matches
    store.journal_path.write_bytes(b"".join(lines))
    assert StateStore(store.path, STACK).read() == written[1]


def test_a_crash_after_the_fold_but_before_the_unlink_skips_what_the_file_holds(store, tmp_path):
    written = steps(store, 3)
    journal = store.journal_path.read_bytes()
    store.unlock()
    store.journal_path.write_bytes(journal)  # as if the unlink never happened
    assert StateStore(store.path, STACK).read() == written[-1]


def test_the_next_locked_writer_continues_after_a_crashed_journal(store):
    written = steps(store, 2)
    store._release()
    other = StateStore(store.path, STACK)
    other.lock("apply")
    with other:
        state = other.read()
        assert state == written[-1]
        after = other.write_step(state.with_record(record("endpoint.ep")))
    assert StateStore(store.path, STACK).read() == after
    assert not store.journal_path.exists()


def test_journal_line_holds_only_what_changed():
    before = StateFile(STACK, "L", 4).with_record(record("model.a:1")).with_record(record("model.b:1"))
    after = StateFile(STACK, "L", 5).with_record(before.records[Address.parse("model.a:1")]).with_record(
        record("model.c:1"))
    entry = json.loads(json.loads(journal_line(before, after))["entry"])
    assert (sorted(entry["put"]), entry["remove"], entry["serial"]) == (["model.c:1"], ["model.b:1"], 5)


def test_journal_line_from_the_changed_addresses_equals_the_full_comparison():
    before = StateFile(STACK, "L", 4, {"model.a:1": record("model.a:1"), "model.b:1": record("model.b:1")})
    after = before.without("model.b:1").with_record(record("model.c:1"))
    assert journal_line(before, after, ("model.b:1", "model.c:1")) == journal_line(before, after)
