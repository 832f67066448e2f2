"""Dependency order for changes, with graphlib. Pure.

Creates and updates follow `depends_on` (model -> deployment -> endpoint); deletes go the
other way, and a resource is deleted only after whatever used to depend on it has moved on.
"""
from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

from reconciler.addresses import Address
from reconciler.errors import ReconcilerError
from reconciler.planning.plan import DELETE, Change


def change_predecessors(changes: dict[Address, Change]) -> dict[Address, set[Address]]:
    """For each address, the addresses whose change must finish before its own may start."""
    before: dict[Address, set[Address]] = {c.address: set() for c in changes.values()}
    for change in changes.values():
        address = change.address
        if change.action != DELETE:
            before[address] |= {d for d in change.depends_on if d in changes and changes[d].action != DELETE}
        base = address.base
        if address.is_orphan and base in changes:
            # Leftover containers go before their resource changes: they may hold its names.
            before[base].add(address)
        if address.is_deposed and change.action is DELETE:
            # Old containers left by an interrupted replacement serve until their users
            # (an endpoint's gateway) have moved to the new ones.
            before[address] |= {a for a, c in changes.items()
                                if c.action != DELETE and base in (*c.depends_on, *c.prior_depends_on)}
        for dependency in change.prior_depends_on:
            # Whatever used this resource must let go of it before the resource is deleted.
            if dependency in changes and changes[dependency].action == DELETE:
                before[dependency].add(address)
    return before


def execution_order(changes: dict[Address, Change]) -> list[Change]:
    sorter = TopologicalSorter(change_predecessors(changes))
    try:
        order = list(sorter.static_order())
    except CycleError as error:
        cycle = " -> ".join(map(str, error.args[1]))
        raise ReconcilerError(f"dependency cycle: {cycle}", "remove one of these references") from error
    return [changes[a] for a in order]
