"""Fixtures for unit tests: a state lock held by another process.

The holder runs in a separate interpreter so that its PID differs from the test's and so
that killing it shows what the kernel does with an flock whose owner dies.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.store_child import start_store_child

@dataclass
class HeldLock:
    process: subprocess.Popen
    info: dict

    def release(self) -> None:
        """Let the holder unlock and exit normally."""
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=10)


@pytest.fixture
def hold_lock():
    """hold_lock(state_path, stack, operation, seconds=None) -> HeldLock, held by a child process."""
    started: list[HeldLock] = []

    def start(state_path: Path, stack: str, operation: str = "apply", seconds: float | None = None) -> HeldLock:
        spec = {"kind": "local", "path": str(state_path), "stack": stack}
        held = HeldLock(*start_store_child(spec, operation, "hold" if seconds is None else f"hold:{seconds}"))
        started.append(held)
        return held

    yield start
    for held in started:
        if held.process.poll() is None:
            held.process.kill()
        held.process.wait(timeout=10)
        for stream in (held.process.stdin, held.process.stdout):
            if stream and not stream.closed:
                stream.close()
