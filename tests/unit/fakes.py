"""A recording fake driver for the apply engine and the operations: no engine, no Docker.

Every call is recorded as compact text ("create deployment.ep/blue"), optionally followed by
what the state file on disk held at that moment (" | a, b~deposed-3, c!" with "!" for tainted),
which shows that the engine saved state after every step and in what order records came and
went. A step can be told to fail, with or without leaving something behind (the error's
`.record`, which the engine saves as tainted). `timeless` drops the timings from an apply's
progress output, for comparing it whole.
"""
from __future__ import annotations

import dataclasses
import re
import threading
import time

from reconciler.errors import DriverError
from reconciler.state.model import StateRecord
from reconciler.state.store import StateStore

# The name the fake poses as: records carry it, and the planner's change policy and the driver
# choice look it up, so it must be a real driver's name.
POSES_AS = "docker"


class FakeStepFailed(DriverError):
    """As the real drivers' StepFailed: `record` is what the failed step left running."""

    def __init__(self, summary: str, record: StateRecord | None) -> None:
        super().__init__(summary, "fix the fake")
        self.record = record


class RecordingDriver:
    def __init__(self, store: StateStore | None = None, name: str = POSES_AS, fail: dict[str, str] | None = None,
                 leave_behind: frozenset[str] = frozenset(), delay: dict[str, float] | None = None,
                 routes_after_create: bool = False) -> None:
        """fail: step label ("create deployment.ep/blue") -> error summary; leave_behind: the failing
        labels whose error carries a record; delay: label -> seconds the call takes;
        routes_after_create: pose as a driver whose new endpoints are routed by a later step
        (drivers.base.Driver.routes_endpoint_after_create, the docker driver's choice)."""
        self.routes_endpoint_after_create = routes_after_create
        self.store = store
        self.name = name
        self.fail = dict(fail or {})
        self.leave_behind = leave_behind
        self.delay = dict(delay or {})
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self._serial = 0

    # -- recording -------------------------------------------------------------------------
    def _record(self, label: str) -> int:
        line = label
        if self.store is not None:
            records = self.store.read().records
            line += " | " + ", ".join(str(a) + ("!" if r.status == "tainted" else "") for a, r in sorted(records.items()))
        with self._lock:
            self.calls.append(line)
            self._serial += 1
            serial = self._serial
        if label in self.delay:
            time.sleep(self.delay[label])
        return serial

    def _maybe_fail(self, label: str, record: StateRecord | None) -> None:
        if label in self.fail:
            raise FakeStepFailed(self.fail[label], record if label in self.leave_behind else None)

    def log(self) -> str:
        return "\n".join(self.calls)

    # -- the driver contract ---------------------------------------------------------------
    def preflight(self, specs: list[tuple[str, dict]]) -> None:
        self._record("preflight " + " ".join(str(address) for address, _ in specs))

    def create(self, address: str, spec: dict, spec_hash: str, ctx, prior: StateRecord | None = None) -> StateRecord:
        label = f"create {address}"
        serial = self._record(label + (f" (prior {prior.address})" if prior is not None else ""))
        outputs: dict = {}
        if address.kind == "endpoint":
            # What a real endpoint keeps across a delete-then-create: its port and keys.
            kept = prior.outputs if prior is not None else {}
            outputs = {"port": kept.get("port", 18000 + serial), "keys": kept.get("keys", {"primary": f"key-{serial}"}),
                       "routes": sorted(str(a) for a in ctx.records() if a.kind == "deployment")}
        record = StateRecord(address, self.name, spec, spec_hash, driver_ids={"id": f"{address}#{serial}"},
                             outputs=outputs)
        self._maybe_fail(label, record)
        return record

    def update(self, record: StateRecord, spec: dict, spec_hash: str, ctx) -> StateRecord:
        label = f"update {record.address}"
        self._record(label)
        updated = dataclasses.replace(record, spec=spec, spec_hash=spec_hash, status="ready")
        if record.address.kind == "endpoint":
            updated = dataclasses.replace(updated, outputs={
                **record.outputs, "routes": sorted(str(a) for a in ctx.records() if a.kind == "deployment")})
        self._maybe_fail(label, dataclasses.replace(updated, status="tainted"))
        return updated

    def delete(self, record: StateRecord, ctx) -> None:
        label = f"delete {record.address}"
        self._record(label)
        self._maybe_fail(label, None)

    def finish(self, ctx) -> None:
        self._record("finish")


def timeless(output: str) -> str:
    """An apply's output without its timings: durations read 0s and "Still ..." lines are gone
    (a step of a no-op driver may still take a second on a loaded CI machine)."""
    output = re.sub(r"^.*: Still [a-z]+\.\.\. \[\d+s elapsed\]\n", "", output, flags=re.M)
    return re.sub(r" after \d+s$", " after 0s", output, flags=re.M)
