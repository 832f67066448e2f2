"""A state store held or written by another process: what two reconciler runs at once look like
to each other (its PID is not the test's, and killing it shows what happens to its lock)."""
from __future__ import annotations

import json
import subprocess
import sys

# Opens the store described by argv[1] (JSON: {"kind": "local", "path", "stack"} or {"kind": "pg",
# "schema", "name", "stack"}), locks it for operation argv[2] and prints the LockInfo as one JSON
# line. Then argv[3]: "hold" keeps the lock until stdin closes, "hold:SECONDS" for that long,
# "steps:N" writes N apply steps, printing each serial once write_step returned. Then unlocks.
STORE_CHILD = """
import dataclasses, json, sys, time
from pathlib import Path
spec, operation, mode = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
if spec["kind"] == "pg":
    from reconciler.state.pg import PgStateStore
    store = PgStateStore(spec["stack"], spec["name"], Path("/tmp"), schema=spec["schema"])
else:
    from reconciler.state.store import StateStore
    store = StateStore(Path(spec["path"]), spec["stack"])
info = store.lock(operation)
print(json.dumps(dataclasses.asdict(info)), flush=True)
if mode.startswith("steps:"):
    from reconciler.state.model import StateRecord
    state = store.read()
    for number in range(int(mode.split(":")[1])):
        record = StateRecord(f"model.m{number}:1", "docker", {"n": number}, "sha256:" + "0" * 64)
        state = store.write_step(state.with_record(record), (record.address,))
        print(state.serial, flush=True)
        time.sleep(0.01)
elif mode.startswith("hold:"):
    time.sleep(float(mode.split(":")[1]))
else:
    sys.stdin.read()
store.unlock()
print("released", flush=True)
"""


def start_store_child(spec: dict, operation: str, mode: str = "hold") -> tuple[subprocess.Popen, dict]:
    """STORE_CHILD in its own interpreter; returns it and the LockInfo it printed."""
    process = subprocess.Popen([sys.executable, "-c", STORE_CHILD, json.dumps(spec), operation, mode],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        raise RuntimeError(f"lock holder exited with {process.returncode} before locking")
    return process, json.loads(line)
