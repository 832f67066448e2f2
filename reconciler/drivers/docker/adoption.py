"""Docker side of `reconciler import` and `reconciler state recover`. Side effects only.

import connects the adopted container to the stack's network (the gateway reaches deployments
by container name there); recover gives a found gateway back the keys its live config admits
(`keys.json` beside the config on disk, else read through the container), and new keys only
when neither can be read.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import docker
from docker.errors import APIError, NotFound

from reconciler.drivers.base import StepContext
from reconciler.drivers.common.gateway import new_keys
from reconciler.drivers.docker import gateway, model_store
from reconciler.drivers.docker.containers import ensure_network
from reconciler.errors import DriverError
from reconciler.state.model import StateRecord


def connect_to_stack(client: docker.DockerClient, ctx: StepContext, info: dict) -> str | None:
    """Attach the container to the stack network; returns the network name when it had to."""
    name = ensure_network(client, ctx)
    if name in info.get("networks", []):
        return None
    try:
        client.networks.get(name).connect(info["id"])
    except APIError as error:
        raise DriverError(f"cannot connect container {info['name']} to network {name}: {error.explanation or error}",
                          "the endpoint's gateway reaches deployments on that network; check `docker network ls`") \
            from error
    return name


def stored_models(state_dir: Path, identity: str, digests: list[str]) -> dict[str, str | None]:
    """For each content digest, its copy in the stack's model store when that copy is intact."""
    found = {}
    for digest in digests:
        path = model_store.store_path(state_dir, identity, digest)
        found[digest] = str(path) if model_store.stored_digest(path) == digest else None
    return found


def live_keys(client: docker.DockerClient, ctx: StepContext, record: StateRecord) -> dict[str, str] | None:
    """The keys the running gateway admits: from its config directory, else from inside it."""
    keys = gateway.read_keys(gateway.config_dir(ctx, record.spec["name"]))
    if keys is not None:
        return keys
    gateway_id = (record.outputs.get("gateway") or {}).get("id")
    if not gateway_id:
        return None
    try:
        container = client.containers.get(gateway_id)
        result = container.exec_run(["cat", f"{gateway.CONFIG_DIR_IN_CONTAINER}/{gateway.KEYS_FILE}"])
        if result.exit_code == 0:
            keys = json.loads(result.output)
            return {name: str(keys[name]) for name in ("primary", "secondary", "token") if name in keys} \
                if {"primary", "secondary"} <= set(keys) else None
        result = container.exec_run(["cat", gateway.CONFIG_FILE])
        return gateway.keys_in_config(result.output.decode("utf-8", "replace")) if result.exit_code == 0 else None
    except (NotFound, APIError, ValueError, KeyError, TypeError):
        return None


def recover_gateway(client: docker.DockerClient, ctx: StepContext, record: StateRecord) -> tuple[StateRecord, str]:
    """The found gateway with its live keys. Only when they cannot be read: new keys, reloaded
    in place when its config directory is still the one it mounts, otherwise tainted so that
    apply replaces it (same port)."""
    keys = live_keys(client, ctx, record)
    if keys is not None:
        directory = gateway.config_dir(ctx, record.spec["name"])
        digest = gateway.config_digest(directory)
        found_tls = gateway.recovered_tls(directory, ctx, record.spec)
        outputs = {**record.outputs, "keys": keys, **({"config_digest": digest} if digest else {}),
                   **({"tls": found_tls} if found_tls else {})}
        if outputs.get("port"):  # rebuilt from labels as plain http on loopback: the spec says where
            outputs["scoring_uri"] = gateway.scoring_uri(record.spec, outputs["port"])
        return (dataclasses.replace(record, outputs=outputs),
                "its keys were read back from the live gateway config (they keep working)")
    record = dataclasses.replace(record, outputs={**record.outputs, "keys": new_keys()})
    if record.status == "ready" and gateway.config_dir(ctx, record.spec["name"]).is_dir():
        try:
            return (dataclasses.replace(record, outputs=gateway.reloaded_outputs(client, ctx, record.spec,
                                                                                 record.outputs)),
                    "keys cannot be recovered: new keys were generated and the gateway reloaded with them "
                    "(the old keys no longer work; `reconciler endpoint keys` prints the new ones)")
        except DriverError as error:
            reason = error.summary
    else:
        reason = "its config directory is gone" if record.status == "ready" else "it is not running"
    return (dataclasses.replace(record, status="tainted"),
            f"keys cannot be recovered and the gateway could not be reloaded ({reason}): it is marked tainted, "
            "so the next apply replaces it on the same port with the new keys")
