"""Refresh reads on swarm: what the services of a stack run now, as `Observed` entries in the
shape reconciler/refresh.py folds for the docker driver. Side effects: reads only.

Two list calls per refresh: the stack's services (by label) and the tasks meant to run. A
deployment is observed per replica slot (`<slot>.<service id>`, the ids its record keeps
under `instances`), so that the docker fold needs no swarm branch for replica drift: a slot
scaled away by hand, or whose task failed, is a missing instance (apply scales back up), a
slot added by hand is an orphan (apply scales back down), a service removed by hand is all
instances missing (apply recreates it). Gateways are observed per service; the edge is folded
into its gateway's `running`, so a missing edge replaces the endpoint as a missing gateway
container does.
"""
from __future__ import annotations

import docker

from reconciler.drivers.base import LABEL_ADDRESS, LABEL_GENERATION, LABEL_PREFIX, LABEL_ROLE, LABEL_SPEC_HASH, Observed
from reconciler.drivers.docker.engine import label_filter
from reconciler.drivers.swarm.engine import LIVE_STATES, inspect_service, require_manager

LABEL_MODEL_MOUNT = LABEL_PREFIX + "model-mount"
LABEL_MODEL_DIGEST = LABEL_PREFIX + "model-digest"
# Task states ranked for "the task of this slot": one that runs beats one on its way.
_RANK = {state: rank for rank, state in enumerate(["new", "allocated", "pending", "assigned", "accepted",
                                                   "preparing", "ready", "starting", "running"])}


def slot_id(service_id: str, slot: int) -> str:
    return f"{slot}.{service_id}"


def parse_slot_id(instance_id: str) -> tuple[str, int | None]:
    slot, _, service_id = instance_id.partition(".")
    return (service_id, int(slot)) if service_id and slot.isdigit() else (instance_id, None)


def list_managed(client: docker.DockerClient, stack: str) -> list[Observed]:
    require_manager(client)  # a plain engine answers the service list with a 503
    services = client.api.services(filters=label_filter(stack))
    by_service: dict[str, list[dict]] = {}
    if services:
        for task in client.api.tasks(filters={"desired-state": "running"}):
            by_service.setdefault(task.get("ServiceID"), []).append(task)
    edges = {}
    for service in services:
        labels = service["Spec"].get("Labels") or {}
        if labels.get(LABEL_ROLE) == "edge":
            edges[labels.get(LABEL_ADDRESS)] = any(t["Status"]["State"] in LIVE_STATES
                                                   for t in by_service.get(service["ID"], []))
    observed = []
    for service in services:
        labels = service["Spec"].get("Labels") or {}
        role = labels.get(LABEL_ROLE)
        tasks = by_service.get(service["ID"], [])
        if role == "deployment":
            observed += _deployment_slots(service, labels, tasks)
        elif role in ("gateway", "edge"):
            live = [t for t in tasks if t["Status"]["State"] in LIVE_STATES]
            running = bool(live) and (role == "edge" or edges.get(labels.get(LABEL_ADDRESS), False))
            status = "running" if running else ("no live task" if not live else "edge missing or down")
            observed.append(Observed(
                address=labels.get(LABEL_ADDRESS, ""), driver_id=service["ID"], name=service["Spec"]["Name"],
                running=running, status=status, labels=labels,
                attributes={"image": _container(service["Spec"]["TaskTemplate"]).get("Image"), "image_id": None,
                            "role": role, "generation": labels.get(LABEL_GENERATION), "instance": None,
                            "spec_hash": labels.get(LABEL_SPEC_HASH), "ports": {}, "mounts": [],
                            "service_id": service["ID"], "tasks": len(live)}))
    return observed


def _deployment_slots(service: dict, labels: dict, tasks: list[dict]) -> list[Observed]:
    replicas = ((service["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas")
    best: dict[int, dict] = {}
    for task in tasks:
        slot = task.get("Slot")
        # A slot whose task failed is missing, not stopped: swarm replaces the task, and a
        # stopped instance would become an orphan that apply removes.
        if slot is None or task["Status"]["State"] not in LIVE_STATES:
            continue
        rank = _RANK.get(task["Status"]["State"], -1)
        if slot not in best or rank > _RANK.get(best[slot]["Status"]["State"], -1):
            best[slot] = task
    observed = []
    for slot, task in sorted(best.items()):
        container = _container(task.get("Spec") or {})
        state = task["Status"]["State"]
        observed.append(Observed(
            address=labels.get(LABEL_ADDRESS, ""), driver_id=slot_id(service["ID"], slot),
            name=f"{service['Spec']['Name']}.{slot}",
            # A task on its way up is not drift: swarm is already bringing the slot back.
            running=True, status=state, labels=labels,
            attributes={"image": container.get("Image"), "image_id": None, "role": "deployment",
                        "generation": labels.get(LABEL_GENERATION), "instance": str(slot),
                        "spec_hash": labels.get(LABEL_SPEC_HASH), "ports": {},
                        "mounts": model_mounts(labels, container), "replicas": replicas,
                        "service_id": service["ID"], "task_id": task["ID"]}))
    return observed


def model_mounts(labels: dict, container: dict) -> list[dict]:
    """The model as one read-only mount at its mount path, as the docker driver's bind mount
    would be reported: configs are per file, the fold compares per mount."""
    mount = labels.get(LABEL_MODEL_MOUNT)
    if not mount or not container.get("Configs"):
        return []
    return [{"source": f"swarm-configs:{labels.get(LABEL_MODEL_DIGEST, '')}", "destination": mount,
             "read_only": True}]


def _container(template: dict) -> dict:
    return template.get("ContainerSpec") or {}


def inspect(client: docker.DockerClient, instance_id: str) -> dict | None:
    """What refresh compares beyond the list (environment), for a slot or a service id; None
    when the service is gone."""
    service_id, _ = parse_slot_id(instance_id)
    service = inspect_service(client, service_id)
    if service is None:
        return None
    container = _container(service["Spec"]["TaskTemplate"])
    env = dict(item.split("=", 1) if "=" in item else (item, "") for item in container.get("Env") or [])
    # The service spec holds only what reconciler set, never the image's own environment.
    return {"image": container.get("Image"), "env": env, "image_env": {}}
