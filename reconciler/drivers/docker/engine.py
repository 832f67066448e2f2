"""Containers of the docker driver: removal, which checks our labels first. Side effects only.

Every object created by the docker driver carries our labels (reconciler/drivers/common/labels.py);
lookups always filter on them, so objects without them are never touched.
"""
from __future__ import annotations

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
