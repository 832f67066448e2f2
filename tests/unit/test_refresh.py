"""The shared refresh core (reconciler/refresh.py): orphans stamped with the driver's name,
orphan records forgotten once their objects are gone, and refresh_state's read -> fold -> settle.
No engine: folds' results are built by hand (each driver's fold has its own tables:
test_docker_fold.py, test_swarm_fold.py)."""
from __future__ import annotations

import pytest

from reconciler.drivers.common.fold import FoldResult, Stray
from reconciler.refresh import refresh_state, settle
from reconciler.state.model import StateFile, StateRecord

DEPLOYMENT = "deployment.ep/blue"


def state_of(driver: str, *extra: StateRecord) -> StateFile:
    state = StateFile(stack="s", lineage="l", serial=1).with_record(StateRecord(
        DEPLOYMENT, driver, {"name": "blue"}, "h", outputs={"instances": [{"id": "own", "name": "n", "instance": 0}]}))
    for record in extra:
        state = state.with_record(record)
    return state


def stray(object_id: str = "stray0123456789") -> Stray:
    return Stray(DEPLOYMENT, object_id, f"deployment container x-{object_id} (running)",
                 {"instances": [{"id": object_id, "name": f"x-{object_id}", "instance": -1, "ports": {}}]},
                 {"containers": [object_id]})


def compact(state: StateFile, drift) -> str:
    records = [f"{a} {r.driver}" for a, r in sorted(state.records.items())]
    return "\n".join(records + [f"{d.kind} {d.address}: {d.detail}" for d in drift])


@pytest.mark.parametrize("driver", ["docker", "swarm"])
def test_orphans_carry_the_name_of_the_driver_that_saw_them(driver):
    state, drift = settle(driver, state_of(driver), FoldResult(strays=(stray(),), seen=frozenset({"own", "stray0123456789"})))
    assert compact(state, drift) == (
        f"{DEPLOYMENT} {driver}\n{DEPLOYMENT}~orphan-stray0123456 {driver}\n"
        f"orphan {DEPLOYMENT}~orphan-stray0123456: deployment container x-stray0123456789 (running) carries this "
        "stack's labels but no record owns it; apply removes it")


def test_a_stray_some_record_names_is_no_orphan():
    named = StateRecord(f"{DEPLOYMENT}~deposed-1", "swarm", {}, "", outputs={"instances": [{"id": "stray0123456789"}]})
    state, drift = settle("swarm", state_of("swarm", named), FoldResult(strays=(stray(),), seen=frozenset({"stray0123456789"})))
    assert drift == () and f"{DEPLOYMENT}~orphan-stray0123456" not in state.records


def test_an_orphan_record_goes_when_nothing_it_names_is_seen():
    orphan = StateRecord(f"{DEPLOYMENT}~orphan-gone", "swarm", {}, "", outputs={"instances": [{"id": "gone"}]})
    assert f"{DEPLOYMENT}~orphan-gone" not in settle("swarm", state_of("swarm", orphan), FoldResult())[0].records
    kept = settle("swarm", state_of("swarm", orphan), FoldResult(seen=frozenset({"gone"})))[0]
    assert f"{DEPLOYMENT}~orphan-gone" in kept.records


def test_deposed_records_are_kept_even_when_their_objects_are_gone():
    deposed = StateRecord(f"{DEPLOYMENT}~deposed-1", "docker", {}, "", outputs={"instances": [{"id": "old"}]})
    assert f"{DEPLOYMENT}~deposed-1" in settle("docker", state_of("docker", deposed), FoldResult())[0].records


def test_refresh_state_reads_once_folds_and_stamps_with_the_driver_name():
    calls = []

    class Recording:
        name = "swarm"

        def read(self, state, state_dir):
            calls.append(("read", state_dir))
            return "observation"

        def fold(self, state, observation):
            calls.append(("fold", observation))
            return FoldResult(strays=(stray(),), seen=frozenset({"stray0123456789"}))

    state, drift = refresh_state(Recording(), state_of("swarm"), "dir")
    assert calls == [("read", "dir"), ("fold", "observation")]
    assert {r.driver for r in state.records.values()} == {"swarm"} and [d.kind for d in drift] == ["orphan"]
