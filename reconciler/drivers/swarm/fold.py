"""The swarm driver's refresh fold: services, their replica slots and the edge -> records and
drift. Pure (SwarmDriver.read does the reading; see observe.py).

Records keep swarm's own shapes: a deployment lists one instance per replica slot
(`<slot>.<service id>`), an endpoint its gateway and edge services. So:
  * a slot scaled away by hand, or whose task failed, is a missing instance (the observed
    instance_count drops, apply scales back up); a service removed by hand is all instances
    missing (apply creates it again); so is a slot whose task was on a node that is down, named
    with its node (the swarm starts it again on a ready node; apply waits for that);
  * a slot that state places on a node now down or drained, and that runs on another node, was
    moved by the swarm: reported (kind `moved`), and the refreshed record names the new node;
  * a slot added by hand, or a deployment or gateway service no record owns, is a stray (the
    shared core records it as an orphan; deleting a slot of an owned service scales it back);
  * a service whose image, environment or model configs no longer match state puts what it
    runs into the record and asks for a replace, per slot, as the docker fold does per container;
  * a gateway service without a live task, or whose edge has none, is stopped: apply replaces
    the endpoint (same port, same keys); one made by hand with our labels is a recreated one.
The gateway's config is a secret named after its digest and cannot be edited by hand: no
config drift here. Model configs are checked by the driver's read (their labels and digest).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from reconciler.addresses import Address
from reconciler.drivers.common.labels import label_address
from reconciler.drivers.common.fold import (REPAIR_REPLACE, FoldPass, FoldResult, Stray, gateway_changed,
                                            gateway_missing, gateway_recreated, gateway_stopped, missing_instance,
                                            normalise_image, with_lowered_count)
from reconciler.planning.diff import FieldChange
from reconciler.planning.plan import Drift
from reconciler.state.model import StateFile, StateRecord


def _base_or(label: str, kind: str) -> Address:
    """The resource a service's address label names, or KIND.unlabelled."""
    labelled = label_address(label)
    return labelled.base if labelled is not None else Address(kind, "unlabelled")


@dataclass(frozen=True)
class ServiceView:
    """One service of the stack as list data shows it. `live_slots`: replica slot -> state of the
    task meant to run there, for slots whose task runs or is on its way up (a failed one is not
    live: swarm replaces it); `live_tasks`: how many such tasks (a global service has no slots)."""

    service_id: str
    name: str
    role: str
    address: str
    image: str | None = None
    env: dict = field(default_factory=dict)
    model_mount: str | None = None  # where the model configs are mounted, None when none are
    model_digest: str | None = None
    live_slots: dict[int, str] = field(default_factory=dict)
    live_tasks: int = 0
    lost_slots: dict[int, str] = field(default_factory=dict)  # slot -> "node (state)" it was lost with
    slot_nodes: dict[int, str] = field(default_factory=dict)  # live slot -> the node its task is on


@dataclass(frozen=True)
class SwarmObservation:
    services: list[ServiceView]
    model_digests: dict[str, str | None] = field(default_factory=dict)  # model address -> None: configs gone
    environment_images: dict[str, dict | None] = field(default_factory=dict)  # builds.observe_images
    unavailable_nodes: dict[str, str] = field(default_factory=dict)  # node name -> "down", "drain", ...


def slot_id(service_id: str, slot: int) -> str:
    return f"{slot}.{service_id}"


def parse_slot_id(instance_id: str) -> tuple[str, int | None]:
    slot, _, service_id = instance_id.partition(".")
    return (service_id, int(slot)) if service_id and slot.isdigit() else (instance_id, None)


def lost_instance(address: str, name: str, node: str) -> Drift:
    return Drift(address, "missing", f"container {name} ran on node {node}, lost with it; the swarm starts it "
                 "again on a ready node (apply waits for that)")


def moved_instance(address: str, name: str, before: str, why: str, after: str) -> Drift:
    return Drift(address, "moved", f"container {name} ran on node {before}, which is {why}; the swarm runs it on "
                 f"node {after} now")


def fold(state: StateFile, observation: SwarmObservation) -> FoldResult:
    """The records refresh changes, the drift, and the slots and services no record owns."""
    return _Fold(state, observation).run()


def service_fields(spec: dict, service: ServiceView) -> tuple[tuple[FieldChange, ...], dict]:
    """How a deployment's service differs from its spec, and the spec values it shows."""
    fields, view = [], {}
    if normalise_image(service.image) != normalise_image(spec.get("image")):
        fields.append(FieldChange("image", spec.get("image"), service.image, True))
        view["image"] = service.image
    spec_env = spec.get("environment_variables") or {}
    for key in sorted(set(spec_env) | set(service.env)):
        if spec_env.get(key) != service.env.get(key):
            fields.append(FieldChange(f"environment_variables.{key}", spec_env.get(key), service.env.get(key), True))
    if service.env != spec_env:
        view["environment_variables"] = dict(sorted(service.env.items()))
    model = spec.get("model")
    seen = None if service.model_mount is None else \
        {**(model or {}), "content_digest": service.model_digest, "mount_path": service.model_mount}
    if (model or None) != seen:
        for key in ("content_digest", "mount_path"):
            before, after = (model or {}).get(key), (seen or {}).get(key)
            if before != after:
                fields.append(FieldChange(f"model.{key}", before, after, True))
        view["model"] = seen
    return tuple(fields), view


class _Fold(FoldPass):
    def __init__(self, state: StateFile, observation: SwarmObservation) -> None:
        super().__init__(state.records, observation.model_digests, observation.environment_images)
        self.services = {s.service_id: s for s in observation.services}
        self.edges_live = {s.address: s.live_tasks > 0 for s in observation.services if s.role == "edge"}
        self.unavailable_nodes = observation.unavailable_nodes

    def seen(self) -> set[str]:
        seen = set(self.services)
        for service in self.services.values():
            seen |= {slot_id(service.service_id, slot) for slot in service.live_slots}
        return seen

    def deployment(self, record: StateRecord) -> None:
        address, spec = record.address, record.spec
        service = self.services.get((record.outputs.get("service") or {}).get("id"))
        instances = sorted(record.outputs.get("instances", []), key=lambda i: i.get("instance", 0))
        fields, view = service_fields(spec, service) if service else ((), {})
        alive, found = [], []
        for instance in instances:
            _, slot = parse_slot_id(instance["id"])
            if service is not None and slot in service.lost_slots:
                found.append(lost_instance(address, instance["name"], service.lost_slots[slot]))
                continue
            if service is None or slot not in service.live_slots:
                found.append(missing_instance(address, instance["name"]))
                continue
            self.owned.add(instance["id"])
            before, now = instance.get("node"), service.slot_nodes.get(slot)
            if before and now and before != now and before in self.unavailable_nodes:
                found.append(moved_instance(address, instance["name"], before, self.unavailable_nodes[before], now))
                instance = {**instance, "node": now}
            if fields:
                found.append(Drift(address, "changed", f"container {instance['name']} no longer matches state "
                                   f"({', '.join(f.path for f in fields)}); apply replaces the deployment",
                                   fields, REPAIR_REPLACE))
            alive.append(instance)
        if not found:
            return
        new_spec, found = with_lowered_count({**spec, **(view if alive else {})}, found, len(alive), len(instances))
        self.drift += found
        self.updated[address] = dataclasses.replace(record, spec=new_spec,
                                                    outputs={**record.outputs, "instances": alive})

    def _gateway_state(self, service: ServiceView) -> tuple[bool, str]:
        live = service.live_tasks > 0
        running = live and self.edges_live.get(service.address, False)
        return running, "running" if running else ("no live task" if not live else "edge missing or down")

    def _claimant(self, address: str) -> ServiceView | None:
        """A running gateway service whose labels claim this endpoint but which no record names."""
        return next((s for _, s in sorted(self.services.items()) if s.role == "gateway" and s.address == address
                     and s.service_id not in self.recorded and s.service_id not in self.owned
                     and self._gateway_state(s)[0]), None)

    def endpoint(self, record: StateRecord) -> None:
        address, outputs = record.address, record.outputs
        gateway = outputs.get("gateway") or {}
        service = self.services.get(gateway.get("id", ""))
        port, found = outputs.get("port"), []
        if service is None:
            claimant = self._claimant(address)
            if claimant is None:
                found.append(gateway_missing(address, gateway.get("name"), port))
            else:
                self.owned.add(claimant.service_id)
                found.append(gateway_recreated(address, gateway.get("name"), claimant.name, claimant.service_id,
                                               port, self._gateway_fields(record, claimant)))
                outputs = {**outputs, "gateway": {**gateway, "id": claimant.service_id, "name": claimant.name}}
        else:
            self.owned.add(service.service_id)
            running, status = self._gateway_state(service)
            if not running:
                found.append(gateway_stopped(address, service.name, status, port))
            elif fields := self._gateway_fields(record, service):
                found.append(gateway_changed(address, service.name, port, fields))
        self.drift += found
        if outputs is not record.outputs:
            self.updated[address] = dataclasses.replace(record, outputs=outputs)

    @staticmethod
    def _gateway_fields(record: StateRecord, service: ServiceView) -> tuple[FieldChange, ...]:
        image = (record.outputs.get("gateway") or {}).get("image")
        if image and normalise_image(service.image) != normalise_image(image):
            return (FieldChange("image", image, service.image, True),)
        return ()

    def strays(self) -> list[Stray]:
        named = self.recorded | self.owned
        strays = []
        for _, service in sorted(self.services.items()):
            ids = {"services": [service.service_id]}
            if service.role == "deployment":
                for slot, status in sorted(service.live_slots.items()):
                    oid, name = slot_id(service.service_id, slot), f"{service.name}.{slot}"
                    if oid not in named:
                        strays.append(Stray(_base_or(service.address, "deployment"), oid,
                                            f"deployment container {name} ({status})",
                                            {"instances": [{"id": oid, "name": name, "instance": -1, "ports": {}}]},
                                            ids))
            elif service.role == "gateway" and service.service_id not in named:
                status = self._gateway_state(service)[1]
                strays.append(Stray(_base_or(service.address, "endpoint"), service.service_id,
                                    f"gateway container {service.name} ({status})",
                                    {"gateway": {"id": service.service_id, "name": service.name}}, ids))
        return strays
