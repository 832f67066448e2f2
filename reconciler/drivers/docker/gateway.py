"""Endpoint gateways: one nginx container per endpoint. Side effects only.

The config lives in `<state dir>/gateways/<stack identity>/<endpoint>/` (mode 0700: it holds the
keys; by identity, so stacks of one folder name sharing a state folder never share it), with the
keys also in `keys.json` there, which `state recover` reads back. The directory is
bind-mounted so a rewritten file is seen by the container (on a remote engine, a volume
refilled through the API: content_volumes.py); changes are
applied with a graceful `nginx -s reload`, which never drops a connection. Deployments'
container names are resolved per request through Docker's embedded DNS, so the gateway
starts (after a reboot, a `docker restart`) and serves the healthy deployments while others
are stopped.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

import docker
from docker.errors import APIError
from docker.types import Mount

from reconciler.drivers.base import StepContext
from reconciler.drivers.common.engine import LOOPBACK, EngineAddress, current_engine, free_host_port
from reconciler.drivers.common.gateway import GATEWAY_IMAGE, GATEWAY_PORT, text_digest
from reconciler.drivers.common.labels import LABEL_GENERATION, LABEL_ROLE, managed_labels, new_generation, owned_filter
from reconciler.drivers.common.names import object_name
from reconciler.drivers.common.probes import wait_answering
from reconciler.drivers.docker import content_volumes
from reconciler.drivers.docker.containers import ensure_network
from reconciler.drivers.docker.engine import remove_container
from reconciler.drivers.docker.gateway_config import deployment_routes, render_gateway_config, routed_servers
from reconciler.errors import DriverError

CONFIG_DIR_IN_CONTAINER = "/etc/reconciler"
CONFIG_FILE = f"{CONFIG_DIR_IN_CONTAINER}/nginx.conf"
DRAIN_TIMEOUT_SECONDS = 30
RESOLVE_TIMEOUT_SECONDS = 5
# The gateway runs as this user when reconciler runs as root (images/gateway makes it the
# image's USER): an id no host account normally has, so owning the 0700 config directory (it
# holds the keys) gives no one on the host access. Run as another user, reconciler starts the
# gateway as itself: it owns the directory already.
GATEWAY_UID = GATEWAY_GID = 65532
PIDS_LIMIT = 256
MEMORY_LIMIT = "256m"


def gateway_user() -> tuple[int, int]:
    return (GATEWAY_UID, GATEWAY_GID) if os.geteuid() == 0 else (os.geteuid(), os.getegid())


def hardening_options() -> dict:
    """The gateway container's confinement (pure): nginx listens on 8080 as a non-root user, so
    it needs no capability at all; it writes only its pid file (/run) and buffers (/tmp)."""
    uid, gid = gateway_user()
    # A tmpfs /tmp is mode 1777; /run is 0755 root unless owned by the gateway's user.
    tmpfs = {"/tmp": "rw,nosuid,nodev,size=64m", "/run": f"rw,nosuid,nodev,size=1m,uid={uid},gid={gid}"}
    return {"user": f"{uid}:{gid}", "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"],
            "read_only": True, "tmpfs": tmpfs, "pids_limit": PIDS_LIMIT, "mem_limit": MEMORY_LIMIT}


KEYS_FILE = "keys.json"


def own_config_dir(ctx: StepContext, endpoint: str) -> Path:
    """Where a gateway started now keeps its config."""
    return (ctx.state_dir / "gateways" / (ctx.identity or ctx.stack) / endpoint).resolve()


def config_dir(ctx: StepContext, endpoint: str) -> Path:
    """The config directory of a running gateway: gateways started before identities existed
    keep the `gateways/<stack>/<endpoint>` directory they mount."""
    directory = own_config_dir(ctx, endpoint)
    legacy = (ctx.state_dir / "gateways" / ctx.stack / endpoint).resolve()
    return legacy if not directory.exists() and (legacy / "nginx.conf").exists() else directory


def write_keys(directory: Path, keys: dict[str, str]) -> None:
    """The keys beside the config they are rendered into, so that a lost state file can get
    them back (`state recover`); same directory, same 0700 protection."""
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".keys.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(keys, handle)
    os.replace(temp, directory / KEYS_FILE)


def read_keys(directory: Path) -> dict[str, str] | None:
    """The keys the gateway config in `directory` admits, or None when unknown."""
    try:
        keys = json.loads((directory / KEYS_FILE).read_text())
        if isinstance(keys, dict) and {"primary", "secondary"} <= set(keys):
            # The token secret too (aml_token endpoints): tokens issued before the loss stay valid.
            return {name: str(keys[name]) for name in ("primary", "secondary", "token") if name in keys}
    except (OSError, ValueError):
        pass
    try:
        return keys_in_config((directory / "nginx.conf").read_text())
    except OSError:
        return None


_BEARER = re.compile(r'"Bearer ([A-Za-z0-9_\-]+)"')


def keys_in_config(text: str) -> dict[str, str] | None:
    """Keys of a gateway config written before keys.json existed: its `"Bearer KEY"` map
    entries, primary first as rendered."""
    found = list(dict.fromkeys(_BEARER.findall(text)))
    return {"primary": found[0], "secondary": found[1]} if len(found) == 2 else None


def write_config(directory: Path, text: str) -> str:
    """Write nginx.conf atomically; returns its digest, kept in state to notice hand edits."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".nginx.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temp, directory / "nginx.conf")
    uid, gid = gateway_user()
    if os.geteuid() == 0:
        # Readable by the gateway's non-root user only (it is the directory's owner).
        for path in (directory, directory / "nginx.conf"):
            os.chown(path, uid, gid)
    return text_digest(text)


def config_digest(directory: Path) -> str | None:
    """The digest of the gateway config on disk now, or None when it is gone (refresh)."""
    try:
        return text_digest((directory / "nginx.conf").read_bytes())
    except OSError:
        return None


def render(ctx: StepContext, spec: dict, keys: dict[str, str]) -> str:
    return render_gateway_config(spec, deployment_routes(spec["name"], ctx.records()), keys)


def routes_of(ctx: StepContext, endpoint: str) -> dict[str, list[str]]:
    """What a config rendered now routes to (recorded in the endpoint's outputs as `routes`)."""
    return routed_servers(endpoint, ctx.records())


def upstream_hosts(ctx: StepContext, endpoint: str) -> list[str]:
    """The container names the endpoint's config sends requests to."""
    return sorted({server.rpartition(":")[0] for servers in routes_of(ctx, endpoint).values() for server in servers})


def _wait_resolvable(container, hosts: list[str], timeout: float = RESOLVE_TIMEOUT_SECONDS) -> None:
    """Until Docker's embedded DNS answers for `hosts` inside the gateway (it can lag behind a
    container that has just started), so that no request is sent to a name not known yet.
    Bounded, and not an error: a stopped deployment never resolves and is served a 502."""
    deadline = time.monotonic() + timeout
    while hosts and container.exec_run(["getent", "hosts", *hosts]).exit_code != 0 \
            and time.monotonic() < deadline:
        time.sleep(0.2)


def start(client: docker.DockerClient, ctx: StepContext, address: str, spec: dict, spec_hash: str,
          keys: dict[str, str], port: int | None, engine: EngineAddress | None = None) -> dict:
    """Start the gateway; returns the outputs kept in state. On a remote engine the config
    reaches the gateway in a volume filled through the API, the port is published on every
    address of the engine's host (the engine picks it the first time: a port free here says
    nothing about that host) and the scoring URI names that host."""
    engine = engine or current_engine()
    directory = own_config_dir(ctx, spec["name"])
    text = render(ctx, spec, keys)
    digest = write_config(directory, text)
    write_keys(directory, keys)
    generation = new_generation()
    name = object_name("rc", ctx.stack, spec["name"], "gw", generation, identity=ctx.identity)
    config_volume = None
    if engine.remote:
        config_volume = content_volumes.create_volume(client, object_name(
            "rc", ctx.stack, spec["name"], "gw", generation, "conf", identity=ctx.identity),
            managed_labels(ctx, address, spec_hash, **{LABEL_ROLE: content_volumes.GATEWAY_CONFIG_ROLE,
                                                    LABEL_GENERATION: generation}))
        _fill_config(client, config_volume, text)
        config_mount = Mount(target=CONFIG_DIR_IN_CONTAINER, source=config_volume, type="volume", read_only=True)
    else:
        port = port or free_host_port()
        config_mount = Mount(target=CONFIG_DIR_IN_CONTAINER, source=str(directory), type="bind", read_only=True)
    # A gateway of this endpoint that no record owns (an apply killed after `docker run`) would
    # hold the endpoint's port; under the state lock, any existing one is such a leftover.
    for leftover in client.containers.list(all=True, sparse=True, filters=owned_filter(ctx, address)):
        remove_container(client, leftover.id, stop_timeout=1)
    try:
        container = client.containers.run(
            GATEWAY_IMAGE, ["nginx", "-c", CONFIG_FILE, "-g", "daemon off;"], name=name, detach=True,
            labels=managed_labels(ctx, address, spec_hash, **{LABEL_ROLE: "gateway",
                                                                      LABEL_GENERATION: generation}),
            ports={f"{GATEWAY_PORT}/tcp": (engine.listen_address, port)},
            mounts=[config_mount], restart_policy={"Name": "unless-stopped"}, network=ensure_network(client, ctx),
            **hardening_options())
    except APIError as error:
        if config_volume:
            content_volumes.remove_volume(client, config_volume)
        raise DriverError(f"cannot start the gateway of endpoint {spec['name']}: {error.explanation or error}",
                          f"is {engine.host}:{port} taken by another program? `reconciler logs` shows details") from error
    try:
        port = port or _published_port(client, container.id)
        _wait_listening(client, container.id, engine.host, port)
    except DriverError:
        remove_container(client, container.id, stop_timeout=1)  # never leave an unrecorded gateway behind
        if config_volume:
            content_volumes.remove_volume(client, config_volume)
        raise
    _wait_resolvable(container, upstream_hosts(ctx, spec["name"]))
    gateway = {"id": container.id, "name": name, "image": GATEWAY_IMAGE}
    if config_volume:
        gateway.update(config_volume=config_volume, listen=engine.listen_address)
    return {"gateway": gateway, "port": port,
            "scoring_uri": f"http://{engine.uri_host}:{port}/score", "keys": keys, "config_digest": digest,
            "routes": routes_of(ctx, spec["name"])}


def _published_port(client: docker.DockerClient, container_id: str) -> int:
    """The host port the engine chose for the gateway's port."""
    bindings = (client.api.inspect_container(container_id)["NetworkSettings"]["Ports"] or {}).get(
        f"{GATEWAY_PORT}/tcp") or []
    if not bindings:
        raise DriverError(f"the engine published no port for gateway {container_id[:12]}", "see `docker inspect`")
    return int(bindings[0]["HostPort"])


def _fill_config(client: docker.DockerClient, volume: str, text: str) -> None:
    """The config into the gateway's config volume (remote engines), readable by the gateway's user only."""
    uid, gid = gateway_user()
    content_volumes.fill_files(client, volume, {"nginx.conf": text.encode()}, uid, gid, GATEWAY_IMAGE)


def _wait_listening(client: docker.DockerClient, container_id: str, host: str, port: int,
                    timeout: float = 20) -> None:
    error = wait_answering(port, "/-/healthz", timeout, interval=0.1, host=host)
    if not error:
        return
    logs = client.containers.get(container_id).logs(tail=20).decode("utf-8", "replace")
    raise DriverError(f"gateway did not start listening on {host}:{port}: {error}",
                      "gateway log:\n" + logs + ("\nis that port reachable from here (firewall)?"
                                                 if host != LOOPBACK else ""))


def reload(client: docker.DockerClient, ctx: StepContext, spec: dict, outputs: dict) -> str:
    """Rewrite the config, check it, reload gracefully and wait for old workers to drain.
    Returns the digest of the config now in force."""
    directory = config_dir(ctx, spec["name"])
    previous = (directory / "nginx.conf").read_text() if (directory / "nginx.conf").exists() else None
    text = render(ctx, spec, outputs["keys"])
    digest = write_config(directory, text)
    container = client.containers.get(outputs["gateway"]["id"])
    config_volume = outputs["gateway"].get("config_volume")
    if config_volume:
        _fill_config(client, config_volume, text)
    check = _check_config(container)
    if check.exit_code != 0:
        if previous is not None:
            write_config(directory, previous)
            if config_volume:
                _fill_config(client, config_volume, previous)
        raise DriverError(f"new gateway config for endpoint {spec['name']} was rejected by nginx",
                          check.output.decode("utf-8", "replace").strip())
    # Names already in the config were resolvable before; only new containers may lag.
    _wait_resolvable(container, [host for host in upstream_hosts(ctx, spec["name"])
                                 if previous is None or f'"{host}:' not in previous])
    old_workers = _worker_pids(container)
    result = container.exec_run(["nginx", "-s", "reload", "-c", CONFIG_FILE])
    if result.exit_code != 0:
        raise DriverError(f"gateway of endpoint {spec['name']} did not reload",
                          result.output.decode("utf-8", "replace").strip())
    write_keys(directory, outputs["keys"])  # the keys of the config now in force
    _wait_gone(container, old_workers)
    return digest


def _check_config(container):
    """`nginx -t`. Names are resolved per request, so nothing here depends on which
    deployments are running (a stopped one used to make nginx refuse the whole config)."""
    return container.exec_run(["nginx", "-t", "-q", "-c", CONFIG_FILE])


# `[ ]` keeps the pattern from matching the command line of this very script.
_WORKERS_SCRIPT = ("for p in /proc/[0-9]*; do grep -qa 'nginx: worker[ ]process' $p/cmdline 2>/dev/null "
                   "&& echo ${p#/proc/}; done; true")


def _worker_pids(container) -> set[str]:
    return set(container.exec_run(["sh", "-c", _WORKERS_SCRIPT]).output.decode().split())


def _wait_gone(container, old_workers: set[str]) -> None:
    """Until the workers of the previous config have finished their requests and exited, so
    that nothing is sent to a deployment's old containers once reload returns."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while time.monotonic() < deadline and old_workers & _worker_pids(container):
        time.sleep(0.05)


def remove(client: docker.DockerClient, outputs: dict, ctx: StepContext, endpoint: str) -> None:
    gateway = outputs.get("gateway")
    if gateway:
        remove_container(client, gateway["id"], stop_timeout=5)
        if gateway.get("config_volume"):
            content_volumes.remove_volume(client, gateway["config_volume"])
    directory = config_dir(ctx, endpoint)
    if directory.exists():
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()

