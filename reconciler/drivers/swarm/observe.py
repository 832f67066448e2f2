"""Refresh reads on swarm: the stack's services and the tasks meant to run, as `ServiceView`s
for the fold (fold.py). Side effects: reads only.

Three list calls per refresh, the stack's services (by label; their specs hold image,
environment and model configs, so nothing needs inspecting), the tasks meant to run and the
nodes (a task on a node that is down is lost, whatever it last reported), plus the model
configs of each model (models.stored_digest).
"""
from __future__ import annotations

import docker

from reconciler.drivers.common import builds
from reconciler.drivers.common.labels import LABEL_ADDRESS, LABEL_PREFIX, LABEL_ROLE, is_own, label_filter
from reconciler.drivers.swarm import models
from reconciler.drivers.swarm.engine import LIVE_STATES, node_names, require_manager, takes_tasks
from reconciler.drivers.swarm.fold import ServiceView, SwarmObservation
from reconciler.state.model import StateFile

LABEL_MODEL_MOUNT = LABEL_PREFIX + "model-mount"
LABEL_MODEL_DIGEST = models.LABEL_MODEL_DIGEST
# Task states ranked for "the task of this slot": one that runs beats one on its way.
_RANK = {state: rank for rank, state in enumerate(["new", "allocated", "pending", "assigned", "accepted",
                                                   "preparing", "ready", "starting", "running"])}


def read(client: docker.DockerClient, state: StateFile) -> SwarmObservation:
    # Listed by stack name; only this state's identity is ours (another stack of the same
    # name is never seen, so never an orphan).
    known = {value for record in state.records.values() for value in _strings((record.driver_ids, record.outputs))}
    services, nodes = list_services(client, state.stack, lambda s: is_own(s["Spec"].get("Labels"), state.lineage,
                                                                          s["ID"], known))
    model_digests = {a: models.stored_digest(client, r) for a, r in state.records.items()
                     if a.kind == "model" and not a.is_derived}
    return SwarmObservation(services, model_digests, environment_images=builds.observe_images(client, state),
                            unavailable_nodes=unavailable(nodes))


def unavailable(nodes: dict[str, dict]) -> dict[str, str]:
    """Node name -> why tasks cannot run there ("down", "drain", ...), for nodes that are not ready and active."""
    return {node["name"]: node["state"] if node["state"] != "ready" else node["availability"]
            for node in nodes.values() if not takes_tasks(node)}


def _strings(value) -> set[str]:
    """Every string in a record's ids and outputs (service ids among them)."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return set().union(*(_strings(v) for v in value)) if value else set()
    return set()


def list_services(client: docker.DockerClient, stack: str,
                  keep=lambda service: True) -> tuple[list[ServiceView], dict[str, dict]]:
    """The stack's services kept by `keep`, in the fold's shape, and the swarm's nodes
    (engine.node_names; listed only when there are services, and read once for both)."""
    require_manager(client)  # a plain engine answers the service list with a 503
    services = [s for s in client.api.services(filters=label_filter(stack)) if keep(s)]
    by_service: dict[str, list[dict]] = {}
    nodes: dict[str, dict] = {}
    if services:
        for task in client.api.tasks(filters={"desired-state": "running"}):
            by_service.setdefault(task.get("ServiceID"), []).append(task)
        nodes = node_names(client)
    return [service_view(service, by_service.get(service["ID"], []), nodes) for service in services], nodes


def service_view(service: dict, tasks: list[dict], nodes: dict[str, dict] | None = None) -> ServiceView:
    """A service and its tasks (the API's dicts) in the fold's shape. A task placed on a node
    that `nodes` (engine.node_names) shows as not ready is lost with its node, not live: the
    node cannot say what became of it, and the swarm starts it again elsewhere."""
    labels = service["Spec"].get("Labels") or {}
    container = (service["Spec"].get("TaskTemplate") or {}).get("ContainerSpec") or {}
    nodes = nodes or {}
    lost_node = {t["ID"]: nodes[t["NodeID"]] for t in tasks
                 if t.get("ID") and nodes.get(t.get("NodeID") or "", {}).get("state", "ready") != "ready"}
    live = [t for t in tasks if t["Status"]["State"] in LIVE_STATES and t.get("ID") not in lost_node]
    best: dict[int, dict] = {}
    for task in live:
        slot = task.get("Slot")
        if slot is None:
            continue
        if slot not in best or _RANK.get(task["Status"]["State"], -1) > _RANK.get(best[slot]["Status"]["State"], -1):
            best[slot] = task
    env = dict(item.split("=", 1) if "=" in item else (item, "") for item in container.get("Env") or [])
    mounted = bool(labels.get(LABEL_MODEL_MOUNT)) and bool(container.get("Configs"))
    return ServiceView(service_id=service["ID"], name=service["Spec"]["Name"], role=labels.get(LABEL_ROLE, ""),
                       address=labels.get(LABEL_ADDRESS, ""), image=container.get("Image"), env=env,
                       model_mount=labels.get(LABEL_MODEL_MOUNT) if mounted else None,
                       model_digest=labels.get(LABEL_MODEL_DIGEST) if mounted else None,
                       live_slots={slot: task["Status"]["State"] for slot, task in sorted(best.items())},
                       live_tasks=len(live),
                       lost_slots={t["Slot"]: f"{node['name']} ({node['state']})" for t in tasks
                                   if (node := lost_node.get(t.get("ID"))) and t.get("Slot") is not None
                                   and t["Slot"] not in best},
                       slot_nodes={slot: nodes[task["NodeID"]]["name"] for slot, task in sorted(best.items())
                                   if task.get("NodeID") in nodes})
