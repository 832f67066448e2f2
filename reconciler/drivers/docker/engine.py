"""Connection to the Docker Engine, labels, images and host ports. Side effects only.

Every object created here carries our labels; lookups always filter on them, so objects
without them are never touched.
"""
from __future__ import annotations

import os
import socket

import docker
from docker.utils import parse_repository_tag
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from reconciler.drivers.base import (LABEL_ADDRESS, LABEL_MANAGED_BY, LABEL_SPEC_HASH, LABEL_STACK,
                                     MANAGED_BY)
from reconciler.errors import DriverError

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def connect(timeout: int = 60) -> docker.DockerClient:
    """A client that answers, or a DriverError naming the socket and what to do."""
    socket_url = os.environ.get("DOCKER_HOST", DEFAULT_SOCKET)
    try:
        client = docker.DockerClient(base_url=socket_url, timeout=timeout)
        client.ping()
        return client
    except (DockerException, OSError) as error:
        reason = str(error)
        if "Permission denied" in reason:
            hint = f"the socket {socket_url} is not readable by this user; run as root or join the docker group"
        else:
            hint = f"start dockerd (or set DOCKER_HOST) so that {socket_url} answers"
        raise DriverError(f"cannot reach the Docker Engine at {socket_url}: {reason}", hint) from error


def managed_labels(stack: str, address: str, spec_hash: str, **extra: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_STACK: stack, LABEL_ADDRESS: address,
            LABEL_SPEC_HASH: spec_hash, **extra}


def label_filter(stack: str, address: str | None = None) -> dict:
    labels = [f"{LABEL_MANAGED_BY}={MANAGED_BY}", f"{LABEL_STACK}={stack}"]
    if address:
        labels.append(f"{LABEL_ADDRESS}={address}")
    return {"label": labels}


def ensure_image(client: docker.DockerClient, image: str) -> None:
    """The image is local, or is pulled; otherwise a clear error."""
    try:
        client.images.get(image)
        return
    except ImageNotFound:
        pass
    try:
        repository, tag = parse_repository_tag(image)
        client.images.pull(repository, tag=tag or "latest")
    except (APIError, DockerException) as error:
        raise DriverError(
            f"image {image} is not present locally and could not be pulled: {_short(error)}",
            "build or load it first (images/build.sh builds the demo images), or `docker login` "
            "to the registry that holds it") from error


def free_host_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now (0.0.0.0: on every address); kept in state so the same one
    is reused later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def remove_container(client: docker.DockerClient, container_id: str, stop_timeout: int = 10,
                     adopted: bool = False) -> None:
    """Stop and remove one of our containers; already gone is fine. `adopted`: state records
    this unlabelled container as adopted by `reconciler import`, the one exception to labels."""
    try:
        container = client.containers.get(container_id)
    except NotFound:
        return
    if container.labels.get(LABEL_MANAGED_BY) != MANAGED_BY and not adopted:
        raise DriverError(f"container {container.name} is not managed by reconciler; refusing to remove it",
                          "remove the record with `reconciler state rm` if it was adopted by mistake")
    try:
        container.stop(timeout=stop_timeout)
    except (NotFound, APIError):
        pass
    try:
        container.remove(force=True, v=False)
    except NotFound:
        pass
    except APIError as error:
        # 409: another step of this apply is removing the same container right now.
        if error.status_code != 409:
            raise


def _short(error: Exception) -> str:
    text = getattr(error, "explanation", None) or str(error)
    return str(text).splitlines()[0][:300]
