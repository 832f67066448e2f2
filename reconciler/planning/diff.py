"""Field-level differences between two specs. Pure.

Mappings and scalars are walked here; two lists that differ are handed to DeepDiff, whose
in-order list alignment (which item was inserted, which changed) is what plans have always
shown. Importing deepdiff costs 0.3-0.4 s (numpy, pydantic), so a plan whose changes are all
outside lists (an image tag, a variable, a probe setting) never imports it (#16)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.planning.field_policy import POLICIES, ChangePolicy
from reconciler.planning.fields import replaces_despite_updater

ABSENT = None
# DeepDiff's threshold_to_diff_deeper default: mappings sharing fewer keys are one change.
DIFF_DEEPER_SHARE = 0.33


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


def field_changes(kind: str, before: dict, after: dict,
                  policy: ChangePolicy = POLICIES["docker"]) -> tuple[FieldChange, ...]:
    # Most resources in a plan are unchanged, and DeepDiff costs about half a millisecond per
    # spec even then (1,000 deployments: ~1 s of a no-op plan). `_identical` answers only when
    # DeepDiff could not find anything; every other case still goes through DeepDiff.
    if _identical(before, after):
        return ()
    return deep_field_changes(kind, before, after, policy)


_JSON_SCALARS = (str, int, float, bool, type(None))


def _identical(a: Any, b: Any) -> bool:
    """Same JSON types all the way down and equal values. Stricter than `==`, which calls
    1 == 1.0 == True; DeepDiff reports those as type changes, so they must not short-cut."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(type(k) is str and _identical(v, b[k]) for k, v in a.items())
    if type(a) is list:
        return len(a) == len(b) and all(map(_identical, a, b))
    return type(a) in _JSON_SCALARS and a == b


def deep_field_changes(kind: str, before: dict, after: dict,
                       policy: ChangePolicy = POLICIES["docker"]) -> tuple[FieldChange, ...]:
    """Every changed leaf, as DeepDiff(before, after) reports them."""
    changes = [FieldChange(_dotted(path), before_value, after_value,
                           _forces_replacement(kind, path, before, after, policy))
               for path, before_value, after_value in _leaf_changes((), before, after)]
    return tuple(sorted(changes, key=lambda c: c.path))


def _leaf_changes(path: tuple, a: Any, b: Any):
    """(path, before, after) of every difference under `path`, as DeepDiff's tree view gives
    them: a key only on one side is one change (None on the other), a value of another type one
    change (1 -> 1.0 too), two unequal scalars one change, two mappings that share under a
    third of their keys one change."""
    if a is b:
        return  # DeepDiff's first test too (the one nan object equals itself there)
    if type(a) is not type(b):
        yield path, a, b
    elif type(a) is dict:
        union = len(a.keys() | b.keys())
        if union > 1 and len(a.keys() & b.keys()) / union < DIFF_DEEPER_SHARE:
            yield path, a, b  # mostly other keys: one change of the whole mapping
            return
        for key in a:
            if key not in b:
                yield (*path, key), a[key], None
            else:
                yield from _leaf_changes((*path, key), a[key], b[key])
        for key in b:
            if key not in a:
                yield (*path, key), None, b[key]
    elif type(a) in (list, tuple):
        if not _identical(list(a), list(b)):
            yield from _list_changes(path, a, b)
    elif not (type(a) in _JSON_SCALARS and a == b):
        yield path, a, b


def _list_changes(path: tuple, a, b):
    # Imported here, and only for two lists that differ (see the module docstring).
    from deepdiff import DeepDiff
    for levels in DeepDiff(a, b, view="tree", verbose_level=2).values():
        for level in levels:
            yield ((*path, *level.path(output_format="list")),
                   None if _absent(level.t1) else level.t1, None if _absent(level.t2) else level.t2)


def _forces_replacement(kind: str, path: tuple, before: dict, after: dict, policy: ChangePolicy) -> bool:
    if policy.forces_replacement(kind, path):
        return True
    top = str(path[0]) if path else ""
    return kind == "deployment" and replaces_despite_updater(policy.driver, top, before.get(top), after.get(top))


def _absent(value: Any) -> bool:
    return type(value).__name__ == "NotPresent"


def _dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
