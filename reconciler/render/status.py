"""`reconciler status STACK`: each endpoint, deployment and instance as it runs now. Pure.

`status_view` joins the state with what the driver read (drivers/base.py SupportsStatus);
`render_status` prints it. An instance is "in rotation" (its gateway sends it requests),
"out of rotation" (its readiness probe fails: since when, and why) or "not watched" (no health
supervisor reported on it yet). Restarts count both the health supervisor's (liveness) and the
container's restart policy's.
"""
from __future__ import annotations

import time


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)) if epoch else "?"


def status_view(stack: str, driver: str, records: dict, observed: dict) -> dict:
    """The rows `render_status` prints, from state records and a SupportsStatus read."""
    containers, health = observed.get("containers", {}), observed.get("health", {})
    endpoints = []
    live = {a: r for a, r in sorted(records.items(), key=lambda item: str(item[0])) if not a.is_derived}
    for address, record in live.items():
        if address.kind != "endpoint":
            continue
        name, outputs = record.spec["name"], record.outputs
        watched = health.get(name) or {}
        probed, restarts = watched.get("instances") or {}, watched.get("restarts") or {}
        gateway = outputs.get("gateway") or {}
        supervisor = {role: (containers.get(item["id"]) or {}).get("state", "gone") if item else "none"
                      for role, item in sorted((outputs.get("health") or {}).items())}
        deployments = []
        for other, deployment in live.items():
            if other.kind != "deployment" or deployment.spec.get("endpoint") != name:
                continue
            instances = []
            for instance in sorted(deployment.outputs.get("instances", []), key=lambda i: i.get("instance", 0)):
                container = containers.get(instance["id"]) or {"state": "gone", "restarts": 0}
                probe = probed.get(instance["name"])
                if probe is None or probe.get("container") != instance["id"]:
                    rotation = {"state": "not watched"}
                elif probe.get("in_rotation"):
                    rotation = {"state": "in rotation"}
                else:
                    rotation = {"state": "out of rotation", "since": probe.get("readiness_failing_since"),
                                "error": probe.get("readiness_error", "")}
                instances.append({"name": instance["name"], "container": container["state"], **rotation,
                                  "restarts": int(restarts.get(instance["id"], 0)) + int(container.get("restarts") or 0)})
            deployments.append({"name": deployment.spec["name"], "status": deployment.status,
                                "traffic": record.spec.get("traffic", {}).get(deployment.spec["name"], 0),
                                "mirror": record.spec.get("mirror_traffic", {}).get(deployment.spec["name"], 0),
                                "instances": instances})
        endpoints.append({"name": name, "scoring_uri": outputs.get("scoring_uri", ""), "status": record.status,
                          "gateway": (containers.get(gateway.get("id", "")) or {}).get("state", "gone"),
                          "supervisor": supervisor, "deployments": deployments})
    return {"stack": stack, "driver": driver, "endpoints": endpoints,
            "updated": {name: (health.get(name) or {}).get("updated") for name in sorted(health)}}


def render_status(view: dict) -> str:
    lines = [f"Stack {view['stack']} ({view['driver']} driver)"]
    if not view["endpoints"]:
        lines.append("  (no endpoints in state)")
    for endpoint in view["endpoints"]:
        lines.append("")
        lines.append(f"endpoint {endpoint['name']}  {endpoint['scoring_uri']}")
        supervisor = ", ".join(f"{role} {state}" for role, state in endpoint["supervisor"].items()) or "none"
        checked = view["updated"].get(endpoint["name"])
        lines.append(f"  gateway {endpoint['gateway']}; health supervisor: {supervisor}"
                     + (f" (last report {_when(checked)})" if checked else ""))
        for deployment in endpoint["deployments"]:
            share = f"traffic {deployment['traffic']}%" + (f", mirror {deployment['mirror']}%" if deployment["mirror"] else "")
            tainted = "" if deployment["status"] == "ready" else f", {deployment['status']}"
            lines.append(f"  deployment {deployment['name']} ({share}{tainted})")
            for instance in deployment["instances"]:
                rotation = instance["state"]
                if rotation == "out of rotation":
                    rotation += f": readiness failing since {_when(instance['since'])}"
                    if instance["error"]:
                        rotation += f" ({instance['error']})"
                lines.append(f"    {instance['name']}  {instance['container']}  {rotation}  "
                             f"restarts {instance['restarts']}")
            if not deployment["instances"]:
                lines.append("    (no instances)")
    return "\n".join(lines) + "\n"
