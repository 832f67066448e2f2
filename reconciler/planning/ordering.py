"""Dependency order for changes, with graphlib. Pure.

Creates and updates follow `depends_on` (model -> deployment -> endpoint); deletes go the
other way, and a resource is deleted only after whatever used to depend on it has moved on.
"""
from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

from reconciler.errors import ReconcilerError
from reconciler.planning.plan import DELETE, Change


def change_predecessors(changes: dict[str, Change]) -> dict[str, set[str]]:
    """For each address, the addresses whose change must finish before its own may start."""
    before: dict[str, set[str]] = {a: set() for a in changes}
    for address, change in changes.items():
        if change.action != DELETE:
            before[address] |= {d for d in change.depends_on if d in changes and changes[d].action != DELETE}
        for dependency in change.prior_depends_on:
            # Whatever used this resource must let go of it before the resource is deleted.
            if dependency in changes and changes[dependency].action == DELETE:
                before[dependency].add(address)
    return before


def execution_order(changes: dict[str, Change]) -> list[Change]:
    sorter = TopologicalSorter(change_predecessors(changes))
    try:
        order = list(sorter.static_order())
    except CycleError as error:
        cycle = " -> ".join(error.args[1])
        raise ReconcilerError(f"dependency cycle: {cycle}", "remove one of these references") from error
    return [changes[a] for a in order]
