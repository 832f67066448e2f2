"""Renders an endpoint gateway's nginx.conf from the endpoint spec and its deployments. Pure."""
from __future__ import annotations

import hashlib
from functools import lru_cache

import jinja2

GATEWAY_PORT = 8080
LOCAL_AUTH_MODES = ("key",)


@lru_cache(maxsize=None)
def _template() -> jinja2.Template:
    environment = jinja2.Environment(loader=jinja2.PackageLoader("reconciler.drivers.docker", "templates"),
                                     trim_blocks=True, lstrip_blocks=True, autoescape=False,
                                     undefined=jinja2.StrictUndefined)
    return environment.get_template("nginx.conf.j2")


def serving_records(endpoint: str, records: dict) -> dict[str, object]:
    """For each deployment of `endpoint`, the record whose containers should get its traffic.

    A ready record wins; while a replacement is tainted (never became ready), the old containers,
    kept as a `~deposed-` record, go on serving, so a failed rollout never takes traffic away.
    """
    chosen: dict[str, object] = {}
    for address, record in sorted(records.items()):
        if not address.startswith("deployment.") or "~orphan-" in address:
            continue
        if record.spec.get("endpoint") != endpoint or record.status != "ready":
            continue
        name = record.spec["name"]
        live = "~" not in address
        if live or name not in chosen:
            chosen[name] = record
    return chosen


def deployment_routes(endpoint: str, records: dict) -> dict[str, dict]:
    """The serving deployments of `endpoint` as upstreams: {name: {id, servers, scoring_path}}."""
    routes = {}
    for name, record in sorted(serving_records(endpoint, records).items()):
        spec = record.spec
        port = spec["routes"]["scoring"]["port"]
        servers = [f"{i['name']}:{port}" for i in record.outputs.get("instances", [])]
        if servers:
            routes[name] = {"id": hashlib.sha256(name.encode()).hexdigest()[:10],
                            "servers": servers, "scoring_path": spec["routes"]["scoring"]["path"],
                            "timeout_ms": spec["request_settings"]["request_timeout_ms"]}
    return routes


def render_gateway_config(spec: dict, routes: dict[str, dict], keys: dict[str, str]) -> str:
    """nginx.conf for the endpoint; traffic to deployments without containers is dropped."""
    traffic = [(name, percent) for name, percent in sorted(spec["traffic"].items()) if name in routes]
    mirror = [(name, percent) for name, percent in sorted(spec["mirror_traffic"].items()) if name in routes]
    read_timeout = max([r["timeout_ms"] for r in routes.values()] or [5000])
    return _template().render(endpoint=spec["name"], deployments=routes, traffic=traffic, mirror=mirror,
                              keys=[keys["primary"], keys["secondary"]],
                              auth_required=spec["auth_mode"] == "key", read_timeout_ms=read_timeout)
