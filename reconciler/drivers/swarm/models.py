"""Model files as Docker configs, one per file. Side effects: reads the stack's model files,
creates and removes configs.

Configs are replicated to every node by the swarm (they live in its raft log), so a task can
mount the model wherever it is scheduled; a host path would exist on one machine only. A
config's name carries a hash of the stack, model address, content digest and file path, so
changed content is a new set of configs and a deployment moves to it with a rolling update.
Each file is mounted read-only at `<mount path>/<path inside the model>` (executable bits
kept: they are part of the content digest), the layout the docker driver's mount gives.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import docker
from docker.errors import APIError, NotFound

from reconciler.config.model_content import fingerprint
from reconciler.drivers.common.labels import (LABEL_ADDRESS, LABEL_MANAGED_BY, LABEL_PREFIX, LABEL_ROLE, MANAGED_BY,
                                              managed_labels, owned_filter)
from reconciler.drivers.swarm.engine import object_name
from reconciler.errors import DriverError
from reconciler.state.model import StateRecord

# swarmkit accepts config data "larger than 0 and less than 1024000 bytes".
MAX_CONFIG_BYTES = 1_024_000 - 1
LABEL_MODEL_DIGEST = LABEL_PREFIX + "model-digest"
LABEL_MODEL_FILE = LABEL_PREFIX + "model-file"


def model_files(source: Path) -> list[tuple[str, Path]]:
    """(path inside the model, file) in the order and naming of the content fingerprint."""
    if source.is_file():
        return [(source.name, source)]
    files = []
    for current, dirs, names in os.walk(source, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(current) / name
            if path.is_file():
                files.append((f"{source.name}/{path.relative_to(source).as_posix()}", path))
    return sorted(files)


def config_name(owner, spec: dict, address: str, relative: str) -> str:
    digest = hashlib.sha256(f"{owner.stack}\0{address}\0{spec['content_digest']}\0{relative}".encode()).hexdigest()
    return object_name("rc", owner.stack, spec["name"], spec["version"], digest[:16], identity=owner.identity)


def create_configs(client: docker.DockerClient, owner, stack_dir: Path, address: str, spec: dict,
                   spec_hash: str) -> dict:
    """The configs of this model version (created, or reused when they already exist); returns
    the outputs kept in state. Every file is checked before the first config is made."""
    source = stack_dir / spec["path"]
    if fingerprint(source, stack_dir).digest != spec["content_digest"]:
        raise DriverError(f"model files under {source} changed since the plan was made",
                          "run `reconciler plan` again and apply the new plan")
    files = model_files(source)
    for relative, path in files:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise DriverError(
                f"model file {relative} of {address} is {size} bytes; a Docker config (how the swarm driver "
                f"ships model files to every node) holds at most {MAX_CONFIG_BYTES} bytes",
                "bake the model into the image (and drop `model:` from the deployment), or use the docker driver")
        if size == 0:
            raise DriverError(f"model file {relative} of {address} is empty; Docker configs cannot be empty",
                              "remove the empty file, or bake the model into the image")
    existing = {c.name: c for c in client.configs.list(filters=owned_filter(owner, address))}
    outputs = []
    for relative, path in files:
        name = config_name(owner, spec, address, relative)
        mode = 0o555 if path.stat().st_mode & 0o111 else 0o444
        config = existing.get(name)
        labels = (config.attrs["Spec"].get("Labels") or {}) if config else {}
        if config is None or labels.get(LABEL_MODEL_DIGEST) != spec["content_digest"]:
            labels = managed_labels(owner, address, spec_hash, **{LABEL_ROLE: "model",
                                                                  LABEL_MODEL_DIGEST: spec["content_digest"],
                                                                  LABEL_MODEL_FILE: relative})
            try:
                config_id = client.api.create_config(name, path.read_bytes(), labels=labels)["ID"]
            except APIError as error:
                raise DriverError(f"cannot create Docker config {name} for {relative} of {address}: "
                                  f"{error.explanation or error}",
                                  "a config of that name that reconciler did not make is in the way: remove it "
                                  "(`docker config rm`)" if error.status_code == 409 else
                                  "check that the swarm manager is healthy (`docker node ls`)") from error
        else:
            config_id = config.id
        outputs.append({"id": config_id, "name": name, "file": relative, "mode": mode})
    return {"configs": outputs, "content_digest": spec["content_digest"]}


def config_references(model_outputs: dict, mount_path: str) -> list[dict]:
    """How a deployment's tasks mount the model: each file read-only at its place."""
    return [{"File": {"Name": f"{mount_path}/{c['file']}", "UID": "0", "GID": "0", "Mode": c["mode"]},
             "ConfigID": c["id"], "ConfigName": c["name"]} for c in model_outputs.get("configs", [])]


def release(client: docker.DockerClient, records: dict[str, StateRecord], names: set[str], owner: str) -> None:
    """Remove the configs named here that no model record other than `owner` still lists.
    A config still mounted by a service is refused by swarm and left for a later release
    (the deployment that lets go of it releases it again)."""
    still_listed = {c["name"] for address, record in records.items()
                    if address != owner and address.kind == "model"
                    for c in record.outputs.get("configs", [])}
    for name in sorted(names - still_listed):
        try:
            config = client.configs.get(name)
        except NotFound:
            continue
        if (config.attrs["Spec"].get("Labels") or {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
            continue  # never ours to remove
        try:
            config.remove()
        except NotFound:
            pass
        except APIError as error:
            if "in use" not in str(error.explanation or error):
                raise


def stored_digest(client: docker.DockerClient, record: StateRecord) -> str | None:
    """The model's content digest when every config of the record still exists with the
    labels it was made with (config data cannot change, so that is the content), else None."""
    wanted = {c["id"]: c["name"] for c in record.outputs.get("configs", [])}
    digest = record.outputs.get("content_digest", record.spec.get("content_digest"))
    if not wanted:
        return digest if "configs" in record.outputs else None
    base = record.address.base
    found = {c.id: c for c in client.configs.list(filters={"label": [f"{LABEL_MANAGED_BY}={MANAGED_BY}",
                                                                     f"{LABEL_ADDRESS}={base}"]})}
    for config_id, name in wanted.items():
        config = found.get(config_id)
        labels = (config.attrs["Spec"].get("Labels") or {}) if config else {}
        if config is None or config.name != name or labels.get(LABEL_MODEL_DIGEST) != digest:
            return None
    return digest
