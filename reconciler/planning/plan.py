"""Plan and Change: plain, serialisable data with a compact text form for tests. Pure."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from reconciler.addresses import Address
from reconciler.planning.diff import FieldChange

PLAN_FORMAT_VERSION = 1
CREATE_THEN_DELETE_MODE, DELETE_THEN_CREATE_MODE = "create-then-delete", "delete-then-create"


class Action(enum.Enum):
    """What a change does. The two replacements are distinct actions; plan JSON writes both as
    "action": "replace" with a "replace_mode" (wire / replace_mode / from_wire)."""

    NO_OP = "no-op"
    CREATE = "create"
    UPDATE = "update"
    CREATE_THEN_DELETE = CREATE_THEN_DELETE_MODE
    DELETE_THEN_CREATE = DELETE_THEN_CREATE_MODE
    DELETE = "delete"

    @property
    def is_replace(self) -> bool:
        return self in (Action.CREATE_THEN_DELETE, Action.DELETE_THEN_CREATE)

    @property
    def creates(self) -> bool:
        """Whether it makes a new resource (counted as "to add")."""
        return self is Action.CREATE or self.is_replace

    @property
    def destroys(self) -> bool:
        """Whether it removes an existing resource (counted as "to destroy")."""
        return self is Action.DELETE or self.is_replace

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @property
    def wire(self) -> str:
        """The "action" string plan JSON carries."""
        return "replace" if self.is_replace else self.value

    @property
    def replace_mode(self) -> str | None:
        """The "replace_mode" string plan JSON carries (None unless a replacement)."""
        return self.value if self.is_replace else None

    @classmethod
    def replacing(cls, mode: str) -> "Action":
        """The replacement a driver's policy asks for ("create-then-delete" / "delete-then-create")."""
        if mode not in (CREATE_THEN_DELETE_MODE, DELETE_THEN_CREATE_MODE):
            raise ValueError(f"unknown replace_mode {mode!r}")
        return cls(mode)

    @classmethod
    def from_wire(cls, action: str, replace_mode: str | None = None) -> "Action":
        if action == "replace":
            return cls.replacing(replace_mode or DELETE_THEN_CREATE_MODE)
        if action in (CREATE_THEN_DELETE_MODE, DELETE_THEN_CREATE_MODE):
            raise ValueError(f"unknown action {action!r}")
        return cls(action)


NO_OP, CREATE, UPDATE, DELETE = Action.NO_OP, Action.CREATE, Action.UPDATE, Action.DELETE
CREATE_THEN_DELETE, DELETE_THEN_CREATE = Action.CREATE_THEN_DELETE, Action.DELETE_THEN_CREATE
_SYMBOLS = {NO_OP: " ", CREATE: "+", UPDATE: "~", CREATE_THEN_DELETE: "-/+", DELETE_THEN_CREATE: "-/+", DELETE: "-"}


def _addresses(values) -> tuple[Address, ...]:
    return tuple(Address.parse(v) for v in values)


@dataclass(frozen=True)
class Change:
    address: Address
    action: Action
    reason: str  # display only: why the planner chose the action
    before: dict | None
    after: dict | None
    fields: tuple[FieldChange, ...] = ()
    depends_on: tuple[Address, ...] = ()
    prior_depends_on: tuple[Address, ...] = ()
    # Derived from action (kept so that constructing from wire strings stays possible).
    replace_mode: str | None = None
    source: str = ""
    image_source: str = ""  # where the image it runs or builds from is written (preflight's errors)

    def __post_init__(self) -> None:
        action = self.action if isinstance(self.action, Action) else Action.from_wire(self.action, self.replace_mode)
        object.__setattr__(self, "action", action)
        object.__setattr__(self, "replace_mode", action.replace_mode)
        object.__setattr__(self, "address", Address.parse(self.address))
        object.__setattr__(self, "depends_on", _addresses(self.depends_on))
        object.__setattr__(self, "prior_depends_on", _addresses(self.prior_depends_on))

    @property
    def kind(self) -> str:
        return self.address.kind

    def compact(self) -> str:
        text = f"{self.action.symbol} {self.address}"
        if (self.action is UPDATE or self.action.is_replace) and self.fields:
            parts = [f.path + ("!" if f.forces_replacement else "") for f in self.fields]
            text += f" ({', '.join(parts)})"
        if self.reason not in ("not-in-state", "not-in-config", "forces-replacement", "changed", "unchanged"):
            text += f" [{self.reason}]"
        return text

    def to_dict(self) -> dict:
        return {"address": str(self.address), "action": self.action.wire, "reason": self.reason,
                "replace_mode": self.action.replace_mode, "source": self.source,
                **({"image_source": self.image_source} if self.image_source else {}),
                "depends_on": [str(a) for a in self.depends_on],
                "prior_depends_on": [str(a) for a in self.prior_depends_on],
                "fields": [f.to_dict() for f in self.fields], "before": self.before, "after": self.after}

    @classmethod
    def from_dict(cls, data: dict) -> "Change":
        return cls(address=Address.parse(data["address"]),
                   action=Action.from_wire(data["action"], data["replace_mode"]), reason=data["reason"],
                   before=data["before"], after=data["after"],
                   fields=tuple(FieldChange.from_dict(f) for f in data["fields"]),
                   depends_on=_addresses(data["depends_on"]), prior_depends_on=_addresses(data["prior_depends_on"]),
                   source=data.get("source", ""), image_source=data.get("image_source", ""))


@dataclass(frozen=True)
class Drift:
    """Something changed outside reconciler: what state says vs what the engine shows.

    kind: missing | stopped | recreated | changed | orphan | model-content | base-image-changed |
    gateway-config | gateway-stale | unhealthy (out of rotation: reported, repaired by the health
    supervisor, not by apply) | health-supervisor.
    fields: before = state, after = engine. repair: what the planner must do beyond what the
    refreshed state already shows it ("replace" / "update"; "" when the state says it all).
    """

    address: Address
    kind: str
    detail: str
    fields: tuple[FieldChange, ...] = ()
    repair: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", Address.parse(self.address))

    def to_dict(self) -> dict:
        return {"address": str(self.address), "kind": self.kind, "detail": self.detail,
                "fields": [f.to_dict() for f in self.fields], "repair": self.repair}

    @classmethod
    def from_dict(cls, data: dict) -> "Drift":
        return cls(Address.parse(data["address"]), data["kind"], data["detail"],
                   tuple(FieldChange.from_dict(f) for f in data.get("fields", ())), data.get("repair", ""))


@dataclass(frozen=True)
class Plan:
    stack: str
    mode: str
    changes: tuple[Change, ...]
    state_lineage: str
    state_serial: int
    desired_digest: str
    created_at: str = ""
    drift: tuple[Drift, ...] = ()
    desired: dict = field(default_factory=dict)
    stack_dir: str = ""
    format_version: int = PLAN_FORMAT_VERSION
    driver: str = "docker"
    # The absolute path of the state file the plan was made against ("" in plans saved before
    # it was recorded): `apply PLANFILE` writes there, wherever it is run from.
    state_path: str = ""
    # Valid but probably unintended, as `file:line: message (hint)` (an endpoint that sends no
    # live traffic): shown above the plan, never acted on.
    warnings: tuple[str, ...] = ()
    # What the image map replaced, as "ADDRESS: FROM -> TO (rule)": shown above the plan.
    substitutions: tuple[str, ...] = ()

    @property
    def actionable(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action is not NO_OP)

    def has_changes(self) -> bool:
        return bool(self.actionable)

    def summary(self) -> dict[str, int]:
        counts = {"add": 0, "change": 0, "destroy": 0}
        for change in self.changes:
            if change.action.creates:
                counts["add"] += 1
            if change.action.destroys:
                counts["destroy"] += 1
            if change.action is UPDATE:
                counts["change"] += 1
        return counts

    def summary_line(self) -> str:
        if self.mode == "refresh-only" and self.drift:
            return (f"Refresh only: {len(self.drift)} change(s) made outside reconciler would be accepted into "
                    "state; nothing in Docker changes.")
        if not self.has_changes():
            return "No changes. Your infrastructure matches the configuration."
        counts = self.summary()
        return f"Plan: {counts['add']} to add, {counts['change']} to change, {counts['destroy']} to destroy."

    def __str__(self) -> str:
        lines = [f"! {d.address} ({d.kind})" for d in self.drift]
        lines += [c.compact() for c in self.actionable]
        return "\n".join([*lines, self.summary_line()])

    def to_dict(self) -> dict[str, Any]:
        # state_path only when known, so that plans made without a state file (tests, goldens)
        # serialise as before.
        where = {"state_path": self.state_path} if self.state_path else {}
        where |= {"warnings": list(self.warnings)} if self.warnings else {}
        where |= {"image_substitutions": list(self.substitutions)} if self.substitutions else {}
        return {"format_version": self.format_version, "stack": self.stack, "stack_dir": self.stack_dir,
                **where, "mode": self.mode, "driver": self.driver,
                "created_at": self.created_at, "state_lineage": self.state_lineage,
                "state_serial": self.state_serial, "desired_digest": self.desired_digest,
                "summary": self.summary(), "drift": [d.to_dict() for d in self.drift],
                "changes": [c.to_dict() for c in self.changes], "desired": self.desired}

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        if data.get("format_version") != PLAN_FORMAT_VERSION:
            raise ValueError(f"unsupported plan format_version {data.get('format_version')!r}")
        return cls(stack=data["stack"], mode=data["mode"],
                   changes=tuple(Change.from_dict(c) for c in data["changes"]),
                   state_lineage=data["state_lineage"], state_serial=data["state_serial"],
                   desired_digest=data["desired_digest"], created_at=data.get("created_at", ""),
                   drift=tuple(Drift.from_dict(d) for d in data.get("drift", ())),
                   desired=data.get("desired", {}), stack_dir=data.get("stack_dir", ""),
                   driver=data.get("driver", "docker"), state_path=data.get("state_path", ""),
                   warnings=tuple(data.get("warnings", ())),
                   substitutions=tuple(data.get("image_substitutions", ())))
