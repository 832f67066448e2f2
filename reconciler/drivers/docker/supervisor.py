"""The endpoint's health supervisor on the docker driver: its files and its two containers
(the agent that runs in them is health_agent.py). Side effects only.

Made, updated and removed with the endpoint's gateway, in the same steps (so the plan shows
it as part of the endpoint: `health: probe + restarter` in the endpoint's view), labelled
with the endpoint's address and the stack identity like the gateway, and recorded in the
endpoint's outputs (`health`), so refresh owns them and reports them missing or stopped.
A re-point does not stop or restart them: apply rewrites their files under the health
directory's lock (`exclusive`) and they follow `config.json` themselves (health_agent.py).
"""
from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import docker
from docker.errors import APIError, NotFound
from docker.types import Mount

import reconciler
from reconciler.drivers.base import StepContext
from reconciler.drivers.common.gateway import GATEWAY_IMAGE, MAX_TRIES
from reconciler.drivers.common.labels import LABEL_GENERATION, LABEL_ROLE, managed_labels, new_generation, owned_filter
from reconciler.drivers.common.names import object_name
from reconciler.drivers.common.rotation import rotation_maps
from reconciler.drivers.docker.containers import ensure_network
from reconciler.drivers.docker.engine import remove_container
from reconciler.drivers.docker.gateway_config import health_config
from reconciler.drivers.docker import health_agent
from reconciler.errors import DriverError

HEALTH_SUBDIR = "health"
AGENT_HEALTH_DIR = str(health_agent.HEALTH_DIR)
PACKAGE_IN_CONTAINER = "/opt/reconciler"
ROLE_PROBE, ROLE_RESTARTER = "health-probe", "health-restarter"
ROLES = (ROLE_PROBE, ROLE_RESTARTER)
MEMORY_LIMIT = "64m"
PIDS_LIMIT = 64


def health_dir(config_dir: Path) -> Path:
    return config_dir / HEALTH_SUBDIR


def docker_socket(client: docker.DockerClient) -> str | None:
    """The engine's unix socket on this host (the restarter's only way to the engine), or None
    for an engine reached over TCP: then nothing restarts an instance failing liveness."""
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return None
    path = urlsplit(host).path if host else "/var/run/docker.sock"
    return path if Path(path).exists() else None


def _write(path: Path, text: str, owner: tuple[int, int]) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if os.geteuid() == 0:
        os.chown(temp, *owner)
    os.replace(temp, path)


def prepare_dir(config_dir: Path, owner: tuple[int, int]) -> Path:
    """The health directory and its lock file, both the supervisor's user's (it locks the file
    too, from its container)."""
    directory = health_dir(config_dir)
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    lock = directory / health_agent.LOCK_FILE
    lock.touch(mode=0o600, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(directory, *owner)
        os.chown(lock, *owner)
    return directory


@contextmanager
def exclusive(config_dir: Path, owner: tuple[int, int]):
    """Hold the health directory's lock while apply rewrites the supervisor's files and reloads
    the gateway: the probe publishes only between such rewrites, on the config.json it re-read."""
    directory = prepare_dir(config_dir, owner)
    try:
        with health_agent.exclusive(directory):
            yield
    except TimeoutError as error:
        raise DriverError(f"the endpoint's health probe held {directory / health_agent.LOCK_FILE} too long",
                          "`docker logs` of its health-probe container shows what it does; stopping the "
                          "container releases the lock") from error


def write_files(config_dir: Path, ctx: StepContext, endpoint: str, owner: tuple[int, int]) -> None:
    """config.json and a rotation file per routed deployment (all of its instances in rotation
    but those the probe found out of it and that still run)."""
    directory = prepare_dir(config_dir, owner)
    records = ctx.records()
    config = health_config(endpoint, records, ctx.identity, MAX_TRIES)
    out = {name for name, item in health_agent.read_json(directory / health_agent.STATUS_FILE, {})
           .get("instances", {}).items() if not item.get("in_rotation", True)}
    wanted = set()
    for deployment in config["deployments"]:
        servers = [f"{i['name']}:{deployment['scoring_port']}" for i in deployment["instances"] if i["name"] not in out]
        wanted.add(f"d_{deployment['route_id']}.conf")
        _write(directory / f"d_{deployment['route_id']}.conf",
               rotation_maps(deployment["route_id"], servers, MAX_TRIES), owner)
    for stale in directory.glob("d_*.conf"):
        if stale.name not in wanted:  # a deployment no longer routed: nginx.conf includes it no more
            stale.unlink()
    text = json.dumps(config, indent=1, sort_keys=True)
    try:
        changed = (directory / health_agent.CONFIG_FILE).read_text() != text
    except OSError:
        changed = True
    if changed:
        _write(directory / health_agent.CONFIG_FILE, text, owner)


def _options(client: docker.DockerClient, ctx: StepContext, role: str, config_dir: Path, gateway_id: str,
             user: tuple[int, int]) -> dict | None:
    package = Path(reconciler.__file__).resolve().parent
    mounts = [Mount(target=f"{PACKAGE_IN_CONTAINER}/reconciler", source=str(package), type="bind", read_only=True),
              Mount(target=AGENT_HEALTH_DIR, source=str(health_dir(config_dir)), type="bind")]
    options = {"user": f"{user[0]}:{user[1]}", "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"],
               "read_only": True, "pids_limit": PIDS_LIMIT, "mem_limit": MEMORY_LIMIT,
               "environment": {"PYTHONPATH": PACKAGE_IN_CONTAINER, "PYTHONDONTWRITEBYTECODE": "1",
                               "PYTHONUNBUFFERED": "1"},
               "restart_policy": {"Name": "unless-stopped"}}
    if role == ROLE_PROBE:
        # The stack network to reach the instances; the gateway's pid namespace to signal its
        # nginx master (same user): no Docker access at all.
        options.update(network=ensure_network(client, ctx), pid_mode=f"container:{gateway_id}")
    else:
        socket_path = docker_socket(client)
        if socket_path is None:
            return None
        # No network: nothing can reach it; it reads the probe's requests from the files.
        mounts.append(Mount(target=health_agent.DOCKER_SOCKET, source=socket_path, type="bind"))
        options.update(network_mode="none", group_add=[str(os.stat(socket_path).st_gid)])
    options["mounts"] = mounts
    return options


def start(client: docker.DockerClient, ctx: StepContext, address: str, endpoint: str,
          config_dir: Path, gateway_id: str, user: tuple[int, int]) -> dict:
    """Start (or start afresh) the probe and the restarter, both at once (each is an engine
    round trip of a few hundred milliseconds, and neither needs the other); returns `health`
    for the outputs."""
    write_files(config_dir, ctx, endpoint, user)
    generation = new_generation()
    with ThreadPoolExecutor(max_workers=len(ROLES), thread_name_prefix="supervisor") as pool:
        started = dict(zip(ROLES, pool.map(lambda role: _start_role(client, ctx, address, endpoint, config_dir,
                                                                     gateway_id, user, role, generation), ROLES)))
    return {"probe": started[ROLE_PROBE], "restarter": started[ROLE_RESTARTER]}


def _start_role(client: docker.DockerClient, ctx: StepContext, address: str, endpoint: str, config_dir: Path,
                gateway_id: str, user: tuple[int, int], role: str, generation: str) -> dict | None:
    own = owned_filter(ctx, address)
    for leftover in client.containers.list(all=True, sparse=True,
                                           filters={"label": own["label"] + [f"{LABEL_ROLE}={role}"]}):
        remove_container(client, leftover.id, stop_timeout=1)
    options = _options(client, ctx, role, config_dir, gateway_id, user)
    if options is None:
        return None
    name = object_name("rc", ctx.stack, endpoint, "hp" if role == ROLE_PROBE else "hr", generation,
                       identity=ctx.identity)
    try:
        container = client.containers.run(
            GATEWAY_IMAGE, ["python3", "-m", "reconciler.drivers.docker.health_agent",
                            "probe" if role == ROLE_PROBE else "restart"],
            name=name, detach=True, labels=managed_labels(ctx, address, "", **{
                LABEL_ROLE: role, LABEL_GENERATION: generation}), **options)
    except APIError as error:
        raise DriverError(f"cannot start the health {role.split('-')[1]} of endpoint {endpoint}: "
                          f"{error.explanation or error}", "`docker logs` of the container shows details") from error
    return {"id": container.id, "name": name, "follows_config": True}


def recorded(health: dict | None) -> bool:
    """Whether the endpoint's outputs name any supervisor container."""
    return any((health or {}).values())


def follows_config(health: dict | None) -> bool:
    """Whether the supervisor follows config.json by itself. Supervisors started before it did
    must not run while apply rewrites their files (on their old config they would write the old
    instances back): `pause` them first, and `ensure_running` starts them afresh."""
    return all(item.get("follows_config") for item in (health or {}).values() if item)


def pause(client: docker.DockerClient, health: dict | None) -> None:
    """Stop an old (not config-following) probe before apply rewrites the rotation files."""
    probe = (health or {}).get("probe")
    if not probe or follows_config(health):
        return
    try:
        client.containers.get(probe["id"]).kill()
    except (NotFound, APIError):
        pass  # gone (ensure_running starts a new one) or not running


def ensure_running(client: docker.DockerClient, ctx: StepContext, address: str, endpoint: str, config_dir: Path,
                   gateway_id: str, user: tuple[int, int], health: dict | None) -> dict:
    """After the gateway took its new config: a running supervisor is left alone (it follows
    config.json); a stopped one is started; a missing or old one is started afresh."""
    if not recorded(health) or not follows_config(health):
        return start(client, ctx, address, endpoint, config_dir, gateway_id, user)
    for role, item in sorted((health or {}).items()):
        if not item:
            continue
        try:
            container = client.containers.get(item["id"])
        except NotFound:
            return start(client, ctx, address, endpoint, config_dir, gateway_id, user)
        if container.status != "running":
            container.start()
    return health


def remove(client: docker.DockerClient, health: dict | None) -> None:
    for item in (health or {}).values():
        if item:
            remove_container(client, item["id"], stop_timeout=1)


def read_status(config_dir: Path) -> dict:
    """What the probe last wrote (status.json) and the restarts carried out; {} when none."""
    directory = health_dir(config_dir)
    status = health_agent.read_json(directory / health_agent.STATUS_FILE, {})
    return {**status, "restarts": health_agent.read_json(directory / health_agent.RESTARTS_FILE, {})}
