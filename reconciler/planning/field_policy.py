"""Which changed fields update in place and which force replacement, per resource kind. Pure.

A table, not if-chains: the first matching prefix wins; a field not listed forces replacement,
because replacing is always correct and updating in place is an optimisation we must earn.
"""
from __future__ import annotations

IN_PLACE = "update"
REPLACE = "replace"

FIELD_POLICY: dict[str, tuple[tuple[str, str], ...]] = {
    "model": (
        ("description", IN_PLACE),
        ("tags", IN_PLACE),
        ("type", IN_PLACE),
    ),
    "deployment": (
        ("description", IN_PLACE),
        ("tags", IN_PLACE),
        ("instance_count", IN_PLACE),
        ("instance_type", IN_PLACE),
        ("request_settings", IN_PLACE),
        ("liveness_probe", IN_PLACE),
        ("readiness_probe", IN_PLACE),
        ("app_insights_enabled", IN_PLACE),
        ("image", REPLACE),
        ("model", REPLACE),
        ("environment_variables", REPLACE),
        ("routes", REPLACE),
        ("command", REPLACE),
        ("args", REPLACE),
        ("memory", REPLACE),
        ("restart_policy", REPLACE),
    ),
    "endpoint": (
        ("description", IN_PLACE),
        ("tags", IN_PLACE),
        ("traffic", IN_PLACE),
        ("mirror_traffic", IN_PLACE),
        ("auth_mode", IN_PLACE),
    ),
}

# How a replacement runs: deployments and models are created before the old ones go, so that
# traffic never points at nothing; an endpoint keeps its port, so it must go first.
REPLACE_MODE = {"model": "create-then-delete", "deployment": "create-then-delete", "endpoint": "delete-then-create"}


def forces_replacement(kind: str, path: tuple) -> bool:
    top = str(path[0]) if path else ""
    for field, policy in FIELD_POLICY.get(kind, ()):
        if top == field:
            return policy == REPLACE
    return True
