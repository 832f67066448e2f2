"""The gateway's view of a deployment: everything an endpoint's gateway is rendered from that
comes from the deployment's own spec. Pure.

The planner compares the views before and after a plan (an endpoint whose deployments' views
change must be re-rendered, and the plan says so), and both drivers render their gateway from
exactly these values, so nothing the gateway uses can change without the plan showing it.
What a gateway also needs but only apply knows (the containers or service names a deployment
runs as) is not in the view: the planner re-points an endpoint whenever a deployment gets new
containers instead.
"""
from __future__ import annotations

from typing import Any

from reconciler.config.graph import DEPLOYMENT_DEFAULTS


def gateway_view(deployment_spec: dict) -> dict[str, Any]:
    """What the endpoint's gateway uses of one deployment's spec. A field the spec lacks (a
    record written before it existed) is its default, as everywhere in planning."""
    routes = deployment_spec.get("routes", DEPLOYMENT_DEFAULTS["routes"])
    scoring = routes.get("scoring", DEPLOYMENT_DEFAULTS["routes"]["scoring"])
    settings = {**DEPLOYMENT_DEFAULTS["request_settings"], **deployment_spec.get("request_settings", {})}
    instances = deployment_spec.get("instance_count", DEPLOYMENT_DEFAULTS["instance_count"])
    return {
        "scoring_port": scoring["port"],
        "scoring_path": scoring["path"],
        "request_timeout_ms": settings["request_timeout_ms"],
        "max_requests_in_flight": max_requests_in_flight(settings["max_concurrent_requests_per_instance"], instances),
        # What the endpoint's health supervisor probes (docker driver; swarm's tasks carry their
        # own health check, so there this only re-renders an unchanged gateway config).
        "health": {kind: {"route": routes.get(kind, DEPLOYMENT_DEFAULTS["routes"][kind]),
                          "probe": {**DEPLOYMENT_DEFAULTS[f"{kind}_probe"], **deployment_spec.get(f"{kind}_probe", {})}}
                   for kind in ("readiness", "liveness")},
    }


def max_requests_in_flight(per_instance: int, instances: int) -> int:
    """Requests a deployment holds at once before the gateway answers 429: Azure ML allows
    2 x max_concurrent_requests_per_instance x instance_count (how-to-troubleshoot-online-endpoints,
    "429 Too many pending requests"). A deployment scaled to 0 still takes one, so that a pinned
    request gets the gateway's 502 (no server) rather than a 429 no limit could explain."""
    return max(1, 2 * per_instance * instances)


def view_changes(before_spec: dict | None, after_spec: dict | None) -> tuple[tuple[str, Any, Any], ...]:
    """(view field, before, after) for every field of the view that differs; () when either is
    absent (a created or deleted deployment moves containers, which re-points on its own)."""
    if before_spec is None or after_spec is None:
        return ()
    before, after = gateway_view(before_spec), gateway_view(after_spec)
    return tuple((key, before[key], after[key]) for key in sorted(before) if before[key] != after[key])
