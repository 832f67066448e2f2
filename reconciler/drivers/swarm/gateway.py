"""Endpoint gateways on swarm: a gateway service (nginx with the keys and the traffic split)
behind an edge service (nginx holding the published port). Side effects only.

The gateway's nginx.conf holds the endpoint keys, so it is a Docker *secret* (encrypted in the
raft log, mounted in memory at /run/secrets/nginx.conf) named after a hash of its content.
Secrets cannot change: a new config is a new secret and a start-first rolling update of the
gateway service; the old secret goes once the update converged.

Why an edge: a rolling start-first update needs two gateway tasks at once, and on one node
two tasks cannot publish the same host port. The swarm's answer, the ingress routing mesh,
needs the kernel's IPVS, which many VM kernels lack (this one does), and it cannot bind
127.0.0.1 either. So the edge, a global service (one task per node, like the routing mesh),
publishes the port in host mode and forwards every request to a gateway task found through
the swarm's DNS. Its config depends on nothing but the gateway's name, so it never rolls
when keys or traffic change.
"""
from __future__ import annotations

import ssl

import docker
from docker.errors import APIError, NotFound
from docker.types import ContainerSpec, RestartPolicy, RollbackConfig, TaskTemplate, UpdateConfig

from reconciler.config.settings import file_fingerprint
from reconciler.drivers.base import StepContext
from reconciler.drivers.common import tls
from reconciler.drivers.common.engine import EngineAddress, current_engine, free_host_port
from reconciler.drivers.common.gateway import (GATEWAY_IMAGE, GATEWAY_PORT, render_gateway_config, serving_routes,
                                               template, text_digest)
from reconciler.drivers.common.labels import LABEL_MANAGED_BY, LABEL_ROLE, LABEL_SPEC_HASH, MANAGED_BY, managed_labels, \
    owned_filter
from reconciler.drivers.common.probes import wait_answering
from reconciler.drivers.swarm import engine
from reconciler.drivers.swarm.engine import NANOS, object_name
from reconciler.errors import DriverError

SECRET_FILE = "nginx.conf"  # -> /run/secrets/nginx.conf
EDGE_CONFIG_FILE = "/etc/reconciler/edge.conf"
DRAIN_SECONDS = 30
# Swarm takes a task out of DNS 2 s before it stops it, but the edge may go on using a name
# it resolved for up to 2 s (nginx's `valid=1s` counts whole seconds). So a stopping gateway
# keeps accepting a second longer, then quits gracefully (SIGQUIT: every request is
# finished; SIGTERM would drop them). Clients reach the edge by port, not by name: no linger.
LINGER_SECONDS = 1
# Checked every second, so a new gateway task joins DNS about a second after nginx starts.
HEALTH = {"initial_delay": 0, "period": 1, "timeout": 2, "failure_threshold": 5}
MONITOR_SECONDS = 2
START_TIMEOUT = 90
LISTEN_TIMEOUT = 30


def nginx_command(config: str, linger: int) -> tuple[list[str], str]:
    """The command and stop signal of an nginx task."""
    if not linger:
        return ["nginx", "-c", config, "-g", "daemon off;"], "SIGQUIT"
    script = (f"nginx -c {config} -g 'daemon off;' & pid=$!; "
              f"trap 'sleep {linger}; kill -QUIT $pid' TERM; wait $pid; wait $pid")
    return ["sh", "-c", script], "SIGTERM"


# -- rendering (pure) ----------------------------------------------------------------------------
def _service_name(record, port: int) -> dict | None:
    service = record.outputs.get("service")
    if not service or not record.outputs.get("instances"):
        return None
    return {"server": f"{service['name']}:{port}"}


def deployment_routes(endpoint: str, records: dict) -> dict[str, dict]:
    """The serving deployments of `endpoint` (the ready record, or the deposed one while a
    replacement is tainted) as one `service:port` server each, resolved per request."""
    return serving_routes(endpoint, records, _service_name)


def render(spec: dict, routes: dict[str, dict], keys: dict[str, str]) -> str:
    """nginx.conf of the gateway: the shared one; each deployment is one service name that
    resolves to all of its tasks."""
    return render_gateway_config(spec, routes, keys, driver="swarm")


EDGE_TLS_SECRET = "edge-tls.pem"  # -> /run/secrets/edge-tls.pem: certificate, then key
# The edge's own health check answers here, in plain HTTP on the task's loopback, so that it is
# the same check with and without TLS on the published port.
EDGE_HEALTH_PORT = 8079


def render_edge(endpoint: str, gateway: str, tls_served: bool = False) -> str:
    return template("reconciler.drivers.swarm", "edge.conf.j2").render(
        endpoint=endpoint, gateway=gateway, port=GATEWAY_PORT, health_port=EDGE_HEALTH_PORT,
        tls=f"/run/secrets/{EDGE_TLS_SECRET}" if tls_served else None)


def unpublishable(spec: dict) -> str:
    """A listen address swarm cannot publish on alone ("" when fine): host-mode publishing binds
    every address of the node (127.0.0.1, the default, is kept as the address clients use)."""
    address = tls.listen_of(spec)["address"]
    return "" if address in ("0.0.0.0", "127.0.0.1") else address


def digest_of(text: str) -> str:
    return text_digest(text)


def names(owner, endpoint: str) -> dict[str, str]:
    return {"gateway": object_name("rc", owner.stack, endpoint, "gw", identity=owner.identity),
            "edge": object_name("rc", owner.stack, endpoint, "edge", identity=owner.identity)}


# -- secrets and configs -------------------------------------------------------------------------
def _ensure_blob(client: docker.DockerClient, kind: str, name: str, data: bytes, labels: dict) -> str:
    """A secret or config of this name (its name carries its content hash): reused when an
    interrupted apply left it behind, refused when it is not ours."""
    api = client.secrets if kind == "secret" else client.configs
    for existing in api.list(filters={"name": name}):
        if existing.name == name:
            if (existing.attrs["Spec"].get("Labels") or {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
                raise DriverError(f"a Docker {kind} named {name} exists and is not managed by reconciler",
                                  f"remove it (`docker {kind} rm {name}`)")
            return existing.id
    try:
        if kind == "secret":
            return client.api.create_secret(name, data, labels=labels)["ID"]
        return client.api.create_config(name, data, labels=labels)["ID"]
    except APIError as error:
        raise DriverError(f"cannot create Docker {kind} {name}: {error.explanation or error}",
                          "check that the swarm manager is healthy (`docker node ls`)") from error


def _remove_blob(client: docker.DockerClient, kind: str, name: str | None) -> None:
    """Remove one of our secrets/configs; gone or still in use (by a task being replaced) is fine."""
    if not name:
        return
    api = client.secrets if kind == "secret" else client.configs
    try:
        blob = api.get(name)
    except NotFound:
        return
    if (blob.attrs["Spec"].get("Labels") or {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
        return
    try:
        blob.remove()
    except (NotFound, APIError):
        pass


# -- service specs -------------------------------------------------------------------------------
def _update_configs(order: str) -> dict:
    return {"update_config": UpdateConfig(parallelism=1, order=order, failure_action="rollback",
                                          monitor=MONITOR_SECONDS * NANOS, max_failure_ratio=0.0),
            "rollback_config": RollbackConfig(parallelism=1, order=order, failure_action="pause",
                                              monitor=MONITOR_SECONDS * NANOS)}


def _nginx_task(network_id: str, config_path: str, linger: int, health_path: str, health_port: int = GATEWAY_PORT,
                **files) -> dict:
    """The task template of a gateway or edge: nginx on `config_path`, mounted through `files`."""
    command, stop_signal = nginx_command(config_path, linger)
    container = ContainerSpec(GATEWAY_IMAGE, command=command, stop_signal=stop_signal,
                              healthcheck=engine.http_healthcheck(health_port, health_path, HEALTH),
                              stop_grace_period=DRAIN_SECONDS * NANOS, **files)
    return engine.with_rollout(TaskTemplate(container, restart_policy=RestartPolicy(condition="any", delay=NANOS),
                                            networks=[{"Target": network_id}]))


def gateway_spec(ctx: StepContext, address: str, spec_hash: str, network_id: str, secret: dict) -> dict:
    task = _nginx_task(network_id, f"/run/secrets/{SECRET_FILE}", LINGER_SECONDS, "/-/healthz", secrets=[
        {"File": {"Name": SECRET_FILE, "UID": "0", "GID": "0", "Mode": 0o400},
         "SecretID": secret["id"], "SecretName": secret["name"]}])
    return {"task_template": task,
            "labels": managed_labels(ctx, address, spec_hash, **{LABEL_ROLE: "gateway"}),
            "mode": {"Replicated": {"Replicas": 1}}, "endpoint_spec": {"Mode": "dnsrr"},
            **_update_configs("start-first")}


def edge_spec(ctx: StepContext, address: str, spec_hash: str, network_id: str, config: dict, port: int,
              tls_secret: dict | None = None) -> dict:
    files = {"configs": [{"File": {"Name": EDGE_CONFIG_FILE, "UID": "0", "GID": "0", "Mode": 0o444},
                          "ConfigID": config["id"], "ConfigName": config["name"]}]}
    if tls_secret:
        files["secrets"] = [{"File": {"Name": EDGE_TLS_SECRET, "UID": "0", "GID": "0", "Mode": 0o400},
                             "SecretID": tls_secret["id"], "SecretName": tls_secret["name"]}]
    task = _nginx_task(network_id, EDGE_CONFIG_FILE, 0, "/-/edge-healthz", EDGE_HEALTH_PORT, **files)
    return {"task_template": task,
            "labels": managed_labels(ctx, address, spec_hash, **{LABEL_ROLE: "edge"}),
            "mode": {"Global": {}},
            # Host mode: published on each node running an edge task (every node), without IPVS.
            "endpoint_spec": {"Mode": "dnsrr", "Ports": [{"Protocol": "tcp", "TargetPort": GATEWAY_PORT,
                                                          "PublishedPort": port, "PublishMode": "host"}]},
            # The old task holds the port until it is gone, so this one cannot start first.
            **_update_configs("stop-first")}


# -- steps ---------------------------------------------------------------------------------------
def start(client: docker.DockerClient, ctx: StepContext, address: str, spec: dict, spec_hash: str,
          keys: dict[str, str], port: int | None, engine_host: EngineAddress | None = None) -> dict:
    """Start gateway and edge and wait until a request through the port reaches the gateway;
    returns the outputs kept in state. Nothing is left behind when that fails. The scoring URI
    names the manager's host (127.0.0.1 for the local socket)."""
    engine_host = engine_host or current_engine()
    endpoint = spec["name"]
    service_names = names(ctx, endpoint)
    # Services of this endpoint that no record owns (an apply killed half-way) hold its names
    # and its port; under the state lock, any existing one is such a leftover.
    for leftover in engine.owned_services(client, ctx, address):
        engine.remove_service(client, leftover["ID"])
    network_id = engine.ensure_network(client, ctx)
    text = render(spec, deployment_routes(endpoint, ctx.records()), keys)
    digest = digest_of(text)
    secret = {"name": object_name("rc", ctx.stack, endpoint, "gw", digest[7:19], identity=ctx.identity)}
    files = tls.endpoint_files(spec, ctx.state_dir, ctx.identity)
    edge_text = render_edge(endpoint, service_names["gateway"], files is not None)
    config = {"name": object_name("rc", ctx.stack, endpoint, "edge", digest_of(edge_text)[7:19], identity=ctx.identity)}
    pem = (files.certificate.read_bytes().rstrip(b"\n") + b"\n" + files.key.read_bytes()) if files else b""
    tls_secret = {"name": object_name("rc", ctx.stack, endpoint, "tls", digest_of(pem)[7:19],
                                      identity=ctx.identity)} if files else None
    # Host-mode publishing binds every address, so the port must be free on all of them.
    port = tls.listen_of(spec)["port"] or port or free_host_port("0.0.0.0")
    created: list[str] = []
    try:
        secret["id"] = _ensure_blob(client, "secret", secret["name"], text.encode(), managed_labels(
            ctx, address, spec_hash, **{LABEL_ROLE: "gateway-config"}))
        service_spec = gateway_spec(ctx, address, spec_hash, network_id, secret)
        gateway_id, since = engine.deploy_service(client, service_names["gateway"], None, **service_spec)
        created.append(gateway_id)
        engine.wait_converged(client, gateway_id, engine.rollout_of(service_spec), since, START_TIMEOUT,
                              f"gateway of endpoint {endpoint}", 1, ctx.progress)
        config["id"] = _ensure_blob(client, "config", config["name"], edge_text.encode(), managed_labels(
            ctx, address, spec_hash, **{LABEL_ROLE: "edge-config"}))
        if tls_secret:
            tls_secret["id"] = _ensure_blob(client, "secret", tls_secret["name"], pem, managed_labels(
                ctx, address, spec_hash, **{LABEL_ROLE: "edge-tls"}))
        service_spec = edge_spec(ctx, address, spec_hash, network_id, config, port, tls_secret)
        edge_id, since = engine.deploy_service(client, service_names["edge"], None, **service_spec)
        created.append(edge_id)
        engine.wait_converged(client, edge_id, engine.rollout_of(service_spec), since, START_TIMEOUT,
                              f"edge of endpoint {endpoint}", progress=ctx.progress)
        _wait_answering(engine_host, port, endpoint, files is not None)
    except DriverError:
        for service_id in reversed(created):  # never leave an unrecorded gateway behind
            engine.remove_service(client, service_id)
        _remove_blob(client, "secret", secret["name"])
        _remove_blob(client, "config", config["name"])
        if tls_secret:
            _remove_blob(client, "secret", tls_secret["name"])
        raise
    scheme = "https" if files else "http"
    return {"gateway": {"id": gateway_id, "name": service_names["gateway"], "image": GATEWAY_IMAGE},
            "edge": {"id": edge_id, "name": service_names["edge"]},
            "secret": secret, "edge_config": config, "port": port,
            "scoring_uri": f"{scheme}://{engine_host.caller_uri_host(engine_host.gateway_listen(spec)['address'])}"
                           f":{port}/score",
            "keys": keys, "config_digest": digest,
            **({"tls": {"ca": str(files.ca.resolve()) if files.ca else None,
                        "certificate_sha256": file_fingerprint(files.certificate)}} if files else {})}


def _wait_answering(engine_host: EngineAddress, port: int, endpoint: str, https: bool = False) -> None:
    """Through the published port and the edge to the gateway, as a client would come: on the
    host of the manager this client talks to (the edge has a task on every node); whether it
    answers, not whom its certificate names (invoke verifies that)."""
    context = ssl._create_unverified_context() if https else None  # noqa: S323
    error = wait_answering(port, "/-/healthz", LISTEN_TIMEOUT, interval=0.2, tls=context, host=engine_host.host)
    if not error:
        return
    raise DriverError(f"endpoint {endpoint} does not answer on port {port}: {error}",
                      "is this host a node of the swarm, and the port free on it? `docker service ps` shows "
                      "the edge and gateway tasks")


def reload(client: docker.DockerClient, ctx: StepContext, address: str, spec: dict, spec_hash: str,
           outputs: dict) -> dict:
    """Roll the gateway onto a freshly rendered config (start-first: the new task serves before
    the old one drains); nothing happens when neither the config nor the labels changed.
    Returns the new outputs."""
    endpoint = spec["name"]
    service = engine.inspect_service(client, outputs["gateway"]["id"])
    if service is None:
        raise DriverError(f"the gateway service of endpoint {endpoint} is gone",
                          "run `reconciler plan`: it shows the drift, and apply recreates the gateway")
    text = render(spec, deployment_routes(endpoint, ctx.records()), outputs["keys"])
    digest = digest_of(text)
    if digest == outputs.get("config_digest") and \
            (service["Spec"].get("Labels") or {}).get(LABEL_SPEC_HASH) == spec_hash:
        return outputs
    old_secret = outputs.get("secret") or {}
    secret = {"name": object_name("rc", ctx.stack, endpoint, "gw", digest[7:19], identity=ctx.identity)}
    secret["id"] = _ensure_blob(client, "secret", secret["name"], text.encode(), managed_labels(
        ctx, address, spec_hash, **{LABEL_ROLE: "gateway-config"}))
    network_id = engine.ensure_network(client, ctx)
    try:
        service_spec = gateway_spec(ctx, address, spec_hash, network_id, secret)
        _, since = engine.deploy_service(client, outputs["gateway"]["name"], service, **service_spec)
        engine.wait_converged(client, service["ID"], engine.rollout_of(service_spec), since, START_TIMEOUT,
                              f"gateway of endpoint {endpoint}", 1, ctx.progress)
    except engine.RolledBack:
        if secret["name"] != old_secret.get("name"):
            _remove_blob(client, "secret", secret["name"])
        raise
    if old_secret.get("name") != secret["name"]:
        _remove_blob(client, "secret", old_secret.get("name"))
    return {**outputs, "secret": secret, "config_digest": digest}


def remove(client: docker.DockerClient, ctx: StepContext, address: str, outputs: dict) -> None:
    """Edge and gateway (both at once: the endpoint is going away), then every secret and
    config of the endpoint, including those an interrupted apply left."""
    ids = [(outputs.get(key) or {}).get("id") for key in ("edge", "gateway")]
    ids += [s["ID"] for s in engine.owned_services(client, ctx, address) if s["ID"] not in ids]
    engine.remove_services(client, ids)
    for secret in client.secrets.list(filters=owned_filter(ctx, address)):
        _remove_blob(client, "secret", secret.name)
    for config in client.configs.list(filters=owned_filter(ctx, address)):
        _remove_blob(client, "config", config.name)
