"""The labels every managed object carries, the filters that find them, and who owns what. Pure.

A stack's identity is the lineage of its state (assigned when its first apply starts, before
any object exists), not its folder name: two stacks called `fraud` (envs/staging/fraud and
envs/prod/fraud) carry one stack label but two identities, and each only ever lists, changes
or deletes objects of its own identity. Every object also says which stack directory and which
state file made it, so that objects of another state can be named in a message, and a lost
state file can be told apart from a second stack of the same name.

Objects without these labels are never touched (the one exception, a container adopted with
`reconciler import`, is recorded as such in state)."""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from reconciler.addresses import Address
from reconciler.errors import ReconcilerError

LABEL_PREFIX = "org.reconciler."
LABEL_MANAGED_BY = LABEL_PREFIX + "managed-by"
LABEL_STACK = LABEL_PREFIX + "stack"
LABEL_IDENTITY = LABEL_PREFIX + "identity"
LABEL_STACK_DIR = LABEL_PREFIX + "stack-dir"
LABEL_STATE = LABEL_PREFIX + "state"
LABEL_ADDRESS = LABEL_PREFIX + "address"
LABEL_SPEC_HASH = LABEL_PREFIX + "spec-hash"
LABEL_GENERATION = LABEL_PREFIX + "generation"
LABEL_INSTANCE = LABEL_PREFIX + "instance"
LABEL_ROLE = LABEL_PREFIX + "role"
MANAGED_BY = "reconciler"


def owner_labels(owner) -> dict[str, str]:
    """The labels saying whose an object is; `owner` is a StepContext (stack, identity,
    stack_dir, state_path)."""
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_STACK: owner.stack, LABEL_IDENTITY: owner.identity}
    if getattr(owner, "stack_dir", None):
        labels[LABEL_STACK_DIR] = str(owner.stack_dir)
    if getattr(owner, "state_path", None):
        labels[LABEL_STATE] = str(owner.state_path)
    return labels


def managed_labels(owner, address: "Address | str", spec_hash: str, **extra: str) -> dict[str, str]:
    if not owner.identity:
        # Would make an object that every stack of this name could claim.
        raise RuntimeError("object labelled without a stack identity")
    return {**owner_labels(owner), LABEL_ADDRESS: str(address), LABEL_SPEC_HASH: spec_hash, **extra}


def label_filter(stack: str, address: "Address | str | None" = None, identity: str | None = None) -> dict:
    """Docker's label filter for the stack's objects; with `identity`, only this state's own."""
    labels = [f"{LABEL_MANAGED_BY}={MANAGED_BY}", f"{LABEL_STACK}={stack}"]
    if identity is not None:
        labels.append(f"{LABEL_IDENTITY}={identity}")
    if address:
        labels.append(f"{LABEL_ADDRESS}={address}")
    return {"label": labels}


def owned_filter(owner, address: str | None = None) -> dict:
    """The filter for `owner`'s own objects (owner: a StepContext)."""
    return label_filter(owner.stack, address, owner.identity)


def is_own(labels: dict | None, identity: str, object_id: str, known_ids: set[str]) -> bool:
    """Whether an object listed by stack name belongs to the state of `identity`. Objects made
    before identities existed carry none: they are ours only when our state names them."""
    labels = labels or {}
    if LABEL_IDENTITY in labels:
        return bool(identity) and labels[LABEL_IDENTITY] == identity
    return object_id in known_ids


@dataclass(frozen=True)
class OtherOwner:
    """Objects of this stack's name that belong to another state."""

    identity: str
    stack_dir: str
    state: str
    count: int

    def describe(self) -> str:
        where = f"state {self.state}" if self.state else "an unknown state"
        made = f", stack directory {self.stack_dir}" if self.stack_dir else ""
        return f"{self.count} object(s) of {where}{made} (identity {self.identity or 'none'})"


def other_owners(objects: list[tuple[str, dict]], identity: str, known_ids: set[str]) -> list[OtherOwner]:
    """(object id, labels) of every object with this stack's name -> the other states among
    their owners, one entry each."""
    found: dict[tuple[str, str, str], int] = {}
    for object_id, labels in objects:
        if is_own(labels, identity, object_id, known_ids):
            continue
        labels = labels or {}
        key = (labels.get(LABEL_IDENTITY, ""), labels.get(LABEL_STACK_DIR, ""), labels.get(LABEL_STATE, ""))
        found[key] = found.get(key, 0) + 1
    return [OtherOwner(*key, count) for key, count in sorted(found.items())]


def new_generation() -> str:
    """The generation label of a new set of objects, so a replacement can run beside the old one."""
    return secrets.token_hex(3)


def label_address(text: str | None) -> Address | None:
    """The address a label names; None for a label that names none (a foreign or hand-made object)."""
    try:
        return Address.parse(text) if text else None
    except ReconcilerError:
        return None


def base_address(address: "Address | str") -> Address:
    """The resource address of a deposed or orphan record (`deployment.a/b~deposed-x` -> `deployment.a/b`)."""
    return Address.parse(address).base
