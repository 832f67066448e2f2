"""In-place updates of a deployment's running containers, with `docker update`. Side effects only.

Implements exactly the deployment fields whose docker descriptor names the ENGINE updater
(reconciler/planning/fields.py); tests/unit/test_fields.py keeps the two in step. The
planner decided that the change is in place; this only carries it out, on every instance.
"""
from __future__ import annotations

from typing import Any, Callable

import docker
from docker.errors import APIError, NotFound
from docker.utils import parse_bytes

from reconciler.errors import DriverError
from reconciler.state.model import StateRecord


def _memory(value: str) -> dict:
    # Docker gives a container started with only a memory limit twice that as memory+swap;
    # an update sets both, so an updated container looks like a freshly created one.
    limit = parse_bytes(value)
    return {"mem_limit": limit, "memswap_limit": 2 * limit}


def _restart_policy(value: str) -> dict:
    return {"restart_policy": {"Name": value, "MaximumRetryCount": 0}}


UPDATERS: dict[str, Callable[[Any], dict]] = {
    "memory": _memory,
    "restart_policy": _restart_policy,
}


def update_options(before: dict, after: dict) -> dict:
    """The `container.update` keyword arguments for the fields that changed; {} for none."""
    options: dict = {}
    for field, updater in UPDATERS.items():
        if before.get(field) != after.get(field):
            options.update(updater(after.get(field)))
    return options


def apply_in_place(client: docker.DockerClient, record: StateRecord, spec: dict) -> None:
    """Every instance container of `record` gets the new values of the fields that changed."""
    options = update_options(record.spec, spec)
    if not options:
        return
    for instance in record.outputs.get("instances", []):
        try:
            client.containers.get(instance["id"]).update(**options)
        except NotFound as error:
            raise DriverError(f"container {instance['name']} of {record.address} is gone",
                              "run `reconciler plan` again: refresh will show it missing and plan a repair") from error
        except APIError as error:
            raise DriverError(f"cannot update container {instance['name']} of {record.address} in place: "
                              f"{error.explanation or error}",
                              "check the new memory / restart_policy values of this deployment") from error
