"""Field-level differences between two specs, via deepdiff. Pure."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deepdiff import DeepDiff

from reconciler.planning.field_policy import forces_replacement

ABSENT = None


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any
    after: Any
    forces_replacement: bool

    def to_dict(self) -> dict:
        return {"path": self.path, "before": self.before, "after": self.after,
                "forces_replacement": self.forces_replacement}

    @classmethod
    def from_dict(cls, data: dict) -> "FieldChange":
        return cls(data["path"], data["before"], data["after"], data["forces_replacement"])


def field_changes(kind: str, before: dict, after: dict) -> tuple[FieldChange, ...]:
    diff = DeepDiff(before, after, view="tree", verbose_level=2)
    changes = []
    for levels in diff.values():
        for level in levels:
            path = tuple(level.path(output_format="list"))
            before_value = None if _absent(level.t1) else level.t1
            after_value = None if _absent(level.t2) else level.t2
            changes.append(FieldChange(_dotted(path), before_value, after_value, forces_replacement(kind, path)))
    return tuple(sorted(changes, key=lambda c: c.path))


def _absent(value: Any) -> bool:
    return type(value).__name__ == "NotPresent"


def _dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
