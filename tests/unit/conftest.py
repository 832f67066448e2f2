"""Fixtures for unit tests: a state lock held by another process.

The holder runs in a separate interpreter so that its PID differs from the test's and so
that killing it shows what the kernel does with an flock whose owner dies.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Locks the store, prints the LockInfo as one JSON line, then holds the lock until stdin
# closes (or for argv[4] seconds), then unlocks.
HOLDER_SCRIPT = """
import dataclasses, json, sys, time
from pathlib import Path
from reconciler.state.store import StateStore
store = StateStore(Path(sys.argv[1]), sys.argv[2])
info = store.lock(sys.argv[3])
print(json.dumps(dataclasses.asdict(info)), flush=True)
if len(sys.argv) > 4:
    time.sleep(float(sys.argv[4]))
else:
    sys.stdin.read()
store.unlock()
print("released", flush=True)
"""


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
        argv = [sys.executable, "-c", HOLDER_SCRIPT, str(state_path), stack, operation]
        if seconds is not None:
            argv.append(str(seconds))
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = process.stdout.readline()
        if not line:
            process.wait(timeout=10)
            raise RuntimeError(f"lock holder exited with {process.returncode} before locking")
        held = HeldLock(process, json.loads(line))
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
