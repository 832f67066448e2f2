"""Fault tests reuse the real-Docker harness of tests/integration."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from harness import blue_green, docker_client, stack  # noqa: E402,F401
