"""Which changed fields update in place and which force replacement, per driver and resource
kind. Pure.

A table, not if-chains: the first matching prefix wins; a field not listed forces replacement,
because replacing is always correct and updating in place is an optimisation we must earn.
What a driver can change in place differs (a container cannot change its image; a swarm
service rolls onto a new one), so each driver has its table; the planner is told which.
The deployment rows are derived from the field descriptors (planning/fields.py): a field
updates in place exactly when the driver has an updater for it.
"""
from __future__ import annotations

from dataclasses import dataclass

from reconciler.planning.fields import DEPLOYMENT_FIELDS, updates_in_place

IN_PLACE = "update"
REPLACE = "replace"

FieldTable = dict[str, tuple[tuple[str, str], ...]]


def deployment_rows(driver: str) -> tuple[tuple[str, str], ...]:
    return tuple((d.name, IN_PLACE if updates_in_place(driver, d.name) else REPLACE) for d in DEPLOYMENT_FIELDS)


FIELD_POLICY: FieldTable = {
    "model": (
        ("description", IN_PLACE),
        ("tags", IN_PLACE),
        ("type", IN_PLACE),
    ),
    "deployment": deployment_rows("docker"),
    # What the image is built from is all in `digest` (config/environments.py): where the inputs
    # are named only moves in state; everything else is a new image.
    "environment": (
        ("conda_file", IN_PLACE),
        ("context", IN_PLACE),
        ("dockerfile_path", IN_PLACE),
    ),
    "endpoint": (
        ("description", IN_PLACE),
        ("tags", IN_PLACE),
        ("traffic", IN_PLACE),
        ("mirror_traffic", IN_PLACE),
        ("auth_mode", IN_PLACE),
        # New files for the gateway and a reload; `listen` (the published address and port)
        # is not listed: a new one replaces the gateway container.
        ("tls", IN_PLACE),
    ),
}

# How a replacement runs: deployments and models are created before the old ones go, so that
# traffic never points at nothing; an endpoint keeps its port, so it must go first.
REPLACE_MODE = {"model": "create-then-delete", "environment": "create-then-delete",
                "deployment": "create-then-delete", "endpoint": "delete-then-create"}


# On swarm a service update is a start-first rolling update, so most of what replaces
# containers on the docker driver updates in place, model content included: new content is a
# new set of Docker configs beside the old ones, and the deployments roll onto them. Routes
# still replace (see their descriptor).
SWARM_FIELD_POLICY: FieldTable = {
    "model": (
        *FIELD_POLICY["model"],
        ("path", IN_PLACE),
        ("content_digest", IN_PLACE),
        ("files", IN_PLACE),
        ("bytes", IN_PLACE),
    ),
    "environment": FIELD_POLICY["environment"],
    "deployment": deployment_rows("swarm"),
    # TLS ends at the edge, which holds the port: a new certificate replaces the endpoint.
    "endpoint": tuple(row for row in FIELD_POLICY["endpoint"] if row[0] != "tls"),
}


@dataclass(frozen=True)
class ChangePolicy:
    """What a driver updates in place (`fields`) and how it runs a replacement (`replace_mode`)."""
    driver: str
    fields: FieldTable
    replace_mode: dict[str, str]
    # Whether the gateway must learn of a deployment's new instance count: it lists containers
    # on the docker driver, but resolves a service name on swarm.
    gateway_follows_scaling: bool = True

    def forces_replacement(self, kind: str, path: tuple) -> bool:
        top = str(path[0]) if path else ""
        for field, policy in self.fields.get(kind, ()):
            if top == field:
                return policy == REPLACE
        return True


DRIVERS = ("docker", "swarm")
DEFAULT_DRIVER = "docker"
POLICIES = {
    "docker": ChangePolicy("docker", FIELD_POLICY, REPLACE_MODE),
    # A swarm deployment's service name carries a generation, so old and new run side by side.
    "swarm": ChangePolicy("swarm", SWARM_FIELD_POLICY, REPLACE_MODE, gateway_follows_scaling=False),
}


def policy_for(driver: str) -> ChangePolicy:
    return POLICIES[driver or DEFAULT_DRIVER]
