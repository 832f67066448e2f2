"""`import` and `state recover` as operations: put objects reconciler did not create from this
state into it. Side effects through the driver (reads, and for import a network connect and a
gateway reload) and the state store; the records themselves are built in reconciler/adopt.py.

Both need the driver's optional capabilities (SupportsImport, SupportsRecover); a driver
without them is refused with a clear error before anything is read.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.addresses import endpoint_address
from reconciler.adopt import check_importable, import_outcome, imported_record, rebuild
from reconciler.config.graph import DesiredGraph
from reconciler.drivers.base import StepContext, SupportsImport, SupportsRecover, require
from reconciler.drivers.registry import choose_driver, driver_named
from reconciler.errors import ReconcilerError
from reconciler.state.model import StateFile, StateRecord


@dataclass(frozen=True)
class ImportResult:
    address: str
    container_name: str
    container_id: str
    notes: tuple[str, ...]
    outcome: str  # what the next plan will do with it, in a sentence


@dataclass(frozen=True)
class RecoverResult:
    stack: str
    path: Path
    lineage: str
    records: dict[str, StateRecord] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _ctx(store, stack_dir: Path, records: dict) -> StepContext:
    return StepContext(stack=store.stack, stack_dir=Path(stack_dir), state_dir=store.path.parent,
                       records=lambda: dict(records))


def import_container(desired: DesiredGraph, store, stack_dir: Path, address: str, container: str,
                     lock_timeout: float = 0.0, driver=None) -> ImportResult:
    """Adopt `container` (id or name) as instance 0 of deployment `address`, under the state lock."""
    store.lock("import", lock_timeout)
    with store:
        state = store.read()
        driver = driver or driver_named(choose_driver(None, desired.driver, state))
        importer = require(driver, SupportsImport, "reconciler import")
        info = importer.inspect_container(container)
        resource = check_importable(address, desired, state, info, container)
        record, notes = imported_record(resource, info, state, desired.stack, secrets.token_hex(3))
        network = importer.adopt(desired.stack, info)
        if network:
            notes.append(f"it was connected to network {network}, where the endpoint's gateway reaches deployments")
        state = state.with_record(record)
        endpoint = state.records.get(endpoint_address(resource.spec['endpoint']))
        if endpoint is not None and info.get("running"):
            # The gateway's routes come from deployment records; without this it would not send
            # this deployment any traffic until something else changed the endpoint.
            updated = driver.update(endpoint, endpoint.spec, endpoint.spec_hash, _ctx(store, stack_dir, state.records))
            state = state.with_record(updated)
            notes.append(f"the gateway of {endpoint.address} was reloaded to route to it")
        store.write(state)
    return ImportResult(address, info["name"], info["id"], tuple(notes), import_outcome(record, resource))


def recover_state(desired: DesiredGraph, store, stack_dir: Path, force: bool = False, lock_timeout: float = 0.0,
                  driver=None) -> RecoverResult:
    """Rebuild a lost state file from labels and the model store; gateways get new keys."""
    if store.exists() and not force:
        raise ReconcilerError(f"state file {store.path} exists; recover only rebuilds a lost one",
                              "`reconciler drift` compares it with Docker; pass --force to replace it anyway "
                              "(the current file is kept as .backup)")
    # The state is lost (or unreadable): the stack settings alone say which engine to read.
    driver = driver or driver_named(choose_driver(None, desired.driver, StateFile.empty(desired.stack)))
    recoverer = require(driver, SupportsRecover, "reconciler state recover")
    store.lock("state recover", lock_timeout)
    with store:
        observed = recoverer.list_managed(desired.stack)
        digests = sorted({r.spec["content_digest"] for r in desired.by_kind("model")})
        stored = recoverer.stored_models(store.path.parent, digests)
        result = rebuild(desired, observed, stored)
        if result.inspect:
            inspected = {cid: recoverer.inspect_container(cid) for cid in result.inspect.values()}
            result = rebuild(desired, observed, stored, inspected)
        records = dict(result.records)
        notes = list(result.notes)
        for address in sorted(a for a in records if a.kind == "endpoint"):
            records[address], note = recoverer.recover_gateway(records[address], _ctx(store, stack_dir, records))
            notes.append(f"{address}: {note}")
        state = StateFile.empty(desired.stack)
        for record in records.values():
            state = state.with_record(record)
        written = store.write(state)
    return RecoverResult(desired.stack, store.path, written.lineage, records, tuple(notes))
