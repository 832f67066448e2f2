"""The docker gateway's routes: the container names of each deployment, resolved per request
through Docker's embedded DNS (a stopped one must not keep nginx from starting). Pure.

Rendering and the choice of serving records are shared (reconciler/drivers/common/gateway.py)."""
from __future__ import annotations

from reconciler.drivers.common.gateway import GATEWAY_PORT, render_gateway_config, serving_records, serving_routes

__all__ = ["GATEWAY_PORT", "deployment_routes", "health_config", "render_gateway_config", "routed_servers",
           "serving_records"]


def _containers(record, port: int) -> dict | None:
    servers = [f"{i['name']}:{port}" for i in record.outputs.get("instances", [])]
    return {"servers": servers} if servers else None


def deployment_routes(endpoint: str, records: dict) -> dict[str, dict]:
    """The serving deployments of `endpoint` as upstreams: {name: {id, servers, scoring_path, timeout_ms}}."""
    return serving_routes(endpoint, records, _containers)


def routed_servers(endpoint: str, records: dict) -> dict[str, list[str]]:
    """{deployment name: [host:port, ...]}: what a config rendered from `records` routes to.
    Kept in the endpoint's outputs when the config is written, so that refresh can tell a
    gateway still routing to containers state no longer considers serving (issue #12)."""
    return {name: list(route["servers"]) for name, route in sorted(deployment_routes(endpoint, records).items())}


def health_config(endpoint: str, records: dict, identity: str, max_tries: int) -> dict:
    """What the endpoint's health probe and restarter watch (config.json in its health
    directory, read by drivers/docker/health_agent.py): per routed deployment its route id,
    scoring port, probe settings and the instances' names, container ids and probe routes."""
    deployments = []
    for name, route in sorted(deployment_routes(endpoint, records).items()):
        record = serving_records(endpoint, records)[name]
        spec = record.spec
        deployments.append({
            "name": name, "route_id": route["id"], "scoring_port": spec["routes"]["scoring"]["port"],
            "readiness_probe": spec["readiness_probe"], "liveness_probe": spec["liveness_probe"],
            "instances": [{"name": i["name"], "id": i["id"], "readiness": spec["routes"]["readiness"],
                           "liveness": spec["routes"]["liveness"]} for i in record.outputs.get("instances", [])]})
    return {"endpoint": endpoint, "identity": identity, "max_tries": max_tries, "deployments": deployments}
