"""A folder's content reaching containers read-only at a path through the engine's API, for
engines on another host (nothing of the client's disk can be bind-mounted there). Side effects
only: Docker volumes and short-lived helper containers.

A content volume is a Docker volume filled once with a tar stream (`put_archive`) through a
helper container that is created, never started, and removed right after (the engine mounts a
created container's volumes for the copy). Its name carries the stack identity and the content
fingerprint, so the same content is one volume reused by every record that names it, and
changed content is a new volume. Containers mount it read-only. Files keep the modes the
client-side store gave them (read-only, executable bits kept: part of the fingerprint).

The same mechanism carries the gateway's config (mutable: refilled before each reload).
"""
from __future__ import annotations

import io
import tarfile
import tempfile
import threading
from pathlib import Path

import docker
from docker.errors import APIError, NotFound
from docker.types import Mount

from reconciler.drivers.common.labels import (LABEL_MANAGED_BY, LABEL_PREFIX, LABEL_ROLE, MANAGED_BY, managed_labels,
                                              owned_filter)
from reconciler.drivers.common.names import object_name
from reconciler.errors import DriverError

LABEL_CONTENT_DIGEST = LABEL_PREFIX + "content-digest"
# The roles of the volumes made here (LABEL_ROLE): a model's content, a gateway's config.
CONTENT_ROLE, GATEWAY_CONFIG_ROLE = "content", "gateway-config"
VOLUME_ROLES = (CONTENT_ROLE, GATEWAY_CONFIG_ROLE)
FILL_PATH = "/fill"


def content_volume_name(owner, digest: str) -> str:
    return object_name("rc", owner.stack, "content", digest.removeprefix("sha256:")[:16], identity=owner.identity)


def mount_of(stored: dict, target: str) -> Mount:
    """How a container sees a stored folder's content read-only at `target` (`stored`: the
    outputs DockerDriver.store_folder returned): the content volume on a remote engine, a bind
    mount of the client-side store copy on the local one."""
    if stored.get("volume"):
        return Mount(target=target, source=stored["volume"], type="volume", read_only=True)
    return Mount(target=target, source=str(stored["store_path"]), type="bind", read_only=True)


# Parallel steps of one apply (two models of the same content) fill one volume once: a
# helper mounting a volume that another step has just removed would silently re-create it
# without our labels. Volumes filled completely by this process, so a sibling step reuses them
# before their record is saved.
_fill_lock = threading.Lock()
_filled: set[str] = set()


def ensure_folder_volume(client: docker.DockerClient, owner, address: str, stored: Path, digest: str,
                         helper_image: str, listed_by_records: bool) -> str:
    """The content volume of `stored` (a store directory holding one entry, the model's file or
    folder), created and filled unless a record in state already lists it (or this process
    filled it). Any other volume of that name is a leftover of an interrupted fill: made again."""
    name = content_volume_name(owner, digest)
    with _fill_lock:
        existing = _get(client, name)
        if existing is not None and _labels(existing).get(LABEL_MANAGED_BY) != MANAGED_BY:
            raise DriverError(f"a Docker volume named {name} that reconciler did not make is in the way",
                              "remove or rename it (`docker volume rm`), then apply again")
        if existing is not None:
            complete = (listed_by_records or name in _filled) and _labels(existing).get(LABEL_CONTENT_DIGEST) == digest
            # One a container mounts was filled before that container started: kept as it is.
            if complete or not remove_volume(client, name):
                return name
        _filled.discard(name)
        _create_and_fill(client, owner, address, stored, digest, helper_image, name)
        _filled.add(name)
    return name


def _create_and_fill(client: docker.DockerClient, owner, address: str, stored: Path, digest: str,
                     helper_image: str, name: str) -> None:
    client.volumes.create(name, labels=managed_labels(owner, address, "", **{LABEL_ROLE: CONTENT_ROLE,
                                                                             LABEL_CONTENT_DIGEST: digest}))
    try:
        with tempfile.TemporaryFile() as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                for entry in sorted(stored.iterdir()):
                    tar.add(entry, arcname=entry.name, filter=_root_owned)
            archive.seek(0)
            fill(client, name, archive, helper_image)
    except BaseException:
        remove_volume(client, name)
        raise


def fill(client: docker.DockerClient, volume: str, archive, helper_image: str) -> None:
    """Extract the tar `archive` (bytes or a file) into `volume` through a helper container."""
    try:
        helper = client.containers.create(helper_image, command=["true"], network_disabled=True,
                                          labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_ROLE: "content-helper"},
                                          mounts=[Mount(target=FILL_PATH, source=volume, type="volume")])
    except APIError as error:
        raise DriverError(f"cannot create the helper container that fills volume {volume}: "
                          f"{error.explanation or error}", f"check that image {helper_image} is on the engine") from error
    try:
        if not helper.put_archive(FILL_PATH, archive):
            raise DriverError(f"the engine refused the content of volume {volume}", "see the engine's log")
    finally:
        helper.remove(force=True)


def fill_files(client: docker.DockerClient, volume: str, files: dict[str, bytes], uid: int, gid: int,
               helper_image: str, mode: int = 0o600) -> None:
    """Write `files` ({name: content}) into `volume`, owned by uid:gid with `mode` (a mutable
    volume: the gateway's config, rewritten before each reload)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(content), mode, uid, gid
            tar.addfile(info, io.BytesIO(content))
    fill(client, volume, archive.getvalue(), helper_image)


def create_volume(client: docker.DockerClient, name: str, labels: dict[str, str]) -> str:
    client.volumes.create(name, labels=labels)
    return name


def remove_volume(client: docker.DockerClient, name: str) -> bool:
    """Remove one of our volumes; gone already is fine. False when it stays: still mounted (the
    sweep after the apply, release_unlisted, gets it once its containers are gone) or not ours."""
    volume = _get(client, name)
    if volume is None:
        return True
    if _labels(volume).get(LABEL_MANAGED_BY) != MANAGED_BY:
        return False
    try:
        volume.remove()
    except NotFound:
        pass
    except APIError as error:
        if error.status_code != 409:  # 409: in use by a container that is going away later
            raise
        return False
    return True


def release_unlisted(client: docker.DockerClient, owner, listed: set[str]) -> None:
    """Remove this identity's volumes that no record lists any more (after an apply): a model's
    old content is still mounted by the containers being replaced when its record goes, and an
    interrupted step may have made a volume it never recorded. One still mounted stays."""
    for volume in client.volumes.list(filters=owned_filter(owner)):
        if _labels(volume).get(LABEL_ROLE) in VOLUME_ROLES and volume.name not in listed:
            remove_volume(client, volume.name)


def volume_digest(client: docker.DockerClient, name: str) -> str | None:
    """The content digest of our volume `name`, or None when it is gone (refresh)."""
    volume = _get(client, name)
    return _labels(volume).get(LABEL_CONTENT_DIGEST) if volume is not None else None


def _get(client: docker.DockerClient, name: str):
    try:
        return client.volumes.get(name)
    except NotFound:
        return None


def _labels(volume) -> dict:
    return volume.attrs.get("Labels") or {}


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
