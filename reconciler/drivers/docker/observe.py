"""What refresh reads from Docker, normalised to plain data for the fold (fold.py). Reads only,
never a change.

`read` makes one refresh's reads. `list_managed` is the one label-filtered list call a refresh
always makes (sparse: the list endpoint's data, no per-container inspect); it lists by stack
name, and `read` keeps only this state's own objects (its identity, labels.is_own): objects of
another stack of the same name are never seen, so never called orphans. `inspect` and
`observe` are the targeted reads the fold asks for when list data is not enough: a container that was recreated or whose list data
disagrees with state (environment variables are not in list data), and containers adopted by
`reconciler import`, which carry no labels and so never show up in the labelled list.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import docker
from docker.errors import NotFound

from reconciler.drivers.base import StepContext
from reconciler.drivers.common.gateway import GATEWAY_PORT
from reconciler.drivers.common.labels import (LABEL_ADDRESS, LABEL_GENERATION, LABEL_INSTANCE, LABEL_ROLE,
                                              LABEL_SPEC_HASH, is_own, label_filter)
from reconciler.drivers.common import builds
from reconciler.drivers.common.fold import record_ids
from reconciler.drivers.docker import content_volumes, gateway, supervisor, model_store
from reconciler.drivers.docker.fold import DockerObservation, Observed, adopted_ids, needed_inspections
from reconciler.state.model import StateFile


def read(client: docker.DockerClient, inspector: "Inspector", state: StateFile,
         state_dir: Path | None) -> DockerObservation:
    """Docker API calls: one list, plus one inspect per adopted container (import) and per
    container whose list data shows a difference; the model store and gateway config files
    are files, not Docker."""
    known = {cid for record in state.records.values() for cid in record_ids(record)}
    listed = [o for o in list_managed(client, state.stack) if is_own(o.labels, state.lineage, o.driver_id, known)]
    adopted = adopted_ids(state, listed)
    if adopted:
        listed += inspector.observe(adopted)
    model_digests = {a: model_digest(client, r) for a, r in state.records.items()
                     if a.kind == "model" and not a.is_derived}
    gateway_configs = {a: gateway_config(state_dir, state, r) for a, r in state.records.items()
                       if a.kind == "endpoint" and not a.is_derived} if state_dir is not None else {}
    inspected = {cid: inspector.inspect(cid) for cid in sorted(needed_inspections(state, listed))}
    return DockerObservation(listed, model_digests, inspected, gateway_configs, builds.observe_images(client, state))


def model_digest(client: docker.DockerClient, record) -> str | None:
    """The digest of what a model record's containers mount: its content volume's on a remote
    engine (the client-side store copy is only where that was filled from), else the store copy's."""
    if record.outputs.get("volume"):
        return content_volumes.volume_digest(client, record.outputs["volume"])
    return model_store.stored_digest(Path(record.outputs.get("store_path", "/nonexistent")))


def list_managed(client: docker.DockerClient, stack: str) -> list[Observed]:
    """Every container with this stack's labels: one GET /containers/json."""
    observed = []
    for container in client.containers.list(all=True, sparse=True, filters=label_filter(stack)):
        attrs = container.attrs
        state = attrs.get("State")
        status = state if isinstance(state, str) else (state or {}).get("Status", "unknown")
        item = _observed(container.id, (attrs.get("Names") or ["/?"])[0], status, attrs.get("Labels"),
                         attrs.get("Image"), attrs.get("ImageID"), _list_ports(attrs.get("Ports")),
                         _mounts(attrs.get("Mounts")))
        uptime = uptime_seconds(attrs.get("Status") or "")
        if status == "running" and restarted_recently(uptime, attrs.get("Created"), time.time()):
            item.attributes.update(recently_restarted=True, up=f"{uptime}s ago")
        observed.append(item)
    return observed


# Docker's list Status for a running container: "Up " + a human duration (go-units), maybe
# followed by " (healthy)" and the like. Only short uptimes matter here.
_UPTIME = re.compile(r"^Up (?:(Less than a second)|(\d+) seconds?|(About a minute)|(\d+) minutes?)\b")
RECENT_START_SECONDS = 300
# A container started this long after its creation was started again: `containers.run` starts
# it right after creating it. Only the cost of a refresh depends on this (a restart seen here
# is confirmed by inspect's RestartCount), not what it reports.
RESTART_GAP_SECONDS = 3


def uptime_seconds(status: str) -> int | None:
    """"Up 3 seconds" -> 3, "Up 2 minutes" -> 120; None for anything longer or not running."""
    match = _UPTIME.match(status)
    if not match:
        return None
    less, seconds, about_minute, minutes = match.groups()
    return 0 if less else int(seconds) if seconds else 60 if about_minute else int(minutes) * 60


def restarted_recently(uptime: int | None, created: float | None, now: float) -> bool:
    """Started a short while ago, well after it was created: a restart (by its policy, by hand
    or by the daemon; inspect's RestartCount tells which)."""
    if uptime is None or not created or uptime > RECENT_START_SECONDS:
        return False
    return now - float(created) - uptime > RESTART_GAP_SECONDS


def _observed(container_id, name, status, labels, image, image_id, ports, mounts) -> Observed:
    labels = labels or {}
    return Observed(address=labels.get(LABEL_ADDRESS, ""), driver_id=container_id, name=name.lstrip("/"),
                    running=status == "running", status=status, labels=labels,
                    attributes={"image": image, "image_id": image_id, "ports": ports, "mounts": mounts,
                                "role": labels.get(LABEL_ROLE), "generation": labels.get(LABEL_GENERATION),
                                "instance": labels.get(LABEL_INSTANCE), "spec_hash": labels.get(LABEL_SPEC_HASH)})


def _list_ports(entries) -> dict[str, list[str]]:
    """List data's Ports -> {"8501": ["127.0.0.1:32768"]}; exposed-only ports are left out."""
    ports: dict[str, list[str]] = {}
    for entry in entries or []:
        if not entry.get("PublicPort"):
            continue
        key = _port_key(entry["PrivatePort"], entry.get("Type", "tcp"))
        ports.setdefault(key, []).append(f"{entry.get('IP') or '0.0.0.0'}:{entry['PublicPort']}")
    return {k: sorted(set(v)) for k, v in sorted(ports.items())}


def _inspect_ports(bindings) -> dict[str, list[str]]:
    """Inspect's NetworkSettings.Ports ({"8501/tcp": [{"HostIp", "HostPort"}]}) in the same shape."""
    ports: dict[str, list[str]] = {}
    for spec, hosts in (bindings or {}).items():
        number, _, protocol = spec.partition("/")
        for host in hosts or []:
            ports.setdefault(_port_key(int(number), protocol or "tcp"), []).append(
                f"{host.get('HostIp') or '0.0.0.0'}:{host['HostPort']}")
    return {k: sorted(set(v)) for k, v in sorted(ports.items())}


def _port_key(number: int, protocol: str) -> str:
    return str(number) if protocol == "tcp" else f"{number}/{protocol}"


def _mounts(entries) -> list[dict]:
    # A volume by its name (content volumes on remote engines), a bind mount by its host path.
    return sorted(({"source": m.get("Name") if m.get("Type") == "volume" and m.get("Name") else m.get("Source", ""), "destination": m.get("Destination", ""),
                    "read_only": not m.get("RW", True)} for m in entries or []), key=lambda m: m["destination"])


def _env(items) -> dict[str, str]:
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in items or [])


class Inspector:
    """Inspects containers for one refresh; image environments are read once per image."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self._image_env: dict[str, dict] = {}

    def image_env(self, image_id: str) -> dict[str, str]:
        # The image's own ENV tells a variable someone added apart from one the image sets.
        if image_id not in self._image_env:
            try:
                self._image_env[image_id] = _env(self.client.api.inspect_image(image_id)["Config"].get("Env"))
            except NotFound:
                self._image_env[image_id] = {}
        return self._image_env[image_id]

    def inspect(self, container_id: str) -> dict | None:
        """The facts list data lacks, or None when the container is gone."""
        try:
            attrs = self.client.api.inspect_container(container_id)
        except NotFound:
            return None
        config, state = attrs.get("Config") or {}, attrs.get("State") or {}
        return {"id": attrs["Id"], "name": attrs.get("Name", "").lstrip("/"), "image": config.get("Image"),
                "image_id": attrs.get("Image"), "env": _env(config.get("Env")),
                "image_env": self.image_env(attrs.get("Image", "")), "labels": config.get("Labels") or {},
                "status": state.get("Status", "unknown"), "running": state.get("Status") == "running",
                "restart_count": attrs.get("RestartCount") or 0,
                "ports": _inspect_ports((attrs.get("NetworkSettings") or {}).get("Ports")),
                "mounts": _mounts(attrs.get("Mounts")),
                "security_opt": (attrs.get("HostConfig") or {}).get("SecurityOpt") or [], "networks": sorted(
                    ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).keys())}

    def observe(self, container_ids: list[str]) -> list[Observed]:
        """Containers tracked by id (adopted by `reconciler import`, so without our labels)."""
        observed = []
        for container_id in container_ids:
            info = self.inspect(container_id)
            if info is not None:
                observed.append(_observed(info["id"], info["name"], info["status"], info["labels"], info["image"],
                                          info["image_id"], info["ports"], info["mounts"]))
        return observed


def gateway_config(state_dir: Path, state: StateFile, record) -> dict:
    """The endpoint's gateway config on disk, and what the gateway container should look like."""
    ctx = StepContext(stack=state.stack, stack_dir=state_dir, state_dir=state_dir, records=dict,
                      identity=state.lineage)
    directory = gateway.config_dir(ctx, record.spec.get("name") or record.address.name)
    return {"dir": str(directory), "dir_exists": directory.is_dir(), "digest": gateway.config_digest(directory),
            "container_port": str(GATEWAY_PORT), "mount_destination": gateway.CONFIG_DIR_IN_CONTAINER,
            "health": supervisor.read_status(directory)}


def runtime_status(client: docker.DockerClient, state: StateFile, state_dir: Path) -> dict:
    """What `reconciler status` shows (drivers/base.py SupportsStatus): every recorded
    container's state, restart count and start time, and each endpoint's health files."""
    containers, health = {}, {}
    for record in state.records.values():
        for container_id in record_ids(record) + [i["id"] for i in (record.outputs.get("health") or {}).values() if i]:
            try:
                info = client.api.inspect_container(container_id)
            except NotFound:
                containers[container_id] = {"state": "gone", "restarts": 0, "started": None}
                continue
            containers[container_id] = {"state": info["State"]["Status"], "restarts": info.get("RestartCount", 0),
                                        "started": info["State"].get("StartedAt")}
        if record.address.kind == "endpoint" and not record.address.is_derived:
            health[record.spec["name"]] = gateway_config(state_dir, state, record)["health"]
    return {"containers": containers, "health": health}
