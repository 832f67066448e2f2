"""Containers and networks of the docker driver: removal, which checks our labels first. Side
effects only.

Every object created by the docker driver carries our labels (reconciler/drivers/common/labels.py);
lookups always filter on them, so objects without them are never touched.
"""
from __future__ import annotations

import time

import docker
from docker.errors import APIError, NotFound

from reconciler.drivers.common.labels import LABEL_MANAGED_BY, MANAGED_BY
from reconciler.errors import DriverError


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


# The engine releases a removed container's network endpoint a moment after the removal returns
# (it answers "has active endpoints" meanwhile): a network whose containers are all gone is
# asked again for this long before it is left for the next destroy.
NETWORK_RELEASE_SECONDS = 5.0


def remove_released_network(network) -> bool:
    """Remove one network whose containers have just been removed; True when it is gone. A
    network still in use by a live container stays (it keeps answering "active endpoints")."""
    deadline = time.monotonic() + NETWORK_RELEASE_SECONDS
    while True:
        try:
            network.remove()
            return True
        except NotFound:
            return True
        except APIError as error:
            if "active endpoints" not in str(error.explanation or error) or time.monotonic() > deadline:
                return False
        time.sleep(0.1)
