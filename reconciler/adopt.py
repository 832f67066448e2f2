"""Records for containers reconciler did not create from this state: `reconciler import` (one
container, named by the user) and `reconciler state recover` (a lost state file, rebuilt from
labels). Pure: reconciler/operations/adopt.py reads the engine through the driver and writes state.
The shapes are the docker driver's (the one driver that supports import and recover).

Both record what the container really runs (image, environment, model mount) rather than what
the configuration asks for, so the next plan shows an honest diff and replaces what differs.
What a spec cannot hold is said in `notes`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.addresses import Address
from reconciler.config.graph import DesiredGraph, DesiredResource, spec_hash
from reconciler.drivers.common.labels import (LABEL_GENERATION, LABEL_IDENTITY, LABEL_INSTANCE, LABEL_MANAGED_BY,
                                              LABEL_ROLE, LABEL_SPEC_HASH, LABEL_STACK, LABEL_STATE, MANAGED_BY)
from reconciler.errors import ReconcilerError
from reconciler.planning.diff import field_changes
from reconciler.drivers.docker.fold import (LOOPBACK, Observed, env_view, model_view, public_ports, scoring_uri,
                                            store_dir_of)
from reconciler.state.model import StateFile, StateRecord

GATEWAY_CONTAINER_PORT = "8080"


@dataclass
class Rebuilt:
    """What recover found: the records, and what it left alone or could not know."""

    records: dict[Address, StateRecord] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    inspect: dict[str, str] = field(default_factory=dict)  # deployment address -> container to inspect


def observed_spec(resource: DesiredResource, info: dict, store_dir: str | None, instance_count: int) -> dict:
    """The configuration's spec with what the container shows for image, environment and model."""
    spec = dict(resource.spec)
    spec["instance_count"] = instance_count
    spec["image"] = info.get("image") or spec["image"]
    spec["environment_variables"] = env_view(resource.spec.get("environment_variables") or {}, info)
    if resource.spec.get("model") or info.get("mounts"):
        spec["model"] = model_view(resource.spec.get("model"), info.get("mounts") or [], store_dir)
    return spec


def _scoring_uri(spec: dict, instances: list[dict]) -> dict:
    # As apply records it (docker fold.scoring_uri): loopback only when the port is published.
    uri = scoring_uri(spec, instances[0]) if instances else None
    return {"scoring_uri": uri} if uri else {}


# -- import ------------------------------------------------------------------------------------
def check_importable(address: str, desired: DesiredGraph, state: StateFile, info: dict | None,
                     container_ref: str) -> DesiredResource:
    address = Address.parse(address)
    resources = dict(desired.resources)
    if address.kind != "deployment":
        raise ReconcilerError(f"only deployments can be imported, not {address}",
                              "models are files (apply copies them) and an endpoint is the gateway reconciler "
                              "starts; import the deployment containers and let apply create the rest")
    if address not in resources:
        known = sorted(a for a in resources if a.kind == "deployment")
        raise ReconcilerError(f"{address} is not in the configuration",
                              "import adopts a container for a deployment the YAML describes; deployments: "
                              + (", ".join(map(str, known)) or "none"))
    if address in state.records:
        raise ReconcilerError(f"{address} is already in state",
                              f"to adopt another container for it: `reconciler state rm {address}`, then import")
    if info is None:
        raise ReconcilerError(f"no container {container_ref!r}", "pass a container id or name from `docker ps -a`")
    labels = info.get("labels") or {}
    if labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_STACK) != desired.stack:
        raise ReconcilerError(f"container {info['name']} is managed by stack {labels.get(LABEL_STACK)!r}",
                              "a container is managed by one stack only; remove it from that stack's state first")
    if labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_IDENTITY, state.lineage) != state.lineage:
        raise ReconcilerError(f"container {info['name']} belongs to another stack named {desired.stack!r} "
                              f"(state {labels.get(LABEL_STATE) or 'unknown'})",
                              "a container is managed by one stack only; remove it from that stack's state first")
    owner = next((a for a, r in state.records.items()
                  if info["id"] in {i["id"] for i in r.outputs.get("instances", [])}
                  or (r.outputs.get("gateway") or {}).get("id") == info["id"]), None)
    if owner:
        raise ReconcilerError(f"container {info['name']} is already in state as {owner}",
                              "see `reconciler state list`")
    return resources[address]


def imported_record(resource: DesiredResource, info: dict, state: StateFile, stack: str,
                    generation: str) -> tuple[StateRecord, list[str]]:
    """The record for an adopted container (instance 0), and what the user should know."""
    labels = info.get("labels") or {}
    ours = labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_STACK) == stack
    spec = observed_spec(resource, info, store_dir_of(state.records), 1)
    instance = {"id": info["id"], "name": info["name"], "instance": 0, "ports": public_ports(info.get("ports") or {})}
    notes = []
    if not ours:
        # Docker labels are fixed at creation: the container cannot be marked as ours, so state
        # says so instead, and refresh inspects it by id (it is not in the labelled list).
        instance.update(adopted=True, bindings=info.get("ports") or {})
        notes.append("it has no reconciler labels (Docker cannot add labels to an existing container): state "
                     "records it as adopted, refresh inspects it by id, and apply or destroy may remove it")
        wide = sorted(b for bindings in (info.get("ports") or {}).values() for b in bindings
                      if not b.startswith(f"{LOOPBACK}:"))
        if wide:
            notes.append(f"it is published on {', '.join(wide)}; containers reconciler starts publish on "
                         f"{LOOPBACK} only")
        if "no-new-privileges:true" not in (info.get("security_opt") or []):
            notes.append("it runs without no-new-privileges, which containers reconciler starts have")
    else:
        generation = labels.get(LABEL_GENERATION) or generation
    if not info.get("running"):
        notes.append(f"it is {info.get('status')}: the next plan starts a new instance and removes it")
    outputs = {"instances": [instance], **_scoring_uri(spec, [instance])}
    record = StateRecord(resource.address, "docker", spec, spec_hash(spec),
                         resource.depends_on, status="ready",
                         driver_ids={"generation": generation, "containers": [info["id"]]}, outputs=outputs)
    return record, notes


def import_outcome(record: StateRecord, resource: DesiredResource) -> str:
    """What the next plan will do with the imported deployment, in a sentence."""
    kind = resource.address.kind
    fields = field_changes(kind, record.spec, resource.spec)
    replacing = [f.path for f in fields if f.forces_replacement]
    if replacing:
        return ("It differs from the configuration in " + ", ".join(replacing) + ": the next apply replaces it "
                "with a container reconciler starts (labelled, published on 127.0.0.1 only).")
    updates = [f.path for f in fields]
    text = "Its image, environment and model mount match the configuration: apply keeps it running."
    if updates:
        text += " The next plan updates in place: " + ", ".join(updates) + "."
    return text + (f" To swap it for a container reconciler starts anyway: reconciler apply --replace {record.address}")


# -- recover -----------------------------------------------------------------------------------
def rebuild(desired: DesiredGraph, observed: list[Observed], stored_models: dict[str, str | None],
            inspected: dict[str, dict | None] | None = None) -> Rebuilt:
    """Records rebuilt from labels. Call once without `inspected` to learn which containers to
    inspect (`Rebuilt.inspect`), then again with their inspect data."""
    inspected = inspected or {}
    resources = dict(desired.resources)
    result = Rebuilt()
    for address, resource in resources.items():
        if address.kind == "model":
            path = stored_models.get(resource.spec["content_digest"])
            if path:
                result.records[address] = StateRecord(address, "docker", resource.spec, resource.spec_hash,
                                                      status="ready", outputs={"store_path": path})
            else:
                result.notes.append(f"{address}: no copy with its content digest in the model store; apply copies it")
    store_dir = store_dir_of(result.records)
    groups: dict[str, dict[str, list[Observed]]] = {}
    gateways: dict[str, list[Observed]] = {}
    # The endpoint's health probe and restarter (docker driver, #15), recorded with its gateway.
    supervisors: dict[str, dict[str, Observed]] = {}
    for item in sorted(observed, key=lambda o: o.driver_id):
        role = item.labels.get(LABEL_ROLE)
        if role == "deployment":
            groups.setdefault(item.address, {}).setdefault(item.labels.get(LABEL_GENERATION, ""), []).append(item)
        elif role == "gateway":
            gateways.setdefault(item.address, []).append(item)
        elif role in ("health-probe", "health-restarter"):
            supervisors.setdefault(item.address, {})[role.removeprefix("health-")] = item
    for address, generations in sorted(groups.items()):
        resource = resources.get(address)
        if resource is None:
            result.notes.append(f"{address}: {sum(map(len, generations.values()))} container(s) but no such "
                                "deployment in the configuration; left unrecorded, so the next apply removes "
                                "them as orphans")
            continue
        generation, members = _chosen_generation(generations, resource.spec_hash)
        for other in sorted(set(generations) - {generation}):
            result.notes.append(f"{address}: generation {other} ({len(generations[other])} container(s)) is "
                                "left unrecorded, so the next apply removes it as an orphan")
        members = sorted(members, key=lambda o: int(o.labels.get(LABEL_INSTANCE) or 0))
        instances = [{"id": o.driver_id, "name": o.name, "instance": int(o.labels.get(LABEL_INSTANCE) or 0),
                      "ports": public_ports(o.attributes.get("ports") or {})} for o in members]
        if all(o.labels.get(LABEL_SPEC_HASH) == resource.spec_hash for o in members):
            # Created from exactly this spec: nothing to read.
            spec = {**resource.spec, "instance_count": len(instances)}
        else:
            # Labels do not say which spec it was made from (or an in-place change came later):
            # record what one of its containers runs; the next plan shows the difference.
            sample = next((o for o in members if o.running), members[0])
            info = inspected.get(sample.driver_id)
            if info is None:
                result.inspect[address] = sample.driver_id
                info = {"image": sample.attributes.get("image"), "mounts": sample.attributes.get("mounts") or []}
            spec = observed_spec(resource, info, store_dir, len(instances))
        status = "ready"
        model = spec.get("model") or {}
        if model.get("content_digest", "").startswith("sha256:") and not stored_models.get(model["content_digest"]):
            # Its bind mount points at a store copy that is gone: a new copy at the same path is
            # never seen by the running container, so it must be replaced after apply copies it.
            status = "tainted"
            result.notes.append(f"{address}: the model copy it mounts is gone from the store; it is marked "
                                "tainted, so the next apply replaces it once the model is copied again")
        result.records[resource.address] = StateRecord(
            resource.address, "docker", spec, spec_hash(spec), resource.depends_on, status=status,
            driver_ids={"generation": generation, "containers": [i["id"] for i in instances]},
            outputs={"instances": instances, **_scoring_uri(spec, instances)})
    for address, items in sorted(gateways.items()):
        resource = resources.get(address)
        if resource is None:
            result.notes.append(f"{address}: gateway container(s) but no such endpoint in the configuration; "
                                "left unrecorded, so the next apply removes them as orphans")
            continue
        running = [o for o in items if o.running] or items
        chosen = running[-1]
        bindings = (chosen.attributes.get("ports") or {}).get(GATEWAY_CONTAINER_PORT) or []
        port = int(sorted(bindings)[0].rsplit(":", 1)[1]) if bindings else None
        if len(items) > 1:
            result.notes.append(f"{address}: {len(items) - 1} other gateway container(s) left unrecorded; the next "
                                "apply removes them as orphans")
        result.records[resource.address] = StateRecord(
            resource.address, "docker", resource.spec, resource.spec_hash, resource.depends_on,
            status="ready" if chosen.running and port else "tainted",
            outputs={"gateway": {"id": chosen.driver_id, "name": chosen.name, "image": chosen.attributes.get("image")},
                     "port": port, "scoring_uri": f"http://{LOOPBACK}:{port}/score" if port else None,
                     "keys": {},
                     **({"health": {role: {"id": o.driver_id, "name": o.name}
                                    for role, o in sorted(supervisors[address].items())}}
                        if address in supervisors else {})})
    return result


def _chosen_generation(generations: dict[str, list[Observed]], wanted_hash: str) -> tuple[str, list[Observed]]:
    """The generation that serves: most running containers, then made from the configured spec."""
    def rank(item):
        generation, members = item
        return (sum(o.running for o in members), all(o.labels.get(LABEL_SPEC_HASH) == wanted_hash for o in members),
                generation)
    return max(generations.items(), key=rank)
