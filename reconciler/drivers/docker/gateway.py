"""Endpoint gateways: one nginx container per endpoint. Side effects only.

The config lives in `<state dir>/gateways/<stack identity>/<endpoint>/` (mode 0700: it holds the
keys; by identity, so stacks of one folder name sharing a state folder never share it), with the
keys also in `keys.json` there, which `state recover` reads back. The directory is
bind-mounted so a rewritten file is seen by the container (on a remote engine, a volume
refilled through the API from that directory: content_volumes.py); changes are
applied with a graceful reload (SIGHUP) of the routing nginx (nginx.conf). Clients connect to
the container's edge (edge.conf, a second nginx that keeps their connections alive and is not
reloaded by a route change; DESIGN.md, "The gateway"), so a reload loses no request. Deployments'
container names are resolved per request through Docker's embedded DNS, so the gateway
starts (after a reboot, a `docker restart`) and serves the healthy deployments while others
are stopped.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import ssl
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
from docker.errors import APIError
from docker.types import Mount

from reconciler.addresses import endpoint_address
from reconciler.drivers.base import StepContext
from reconciler.drivers.common.engine import EngineAddress, current_engine, free_host_port
from reconciler.drivers.common.gateway import GATEWAY_IMAGE, GATEWAY_PORT, render_edge_config, text_digest
from reconciler.drivers.common.labels import LABEL_GENERATION, LABEL_ROLE, managed_labels, new_generation, owned_filter
from reconciler.drivers.common.names import object_name
from reconciler.config.settings import file_fingerprint
from reconciler.drivers.common import tls
from reconciler.drivers.common.probes import wait_answering
from reconciler.drivers.docker import content_volumes, supervisor
from reconciler.drivers.docker.containers import ensure_network
from reconciler.drivers.docker.engine import remove_container
from reconciler.drivers.docker.gateway_config import deployment_routes, render_gateway_config, routed_servers
from reconciler.errors import DriverError

CONFIG_DIR_IN_CONTAINER = "/etc/reconciler"
CONFIG_FILE = f"{CONFIG_DIR_IN_CONTAINER}/nginx.conf"
EDGE_CONFIG = "edge.conf"
EDGE_CONFIG_FILE = f"{CONFIG_DIR_IN_CONTAINER}/{EDGE_CONFIG}"
# Where the routing nginx (nginx.conf) listens for its edge (edge.conf), which has the port.
ROUTING_SOCKET = "/run/reconciler-gateway.sock"
# The gateway container's command: the routing nginx, then (once it listens) the edge, each
# its own master; the container ends (and its restart policy starts both again) when either
# ends, and a stop asks both to finish their requests (QUIT). Bounded: 100 x 50 ms for the socket.
START_SCRIPT = f"""
nginx -c {CONFIG_FILE} -g 'daemon off;' & routing=$!
polls=0
while [ ! -S {ROUTING_SOCKET} ] && [ $polls -lt 100 ] && kill -0 $routing 2>/dev/null; do
    sleep 0.05; polls=$((polls + 1))
done
nginx -c {EDGE_CONFIG_FILE} -g 'daemon off;' & edge=$!
trap 'kill -QUIT $routing $edge 2>/dev/null' TERM INT QUIT
while kill -0 $routing 2>/dev/null && kill -0 $edge 2>/dev/null; do
    sleep 1 & wait $!
done
kill -QUIT $routing $edge 2>/dev/null
wait
exit 1
"""
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


def write_config(directory: Path, text: str, name: str = "nginx.conf") -> str:
    """Write nginx.conf (or the edge's config) atomically; returns its digest, kept in state to
    notice hand edits."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".nginx.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temp, directory / name)
    uid, gid = gateway_user()
    if os.geteuid() == 0:
        # Readable by the gateway's non-root user only (it is the directory's owner).
        for path in (directory, directory / name):
            os.chown(path, uid, gid)
    return text_digest(text)


def config_digest(directory: Path) -> str | None:
    """The digest of the gateway config on disk now, or None when it is gone (refresh)."""
    try:
        return text_digest((directory / "nginx.conf").read_bytes())
    except OSError:
        return None


TLS_SUBDIR = "tls"
TLS_FILES = {"certificate": "endpoint.crt", "key": "endpoint.key"}  # in TLS_SUBDIR
TLS_IN_CONTAINER = {role: f"{CONFIG_DIR_IN_CONTAINER}/{TLS_SUBDIR}/{name}" for role, name in TLS_FILES.items()}


def render(ctx: StepContext, spec: dict, keys: dict[str, str], edge: bool = True) -> str:
    """The routing config; `edge`: behind the edge (which listens and has the TLS), as every
    gateway started since issue 15's latency work runs; False for an older gateway container,
    whose nginx.conf still listens on the port itself."""
    tls_paths = TLS_IN_CONTAINER if spec.get("tls") else None
    return render_gateway_config(spec, deployment_routes(spec["name"], ctx.records()), keys,
                                 rotation_dir=f"{CONFIG_DIR_IN_CONTAINER}/{supervisor.HEALTH_SUBDIR}",
                                 tls=None if edge else tls_paths, routing_socket=ROUTING_SOCKET if edge else None)


def render_edge(spec: dict) -> str:
    return render_edge_config(spec["name"], ROUTING_SOCKET, TLS_IN_CONTAINER if spec.get("tls") else None)


def runs_edge(container) -> bool:
    """Whether a gateway container was started with the edge (START_SCRIPT)."""
    return EDGE_CONFIG_FILE in " ".join(container.attrs["Config"].get("Cmd") or [])


def write_tls(directory: Path, ctx: StepContext, spec: dict) -> dict | None:
    """The endpoint's certificate and key copied beside its config (the key 0600, readable by
    the gateway's user only); returns `tls` for the outputs: the CA a client verifies against
    and the certificate's fingerprint (never the key)."""
    files = tls.endpoint_files(spec, ctx.state_dir, ctx.identity)
    target = directory / TLS_SUBDIR
    if files is None:
        shutil.rmtree(target, ignore_errors=True)
        return None
    target.mkdir(mode=0o700, exist_ok=True)
    uid, gid = gateway_user()
    for source, name in ((files.certificate, TLS_FILES["certificate"]), (files.key, TLS_FILES["key"])):
        fd, temp = tempfile.mkstemp(dir=target, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(source.read_bytes())
        if os.geteuid() == 0:
            os.chown(temp, uid, gid)
        os.replace(temp, target / name)
    if os.geteuid() == 0:
        os.chown(target, uid, gid)
    return _tls_outputs(files.ca, files.certificate)


def _tls_outputs(ca: Path | None, certificate: Path) -> dict:
    """`tls` of an endpoint's outputs: the CA a client verifies against and the served
    certificate's fingerprint (never the key)."""
    return {"ca": str(ca.resolve()) if ca else None, "certificate_sha256": file_fingerprint(certificate)}


def recovered_tls(directory: Path, ctx: StepContext, spec: dict) -> dict | None:
    """`tls` for the outputs of a gateway found running (`state recover`): the fingerprint of
    the certificate its config directory serves and the CA a client verifies against (the
    user's, or the stack's generated one when it is still there: never generated anew, which
    would not have signed what is served). None for plain http or when no certificate is there."""
    if not spec.get("tls"):
        return None
    certificate = directory / TLS_SUBDIR / TLS_FILES["certificate"]
    if not certificate.is_file():
        return None
    if spec["tls"]["source"] == "generated":
        ca = tls.generated_ca(ctx.state_dir, ctx.identity)
        ca = ca if ca.is_file() else None
    else:
        ca = Path(spec["tls"]["ca"]) if spec["tls"].get("ca") else None
    return _tls_outputs(ca, certificate)


def scoring_uri(spec: dict, port: int, engine: EngineAddress | None = None) -> str:
    """Where a client here calls the endpoint: the engine's host (127.0.0.1 for the local
    engine) unless the endpoint listens on one address of it."""
    engine = engine or current_engine()
    scheme = "https" if spec.get("tls") else "http"
    return f"{scheme}://{engine.caller_uri_host(engine.gateway_listen(spec)['address'])}:{port}/score"


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
    directory reaches the gateway in a volume filled through the API, the port is published on
    every address of the engine's host unless `listen` says otherwise (the engine picks the port
    the first time: a port free here says nothing about that host), the scoring URI names that
    host, and no health supervisor runs (it bind-mounts this machine's package and the engine's
    unix socket): nginx's passive checks alone take failing instances out of rotation."""
    engine = engine or current_engine()
    # Deployments may become ready while this runs (apply starts a new endpoint beside them and
    # routes it after, #16): the config, the health supervisor and the recorded `routes` all
    # come from one view of state, so `routes` is exactly what nginx was given.
    records = ctx.records()
    ctx = dataclasses.replace(ctx, records=lambda: records)
    routes = routes_of(ctx, spec["name"])
    directory = own_config_dir(ctx, spec["name"])
    digest = write_config(directory, render(ctx, spec, keys))
    write_config(directory, render_edge(spec), EDGE_CONFIG)
    served_tls = write_tls(directory, ctx, spec)
    supervisor.write_files(directory, ctx, spec["name"], gateway_user())
    write_keys(directory, keys)
    generation = new_generation()
    name = object_name("rc", ctx.stack, spec["name"], "gw", generation, identity=ctx.identity)
    listen = engine.gateway_listen(spec)
    config_volume = None
    if engine.remote:
        config_volume = content_volumes.create_volume(client, object_name(
            "rc", ctx.stack, spec["name"], "gw", generation, "conf", identity=ctx.identity),
            managed_labels(ctx, address, spec_hash, **{LABEL_ROLE: content_volumes.GATEWAY_CONFIG_ROLE,
                                                    LABEL_GENERATION: generation}))
        _fill_config(client, config_volume, directory)
        config_mount = Mount(target=CONFIG_DIR_IN_CONTAINER, source=config_volume, type="volume", read_only=True)
        port = listen["port"] or port
    else:
        config_mount = Mount(target=CONFIG_DIR_IN_CONTAINER, source=str(directory), type="bind", read_only=True)
        port = listen["port"] or port or free_host_port(listen["address"])
    # A gateway of this endpoint that no record owns (an apply killed after `docker run`) would
    # hold the endpoint's port; under the state lock, any existing one is such a leftover.
    for leftover in client.containers.list(all=True, sparse=True, filters=owned_filter(ctx, address)):
        remove_container(client, leftover.id, stop_timeout=1)
    try:
        container = client.containers.run(
            GATEWAY_IMAGE, ["sh", "-c", START_SCRIPT], name=name, detach=True,
            labels=managed_labels(ctx, address, spec_hash, **{LABEL_ROLE: "gateway",
                                                                      LABEL_GENERATION: generation}),
            ports={f"{GATEWAY_PORT}/tcp": (listen["address"], port)},
            mounts=[config_mount],
            restart_policy={"Name": "unless-stopped"}, network=ensure_network(client, ctx),
            **hardening_options())
    except APIError as error:
        if config_volume:
            content_volumes.remove_volume(client, config_volume)
        raise DriverError(f"cannot start the gateway of endpoint {spec['name']}: {error.explanation or error}",
                          f"is {listen['address']}:{port} taken by another program, or not an address of the "
                          "engine's host? `reconciler logs` shows details") from error

    def discard() -> None:  # never leave an unrecorded gateway behind
        remove_container(client, container.id, stop_timeout=1)
        if config_volume:
            content_volumes.remove_volume(client, config_volume)
    # The health supervisor starts while the gateway comes up: the probe needs only the gateway
    # container running (it joins its pid namespace), the restarter nothing of it. None on a
    # remote engine (see above), nor while nothing is routed (a new endpoint whose deployments
    # start beside it): recorded empty, so refresh expects none; the re-point that routes the
    # first deployment starts it (`reload`).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="supervisor") as pool:
        supervising = None if engine.remote or not routes else pool.submit(
            supervisor.start, client, ctx, address, spec["name"], directory, container.id, gateway_user())
        try:
            port = port or _published_port(client, container.id)
            _wait_listening(client, container.id, engine.caller_host(listen["address"]), port, bool(served_tls))
            _wait_resolvable(container, upstream_hosts(ctx, spec["name"]))
            health: dict | None = supervising.result() if supervising else {}
        except DriverError:
            if supervising and supervising.exception() is None:
                supervisor.remove(client, supervising.result())
            discard()
            raise
    gateway = {"id": container.id, "name": name, "image": GATEWAY_IMAGE}
    if config_volume:
        gateway.update(config_volume=config_volume, listen=listen["address"])
    return {"gateway": gateway, "port": port, "health": health,
            "scoring_uri": scoring_uri(spec, port, engine), "keys": keys, "config_digest": digest,
            **({"tls": served_tls} if served_tls else {}),
            "routes": routes}


def _published_port(client: docker.DockerClient, container_id: str) -> int:
    """The host port the engine chose for the gateway's port."""
    bindings = (client.api.inspect_container(container_id)["NetworkSettings"]["Ports"] or {}).get(
        f"{GATEWAY_PORT}/tcp") or []
    if not bindings:
        raise DriverError(f"the engine published no port for gateway {container_id[:12]}", "see `docker inspect`")
    return int(bindings[0]["HostPort"])


def _fill_config(client: docker.DockerClient, volume: str, directory: Path) -> None:
    """The gateway's files (config, TLS, rotation) into its config volume on a remote engine,
    with the owners and modes they have here (readable by the gateway's user only). Not the
    keys file (recovery reads it here) nor half-written temporary files."""
    with tempfile.TemporaryFile() as archive:
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for path in sorted(directory.rglob("*")):
                relative = path.relative_to(directory)
                if relative.name == KEYS_FILE or relative.name.startswith("."):
                    continue
                tar.add(path, arcname=relative.as_posix(), recursive=False)
        archive.seek(0)
        content_volumes.fill(client, volume, archive, GATEWAY_IMAGE)


def _wait_listening(client: docker.DockerClient, container_id: str, host: str, port: int, https: bool,
                    timeout: float = 20) -> None:
    # Whether it listens, not whom it claims to be (invoke verifies that).
    context = ssl._create_unverified_context() if https else None  # noqa: S323
    error = wait_answering(port, "/-/healthz", timeout, interval=0.1, host=host, tls=context)
    if not error:
        return
    logs = client.containers.get(container_id).logs(tail=20).decode("utf-8", "replace")
    raise DriverError(f"gateway did not start listening on {host}:{port}: {error}", "gateway log:\n" + logs)


def reload(client: docker.DockerClient, ctx: StepContext, spec: dict, outputs: dict) -> tuple[str, dict | None, dict | None]:
    """Rewrite the config (and TLS files), check it, reload gracefully and wait for old workers
    to drain. Returns the digest of the config now in force, the supervisor's outputs (`health`)
    and the TLS outputs (`tls`). The health supervisor is not stopped for it: the files are
    rewritten under its directory's lock, and it follows them (supervisor.py)."""
    directory = config_dir(ctx, spec["name"])
    container = client.containers.get(outputs["gateway"]["id"])
    if outputs["gateway"].get("config_volume"):  # a remote engine's gateway: no supervisor
        digest, served_tls = _rewrite_and_reload(client, container, ctx, spec, outputs, directory)
        return digest, outputs.get("health", {}), served_tls
    supervisor.pause(client, outputs.get("health"))  # only one started before supervisors followed config.json
    address = endpoint_address(spec["name"])
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="supervisor") as pool:
        # None yet (an endpoint created before its deployments were ready): it starts while the
        # gateway reloads; its probe publishes only once the reload has released the lock.
        starting = None if supervisor.recorded(outputs.get("health")) else pool.submit(
            supervisor.start, client, ctx, address, spec["name"], directory, container.id, gateway_user())
        try:
            with supervisor.exclusive(directory, gateway_user()):
                digest, served_tls = _rewrite_and_reload(client, container, ctx, spec, outputs, directory)
        finally:
            # Either way (a rejected config is restored; the instances it watches are those
            # state now records).
            health = starting.result() if starting else supervisor.ensure_running(
                client, ctx, address, spec["name"], directory, container.id, gateway_user(), outputs.get("health"))
    return digest, health, served_tls


def _rewrite_and_reload(client: docker.DockerClient, container, ctx: StepContext, spec: dict, outputs: dict,
                        directory: Path) -> tuple[str, dict | None]:
    """The gateway's files (its configs, TLS, the supervisor's), then `_reload_nginx`."""
    previous = (directory / "nginx.conf").read_text() if (directory / "nginx.conf").exists() else None
    edge = runs_edge(container)
    digest = write_config(directory, render(ctx, spec, outputs["keys"], edge))
    edge_before = _edge_inputs(directory)
    if edge:
        write_config(directory, render_edge(spec), EDGE_CONFIG)
    served_tls = write_tls(directory, ctx, spec)
    # The edge reloads (closing its idle client connections) only when its listener changes.
    reload_edge = edge and _edge_inputs(directory) != edge_before
    supervisor.write_files(directory, ctx, spec["name"], gateway_user())
    config_volume = outputs["gateway"].get("config_volume")
    if config_volume:  # the files reach a remote engine's gateway through the API
        _fill_config(client, config_volume, directory)
    try:
        _reload_nginx(container, directory, spec, outputs, previous, upstream_hosts(ctx, spec["name"]), reload_edge)
    except DriverError:
        if config_volume:
            _fill_config(client, config_volume, directory)  # the previous config, restored here
        raise
    return digest, served_tls


def _edge_inputs(directory: Path) -> list[bytes | None]:
    """What the edge reads: its config and the TLS files."""
    def content(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None
    return [content(directory / EDGE_CONFIG), *(content(directory / TLS_SUBDIR / name) for name in TLS_FILES.values())]


def _reload_nginx(container, directory: Path, spec: dict, outputs: dict, previous: str | None,
                  hosts: list[str], reload_edge: bool = False) -> None:
    """`nginx -t`, a graceful reload and the wait until the old workers are gone, in one exec
    (RELOAD_SCRIPT): each exec is an engine round trip of tens of milliseconds, and the drain
    wait polls inside the container, so it ends within 5 ms of the last old worker's exit."""
    result = container.exec_run(["sh", "-c", RELOAD_SCRIPT, "reload", CONFIG_FILE,
                                 EDGE_CONFIG_FILE if reload_edge else "", str(RESOLVE_POLLS), str(DRAIN_POLLS), *hosts])
    output = result.output.decode("utf-8", "replace").strip()
    if result.exit_code == CHECK_FAILED:
        if previous is not None:
            write_config(directory, previous)
        raise DriverError(f"new gateway config for endpoint {spec['name']} was rejected by nginx", output)
    if result.exit_code != 0:
        raise DriverError(f"gateway of endpoint {spec['name']} did not reload", output)
    write_keys(directory, outputs["keys"])  # the keys of the config now in force


def reloaded_outputs(client: docker.DockerClient, ctx: StepContext, spec: dict, outputs: dict) -> dict:
    """`reload`, and the endpoint's outputs after it."""
    digest, health, served_tls = reload(client, ctx, spec, outputs)
    kept = {key: value for key, value in outputs.items() if key != "tls"}
    return {**kept, "config_digest": digest, "health": health, "routes": routes_of(ctx, spec["name"]),
            "scoring_uri": scoring_uri(spec, outputs["port"]), **({"tls": served_tls} if served_tls else {})}


CHECK_FAILED = 3
RESOLVE_POLL_SECONDS, DRAIN_POLL_SECONDS = 0.05, 0.005
RESOLVE_POLLS = int(RESOLVE_TIMEOUT_SECONDS / RESOLVE_POLL_SECONDS)
DRAIN_POLLS = int(DRAIN_TIMEOUT_SECONDS / DRAIN_POLL_SECONDS)
# $1 config, $2 the edge's config when it reloads too ("" when not), $3 / $4 how many polls the
# name and drain waits may take, then the upstream names.
# `nginx -t` (names are resolved per request, so it does not depend on which deployments run);
# until Docker's DNS answers for the names (a new container's may lag; bounded and not an error:
# a stopped deployment never resolves and is served a 502); the worker pids; the reload;
# until those workers have finished their requests and exited, so that nothing is sent to a
# deployment's old containers once reload returns.
# - The reload is the master's SIGHUP, sent here: `nginx -s reload` would parse the whole config
#   once more only to find the pid file (~150 ms with 20 deployments).
# - The old workers are told to quit (SIGQUIT: finish the requests they hold, accept no more)
#   as soon as a worker of the new configuration runs. The master would tell them only 100 ms
#   after it started the new ones (`ngx_msleep(100)`, "allow new processes to start", in
#   nginx's ngx_process_cycle.c): two thirds of an idle re-point's drain. Connections that
#   arrive before the new worker accepts wait in the listening socket's backlog, which the
#   master holds across the reload. No new worker (the master kept its old configuration):
#   the old workers are left alone, as a failed reload leaves them.
# - Workers are the master's children, found by reading /proc/PID/stat with the shell's `read`:
#   no process per /proc entry, so a poll every 5 ms costs little.
RELOAD_SCRIPT = f"""
config=$1 edge=$2 resolve_polls=$3 drain_polls=$4; shift 4
nginx -t -q -c "$config" 2>&1 || exit {CHECK_FAILED}
[ -z "$edge" ] || nginx -t -q -c "$edge" 2>&1 || exit {CHECK_FAILED}
polls=0
while [ $# -gt 0 ] && [ $polls -lt $resolve_polls ] && ! getent hosts "$@" >/dev/null; do
    sleep {RESOLVE_POLL_SECONDS}; polls=$((polls + 1))
done
master=$(cat /run/nginx.pid)
workers() {{
    for p in /proc/[0-9]*; do
        read -r pid name state ppid rest 2>/dev/null <$p/stat || continue
        [ "$ppid" = "$master" ] && [ "$name" = "(nginx)" ] && [ "$state" != Z ] && echo $pid
    done
}}
old=" "$(echo $(workers))" "
kill -HUP "$master" 2>&1 || exit 4
[ -z "$edge" ] || kill -HUP "$(cat /run/reconciler-edge.pid)" 2>&1 || exit 4
polls=0 told=
while [ $polls -lt $drain_polls ]; do
    left= started=
    for p in $(workers); do
        case "$old" in *" $p "*) left=1 ;; *) started=1 ;; esac
    done
    [ -z "$left" ] && exit 0
    if [ -n "$started" ] && [ -z "$told" ]; then kill -QUIT $old 2>/dev/null; told=1; fi
    sleep {DRAIN_POLL_SECONDS}; polls=$((polls + 1))
done
"""


def remove(client: docker.DockerClient, outputs: dict, ctx: StepContext, endpoint: str) -> None:
    supervisor.remove(client, outputs.get("health"))
    gateway = outputs.get("gateway")
    if gateway:
        remove_container(client, gateway["id"], stop_timeout=5)
        if gateway.get("config_volume"):
            content_volumes.remove_volume(client, gateway["config_volume"])
    directory = config_dir(ctx, endpoint)
    if directory.exists():
        shutil.rmtree(directory)

