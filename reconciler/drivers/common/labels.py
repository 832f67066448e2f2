"""The labels every managed object carries, and the filters that find them. Pure.

Objects without these labels are never touched (the one exception, a container adopted with
`reconciler import`, is recorded as such in state)."""
from __future__ import annotations

import secrets

from reconciler.addresses import Address
from reconciler.errors import ReconcilerError

LABEL_PREFIX = "org.reconciler."
LABEL_MANAGED_BY = LABEL_PREFIX + "managed-by"
LABEL_STACK = LABEL_PREFIX + "stack"
LABEL_ADDRESS = LABEL_PREFIX + "address"
LABEL_SPEC_HASH = LABEL_PREFIX + "spec-hash"
LABEL_GENERATION = LABEL_PREFIX + "generation"
LABEL_INSTANCE = LABEL_PREFIX + "instance"
LABEL_ROLE = LABEL_PREFIX + "role"
MANAGED_BY = "reconciler"


def managed_labels(stack: str, address: "Address | str", spec_hash: str, **extra: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_STACK: stack, LABEL_ADDRESS: str(address),
            LABEL_SPEC_HASH: spec_hash, **extra}


def label_filter(stack: str, address: "Address | str | None" = None) -> dict:
    labels = [f"{LABEL_MANAGED_BY}={MANAGED_BY}", f"{LABEL_STACK}={stack}"]
    if address:
        labels.append(f"{LABEL_ADDRESS}={address}")
    return {"label": labels}


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
