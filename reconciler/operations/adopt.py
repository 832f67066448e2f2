"""`import` and `state recover` as operations: put objects reconciler did not create from this
state into it. Side effects through the driver (reads, and for import a network connect and a
gateway reload) and the state store; the records themselves are built in reconciler/adopt.py.

Both need the driver's optional capabilities (SupportsImport, SupportsRecover); a driver
without them is refused with a clear error before anything is read.
"""
from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.addresses import endpoint_address
from reconciler.adopt import check_importable, import_outcome, imported_record, rebuild
from reconciler.config.graph import DesiredGraph
from reconciler.drivers.base import StepContext, SupportsImport, SupportsRecover, require
from reconciler.drivers.common.labels import LABEL_IDENTITY, LABEL_STACK_DIR, LABEL_STATE, other_owners
from reconciler.drivers.registry import choose_driver, driver_named
from reconciler.errors import ReconcilerError
from reconciler.state.backend import as_location
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


def _ctx(store, stack_dir: Path, records: dict, identity: str) -> StepContext:
    return StepContext(stack=store.stack, stack_dir=Path(stack_dir).resolve(), state_dir=store.work_dir,
                       records=lambda: dict(records), identity=identity, state_path=store.location)


def import_container(desired: DesiredGraph, store, stack_dir: Path, address: str, container: str,
                     lock_timeout: float = 0.0, driver=None) -> ImportResult:
    """Adopt `container` (id or name) as instance 0 of deployment `address`, under the state lock."""
    store.lock("import", lock_timeout)
    with store:
        # The identity must exist before the container is labelled or connected to the network.
        state = store.read().ensure_lineage()
        driver = driver or driver_named(choose_driver(None, desired.driver, state))
        importer = require(driver, SupportsImport, "reconciler import")
        info = importer.inspect_container(container)
        resource = check_importable(address, desired, state, info, container)
        record, notes = imported_record(resource, info, state, desired.stack, secrets.token_hex(3))
        network = importer.adopt(_ctx(store, stack_dir, state.records, state.lineage), info)
        if network:
            notes.append(f"it was connected to network {network}, where the endpoint's gateway reaches deployments")
        state = state.with_record(record)
        endpoint = state.records.get(endpoint_address(resource.spec['endpoint']))
        if endpoint is not None and info.get("running"):
            # The gateway's routes come from deployment records; without this it would not send
            # this deployment any traffic until something else changed the endpoint.
            updated = driver.update(endpoint, endpoint.spec, endpoint.spec_hash, _ctx(store, stack_dir, state.records,
                                                                                  state.lineage))
            state = state.with_record(updated)
            notes.append(f"the gateway of {endpoint.address} was reloaded to route to it")
        store.write(state)
    return ImportResult(address, info["name"], info["id"], tuple(notes), import_outcome(record, resource))


def recover_state(desired: DesiredGraph, store, stack_dir: Path, force: bool = False, lock_timeout: float = 0.0,
                  driver=None) -> RecoverResult:
    """Rebuild a lost state file from labels and the model store, under the identity its
    objects carry (found by their stack directory or state file labels); gateways keep the keys
    their live config admits."""
    if store.exists() and not force:
        raise ReconcilerError(f"state {store.location} exists; recover only rebuilds a lost one",
                              "`reconciler drift` compares it with Docker; pass --force to replace it anyway "
                              "(the current file is kept as .backup)")
    # The state is lost (or unreadable): the stack settings alone say which engine to read.
    driver = driver or driver_named(choose_driver(None, desired.driver, StateFile.empty(desired.stack)))
    recoverer = require(driver, SupportsRecover, "reconciler state recover")
    store.lock("state recover", lock_timeout)
    with store:
        observed, identity, left_alone = lost_identity(recoverer.list_managed(desired.stack), store.location,
                                                       Path(stack_dir))
        digests = sorted({r.spec["content_digest"] for r in desired.by_kind("model")})
        stored = recoverer.stored_models(store.work_dir, identity, digests)
        result = rebuild(desired, observed, stored)
        if result.inspect:
            inspected = {cid: recoverer.inspect_container(cid) for cid in result.inspect.values()}
            result = rebuild(desired, observed, stored, inspected)
        records = dict(result.records)
        notes = list(result.notes) + [f"left alone (another state's): {o.describe()}" for o in left_alone]
        for address in sorted(a for a in records if a.kind == "endpoint"):
            records[address], note = recoverer.recover_gateway(records[address],
                                                               _ctx(store, stack_dir, records, identity))
            notes.append(f"{address}: {note}")
        state = StateFile(stack=desired.stack, lineage=identity)
        for record in records.values():
            state = state.with_record(record)
        written = store.write(state)
    return RecoverResult(desired.stack, store.location, written.lineage, records, tuple(notes))


def lost_identity(observed: list, state_path: Path, stack_dir: Path):
    """Which of the objects labelled with this stack name the lost state owned, and its
    identity: those labelled with this state file or stack directory. Objects from before
    identities existed carry none: they are taken (as recover always did) under a new one.
    Returns (its objects, identity, the other owners left alone). Pure."""
    state_path, stack_dir = as_location(state_path), str(Path(stack_dir).resolve())
    by_identity: dict[str, list] = {}
    for item in observed:
        by_identity.setdefault((item.labels or {}).get(LABEL_IDENTITY, ""), []).append(item)
    mine = sorted(i for i, items in by_identity.items() if i and any(
        (o.labels or {}).get(LABEL_STATE) == state_path for o in items))
    if not mine:
        mine = sorted(i for i, items in by_identity.items() if i and any(
            (o.labels or {}).get(LABEL_STACK_DIR) == stack_dir for o in items))
    if len(mine) > 1:
        raise ReconcilerError(
            f"objects of {len(mine)} states were made from {stack_dir}: identities {', '.join(mine)}",
            "recover takes the objects of one state; pass --state with the lost state file's path "
            "(the org.reconciler.state label of the containers names it)")
    identity = mine[0] if mine else str(uuid.uuid4())
    taken = by_identity.get(identity, []) + ([] if mine else by_identity.get("", []))
    others = [(o.driver_id, o.labels) for o in observed if o not in taken]
    return taken, identity, other_owners(others, identity, set())
