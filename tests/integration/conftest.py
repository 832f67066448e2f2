"""Fixtures for tests on the real Docker Engine (see harness.py)."""
from harness import blue_green, docker_client, hey, stack  # noqa: F401
