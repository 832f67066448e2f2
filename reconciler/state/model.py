"""StateFile and StateRecord: plain data with explicit to_dict/from_dict. Pure."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.addresses import Address

FORMAT_VERSION = 1
STATUSES = ("ready", "tainted")


@dataclass(frozen=True)
class StateRecord:
    address: Address
    driver: str
    spec: dict
    spec_hash: str
    depends_on: tuple[Address, ...] = ()
    status: str = "ready"
    driver_ids: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Strings are accepted (and parsed) so that callers at a boundary need not.
        object.__setattr__(self, "address", Address.parse(self.address))
        object.__setattr__(self, "depends_on", tuple(Address.parse(a) for a in self.depends_on))

    def to_dict(self) -> dict:
        return {"address": str(self.address), "driver": self.driver, "status": self.status,
                "spec_hash": self.spec_hash, "depends_on": [str(a) for a in self.depends_on],
                "driver_ids": self.driver_ids, "outputs": self.outputs, "spec": self.spec}

    @classmethod
    def from_dict(cls, data: dict) -> "StateRecord":
        return cls(address=data["address"], driver=data["driver"], spec=data["spec"],
                   spec_hash=data["spec_hash"], depends_on=tuple(data.get("depends_on", ())),
                   status=data.get("status", "ready"), driver_ids=data.get("driver_ids", {}),
                   outputs=data.get("outputs", {}))


@dataclass(frozen=True)
class StateFile:
    stack: str
    lineage: str
    serial: int = 0
    records: dict[Address, StateRecord] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @classmethod
    def empty(cls, stack: str) -> "StateFile":
        """No state yet: lineage is assigned at the first write, so a plan made now stays valid."""
        return cls(stack=stack, lineage="")

    def ensure_lineage(self) -> "StateFile":
        return self if self.lineage else replace(self, lineage=str(uuid.uuid4()))

    def with_record(self, record: StateRecord) -> "StateFile":
        return replace(self, records={**self.records, record.address: record})

    def __post_init__(self) -> None:
        # Records are keyed by Address; built from strings (tests, callers at the boundary)
        # they are parsed once. Only the first key is looked at: with_record and without keep
        # Address keys, and scanning every key on each of N apply steps was quadratic.
        first = next(iter(self.records), None)
        if first is not None and not isinstance(first, Address):
            object.__setattr__(self, "records", {Address.parse(a): r for a, r in self.records.items()})

    def without(self, address: "Address | str") -> "StateFile":
        return replace(self, records={a: r for a, r in self.records.items() if a != address})

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "stack": self.stack, "lineage": self.lineage,
                "serial": self.serial,
                "records": [self.records[a].to_dict() for a in sorted(self.records)]}

    @classmethod
    def from_dict(cls, data: dict) -> "StateFile":
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {data.get('format_version')!r}")
        records = [StateRecord.from_dict(r) for r in data["records"]]
        return cls(stack=data["stack"], lineage=data["lineage"], serial=int(data["serial"]),
                   records={r.address: r for r in records})
