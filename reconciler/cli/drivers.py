"""Which driver serves a stack. Imported lazily so that validate/plan never need Docker."""
from __future__ import annotations


def driver_for(stack: str):
    from reconciler.drivers.docker.driver import DockerDriver
    return DockerDriver()
