"""The docker driver's refresh fold: containers as list and inspect data show them -> records
and drift. Pure (DockerDriver.read does the reading; see observe.py).

Drift is expressed as state the planner already understands:
  * a missing or stopped (exited, paused, ...) instance lowers the observed instance_count, so
    apply scales back up; a stopped container becomes a stray (an orphan);
  * a crash-looping instance (status "restarting", or running but restarted by its restart
    policy a short while ago: inspect's RestartCount) stays its deployment's, as a
    "crashlooping" drift that replaces the deployment;
  * deployment ports are not published (unless `local.publish_ports`): an instance records the
    host ports it was given, none by default, and any other binding is drift;
  * a container of ours that no record owns is a stray, which the shared core records as an
    `<address>~orphan-<id>` record that apply deletes (deployment and gateway containers alike);
  * changed model files change the observed content_digest: the model and what mounts it are
    replaced;
  * a container recreated outside reconciler (its labels claim an instance, its id is new), or
    whose image/ports/mounts/environment differ from state, puts the observed values into the
    record (image, environment_variables, model mount; the new container id and host ports)
    and carries `repair="replace"`, so the planner replaces the deployment even when what
    differs has no place in the spec (a port bound to 0.0.0.0, a writable model mount);
  * a missing, stopped or recreated gateway container replaces its endpoint (the apply engine
    hands the old record to create, so port and keys stay); a hand-edited gateway config file
    (digest in the endpoint's outputs) asks for an in-place update, which rewrites and reloads it;
  * a gateway whose recorded routes (what its config was last rendered to route to, `routes` in
    the endpoint's outputs) differ from what the records now say should serve (an apply cut
    between saving a new deployment and re-pointing its gateway) is "gateway-stale": an
    in-place update re-renders and reloads it. Records written before `routes` existed are not.

Docker shapes live here only: loopback port bindings, bind-mount paths into the model store,
the gateway container and its config directory.
"""
from __future__ import annotations

import dataclasses
import posixpath
import time
from dataclasses import dataclass, field

from reconciler.addresses import Address, endpoint_address
from reconciler.drivers.common.fold import (REPAIR_REPLACE, REPAIR_UPDATE, FoldPass, FoldResult, Stray, gateway_changed,
                                            gateway_keep, gateway_missing, gateway_recreated, gateway_stopped,
                                            missing_instance, normalise_image, record_ids, with_lowered_count)
from reconciler.drivers.common.labels import LABEL_ROLE, label_address
from reconciler.drivers.docker.gateway_config import routed_servers
from reconciler.planning.diff import FieldChange
from reconciler.planning.plan import Drift
from reconciler.state.model import StateFile, StateRecord

LOOPBACK = "127.0.0.1"
_UNKNOWN: dict = {}  # an inspection not made yet (the first fold pass only collects what to inspect)


@dataclass(frozen=True)
class Observed:
    """What the engine shows for one managed container, keyed back to a state address.

    `attributes` is normalised by observe.py so that the fold compares plain data:
    image (the reference the engine reports: the name, or the image id once that name
    points at another image), image_id, role, generation, instance, spec_hash,
    ports {"8501": ["127.0.0.1:32768"]} (published bindings by container port; "/udp" suffix
    for non-TCP), mounts [{"source", "destination", "read_only"}] sorted by destination,
    recently_restarted (running, but started well after it was created, a short while ago:
    whether a restart policy brought it back is for inspect's restart_count to tell).
    """

    address: str
    driver_id: str
    name: str
    running: bool
    status: str
    labels: dict
    attributes: dict


@dataclass(frozen=True)
class DockerObservation:
    """One refresh's reads. listed: the labelled list plus adopted containers inspected by id;
    model_digests: model address -> digest of its store copy (None: gone); inspected: container
    id -> inspect data (None: gone by then); gateway_configs: endpoint address -> its config
    directory on disk (see observe.gateway_config); environment_images: environment address -> its
    image's id and whether it is stale (built from an older base), None when gone."""

    listed: list[Observed]
    model_digests: dict[str, str | None] = field(default_factory=dict)
    inspected: dict[str, dict | None] = field(default_factory=dict)
    gateway_configs: dict[str, dict] = field(default_factory=dict)
    environment_images: dict[str, dict | None] = field(default_factory=dict)  # builds.observe_images


def fold(state: StateFile, observation: DockerObservation) -> FoldResult:
    """The records refresh changes, the drift, and the containers no record owns."""
    return _Fold(state, observation).run()


def needed_inspections(state: StateFile, listed: list[Observed]) -> set[str]:
    """The containers whose inspect data the fold needs: a pass without any tells."""
    folding = _Fold(state, DockerObservation(listed))
    folding.run()
    return folding.needs


def adopted_ids(state: StateFile, listed: list[Observed]) -> list[str]:
    """Containers adopted by `reconciler import` (no labels, so not in the labelled list)."""
    seen = {o.driver_id for o in listed}
    return sorted({i["id"] for r in state.records.values() for i in r.outputs.get("instances", [])
                   if i.get("adopted") and i["id"] not in seen})


# -- comparisons -------------------------------------------------------------------------------
def expected_ports(instance: dict) -> dict[str, list[str]]:
    # The host ports the instance was given: none unless `local.publish_ports` (then loopback
    # only); any other binding is drift. A container adopted by `reconciler import` keeps the
    # bindings it had, recorded as they were.
    if "bindings" in instance:
        return instance["bindings"]
    return {str(p): [f"{LOOPBACK}:{host}"] for p, host in sorted(instance.get("ports", {}).items())}


def scoring_uri(spec: dict, instance: dict) -> str | None:
    """Where an instance scores: 127.0.0.1 when its scoring port is published (debugging), else
    its container name on the stack's network; never a loopback URL that does not exist."""
    route = (spec.get("routes") or {}).get("scoring")
    if not route:
        return None
    host_port = (instance.get("ports") or {}).get(str(route["port"]))
    if host_port:
        return f"http://{LOOPBACK}:{host_port}{route['path']}"
    return f"http://{instance['name']}:{route['port']}{route['path']}"


def store_dir_of(records: dict) -> str | None:
    """The model store directory, as the model records in state name it."""
    return next((posixpath.dirname(r.outputs["store_path"]) for a, r in sorted(records.items())
                 if a.kind == "model" and r.outputs.get("store_path")), None)


def model_view(spec_model: dict | None, mounts: list[dict], store_dir: str | None) -> dict | None:
    """The observed mounts in the shape of a spec's `model`: the mount at the spec's mount path
    (or the only one), its content digest read from the store directory's name, or
    `external:<host path>` for anything else."""
    target = spec_model["mount_path"] if spec_model else None
    chosen = next((m for m in mounts if m["destination"] == target), None) or (mounts[0] if len(mounts) == 1 else None)
    if chosen is None:
        return None
    source = chosen["source"]
    digest = ("sha256:" + posixpath.basename(source) if store_dir and posixpath.dirname(source) == store_dir
              else "external:" + source)
    return {"address": spec_model.get("address") if spec_model else None, "content_digest": digest,
            "mount_path": chosen["destination"]}


def public_ports(observed_ports: dict[str, list[str]]) -> dict[str, int]:
    """{"8501": ["127.0.0.1:32768"]} -> {"8501": 32768}, the shape kept in an instance's outputs."""
    result = {}
    for port, bindings in observed_ports.items():
        if "/" not in port and bindings:
            result[port] = int(sorted(bindings)[0].rsplit(":", 1)[1])
    return result


def _mounts_match(expected: list[dict], observed: list[dict]) -> bool:
    if len(expected) != len(observed):
        return False
    for want, got in zip(sorted(expected, key=lambda m: m["destination"]), observed):
        if want["destination"] != got["destination"] or want["read_only"] != got["read_only"]:
            return False
        if want["source"] is not None and want["source"] != got["source"]:
            return False
    return True


def env_view(spec_env: dict, info: dict) -> dict[str, str]:
    """The container's environment as a spec would say it: the spec's keys, plus whatever
    differs from what the image sets by itself (PATH and the like are not drift)."""
    image_env = info.get("image_env", {})
    return dict(sorted((k, v) for k, v in info.get("env", {}).items() if k in spec_env or image_env.get(k) != v))


class _Fold(FoldPass):
    """One pass over state and observations. Every inspection it lacks is noted in `needs`
    (and the fold goes on from list data alone), so a pass without any tells what to inspect."""

    def __init__(self, state: StateFile, observation: DockerObservation) -> None:
        super().__init__(state.records, observation.model_digests, observation.environment_images)
        self.observed = sorted(observation.listed, key=lambda o: o.driver_id)
        self.by_id = {o.driver_id: o for o in self.observed}
        self.inspected = observation.inspected
        self.gateway_configs = observation.gateway_configs
        self.needs: set[str] = set()
        self.store_dir = store_dir_of(self.records)
        self._adopted_by = {i["id"]: a.base for a, r in self.records.items()
                            for i in r.outputs.get("instances", []) if i.get("adopted")}
        self.adopted = set(self._adopted_by)

    def seen(self) -> set[str]:
        return set(self.by_id)

    def _inspect(self, container_id: str) -> dict | None:
        if container_id not in self.inspected:
            self.needs.add(container_id)
            return _UNKNOWN
        return self.inspected[container_id]

    def _claimant(self, address: str, role: str, generation: str | None = None,
                  instance: str | None = None) -> Observed | None:
        """A running container whose labels claim this slot but which no record names."""
        for item in self.observed:
            if item.driver_id in self.recorded or item.driver_id in self.owned or not item.running:
                continue
            attrs = item.attributes
            if item.address != address or item.labels.get(LABEL_ROLE) != role:
                continue
            if role == "deployment" and (attrs.get("generation") != generation or attrs.get("instance") != instance):
                continue
            return item
        return None

    # -- deposed and orphan records -----------------------------------------------------------
    def derived(self, record: StateRecord) -> None:
        """Deposed and orphan records own their containers (the shared core forgets an orphan
        record whose containers are all gone)."""
        self.owned.update(cid for cid in record_ids(record) if cid in self.by_id)

    # -- deployments --------------------------------------------------------------------------
    def deployment(self, record: StateRecord) -> None:
        spec, address = record.spec, record.address
        instances = sorted(record.outputs.get("instances", []), key=lambda i: i.get("instance", 0))
        generation = record.driver_ids.get("generation")
        alive, found, view = [], [], {}
        for instance in instances:
            item = self.by_id.get(instance["id"])
            if item is None:
                claimant = self._claimant(address, "deployment", generation, str(instance.get("instance")))
                info = self._inspect(claimant.driver_id) if claimant else None
                if claimant is None or info is None:
                    found.append(missing_instance(address, instance["name"]))
                    continue
                self.owned.add(claimant.driver_id)
                fields, seen = self._compare(spec, instance, claimant, info)
                view = view or seen
                found.append(Drift(address, "recreated",
                                   f"container {instance['name']} was replaced outside reconciler by "
                                   f"{claimant.name} ({claimant.driver_id[:12]}); apply replaces the deployment",
                                   fields, REPAIR_REPLACE))
                alive.append({**instance, "id": claimant.driver_id, "name": claimant.name,
                              "ports": public_ports(claimant.attributes.get("ports") or {}) or instance["ports"]})
                continue
            self.owned.add(item.driver_id)
            if (looping := self._crashlooping(item)) is not None:
                # Its deployment's still (no orphan), but failing: replaced by a fresh one.
                found.append(Drift(address, "crashlooping", f"container {instance['name']} is crash-looping "
                                                            f"({looping}); apply replaces the deployment",
                                   (), REPAIR_REPLACE))
                alive.append(instance)
                continue
            if not item.running:
                # An orphan now: apply removes it and starts a fresh one (scale back up).
                self.owned.discard(item.driver_id)
                found.append(Drift(address, "stopped", f"container {instance['name']} is {item.status}; "
                                                       "apply replaces it"))
                continue
            if self._list_data_differs(spec, instance, item):
                info = self._inspect(item.driver_id)
                if info is None:  # removed between the list and the inspect
                    self.owned.discard(item.driver_id)
                    found.append(missing_instance(address, instance["name"]))
                    continue
                fields, seen = self._compare(spec, instance, item, info)
                view = view or seen
                if fields:
                    found.append(Drift(address, "changed",
                                       f"container {instance['name']} no longer matches state "
                                       f"({', '.join(f.path for f in fields)}); apply replaces the deployment",
                                       fields, REPAIR_REPLACE))
                instance = {**instance, "ports": public_ports(item.attributes.get("ports") or {}) or instance["ports"]}
            alive.append(instance)
        self.drift += self._out_of_rotation(record, alive)
        if not found:
            return
        new_spec, found = with_lowered_count({**spec, **view}, found, len(alive), len(instances))
        self.drift += found
        outputs = {**record.outputs, "instances": alive}
        if alive and (uri := scoring_uri(spec, alive[0])):
            outputs["scoring_uri"] = uri
        driver_ids = {**record.driver_ids, "containers": [i["id"] for i in alive]}
        self.updated[address] = dataclasses.replace(record, spec=new_spec, outputs=outputs, driver_ids=driver_ids)

    def _out_of_rotation(self, record: StateRecord, alive: list[dict]) -> list[Drift]:
        """Running instances the endpoint's health probe took out of rotation (its status.json):
        reported, not repaired by apply (the probe puts them back once ready; liveness restarts)."""
        config = self.gateway_configs.get(endpoint_address(record.spec["endpoint"])) or {}
        status = (config.get("health") or {}).get("instances") or {}
        found = []
        for instance in alive:
            item = status.get(instance["name"])
            if item and item.get("container") == instance["id"] and not item.get("in_rotation", True):
                since = item.get("readiness_failing_since")
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)) if since else "a while"
                found.append(Drift(record.address, "unhealthy",
                                   f"instance {instance['name']} is out of rotation: readiness failing since {when} "
                                   f"({item.get('readiness_error') or 'no answer'}); it rejoins once ready, and a "
                                   "failing liveness probe restarts it"))
        return found

    def _crashlooping(self, item: Observed) -> str | None:
        """What shows that the restart policy keeps bringing the container back, or None."""
        if item.status == "restarting":
            return "restarting"
        if not (item.running and item.attributes.get("recently_restarted")):
            return None
        info = self._inspect(item.driver_id)
        if not info or not info.get("restart_count"):
            return None  # started again by hand or by the daemon, not by its restart policy
        return f"restarted {info['restart_count']} time(s) by its restart policy, last {item.attributes.get('up', 'just now')}"

    def _expected_mounts(self, spec: dict) -> list[dict]:
        model = spec.get("model")
        if not model:
            return []
        return [{"source": self._model_source(model), "destination": model["mount_path"], "read_only": True}]

    def _model_source(self, model: dict) -> str | None:
        """Where the model's store copy is on the host; None when state cannot say."""
        digest = model.get("content_digest") or ""
        if digest.startswith("external:"):
            return digest.removeprefix("external:")
        record = self.records.get(model.get("address", ""))
        if record and record.outputs.get("volume"):
            return record.outputs["volume"]  # a remote engine's content volume
        store = record.outputs.get("store_path") if record else None
        return posixpath.join(posixpath.dirname(store), digest.removeprefix("sha256:")) if store else None

    def _list_data_differs(self, spec: dict, instance: dict, item: Observed) -> bool:
        attrs = item.attributes
        return (normalise_image(attrs.get("image")) != normalise_image(spec.get("image"))
                or (attrs.get("ports") or {}) != expected_ports(instance)
                or not _mounts_match(self._expected_mounts(spec), attrs.get("mounts") or []))

    def _compare(self, spec: dict, instance: dict, item: Observed, info: dict) -> tuple[tuple[FieldChange, ...], dict]:
        """Field-level drift of one container against its record, and the spec values observed."""
        attrs, fields, view = item.attributes, [], {}
        listed_image = attrs.get("image") or info.get("image")
        if normalise_image(listed_image) != normalise_image(spec.get("image")):
            # The list shows an image id when the name the container was made from now names
            # another image (a re-tag); otherwise the name it was made from.
            fields.append(FieldChange("image", spec.get("image"), listed_image, True))
            view["image"] = listed_image
        if "env" in info:
            spec_env = spec.get("environment_variables") or {}
            seen = env_view(spec_env, info)
            for key in sorted(set(spec_env) | set(seen)):
                if spec_env.get(key) != seen.get(key):
                    fields.append(FieldChange(f"environment_variables.{key}", spec_env.get(key), seen.get(key), True))
            if seen != spec_env:
                view["environment_variables"] = seen
        ports = attrs.get("ports") or {}
        if ports != expected_ports(instance):
            fields.append(FieldChange("ports", expected_ports(instance), ports, True))
        mounts, expected = attrs.get("mounts") or [], self._expected_mounts(spec)
        if not _mounts_match(expected, mounts):
            fields.append(FieldChange("mounts", expected, mounts, True))
            model = model_view(spec.get("model"), mounts, self.store_dir)
            if model != spec.get("model"):
                view["model"] = model
        return tuple(fields), view

    # -- endpoints (gateways) -----------------------------------------------------------------
    def endpoint(self, record: StateRecord) -> None:
        address, outputs = record.address, record.outputs
        gateway = outputs.get("gateway") or {}
        item = self.by_id.get(gateway.get("id", ""))
        port, found = outputs.get("port"), []
        keep = gateway_keep(port)
        config = self.gateway_configs.get(address)
        if item is None:
            claimant = self._claimant(address, "gateway")
            if claimant is None:
                found.append(gateway_missing(address, gateway.get("name"), port))
            else:
                self.owned.add(claimant.driver_id)
                found.append(gateway_recreated(address, gateway.get("name"), claimant.name, claimant.driver_id, port,
                                               self._gateway_fields(record, claimant, config)))
                outputs = {**outputs, "gateway": {**gateway, "id": claimant.driver_id, "name": claimant.name}}
        else:
            self.owned.add(item.driver_id)
            if not item.running:
                found.append(gateway_stopped(address, item.name, item.status, port))
            elif fields := self._gateway_fields(record, item, config):
                found.append(gateway_changed(address, item.name, port, fields))
            elif (supervisor := self._supervisor_down(record, config)) is not None:
                found.append(supervisor)
        recorded = outputs.get("config_digest")
        # A replaced gateway gets a freshly written config anyway.
        if not found and config is not None and recorded and config.get("digest") != recorded:
            if not config.get("dir_exists"):
                # The running gateway bind-mounts that directory: a new one is never seen by it.
                found.append(Drift(address, "gateway-config", f"gateway config directory {config['dir']} is gone; "
                                   f"{keep}", (FieldChange("config_digest", recorded, None, True),), REPAIR_REPLACE))
            else:
                what = "was changed by hand" if config.get("digest") else "is missing"
                found.append(Drift(address, "gateway-config", f"gateway config {config['dir']}/nginx.conf {what}; "
                                   "apply rewrites it and reloads the gateway",
                                   (FieldChange("config_digest", recorded, config.get("digest"), False),),
                                   REPAIR_UPDATE))
            outputs = {**outputs, "config_digest": config.get("digest")}
        if not found and (stale := self._stale_routes(record)) is not None:
            found.append(stale)
        self.drift += found
        if outputs is not record.outputs:
            self.updated[address] = dataclasses.replace(record, outputs=outputs)

    def _supervisor_down(self, record: StateRecord, config: dict | None) -> Drift | None:
        """The health probe and restarter recorded with the gateway (owned here: they carry the
        endpoint's address) that are gone or not running: an update starts them again. So is
        none recorded at all (an endpoint applied before runtime health, or rebuilt by `state
        recover`), once refresh has read the health files (`health` in the config view)."""
        if "health" not in record.outputs and config is not None and "health" in config:
            return Drift(record.address, "health-supervisor", "no health supervisor watches the instances' health; "
                         "apply starts one", (), REPAIR_UPDATE)
        problems = []
        for role, item in sorted((record.outputs.get("health") or {}).items()):
            if not item:
                continue
            observed = self.by_id.get(item["id"])
            if observed is not None:
                self.owned.add(observed.driver_id)
            if observed is None or not observed.running:
                problems.append(f"health {role} {item['name']} is {observed.status if observed else 'gone'}")
        if not problems:
            return None
        return Drift(record.address, "health-supervisor", f"{'; '.join(problems)}: nothing watches the instances' "
                     "health; apply starts it again", (), REPAIR_UPDATE)

    def _stale_routes(self, record: StateRecord) -> Drift | None:
        """The gateway routes (as recorded when its config was written) against what state
        says should serve now and what runs. Kept as recorded: it is what nginx does."""
        routed = record.outputs.get("routes")
        if routed is None:  # written before routes were recorded
            return None
        wanted = routed_servers(record.spec["name"], self.records)
        # Only the deployments that should serve: a deleted one's leftover upstream serves nothing
        # state wants served (an endpoint update re-renders before a deployment is deleted).
        if all(routed.get(name) == servers for name, servers in wanted.items()):
            return None
        running = {item.name for item in self.observed if item.running}
        problems = []
        for name in sorted(wanted):
            have, want = routed.get(name, []), wanted.get(name, [])
            if have == want:
                continue
            hosts = [server.rpartition(":")[0] or server for server in have if server not in want]
            gone = [host for host in hosts if host not in running]
            if hosts:
                problems.append(f"routes {name} to {', '.join(hosts)}, which state no longer considers serving"
                                + (f" ({', '.join(gone)} not running)" if gone else ""))
            else:
                problems.append(f"does not route {name} to {', '.join(s.rpartition(':')[0] or s for s in want)}")
        return Drift(record.address, "gateway-stale",
                     f"the gateway {'; '.join(problems)}; apply re-renders and reloads it",
                     (FieldChange("routes", routed, wanted, False),), REPAIR_UPDATE)

    def _gateway_fields(self, record: StateRecord, item: Observed, config: dict | None) -> tuple[FieldChange, ...]:
        attrs, fields = item.attributes, []
        gateway = record.outputs.get("gateway") or {}
        image = gateway.get("image")
        if image and normalise_image(attrs.get("image")) != normalise_image(image):
            fields.append(FieldChange("image", image, attrs.get("image"), True))
        if config is not None:
            # Where it was published: recorded for a remote engine's gateway, else the spec's (or loopback).
            address = gateway.get("listen") or (record.spec.get("listen") or {}).get("address") or LOOPBACK
            want = {config["container_port"]: [f"{address}:{record.outputs.get('port')}"]}
            seen = attrs.get("ports") or {}
            if address == "0.0.0.0":  # Docker publishes on IPv6's any address too
                seen = {port: [b for b in bound if not b.startswith(":::")] for port, bound in seen.items()}
            if seen != want:
                fields.append(FieldChange("ports", want, attrs.get("ports") or {}, True))
            # A remote engine's gateway mounts its config volume, a local one the config directory.
            source = gateway.get("config_volume") or config["dir"]
            mounts = [{"source": source, "destination": config["mount_destination"], "read_only": True}]
            if not _mounts_match(mounts, attrs.get("mounts") or []):
                fields.append(FieldChange("mounts", mounts, attrs.get("mounts") or [], True))
        return tuple(fields)

    # -- strays ------------------------------------------------------------------------------
    def strays(self) -> list[Stray]:
        # Named by no record once this pass is done: that includes stopped instances, which
        # their deployment let go of above.
        named = {cid for address, record in self.records.items()
                 for kept in [self.updated.get(address, record)] if kept is not None for cid in record_ids(kept)}
        named |= {cid for record in self.updated.values() if record is not None for cid in record_ids(record)}
        strays = []
        for item in self.observed:
            if item.driver_id in named:
                continue
            # An adopted container has no labels; its record let go of it (it stopped).
            role = "deployment" if item.driver_id in self.adopted else item.labels.get(LABEL_ROLE)
            kind = {"deployment": "deployment", "gateway": "endpoint"}.get(role)
            if kind is None:
                continue
            labelled = label_address(item.address)
            base = labelled.base if labelled is not None and labelled.kind == kind else \
                self._adopted_by.get(item.driver_id, Address(kind, "unlabelled"))
            what = "deployment" if kind == "deployment" else "gateway"
            if kind == "deployment":
                outputs = {"instances": [{"id": item.driver_id, "name": item.name, "instance": -1, "ports": {},
                                          **({"adopted": True} if item.driver_id in self.adopted else {})}]}
            else:
                outputs = {"gateway": {"id": item.driver_id, "name": item.name}}
            strays.append(Stray(base, item.driver_id, f"{what} container {item.name} ({item.status})", outputs,
                                {"containers": [item.driver_id]}))
        return strays


