"""What every driver's refresh fold returns, and the pieces of folding that do not depend on
the engine. Pure.

A fold (`Driver.fold`) reads state and the driver's own observation and returns a `FoldResult`:
the records it changed, the drift it found, the ids of every object it saw, and `strays`,
objects carrying the stack's labels that no record names. The shared core
(reconciler/refresh.py) turns strays into `~orphan-` records stamped with the driver's name and
forgets orphan records whose objects are gone.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from reconciler.addresses import Address
from reconciler.planning.diff import FieldChange
from reconciler.planning.plan import Drift
from reconciler.state.model import StateRecord

REPAIR_REPLACE, REPAIR_UPDATE = "replace", "update"


@dataclass(frozen=True)
class Stray:
    """An object of ours no record owns: `base` is the address its labels name, `what` how the
    drift names it ("deployment container NAME (STATUS)"); `outputs` and `driver_ids` are what
    the driver's delete needs to remove it."""

    base: Address
    object_id: str
    what: str
    outputs: dict
    driver_ids: dict

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", Address.parse(self.base))  # read from a label


@dataclass(frozen=True)
class FoldResult:
    updated: dict[Address, StateRecord | None] = field(default_factory=dict)  # None: forget the record
    drift: tuple[Drift, ...] = ()
    strays: tuple[Stray, ...] = ()
    seen: frozenset[str] = frozenset()  # every object id the observation holds


class FoldPass:
    """One pass of a driver's fold over state: deployments and endpoints in address order, then
    models (the order drift is listed in), deposed and orphan records handed to `derived`.
    A driver's fold fills in the kinds; `updated`, `drift` and `owned` (object ids some record
    took) collect what it found."""

    def __init__(self, records: dict[Address, StateRecord], model_digests: dict[str, str | None],
                 environment_images: dict[str, dict | None] | None = None) -> None:
        self.records = records
        self.model_digests = model_digests
        self.environment_images = environment_images or {}
        # Every object id some record names: never a claimant, never an orphan of another.
        self.recorded = {oid for r in records.values() for oid in record_ids(r)}
        self.owned: set[str] = set()
        self.updated: dict[Address, StateRecord | None] = {}
        self.drift: list[Drift] = []

    def run(self) -> FoldResult:
        for address, record in sorted(self.records.items()):
            if address.is_deposed or address.is_orphan:
                self.derived(record)
            elif address.kind == "deployment":
                self.deployment(record)
            elif address.kind == "endpoint":
                self.endpoint(record)
        for record, drift in model_drifts(self.records, self.model_digests):
            self.updated[record.address] = record
            self.drift.append(drift)
        self.drift += environment_drifts(self.records, self.environment_images)
        return FoldResult(dict(self.updated), tuple(self.drift), tuple(self.strays()), frozenset(self.seen()))

    def derived(self, record: StateRecord) -> None:
        """A deposed or orphan record (they own what they name; see reconciler/refresh.py)."""

    def deployment(self, record: StateRecord) -> None:
        raise NotImplementedError

    def endpoint(self, record: StateRecord) -> None:
        raise NotImplementedError

    def strays(self) -> list[Stray]:
        raise NotImplementedError

    def seen(self) -> set[str]:
        raise NotImplementedError


def record_ids(record: StateRecord) -> list[str]:
    """The engine objects a record names: its instances, containers and gateway."""
    ids = [i["id"] for i in record.outputs.get("instances", []) if i.get("id")]
    ids += [cid for cid in record.driver_ids.get("containers", []) if cid not in ids]
    gateway = (record.outputs.get("gateway") or {}).get("id")
    return ids + ([gateway] if gateway else [])


def normalise_image(reference: str | None) -> str:
    """`x` and `docker.io/library/x:latest` name the same image; image ids stay as they are."""
    if not reference or reference.startswith("sha256:"):
        return reference or ""
    name, _, digest = reference.partition("@")
    if ":" not in name.rsplit("/", 1)[-1] and not digest:
        name += ":latest"
    for prefix in ("docker.io/", "index.docker.io/"):
        name = name.removeprefix(prefix)
    name = name.removeprefix("library/")
    return name + (f"@{digest}" if digest else "")


def model_drifts(records: dict[str, StateRecord], digests: dict[str, str | None]) -> list[tuple[StateRecord, Drift]]:
    """(refreshed record, drift) of each model whose stored copy is not what state says."""
    found = []
    for address in sorted(set(records) & set(digests)):
        drifted = model_drift(records[address], digests[address])
        if drifted:
            found.append(drifted)
    return found


def model_drift(record: StateRecord, digest: str | None) -> tuple[StateRecord, Drift] | None:
    """A model whose stored copy is gone (None) or holds other content than state says."""
    expected = record.spec.get("content_digest")
    if digest == expected:
        return None
    detail = "model copy is missing from the store" if digest is None else "model files in the store were changed"
    spec = {**record.spec, "content_digest": digest or "missing"}
    return dataclasses.replace(record, spec=spec), Drift(
        record.address, "model-content", detail + "; apply replaces the model and the deployments that mount it",
        (FieldChange("content_digest", expected, spec["content_digest"], True),))


def environment_drifts(records: dict[Address, StateRecord], images: dict[str, dict | None]) -> list[Drift]:
    """A built environment whose image is gone from the engine (None), or was built from base
    images that have been rebuilt since (stale), is built again, and its deployments replaced."""
    found = []
    for address in sorted(set(records) & set(images)):
        tag = records[address].spec.get("image")
        if images[address] is None:
            found.append(Drift(address, "missing", f"image {tag} no longer exists; apply builds it again", (),
                               REPAIR_REPLACE))
        elif images[address].get("stale"):
            found.append(Drift(address, "base-image-changed", f"image {tag} was built from a base image that has "
                               "been rebuilt since; apply builds it again", (), REPAIR_REPLACE))
    return found


def with_lowered_count(spec: dict, found: list[Drift], alive: int, recorded: int) -> tuple[dict, list[Drift]]:
    """Fewer live instances than recorded lower the observed instance_count, so apply scales
    back up; the change is shown on the last missing or stopped instance's drift."""
    if alive == recorded:
        return spec, found
    last = max(i for i, d in enumerate(found) if d.kind in ("missing", "stopped"))
    found = list(found)
    found[last] = dataclasses.replace(found[last], fields=found[last].fields + (
        FieldChange("instance_count", spec.get("instance_count"), alive, False),))
    return {**spec, "instance_count": alive}, found


def gateway_keep(port) -> str:
    return f"apply recreates it on 127.0.0.1:{port} with the same keys"


def gateway_missing(address: str, name: str | None, port) -> Drift:
    return Drift(address, "missing", f"gateway container {name} no longer exists; {gateway_keep(port)}", (),
                 REPAIR_REPLACE)


def gateway_recreated(address: str, name: str | None, by_name: str, by_id: str, port,
                      fields: tuple[FieldChange, ...]) -> Drift:
    """The gateway of this endpoint was made again outside reconciler (labels copied)."""
    return Drift(address, "recreated", f"gateway container {name} was replaced outside reconciler by {by_name} "
                                       f"({by_id[:12]}); {gateway_keep(port)}", fields, REPAIR_REPLACE)


def gateway_stopped(address: str, name: str, status: str, port) -> Drift:
    return Drift(address, "stopped", f"gateway container {name} is {status}; {gateway_keep(port)}", (), REPAIR_REPLACE)


def gateway_changed(address: str, name: str, port, fields: tuple[FieldChange, ...]) -> Drift:
    return Drift(address, "changed", f"gateway container {name} no longer matches state "
                                     f"({', '.join(f.path for f in fields)}); {gateway_keep(port)}", fields,
                 REPAIR_REPLACE)


def missing_instance(address: str, name: str) -> Drift:
    return Drift(address, "missing", f"container {name} no longer exists; apply starts a new one")
