"""The Docker Engine connection, image checks and host ports, for every driver. Side effects only."""
from __future__ import annotations

import os
import socket

import docker
from docker.utils import parse_repository_tag
from docker.errors import APIError, DockerException, ImageNotFound

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


class EngineClient:
    """A driver's Docker client, connected on first use (so that making a driver never needs the engine)."""

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client


def ensure_images(client: docker.DockerClient, specs: list[tuple[str, dict]], gateway_image: str) -> None:
    """Every image the plan's changes need is here (or pulled) before any change is made."""
    for image in required_images(specs, gateway_image):
        ensure_image(client, image)


def required_images(specs: list[tuple[str, dict]], gateway_image: str) -> list[str]:
    """Every image a plan's changes need: each deployment's (unless an environment of the plan
    builds it), each environment's base images, and the gateway's for endpoints."""
    built = {spec["image"] for address, spec in specs if address.kind == "environment"}
    images = {spec["image"] for address, spec in specs if address.kind == "deployment"} - built
    for address, spec in specs:
        if address.kind == "environment":
            images |= {spec["base_image"]} if spec.get("base_image") else set()
            images |= {b for b in spec.get("base_images", ()) if b.lower() != "scratch"}
    if any(address.kind == "endpoint" for address, _ in specs):
        images.add(gateway_image)
    return sorted(images)


def _short(error: Exception) -> str:
    text = getattr(error, "explanation", None) or str(error)
    return str(text).splitlines()[0][:300]
