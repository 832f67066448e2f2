"""The endpoint gateway every driver runs: which records serve, the routes the config is
rendered from, and the nginx.conf itself. Pure (keys are drawn from `secrets`, nothing else).

Routes are built from the planned gateway view of each deployment
(reconciler.planning.gateway_view), so nothing the gateway uses of a deployment's spec can
change without the plan showing it. What only apply knows, the servers a deployment runs as,
each driver adds through `upstream`: container names (docker: static upstream blocks) or one
service name the engine's DNS resolves at request time (swarm).
"""
from __future__ import annotations

import hashlib
import os
import secrets
from functools import lru_cache
from typing import Callable

import jinja2

from reconciler.planning.gateway_view import gateway_view

GATEWAY_IMAGE = os.environ.get("RECONCILER_GATEWAY_IMAGE", "reconciler/gateway:latest")
GATEWAY_PORT = 8080
DEFAULT_READ_TIMEOUT_MS = 5000


def new_keys() -> dict[str, str]:
    return {"primary": secrets.token_urlsafe(32), "secondary": secrets.token_urlsafe(32)}


def kept_keys_and_port(prior) -> tuple[dict[str, str], int | None]:
    """A replaced endpoint keeps the keys and port of the record it replaces; a new one gets
    new keys (and a free port, chosen by the driver)."""
    keys = (prior.outputs.get("keys") if prior else None) or new_keys()
    return keys, (prior.outputs.get("port") if prior else None)


def rotated_keys(keys: dict[str, str], which: str) -> dict[str, str]:
    """`which` ("primary", "secondary" or "both") replaced by fresh keys, the other kept."""
    fresh = new_keys()
    return {name: fresh[name] if which in (name, "both") else key for name, key in keys.items()}


def text_digest(text: str | bytes) -> str:
    """The digest kept in state for a rendered config, to notice changes."""
    data = text.encode() if isinstance(text, str) else text
    return "sha256:" + hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=None)
def template(package: str, name: str) -> jinja2.Template:
    """A driver template (the gateway's here, the swarm edge's in its own package)."""
    environment = jinja2.Environment(loader=jinja2.PackageLoader(package, "templates"),
                                     trim_blocks=True, lstrip_blocks=True, autoescape=False,
                                     undefined=jinja2.StrictUndefined)
    return environment.get_template(name)


def serving_records(endpoint: str, records: dict) -> dict[str, object]:
    """For each deployment of `endpoint`, the record whose containers should get its traffic.

    A ready record wins; while a replacement is tainted (never became ready), the old containers,
    kept as a `~deposed-` record, go on serving, so a failed rollout never takes traffic away.
    """
    chosen: dict[str, object] = {}
    for record in sorted(records.values(), key=lambda r: r.address):
        address = record.address
        if address.kind != "deployment" or address.is_orphan:
            continue
        if record.spec.get("endpoint") != endpoint or record.status != "ready":
            continue
        name = record.spec["name"]
        live = not address.is_deposed
        if live or name not in chosen:
            chosen[name] = record
    return chosen


def serving_routes(endpoint: str, records: dict, upstream: Callable[[object, int], dict | None]) -> dict[str, dict]:
    """{deployment name: {id, scoring_path, timeout_ms, **upstream(record, scoring port)}} for
    the serving deployments of `endpoint`; one whose upstream is None (nothing runs) is left out."""
    routes = {}
    for name, record in sorted(serving_records(endpoint, records).items()):
        view = gateway_view(record.spec)
        servers = upstream(record, view["scoring_port"])
        if servers:
            routes[name] = {"id": hashlib.sha256(name.encode()).hexdigest()[:10],
                            **servers, "scoring_path": view["scoring_path"],
                            "timeout_ms": view["request_timeout_ms"]}
    return routes


def render_gateway_config(spec: dict, routes: dict[str, dict], keys: dict[str, str],
                          resolve_per_request: bool = False) -> str:
    """nginx.conf for the endpoint; traffic to deployments without containers is dropped.
    `resolve_per_request`: each route has one `server` name, resolved through the engine's DNS
    per request; otherwise each has `servers`, a fixed upstream block."""
    traffic = [(name, percent) for name, percent in sorted(spec["traffic"].items()) if name in routes]
    mirror = [(name, percent) for name, percent in sorted(spec["mirror_traffic"].items()) if name in routes]
    read_timeout = max([r["timeout_ms"] for r in routes.values()] or [DEFAULT_READ_TIMEOUT_MS])
    return template("reconciler.drivers.common", "gateway.conf.j2").render(
        endpoint=spec["name"], deployments=routes, traffic=traffic, mirror=mirror,
        keys=[keys["primary"], keys["secondary"]], auth_required=spec["auth_mode"] == "key",
        read_timeout_ms=read_timeout, resolve_per_request=resolve_per_request)
