"""Swarm plumbing: manager check, object names, the stack's overlay network, services and
their roll-outs. Side effects only.

Every service, config, secret and network created here carries the labels of
`reconciler.drivers.common.labels.managed_labels`; removals check them first, so objects
without them are never touched. Task containers carry no `org.reconciler.*` labels of
their own (only `org.reconciler.rollout`): the docker driver lists containers by those
labels and must never mistake a swarm task for one of its containers.

Nothing here depends on IPVS: services use DNS round-robin (`endpoint_mode: dnsrr`) and the
one published port uses host mode, because the swarm's virtual IPs and its ingress routing
mesh need the kernel's IPVS, which many VM and minimal kernels lack (this one does).
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from datetime import datetime

import docker
from docker.errors import APIError, NotFound
from docker.types import Healthcheck

from reconciler.drivers.common.engine import image_users
from reconciler.drivers.common.labels import (LABEL_IDENTITY, LABEL_MANAGED_BY, LABEL_PREFIX, LABEL_ROLE, MANAGED_BY,
                                              managed_labels, owned_filter)
from reconciler.drivers.common.names import object_name as common_object_name
from reconciler.drivers.common.probes import in_container_get
from reconciler.errors import DriverError

LABEL_ROLLOUT = LABEL_PREFIX + "rollout"
MAX_NAME = 63  # service names are DNS labels; configs and secrets allow 64
LIVE_STATES = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"}
FAILED_STATES = {"failed", "rejected"}
LOG_LINES_ON_FAILURE = 20
POLL_SECONDS = 0.25
NANOS = 1_000_000_000


# -- connection ------------------------------------------------------------------------------
def require_manager(client: docker.DockerClient) -> None:
    """Swarm objects can only be made through a manager; say how to get one."""
    swarm = client.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        raise DriverError("the Docker Engine is not part of a swarm (driver: swarm)",
                          "run `docker swarm init` (one machine: `docker swarm init --advertise-addr 127.0.0.1`), "
                          "or point DOCKER_HOST at a swarm manager")
    if not swarm.get("ControlAvailable"):
        raise DriverError("the Docker Engine is a swarm worker; services can only be changed through a manager",
                          "point DOCKER_HOST at a manager node (`docker node ls` there lists the nodes)")


def require_pullable(client: docker.DockerClient, specs: list, images: list[str], gateway_image: str) -> None:
    """Each image is in the registry its name points at (the manager asks it for the manifest,
    as each node will when it pulls): an image only this engine has, or a name the registry
    does not know, would leave tasks on the other nodes rejected."""
    for image in images:
        try:
            client.api.inspect_distribution(image)
        except APIError as error:
            about = image_users(specs, image)
            users = list(about) or ([f"the gateway of {', '.join(sorted(str(a) for a, _ in specs if a.kind == 'endpoint'))}"]
                                    if image == gateway_image else [])
            message = str(error.explanation or error).strip().splitlines()[0][:300]
            raise DriverError(
                f"image {image} ({', '.join(users) or 'needed by this plan'}) cannot be pulled by the swarm's "
                f"nodes: the manager {_hostname(client)} asked its registry and the engine said: {message}",
                "every node pulls the image itself: push it to a registry all nodes reach and name it by that "
                "registry's host (REGISTRY:PORT/NAME:TAG; RECONCILER_GATEWAY_IMAGE for the gateway's)",
                about=about) from error


def _hostname(client: docker.DockerClient) -> str:
    return client.info().get("Name") or "?"


# -- names ------------------------------------------------------------------------------------
def object_name(*parts: str, identity: str = "", limit: int = MAX_NAME) -> str:
    """A name valid for services (a DNS label), configs, secrets and networks alike: the one
    naming function both drivers share (drivers/common/names.py)."""
    return common_object_name(*parts, identity=identity, limit=limit)


def content_hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# -- network ----------------------------------------------------------------------------------
def network_name(owner) -> str:
    # Not `rc-<stack>`: that is the docker driver's bridge network, and a leftover of it
    # would otherwise be taken for ours.
    return object_name("rc", owner.stack, "swarm", identity=owner.identity)


_network_lock = threading.Lock()


def ensure_network(client: docker.DockerClient, owner) -> str:
    """The stack's attachable overlay network (its id): every node can join it, and services
    find each other on it by name through the swarm's DNS."""
    name = network_name(owner)
    with _network_lock:  # parallel steps would create two networks of the same name
        for network in client.networks.list(names=[name]):
            if network.name != name:
                continue
            labels = network.attrs.get("Labels") or {}
            if labels.get(LABEL_MANAGED_BY) != MANAGED_BY or labels.get(LABEL_IDENTITY) != owner.identity:
                raise DriverError(f"network {name} exists but is not this stack's",
                                  "remove or rename it (`docker network rm`), it is not managed by reconciler")
            if not network.attrs.get("Driver"):
                network.reload()  # list data of a network the manager has just made can lack its driver
            if network.attrs.get("Driver") != "overlay":
                raise DriverError(f"network {name} is a {network.attrs.get('Driver')} network, not overlay",
                                  "destroy the stack with the driver that made it first")
            return network.id
        network = client.networks.create(name, driver="overlay", attachable=True, scope="swarm",
                                         labels=managed_labels(owner, f"network.{owner.stack}", "",
                                                               **{LABEL_ROLE: "network"}))
        return network.id


def remove_network_if_unused(client: docker.DockerClient, owner) -> None:
    """When no service of the stack is left; their tasks may still be detaching, so retry a
    while (and leave it for the next destroy if something else still uses it)."""
    if client.api.services(filters=owned_filter(owner)):
        return
    for network in client.networks.list(names=[network_name(owner)], filters=owned_filter(owner)):
        deadline = time.monotonic() + 15
        while True:
            try:
                network.remove()
                break
            except NotFound:
                break
            except APIError:
                if time.monotonic() > deadline:
                    break  # still in use; the next destroy removes it
                time.sleep(POLL_SECONDS)


# -- services ---------------------------------------------------------------------------------
def inspect_service(client: docker.DockerClient, service_id: str | None) -> dict | None:
    if not service_id:
        return None
    try:
        return client.api.inspect_service(service_id)
    except NotFound:
        return None


def owned_services(client: docker.DockerClient, owner, address: str | None = None,
                   **labels: str) -> list[dict]:
    """Our services of the stack's identity (and address), optionally matching more labels."""
    found = client.api.services(filters=owned_filter(owner, address))
    return [s for s in found if all((s["Spec"].get("Labels") or {}).get(k) == v for k, v in labels.items())]


def with_rollout(task_template: dict) -> dict:
    """Mark the container spec with a hash of the task template, so that the tasks of this
    version can be told from those of the one before (a task records the spec it was made
    from; the service's version is not in the task API)."""
    container = dict(task_template["ContainerSpec"])
    container["Labels"] = {k: v for k, v in (container.get("Labels") or {}).items() if k != LABEL_ROLLOUT}
    template = {**task_template, "ContainerSpec": container}
    container["Labels"][LABEL_ROLLOUT] = content_hash(template)[:16]
    return template


def deploy_service(client: docker.DockerClient, name: str, service: dict | None, **spec) -> tuple[str, int]:
    """Create the service, or replace its whole spec (a rolling update when the task template
    changed, nothing else when only labels or replicas did). Returns (id, since): `since` is
    the engine's time of the service's last change before this one, in ns; roll-out status
    and tasks from before that are not this change's. (Not the time after the change: the
    service's UpdatedAt moves again whenever swarm records roll-out progress.)"""
    since = 0
    try:
        if service is None:
            service_id = client.api.create_service(name=name, **spec)["ID"]
        else:
            service_id = service["ID"]
            for attempt in (1, 2):
                since = timestamp_ns(service.get("UpdatedAt"))
                try:
                    client.api.update_service(service_id, service["Version"]["Index"], name=name, **spec)
                    break
                except APIError as error:
                    # Someone (swarm's own updater) bumped the version meanwhile: read it again.
                    if attempt == 2 or "out of sequence" not in str(error.explanation or error):
                        raise
                    service = client.api.inspect_service(service_id)
    except APIError as error:
        raise DriverError(f"swarm refused service {name}: {error.explanation or error}",
                          "check the image, settings and model of this resource") from error
    return service_id, since


def scale_down(client: docker.DockerClient, service_id: str, replicas: int) -> None:
    """At most `replicas`, changing nothing else (an orphan's repair: someone scaled the service
    up by hand). Orphans of one service are deleted in parallel: re-read on a version clash."""
    for attempt in range(5):
        service = inspect_service(client, service_id)
        current = ((service or {}).get("Spec", {}).get("Mode", {}).get("Replicated") or {}).get("Replicas")
        if current is None or current <= replicas:
            return
        spec = service["Spec"]
        try:
            client.api.update_service(service_id, service["Version"]["Index"], name=spec["Name"],
                                      task_template=spec["TaskTemplate"], labels=spec.get("Labels"),
                                      mode={"Replicated": {"Replicas": replicas}},
                                      update_config=spec.get("UpdateConfig"),
                                      rollback_config=spec.get("RollbackConfig"),
                                      endpoint_spec=spec.get("EndpointSpec"))
            return
        except APIError as error:
            if attempt == 4 or "out of sequence" not in str(error.explanation or error):
                raise DriverError(f"cannot scale service {spec['Name']} back to {replicas}: "
                                  f"{error.explanation or error}", "run `reconciler plan` again") from error


def remove_service(client: docker.DockerClient, service_id: str | None, wait_seconds: float = 60) -> None:
    remove_services(client, [service_id], wait_seconds)


def remove_services(client: docker.DockerClient, service_ids: list[str | None], wait_seconds: float = 60) -> None:
    """Remove services of ours and wait until their tasks are gone (their containers hold the
    network and, until they stop, answer requests). Already gone is fine."""
    removed = set()
    for service_id in service_ids:
        service = inspect_service(client, service_id)
        if service is None:
            continue
        if (service["Spec"].get("Labels") or {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
            raise DriverError(f"service {service['Spec']['Name']} is not managed by reconciler; refusing to remove it",
                              "remove the record with `reconciler state rm` if it was recorded by mistake")
        try:
            client.api.remove_service(service["ID"])
        except NotFound:
            pass
        removed.add(service["ID"])
    deadline = time.monotonic() + wait_seconds
    # The task list cannot be filtered by a removed service; its tasks stay listed until stopped.
    while removed and time.monotonic() < deadline and any(t.get("ServiceID") in removed for t in client.api.tasks()):
        time.sleep(POLL_SECONDS)


def service_tasks(client: docker.DockerClient, service_id: str) -> list[dict]:
    try:
        return client.api.tasks(filters={"service": service_id})
    except NotFound:
        return []


def node_names(client: docker.DockerClient) -> dict[str, dict]:
    """Node id -> {"name": hostname, "state": ready|down|..., "availability": active|drain|pause}."""
    return {node["ID"]: {"name": (node.get("Description") or {}).get("Hostname") or node["ID"][:12],
                         "state": (node.get("Status") or {}).get("State", "unknown"),
                         "availability": (node.get("Spec") or {}).get("Availability", "active")}
            for node in client.api.nodes()}


# What a task's state means to someone waiting for it (the engine's own words are terse).
_TASK_STEPS = {"preparing": "pulling the image and preparing", "starting": "starting (health check pending)",
               "running": "running and healthy", "rejected": "rejected", "failed": "failed"}


def task_progress(seen: dict[str, str], tasks: list[dict], rollout: str | None, nodes: dict[str, dict],
                  what: str) -> tuple[list[str], dict[str, str]]:
    """The progress lines for the tasks of `rollout` whose state changed since `seen` (task id
    -> state), one per task and state, naming its slot and node; and the new `seen`. Pure."""
    lines, seen = [], dict(seen)
    for task in sorted(tasks, key=lambda t: (t.get("Slot") or 0, t.get("CreatedAt", ""))):
        state = (task.get("Status") or {}).get("State", "")
        if _rollout_of(task) != rollout or seen.get(task["ID"]) == state:
            continue
        seen[task["ID"]] = state
        if state in _TASK_STEPS:
            error = (task.get("Status") or {}).get("Err")
            lines.append(f"{what}: {_task_where(task, nodes)}: {_TASK_STEPS[state]}" + (f": {error}" if error else ""))
    return lines, seen


def _task_where(task: dict, nodes: dict[str, dict] | None) -> str:
    slot = f"task {task['Slot']}" if task.get("Slot") is not None else "task"
    node = (nodes or {}).get(task.get("NodeID") or "")
    return f"{slot} on node {node['name']}" if node else (f"{slot} on node {task['NodeID'][:12]}"
                                                          if task.get("NodeID") else f"{slot} (not placed yet)")


def takes_tasks(node: dict) -> bool:
    """Whether a node of node_names() runs new tasks: ready and active. Pure."""
    return node["state"] == "ready" and node["availability"] == "active"


def eligible_nodes(client: docker.DockerClient) -> int:
    """How many tasks a global service runs: one per ready, active node."""
    return sum(1 for node in node_names(client).values() if takes_tasks(node)) or 1


class RolledBack(DriverError):
    """A rolling update failed and swarm restored the previous version, which runs again."""


def wait_converged(client: docker.DockerClient, service_id: str, rollout: str, since: int, timeout: float,
                   what: str, replicas: int | None = None, progress=None) -> list[dict]:
    """Until the service runs exactly `replicas` tasks (one per node for a global service) of
    its current version, all `running` (which swarm reports only once a task's health check
    passed), and every other task has stopped: when this returns, only the new version
    answers, as when the docker driver's gateway reload returns. Returns those tasks.

    `rollout` is the version deploy_service submitted (see with_rollout). A roll-out that
    swarm rolls back raises RolledBack once the old version is back; a new task that fails
    (create or scale, where there is nothing to roll back to) raises at once; so does running
    out of `timeout`. Errors carry the last task error and log lines. `progress` (a callable
    taking a line) hears what each task of the roll-out does on which node (pulling, starting,
    running, rejected with the engine's message).
    """
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    nodes: dict[str, dict] = {}
    while True:
        service = inspect_service(client, service_id)
        if service is None:
            raise DriverError(f"{what}: service {service_id[:12]} was removed while reconciler waited for it",
                              "someone removed it by hand; `reconciler plan` shows what to do")
        current_rollout = (service["Spec"]["TaskTemplate"]["ContainerSpec"].get("Labels") or {}).get(LABEL_ROLLOUT)
        status = service.get("UpdateStatus") or {}
        state = status.get("State", "") if timestamp_ns(status.get("StartedAt")) > since else ""
        tasks = service_tasks(client, service_id)
        if any(t.get("NodeID") and t["NodeID"] not in nodes for t in tasks):
            nodes = node_names(client)
        if progress is not None:
            lines, seen = task_progress(seen, tasks, rollout, nodes, what)
            for line in lines:
                progress(line)
        if state == "rollback_completed" or (current_rollout != rollout and state != "rollback_started"):
            if state != "rollback_completed":
                raise DriverError(f"{what}: the service was changed by someone else meanwhile",
                                  "run `reconciler plan` to see what it runs now")
            raise RolledBack(f"{what}: the rolling update failed and swarm rolled it back to the previous "
                             f"version ({status.get('Message', '')})",
                             failure_detail(client, service_id, tasks, rollout))
        if state in ("paused", "rollback_paused"):
            raise DriverError(f"{what}: the rolling update stopped half-way ({state}: {status.get('Message', '')})",
                              failure_detail(client, service_id, tasks, rollout))
        current = [t for t in tasks if _rollout_of(t) == rollout]
        if current_rollout == rollout:
            failed = [t for t in current if t["Status"]["State"] in FAILED_STATES
                      and timestamp_ns(t.get("CreatedAt")) >= since]
            if failed and not state:  # no update in progress: nothing would roll back
                raise DriverError(f"{what}: a task failed: {task_error(failed[-1], nodes)}",
                                  failure_detail(client, service_id, tasks, rollout))
            running = [t for t in current if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]
            # Tasks on their way out (older version, scaled away) still answer until they stop;
            # once they are gone, everything that answers is the new version.
            leaving = [t for t in tasks if t not in running and t["Status"]["State"] in LIVE_STATES]
            wanted = replicas if replicas is not None else eligible_nodes(client)
            if len(running) == wanted and not leaving and state in ("", "completed"):
                return running
        if time.monotonic() > deadline:
            raise DriverError(f"{what}: not converged after {int(timeout)}s ({_summary(tasks, rollout)})",
                              failure_detail(client, service_id, tasks, rollout))
        time.sleep(POLL_SECONDS)


def _rollout_of(task: dict) -> str | None:
    return ((task.get("Spec") or {}).get("ContainerSpec", {}).get("Labels") or {}).get(LABEL_ROLLOUT)


def rollout_of(spec: dict) -> str:
    """The version label of a task template made by with_rollout."""
    return spec["task_template"]["ContainerSpec"]["Labels"][LABEL_ROLLOUT]


def _summary(tasks: list[dict], rollout: str | None) -> str:
    states = [t["Status"]["State"] for t in tasks if _rollout_of(t) == rollout and t["DesiredState"] == "running"]
    return ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))) or "no task of the new version"


def task_error(task: dict, nodes: dict[str, dict] | None = None) -> str:
    """The task, the node it was on (by name when `nodes` knows it) and the engine's message."""
    status = task.get("Status") or {}
    return f"{_task_where(task, nodes)} {status.get('State')}: " \
           f"{status.get('Err') or status.get('Message') or 'no message'}"


def failure_detail(client: docker.DockerClient, service_id: str, tasks: list[dict], rollout: str | None = None) -> str:
    errors = sorted((t for t in tasks if (t.get("Status") or {}).get("Err")),
                    key=lambda t: t["Status"].get("Timestamp", ""))
    last = f"last task error: {task_error(errors[-1], node_names(client))}\n" if errors else ""
    return last + health_output(client, tasks, rollout) + "last log lines:\n" + \
        indent(service_logs(client, service_id, LOG_LINES_ON_FAILURE))


def health_output(client: docker.DockerClient, tasks: list[dict], rollout: str | None = None) -> str:
    """The newest failed health check that says why, of a task container on this node (the
    engine keeps health logs per container, not per task; tasks on other nodes are not
    reachable from here). A check killed for taking too long says nothing, so one with output
    is preferred. Tasks of the version being rolled out (`rollout`) come first: after a
    roll-back the newest tasks are the old version's, whose checks fail only while they start
    (on a loaded host that is "connection refused", which says nothing of the new version)."""
    found = []
    newest_first = sorted(tasks, key=lambda t: (t.get("Status") or {}).get("Timestamp", ""), reverse=True)
    for task in sorted(newest_first, key=lambda t: rollout is not None and _rollout_of(t) != rollout):
        container_id = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if not container_id:
            continue
        try:
            log = (client.api.inspect_container(container_id)["State"].get("Health") or {}).get("Log") or []
        except (NotFound, APIError):
            continue
        found += [(task, entry) for entry in reversed(log) if entry.get("ExitCode")]
    if not found:
        return ""
    task, entry = found[most_telling_failure([entry.get("Output") or "" for _, entry in found])]
    return (f"last failed health check (task {task.get('Slot', '?')}, exit {entry.get('ExitCode')}):\n"
            + indent(entry.get("Output", "")) + "\n")


# The status line as each probe tool prints it: urllib "HTTP Error 503", wget "HTTP/1.1 503",
# ours "HTTP 503", curl "returned error: 503". Case-sensitive, so a URL's "http://" never matches.
_SERVER_ANSWERED = re.compile(r"HTTP(/\d(\.\d)?)? (Error )?[1-5]\d\d\b|returned error: [1-5]\d\d\b")


def most_telling_failure(outputs: list[str]) -> int:
    """Which of these failed checks' outputs (best candidates first) says most: one where the
    server answered with an error status, else one with any output, else the first. A task
    being stopped (a roll-back stops the new version's tasks) fails its last checks with
    "connection refused", which hides the 503 that made it unhealthy (pure)."""
    answered = next((i for i, output in enumerate(outputs) if _SERVER_ANSWERED.search(output)), None)
    if answered is not None:
        return answered
    return next((i for i, output in enumerate(outputs) if output.strip()), 0)


def service_logs(client: docker.DockerClient, service_id: str, lines: int) -> str:
    try:
        chunks = client.api.service_logs(service_id, stdout=True, stderr=True, tail=lines)
        return b"".join(chunks).decode("utf-8", "replace")
    except (NotFound, APIError) as error:
        return f"(no logs: {getattr(error, 'explanation', None) or error})\n"


def indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines()) or "    (no output)"


def timestamp_ns(value: str | None) -> int:
    """Engine timestamps (RFC 3339, up to 9 fractional digits, trailing zeros dropped) as ns."""
    if not value:
        return 0
    main, _, rest = value.partition(".")
    fraction = re.match(r"\d*", rest).group(0) if rest else ""
    zone = rest[len(fraction):] if rest else main[19:]
    seconds = datetime.fromisoformat(main[:19] + (zone.replace("Z", "+00:00") or "+00:00")).timestamp()
    return int(seconds) * NANOS + int((fraction + "000000000")[:9])


# -- health checks ------------------------------------------------------------------------------
def http_healthcheck(port: int, path: str, probe: dict) -> Healthcheck:
    """A Docker health check that GETs http://127.0.0.1:PORT/PATH inside the task
    (probes.in_container_get: whatever the image has). Azure ML's probe settings map onto it: period -> interval, timeout, failure_threshold ->
    retries, initial_delay -> start period. Docker has no success_threshold (one success)."""
    wait = max(1, int(probe["timeout"]))
    command = in_container_get(port, path, wait)
    return Healthcheck(test=["CMD-SHELL", command], interval=max(1, int(probe["period"])) * NANOS,
                       timeout=wait * NANOS, retries=max(1, int(probe["failure_threshold"])),
                       start_period=int(probe["initial_delay"]) * NANOS)


def task_healthcheck(spec: dict) -> Healthcheck:
    """A deployment task's one health check (swarm has no other) for both of Azure ML's probes:
    the liveness route is checked as well as the readiness route, and a task is unhealthy
    (swarm replaces it) after the shorter of the two failure windows (period x
    failure_threshold), so that failing liveness restarts it as Azure ML does. Checked every
    min(period) seconds; failures do not count before readiness's initial_delay, as before.
    Unlike Azure ML (and the docker driver), swarm cannot take a task out of rotation without
    replacing it: a task failing readiness for its window is replaced too."""
    routes, live, ready = spec["routes"], spec["liveness_probe"], spec["readiness_probe"]
    interval = max(1, int(min(live["period"], ready["period"])))
    window = min(live["period"] * live["failure_threshold"], ready["period"] * ready["failure_threshold"])
    probe = {"initial_delay": ready["initial_delay"], "period": interval,
             "timeout": max(live["timeout"], ready["timeout"]), "failure_threshold": max(1, -(-int(window) // interval))}
    check = http_healthcheck(routes["readiness"]["port"], routes["readiness"]["path"], probe)
    if routes["liveness"] != routes["readiness"]:
        other = http_healthcheck(routes["liveness"]["port"], routes["liveness"]["path"], probe)
        check = Healthcheck(test=["CMD-SHELL", f"( {other['Test'][1]} ) && ( {check['Test'][1]} )"],
                            interval=check["Interval"], timeout=2 * check["Timeout"], retries=check["Retries"],
                            start_period=check["StartPeriod"])
    return check


def convergence_timeout(probe: dict, batches: int, monitor_seconds: float) -> float:
    """Long enough for every batch of a roll-out to pass its health check as slowly as the
    probe settings allow (and for swarm to roll back once), never shorter than a minute."""
    per_task = probe["initial_delay"] + probe["period"] * (probe["failure_threshold"] + 1) + probe["timeout"]
    return max(60.0, 2 * max(1, batches) * (per_task + monitor_seconds + 5))
