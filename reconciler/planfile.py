"""Saved plans (`plan -out FILE`): write, read, and refuse a stale one. Files only; no Docker."""
from __future__ import annotations

import json
import os
from pathlib import Path

from reconciler.errors import ReconcilerError, StalePlan
from reconciler.planning.plan import Plan
from reconciler.state.model import StateFile

MAGIC = "reconciler-plan"


def write_plan(plan: Plan, path: Path) -> None:
    data = json.dumps({"kind": MAGIC, "plan": plan.to_dict()}, indent=1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(data + "\n")


def read_plan(path: Path) -> Plan:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("kind") != MAGIC:
            raise ValueError("not a reconciler plan file")
        return Plan.from_dict(data["plan"])
    except OSError as error:
        raise ReconcilerError(f"cannot read plan file {path}: {error.strerror}", "check the path") from error
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ReconcilerError(f"{path} is not a valid saved plan: {error}",
                              "create one with `reconciler plan STACK -out FILE`") from error


def check_not_stale(plan: Plan, state: StateFile) -> None:
    """A saved plan applies only to the exact state it was made from."""
    if plan.state_lineage != state.lineage:
        raise StalePlan("saved plan is for a different state lineage",
                        f"plan lineage {plan.state_lineage}, state lineage {state.lineage}; make a new plan")
    if plan.state_serial != state.serial:
        raise StalePlan(f"saved plan is stale: state has changed since it was made "
                        f"(serial {plan.state_serial} -> {state.serial})",
                        "run `reconciler plan` again and apply the new plan")
