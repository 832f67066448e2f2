"""Deployment containers: run, wait for readiness, scale, remove. Side effects only.

One container per instance, named `rc-<stack>-<endpoint>-<deployment>-<generation>-<n>-<hash>`
(drivers/common/names.py: at most 63 characters, the hash covers the stack identity). A
generation is fixed at creation, so a replacement can run beside the old containers.

Containers run hardened (`hardening_options`): no published ports (the gateway reaches them by
name on the stack's network, and readiness is probed at the container's address on that
network, so no local process can skip the endpoint's key) unless `local.publish_ports` asks,
all capabilities dropped but NET_BIND_SERVICE, no-new-privileges, a read-only root filesystem
with a tmpfs /tmp unless `local.read_only_root_filesystem: false`, the CPUs and memory of the
deployment's instance type and a pids limit. The user is the image's own (USER).
"""
from __future__ import annotations

import re
import threading
import time
import weakref
from datetime import datetime

import docker
from docker.errors import APIError, NotFound
from docker.types import Mount

from reconciler.drivers.base import StepContext
from reconciler.drivers.common.engine import free_host_port
from reconciler.config.instance_types import container_cpus, size_of
from reconciler.drivers.common.labels import (LABEL_GENERATION, LABEL_INSTANCE, LABEL_ROLE, label_filter,
                                              managed_labels, owned_filter)
from reconciler.drivers.common.names import object_name
from reconciler.drivers.common.probes import Cancelled, exec_probe, wait_until_ready
from reconciler.drivers.docker.engine import remove_container, remove_released_network
from reconciler.errors import DriverError

# Enough for a Python traceback of a scoring script's init() and the server's lines after it.
LOG_LINES_ON_FAILURE = 40
STOP_TIMEOUT = 10
# Enough for a threaded or pre-forking model server; a fork bomb stops here.
PIDS_LIMIT = 1024
# An image of unknown make may run as root and bind a port below 1024 (Azure ML's own
# inference server uses 5001, TF Serving 8501); nothing else is given back.
DEPLOYMENT_CAPABILITIES = ["NET_BIND_SERVICE"]
TMPFS = {"/tmp": "rw,nosuid,nodev,size=64m"}
# Uncounted readiness polls between scheduled probes until the first success (probes.py): a
# refused connect to the container's address costs well under a millisecond. Not on remote
# engines, where each poll would be one more exec through the engine.
EARLY_POLL = 0.02


def network_name(owner) -> str:
    """The stack's network (`owner`: a StepContext). Its name carries the identity: two stacks of
    one folder name applied at once would otherwise each create `rc-<stack>` (Docker allows
    two networks of one name, and every later use of the name is then ambiguous)."""
    return object_name("rc", owner.stack, identity=owner.identity)


_network_lock = threading.Lock()
# Per client (one per command): the networks this client saw or made. Twenty instances started
# at once would otherwise list the networks twenty times, one after another under the lock.
_known_networks: "weakref.WeakKeyDictionary[docker.DockerClient, set[str]]" = weakref.WeakKeyDictionary()


def ensure_network(client: docker.DockerClient, owner) -> str:
    """A per-stack bridge network, so gateways reach deployments by container name."""
    name = network_name(owner)
    # Parallel steps would otherwise create two networks of the same name (Docker allows it).
    with _network_lock:
        known = _known_networks.setdefault(client, set())
        if name in known:
            return name
        existing = client.networks.list(names=[name])
        if not any(n.name == name for n in existing):
            client.networks.create(name, driver="bridge", labels=managed_labels(
                owner, f"network.{owner.stack}", "", **{LABEL_ROLE: "network"}))
        known.add(name)
    return name


def remove_network(client: docker.DockerClient, owner) -> list[str]:
    """Remove the stack's network once nothing of the stack uses it (ours only, by label);
    the names of those the engine kept (still in use, or an endpoint it never released)."""
    with _network_lock:
        _known_networks.get(client, set()).discard(network_name(owner))
    return [network.name for network in client.networks.list(names=[network_name(owner)], filters=owned_filter(owner))
            if not remove_released_network(network)]


def container_name(owner, spec: dict, generation: str, instance: int) -> str:
    return object_name("rc", owner.stack, spec["endpoint"], spec["name"], generation, str(instance),
                       identity=owner.identity)


def container_ports(spec: dict) -> list[int]:
    return sorted({route["port"] for route in spec["routes"].values()})


def hardening_options(spec: dict, engine_cpus: int) -> dict:
    """The `containers.run` keyword arguments that confine one instance (pure)."""
    size = size_of(spec.get("instance_type", ""))
    options: dict = {"cap_drop": ["ALL"], "cap_add": list(DEPLOYMENT_CAPABILITIES),
                     "security_opt": ["no-new-privileges:true"], "pids_limit": PIDS_LIMIT}
    if spec.get("read_only_root_filesystem", True):
        options.update(read_only=True, tmpfs=dict(TMPFS))
    cpus = container_cpus(size, engine_cpus)
    if cpus is not None:
        options["nano_cpus"] = int(cpus * 1e9)
    if spec.get("memory"):
        options["mem_limit"] = spec["memory"]
    elif size is not None:
        options["mem_limit"] = size.memory_bytes
    return options


def run_instance(client: docker.DockerClient, ctx: StepContext, address: str, spec: dict, spec_hash: str,
                 generation: str, instance: int, model_mount: Mount | None,
                 host_ports: dict[str, int] | None = None, engine_cpus: int = 0,
                 code_mount: Mount | None = None) -> dict:
    """Start one instance; returns its state entry {id, name, instance, ports}: `ports` names
    host ports only when `publish_ports` asks for them (debugging), and is {} otherwise."""
    ports = {str(p): (host_ports or {}).get(str(p)) or free_host_port() for p in container_ports(spec)} \
        if spec.get("publish_ports") else {}
    mounts = [mount for mount in (model_mount, code_mount) if mount is not None]
    name = container_name(ctx, spec, generation, instance)
    labels = managed_labels(ctx, address, spec_hash, **{
        LABEL_GENERATION: generation, LABEL_INSTANCE: str(instance), LABEL_ROLE: "deployment"})
    run_options = dict(
        image=spec["image"], name=name, detach=True, labels=labels, environment=spec["environment_variables"],
        ports={f"{p}/tcp": ("127.0.0.1", host) for p, host in ports.items()},
        mounts=mounts, restart_policy={"Name": spec["restart_policy"]} if spec["restart_policy"] != "no" else None,
        network=ensure_network(client, ctx), hostname=f"{spec['name']}-{instance}",
        **hardening_options(spec, engine_cpus),
    )
    if spec.get("command"):
        run_options["entrypoint"] = spec["command"]
    if spec.get("args"):
        run_options["command"] = spec["args"]
    try:
        try:
            container = client.containers.run(**run_options)
        except APIError as error:
            if error.status_code != 409:
                raise
            # The name is taken: a leftover of an interrupted apply (looked for only now, not
            # before every start: one engine call less per instance).
            _remove_leftover(client, name)
            container = client.containers.run(**run_options)
    except APIError as error:
        raise DriverError(f"cannot start container {name}: {error.explanation or error}",
                          "check the image, ports and settings of this deployment") from error
    return {"id": container.id, "name": name, "instance": instance, "ports": ports}


def network_address(client: docker.DockerClient, container_id: str, owner: StepContext) -> str | None:
    """The container's IP on the stack's network (reachable from the host on Linux engines),
    or None while it has none (not started yet, or gone)."""
    try:
        return _address_in(client.api.inspect_container(container_id), owner)
    except NotFound:
        return None


def _address_in(info: dict, owner: StepContext) -> str | None:
    """The stack-network IP in a container's inspect document (pure)."""
    try:
        networks = info["NetworkSettings"]["Networks"] or {}
    except (KeyError, TypeError):
        return None
    return (networks.get(network_name(owner)) or {}).get("IPAddress") or None


def _remove_leftover(client: docker.DockerClient, name: str) -> None:
    """A container of ours with this exact name is a leftover from an interrupted apply."""
    try:
        leftover = client.containers.get(name)
    except NotFound:
        return
    remove_container(client, leftover.id, STOP_TIMEOUT)


def wait_ready(client: docker.DockerClient, ctx: StepContext, spec: dict, instance: dict,
               cancel: threading.Event | None = None, remote: bool = False,
               started_at: float | None = None) -> None:
    """Block until the instance passes readiness, or raise with its last log lines. Probes go
    to the container's address on the stack network: its ports are not published. On a remote
    engine that address is not reachable from here: the probe runs inside the container
    through the engine's exec API instead. The first probe is at initial_delay from `started_at`
    (time.monotonic() when the container started; default: now). `cancel` set: stop waiting (a
    sibling instance failed, so the step fails anyway)."""
    route = spec["routes"]["readiness"]
    # The inspect each scheduled probe's still_running() made, for its target(): one engine
    # call per probe, not two (twenty instances awaited at once probe twenty times a period).
    inspected: dict = {}

    def still_running() -> bool:
        try:
            info = client.api.inspect_container(instance["id"])
        except NotFound:
            return False
        inspected["info"] = info
        # A restart means its server exited (a scoring script's init() that raised): brought
        # back by its restart policy it would only exit again, and a probe may catch it between.
        return (info.get("State") or {}).get("Status") in ("created", "running") and not info.get("RestartCount")

    def target() -> tuple[str, int] | None:
        if remote:
            return instance["id"], route["port"]
        # Looked up per probe: a container restarted by its policy may get another address.
        info = inspected.pop("info", None)
        host = _address_in(info, ctx) if info is not None else network_address(client, instance["id"], ctx)
        return (host, route["port"]) if host else None

    def sleep(seconds: float) -> None:
        if cancel is None:
            time.sleep(seconds)
        elif cancel.wait(seconds):
            raise Cancelled()

    result = wait_until_ready(target, route["path"], spec["readiness_probe"], still_running, sleep=sleep,
                              probe=exec_probe(client) if remote else None,
                              early_poll=None if remote else EARLY_POLL, started_at=started_at)
    if not result.ready:
        ended = exit_reason(client, instance["id"]) if result.last_error == "container stopped" else None
        raise DriverError(
            f"deployment {spec['endpoint']}/{spec['name']} never became ready: {result.last_error} "
            f"(container {instance['name']}, {result.attempts} probe(s))" + (f"; {ended}" if ended else ""),
            "last log lines:\n" + last_logs(client, instance["id"], until=restarted_at(client, instance["id"])))


def exit_reason(client: docker.DockerClient, container_id: str) -> str | None:
    """How a container that stopped during its readiness wait ended ("its server exited with
    code 3"): a model server whose start-up fails (a scoring script's init() that raises) exits."""
    try:
        info = client.api.inspect_container(container_id)
        state = info["State"]
    except (NotFound, KeyError, TypeError):
        return None
    if state.get("OOMKilled"):
        return "its server was killed for want of memory (OOM)"
    code = state.get("ExitCode")
    # A container its restart policy is bringing back is Running and Restarting at once.
    if code is not None and (state.get("Restarting") or not state.get("Running")):
        return f"its server exited with code {code}"
    restarts = info.get("RestartCount")
    return f"its server exited and its restart policy started it again ({restarts} time(s))" if restarts else None


def stop_failed(client: docker.DockerClient, instance: dict) -> None:
    """A container that never became ready is stopped and kept from restarting (its record is
    tainted, so the next apply replaces it): not left restart-looping until then. Kept, not
    removed, so `reconciler logs` still shows why it failed."""
    try:
        container = client.containers.get(instance["id"])
        container.update(restart_policy={"Name": "no", "MaximumRetryCount": 0})
        container.stop(timeout=STOP_TIMEOUT)
    except (NotFound, APIError):
        pass  # gone already, or being removed: nothing left to loop


def restarted_at(client: docker.DockerClient, container_id: str) -> float | None:
    """When the container's current run started (epoch seconds), if its restart policy started it
    again: the lines before are the run that failed; the current run may be half-way through
    its start-up. None when it never restarted."""
    try:
        info = client.api.inspect_container(container_id)
    except NotFound:
        return None
    started = (info.get("State") or {}).get("StartedAt") or ""
    if not info.get("RestartCount") or not started:
        return None
    # Docker writes nanoseconds; datetime reads at most microseconds.
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", started).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(trimmed).timestamp()
    except ValueError:
        return None


def last_logs(client: docker.DockerClient, container_id: str, lines: int = LOG_LINES_ON_FAILURE,
              until: float | None = None) -> str:
    try:
        container = client.containers.get(container_id)
        # The engine takes the tail before it applies `until`: ask for more, keep the last lines.
        raw = container.logs(tail=lines * 10, until=until) if until else container.logs(tail=lines)
        text = "\n".join(raw.decode("utf-8", "replace").rstrip().splitlines()[-lines:])
    except NotFound:
        return "    (container is gone)"
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines()) or "    (no output)"
