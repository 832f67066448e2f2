"""The planner: desired graph vs prior state -> Plan. Pure.

Decides one action per address (decide_change), follows dependencies (a replaced model
replaces its deployments; an endpoint is updated when its deployments get new containers or
when the gateway's view of them changes), then orders changes so that dependencies are
created first and deleted last (ordering.py). A record is compared as the current code would
have written it (fields.with_defaults), so a field added later never forces a replacement.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from reconciler.config.graph import DesiredGraph
from reconciler.planning.diff import FieldChange, field_changes
from reconciler.planning.field_policy import DEFAULT_DRIVER, ChangePolicy, policy_for
from reconciler.planning.fields import with_defaults
from reconciler.planning.gateway_view import view_changes
from reconciler.planning.ordering import execution_order
from reconciler.addresses import Address
from reconciler.planning.plan import CREATE, DELETE, NO_OP, UPDATE, Action, Change, Drift, Plan
from reconciler.state.model import StateFile, StateRecord

APPLY, DESTROY, REFRESH_ONLY = "apply", "destroy", "refresh-only"


@dataclass(frozen=True)
class PlanOptions:
    mode: str = APPLY
    targets: frozenset[Address] = field(default_factory=frozenset)
    replace: frozenset[Address] = field(default_factory=frozenset)
    created_at: str = ""
    driver: str = DEFAULT_DRIVER

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", frozenset(map(Address.parse, self.targets)))
        object.__setattr__(self, "replace", frozenset(map(Address.parse, self.replace)))

    @property
    def policy(self) -> ChangePolicy:
        return policy_for(self.driver)


def decide_change(address: Address, desired, record: StateRecord | None, forced: bool,
                  policy: ChangePolicy = policy_for(DEFAULT_DRIVER)) -> Change:
    """One resource's change: create, delete, no-op, update in place or replace."""
    kind = address.kind
    replacement = Action.replacing(policy.replace_mode[kind])
    if record is None:
        return Change(address, CREATE, "not-in-state", None, desired.spec,
                      depends_on=tuple(desired.depends_on), source=desired.source,
                      image_source=desired.image_source)
    prior_depends = tuple(record.depends_on)
    if desired is None:
        return Change(address, DELETE, "not-in-config", record.spec, None, prior_depends_on=prior_depends)
    before = with_defaults(kind, record.spec, desired.spec)
    fields = field_changes(kind, before, desired.spec, policy)
    depends = tuple(desired.depends_on)
    common = dict(before=before, after=desired.spec, fields=fields, depends_on=depends,
                  prior_depends_on=prior_depends, source=desired.source, image_source=desired.image_source)
    if record.status == "tainted":
        return Change(address, replacement, "tainted", **common)
    if forced:
        return Change(address, replacement, "requested", **common)
    if not fields:
        return Change(address, NO_OP, "unchanged", **common)
    if any(f.forces_replacement for f in fields):
        return Change(address, replacement, "forces-replacement", **common)
    return Change(address, UPDATE, "changed", **common)


def _with_repair(change: Change, drifted: bool, repair: str, replace_mode: dict[str, str]) -> Change:
    """Turn drift found by refresh into the change that repairs it. Most drift already shows
    as a difference between refreshed state and configuration; `repair` covers what state
    cannot hold (a recreated container, a port bound wider, a hand-edited gateway config)."""
    if not drifted or change.action in (CREATE, DELETE) or change.reason in ("tainted", "requested"):
        return change
    kind = change.kind
    if repair == "replace" or (change.action.is_replace and change.reason == "forces-replacement"):
        return dataclasses.replace(change, action=Action.replacing(replace_mode[kind]), reason="drifted")
    if repair == "update" or change.action == UPDATE:
        return dataclasses.replace(change, action=UPDATE, reason="drifted")
    return change


def _moves_containers(change: Change, policy: ChangePolicy) -> bool:
    """Whether a deployment change gives it other containers, which its gateway must learn."""
    return change.action.creates or (
        policy.gateway_follows_scaling and change.action == UPDATE
        and any(f.path == "instance_count" for f in change.fields))


def _view_fields(deployments: list[Change], policy: ChangePolicy) -> tuple[FieldChange, ...]:
    """`gateway.NAME.FIELD` lines for the deployments whose gateway view changes in place
    (those that get new containers re-point the endpoint anyway, and show why)."""
    fields = []
    for change in deployments:
        if change.action != UPDATE or _moves_containers(change, policy):
            continue
        name = change.address.short_name
        fields += [FieldChange(f"gateway.{name}.{key}", before, after, False)
                   for key, before, after in view_changes(change.before, change.after)]
    return tuple(fields)


def _with_dependency_updates(changes: dict[str, Change], policy: ChangePolicy) -> dict[str, Change]:
    """Follow replaced dependencies: a deployment mounting a replaced model is replaced too
    (its bind mount holds the old files); an endpoint is re-pointed at deployments that get new
    containers, and re-rendered when the gateway's view of a deployment changes."""
    result = dict(changes)
    for address in (a for a in changes if a.kind == "deployment"):
        change = result[address]
        if change.action in (NO_OP, UPDATE) and any(result[d].action.is_replace for d in change.depends_on
                                                    if d in result):
            result[address] = dataclasses.replace(change, action=Action.replacing(policy.replace_mode["deployment"]),
                                                  reason="dependency-replaced")
    # Old containers an interrupted rollout left (deposed records) may be what a gateway still
    # routes to: the rollout was cut before it re-pointed the gateway. Deleting them without
    # re-pointing first is an outage that no plan or drift shows (issue #12).
    leaving = {a.base for a, c in result.items() if a.is_deposed and c.action is DELETE}
    for address in (a for a in changes if a.kind == "endpoint"):
        change = result[address]
        deployments = [result[d] for d in change.depends_on if d in result]
        view_fields = _view_fields(deployments, policy)
        fields = tuple(sorted(change.fields + view_fields, key=lambda f: f.path))
        moves = any(_moves_containers(d, policy) for d in deployments) or \
            any(d in leaving for d in (*change.depends_on, *change.prior_depends_on))
        if change.action == NO_OP and moves:
            result[address] = dataclasses.replace(change, action=UPDATE, reason="dependency-replaced", fields=fields)
        elif change.action == NO_OP and view_fields:
            result[address] = dataclasses.replace(change, action=UPDATE, reason="gateway-view-changed",
                                                  fields=fields)
        elif view_fields and (change.action is UPDATE or change.action.is_replace):
            result[address] = dataclasses.replace(change, fields=fields)
    return result


def _closure(addresses: set[Address], targets: frozenset[Address],
             graph_edges: dict[Address, set[Address]]) -> set[Address]:
    """Targets plus everything reachable from them along `graph_edges`."""
    if not targets:
        return addresses
    selected: set[Address] = set()
    pending = [t for t in targets if t in addresses]
    while pending:
        address = pending.pop()
        if address not in selected:
            selected.add(address)
            pending.extend(graph_edges.get(address, ()))
    return selected


def make_plan(desired: DesiredGraph, state: StateFile, options: PlanOptions = PlanOptions(),
              drift: tuple[Drift, ...] = ()) -> Plan:
    desired_by_address = dict(desired.resources)
    if options.mode == DESTROY:
        desired_by_address = {}
    addresses = set(desired_by_address) | set(state.records)
    changes: dict[Address, Change] = {}
    repairs: dict[Address, str] = {}
    for item in drift:
        # "replace" outranks "update" outranks "" for an address with several kinds of drift.
        repairs[item.address] = max(repairs.get(item.address, ""), item.repair, key=("", "update", "replace").index)
    if options.mode != REFRESH_ONLY:
        for address in sorted(addresses):
            change = decide_change(address, desired_by_address.get(address),
                                   state.records.get(address), address in options.replace, options.policy)
            changes[address] = _with_repair(change, address in repairs, repairs.get(address, ""),
                                            options.policy.replace_mode)
        changes = _with_dependency_updates(changes, options.policy)
    if options.mode == DESTROY:
        # As `terraform destroy -target`: a target goes with everything that depends on it.
        edges: dict[Address, set[Address]] = {}
        for address, change in changes.items():
            for dependency in change.prior_depends_on:
                edges.setdefault(dependency, set()).add(address)
    else:
        # As `terraform apply -target`: a target comes with everything it depends on.
        edges = {a: set(c.depends_on) | set(c.prior_depends_on) for a, c in changes.items()}
    selected = _closure(set(changes), options.targets, edges)
    ordered = execution_order({a: c for a, c in changes.items() if a in selected})
    return Plan(stack=desired.stack, mode=options.mode, changes=tuple(ordered), driver=options.driver,
                state_lineage=state.lineage, state_serial=state.serial, desired_digest=desired.digest,
                created_at=options.created_at, drift=drift, stack_dir=desired.root,
                desired={str(a): r.to_dict() for a, r in desired.resources.items()},
                warnings=tuple(str(w) for w in desired.warnings) if options.mode != DESTROY else (),
                substitutions=desired.substitutions if options.mode != DESTROY else ())
