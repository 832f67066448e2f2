"""Refresh: what the engine really runs, folded into state, plus a list of drift.

The driver reads its engine (`Driver.read`, the only side effect) and folds that observation
into records of the spec's own shape (`Driver.fold`, pure: reconciler/drivers/docker/fold.py,
reconciler/drivers/swarm/fold.py). What is left here is shared by every driver and pure:
objects of ours that no record owns become `<address>~orphan-<id>` records stamped with the
driver's name (apply deletes them), and an orphan record whose objects are all gone is
forgotten. Deposed records keep their objects (the folds never count those as strays).

Drift is expressed as state the planner already understands (docs/drift.md); `apply
--refresh-only` writes the folded state as it is.
"""
from __future__ import annotations

from pathlib import Path

from reconciler.drivers.common.fold import FoldResult, record_ids
from reconciler.planning.plan import Drift
from reconciler.state.model import StateFile, StateRecord


def refresh_state(driver, state: StateFile, state_dir: Path | None = None) -> tuple[StateFile, tuple[Drift, ...]]:
    """Read the engine for `state` and fold it in (the engine calls are the driver's: see its read)."""
    return settle(driver.name, state, driver.fold(state, driver.read(state, state_dir)))


def settle(driver_name: str, state: StateFile, result: FoldResult) -> tuple[StateFile, tuple[Drift, ...]]:
    """State after a driver's fold, with the orphan bookkeeping done. Pure."""
    updated = dict(result.updated)
    for address, record in state.records.items():
        if address.is_orphan and address not in updated and not set(record_ids(record)) & result.seen:
            updated[address] = None  # nothing left to delete
    named = {cid for address, record in state.records.items() if updated.get(address, record) is not None
             for cid in record_ids(updated.get(address, record))}
    named |= {cid for record in updated.values() if record is not None for cid in record_ids(record)}
    drift = list(result.drift)
    for stray in sorted(result.strays, key=lambda s: s.object_id):
        if stray.object_id in named:
            continue
        named.add(stray.object_id)
        orphan = stray.base.orphan_as(stray.object_id[:12])
        drift.append(Drift(orphan, "orphan", f"{stray.what} carries this stack's labels but no record owns it; "
                                             "apply removes it"))
        updated[orphan] = StateRecord(orphan, driver_name, {}, "", status="ready", driver_ids=stray.driver_ids,
                                      outputs=stray.outputs)
    refreshed = state
    for address, record in sorted(updated.items()):
        refreshed = refreshed.without(address) if record is None else refreshed.with_record(record)
    return refreshed, tuple(drift)
