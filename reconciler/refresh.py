"""Refresh: what the engine really runs, folded into state, plus a list of drift.

`refresh_state` makes the one label-filtered read through the driver; `fold_observed` is pure.
Drift is expressed as state the planner already understands: a missing or stopped instance
lowers the observed instance_count (apply scales back up), a container of ours that no record
owns becomes an `~orphan-` record (apply deletes it), and changed model files change the
observed content digest (apply replaces the model and what mounts it).
"""
from __future__ import annotations

import dataclasses

from reconciler.drivers.base import Observed
from reconciler.planning.diff import FieldChange
from reconciler.planning.plan import Drift
from reconciler.state.model import StateFile, StateRecord


def refresh_state(driver, state: StateFile) -> tuple[StateFile, tuple[Drift, ...]]:
    observed = driver.list_managed(state.stack)
    model_digests = {a: driver.model_digest(r) for a, r in state.records.items() if a.startswith("model.")}
    return fold_observed(state, observed, model_digests)


def fold_observed(state: StateFile, observed: list[Observed],
                  model_digests: dict[str, str | None]) -> tuple[StateFile, tuple[Drift, ...]]:
    drift: list[Drift] = []
    by_id = {o.driver_id: o for o in observed}
    owned: set[str] = set()
    refreshed = state
    for address, record in sorted(state.records.items()):
        if address.startswith("model."):
            refreshed, found = _refresh_model(refreshed, record, model_digests.get(address))
            drift += found
        elif address.startswith("deployment."):
            refreshed, found, ids = _refresh_deployment(refreshed, record, by_id)
            drift += found
            owned |= ids
    for item in observed:
        if item.driver_id in owned or item.labels.get("org.reconciler.role") != "deployment":
            continue
        orphan = f"{item.address}~orphan-{item.driver_id[:12]}"
        if orphan in state.records:
            continue
        drift.append(Drift(orphan, "orphan", f"container {item.name} carries this stack's labels but no "
                                             "record owns it; apply removes it"))
        refreshed = refreshed.with_record(StateRecord(
            orphan, "docker", {}, "", status="ready", driver_ids={"containers": [item.driver_id]},
            outputs={"instances": [{"id": item.driver_id, "name": item.name, "instance": -1, "ports": {}}]}))
    return refreshed, tuple(drift)


def _refresh_model(state: StateFile, record: StateRecord, digest: str | None):
    expected = record.spec.get("content_digest")
    if digest == expected:
        return state, []
    detail = "model copy is missing from the store" if digest is None else "model files in the store were changed"
    spec = {**record.spec, "content_digest": digest or "missing"}
    return (state.with_record(dataclasses.replace(record, spec=spec)),
            [Drift(record.address, "model-content", detail,
                   (FieldChange("content_digest", expected, spec["content_digest"], True),))])


def _refresh_deployment(state: StateFile, record: StateRecord, by_id: dict[str, Observed]):
    instances = record.outputs.get("instances", [])
    alive, drift, owned = [], [], set()
    for instance in instances:
        item = by_id.get(instance["id"])
        if item is None:
            drift.append(Drift(record.address, "missing", f"container {instance['name']} no longer exists"))
            continue
        owned.add(item.driver_id)
        if not item.running:
            drift.append(Drift(record.address, "stopped", f"container {instance['name']} is {item.status}; "
                                                          "apply replaces it"))
            owned.discard(item.driver_id)  # an orphan now: apply removes it and starts a fresh one
            continue
        alive.append(instance)
    if len(alive) == len(instances):
        return state, drift, owned
    spec = {**record.spec, "instance_count": len(alive)}
    outputs = {**record.outputs, "instances": alive}
    driver_ids = {**record.driver_ids, "containers": [i["id"] for i in alive]}
    if drift:
        drift[-1] = dataclasses.replace(drift[-1], fields=(
            FieldChange("instance_count", record.spec["instance_count"], len(alive), False),))
    return state.with_record(dataclasses.replace(record, spec=spec, outputs=outputs, driver_ids=driver_ids)), \
        drift, owned
