"""Docker side of `reconciler import` and `reconciler state recover`. Side effects only.

import connects the adopted container to the stack's network (the gateway reaches deployments
by container name there); recover gives a found gateway fresh keys, since keys live only in the
lost state (and in the gateway's own config, which reconciler treats as output, not as a source).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import docker
from docker.errors import APIError

from reconciler.drivers.base import StepContext
from reconciler.drivers.common.gateway import new_keys
from reconciler.drivers.docker import gateway, model_store
from reconciler.drivers.docker.containers import ensure_network
from reconciler.errors import DriverError
from reconciler.state.model import StateRecord


def connect_to_stack(client: docker.DockerClient, stack: str, info: dict) -> str | None:
    """Attach the container to the stack network; returns the network name when it had to."""
    name = ensure_network(client, stack)
    if name in info.get("networks", []):
        return None
    try:
        client.networks.get(name).connect(info["id"])
    except APIError as error:
        raise DriverError(f"cannot connect container {info['name']} to network {name}: {error.explanation or error}",
                          "the endpoint's gateway reaches deployments on that network; check `docker network ls`") \
            from error
    return name


def stored_models(state_dir: Path, digests: list[str]) -> dict[str, str | None]:
    """For each content digest, its copy in the model store when that copy is intact."""
    found = {}
    for digest in digests:
        path = model_store.store_path(state_dir, digest)
        found[digest] = str(path) if model_store.stored_digest(path) == digest else None
    return found


def recover_gateway(client: docker.DockerClient, ctx: StepContext, record: StateRecord) -> tuple[StateRecord, str]:
    """New keys for a gateway found by labels: reload it in place when its config directory is
    still the one it mounts, otherwise mark it tainted so that apply replaces it (same port)."""
    record = dataclasses.replace(record, outputs={**record.outputs, "keys": new_keys()})
    if record.status == "ready" and gateway.config_dir(ctx, record.spec["name"]).is_dir():
        try:
            digest = gateway.reload(client, ctx, record.spec, record.outputs)
            return (dataclasses.replace(record, outputs={**record.outputs, "config_digest": digest}),
                    "keys cannot be recovered: new keys were generated and the gateway reloaded with them "
                    "(the old keys no longer work; `reconciler endpoint keys` prints the new ones)")
        except DriverError as error:
            reason = error.summary
    else:
        reason = "its config directory is gone" if record.status == "ready" else "it is not running"
    return (dataclasses.replace(record, status="tainted"),
            f"keys cannot be recovered and the gateway could not be reloaded ({reason}): it is marked tainted, "
            "so the next apply replaces it on the same port with the new keys")
