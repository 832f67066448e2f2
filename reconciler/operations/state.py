"""The state transfer operations: `push` (replace a backend's state with a given one) and
`migrate` (copy a stack's state from one backend to the other, lineage and serial kept).
Side effects only through the state backends; `push_refusal` is the pure rule.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from reconciler.config.stack import read_backend_settings, stack_name
from reconciler.errors import ReconcilerError
from reconciler.operations.plan import local_store, pg_store
from reconciler.state.backend import StateBackend
from reconciler.state.model import StateFile


@dataclass(frozen=True)
class Transfer:
    source: str
    target: str
    state: StateFile  # as written to the target
    changed: bool = True


def push_refusal(current: StateFile, pushed: StateFile) -> str:
    """Why `pushed` must not replace `current` without --force ("" when it may). Pure."""
    if current.lineage and pushed.lineage and current.lineage != pushed.lineage:
        return (f"the pushed state has lineage {pushed.lineage}, the stored one {current.lineage}: "
                "it is another stack's state, or one recreated from scratch")
    if pushed.serial < current.serial:
        return (f"the pushed state has serial {pushed.serial}, lower than the stored {current.serial}: "
                "it is older than what is stored")
    if pushed.serial == current.serial and pushed.to_dict() != current.to_dict():
        return (f"the pushed state has the stored serial {current.serial} but other content: "
                "both were changed since they were one")
    return ""


def _written_serial(current: StateFile, wanted: int) -> int:
    # The stored serial only grows, so every history entry is a new serial of its lineage.
    return max(wanted, current.serial + 1) if current.lineage else wanted


def _replace(store: StateBackend, state: StateFile, serial: int) -> StateFile:
    # write() stores serial + 1.
    return store.write(dataclasses.replace(state, serial=serial - 1))


def parse_state(text: str, where: str, stack: str) -> StateFile:
    try:
        state = StateFile.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError, ReconcilerError) as error:
        raise ReconcilerError(f"{where} is no reconciler state: {error}",
                              "push a file written by `reconciler state pull`") from error
    if state.stack != stack:
        raise ReconcilerError(f"{where} is the state of stack {state.stack!r}, not {stack!r}",
                              "push it to its own stack (--stack)")
    return state


def push_state(store: StateBackend, pushed: StateFile, force: bool = False, lock_timeout: float = 0.0) -> Transfer:
    store.lock("state push", lock_timeout)
    with store:
        current = store.read()
        refusal = push_refusal(current, pushed)
        if refusal and not force:
            raise ReconcilerError(f"state push refused: {refusal}",
                                  "`reconciler state pull` shows the stored state; --force replaces it anyway "
                                  "(the stored version stays in `state history` for pg, in .backup for local)")
        if not refusal and pushed.to_dict() == current.to_dict():
            return Transfer("push", store.location, current, changed=False)
        written = _replace(store, pushed, _written_serial(current, pushed.serial))
    return Transfer("push", store.location, written)


def backends_of(stack_dir: Path, state_path: Path | None) -> dict[str, StateBackend]:
    """Both backends a stack's state can be in: its local file (`--state` or the default) and
    its pg row (from the stack settings' `pg:` section, whichever backend they choose now)."""
    stack = stack_name(stack_dir)
    settings = read_backend_settings(stack_dir)
    return {"local": local_store(stack, state_path, stack_dir),
            "pg": pg_store(stack, dataclasses.replace(settings, kind="pg"), stack_dir)}


def migrate_state(stack_dir: Path, to: str, state_path: Path | None = None, force: bool = False,
                  lock_timeout: float = 0.0) -> Transfer:
    """Copy the stack's state into backend `to` from the other one, lineage and serial kept.
    Refused when the target already holds a state, unless `force`."""
    stores = backends_of(Path(stack_dir), state_path)
    if to not in stores:
        raise ReconcilerError(f"unknown state backend {to!r}", "use --to pg or --to local")
    target = stores[to]
    source = stores["local" if to == "pg" else "pg"]
    local, pg = stores["local"], stores["pg"]
    beside = [local.work_dir / name for name in ("gateways", "models") if (local.work_dir / name).exists()]
    if local.work_dir.resolve() != pg.work_dir.resolve() and beside and not force:
        # The running gateways and model mounts point into the local file's directory; the pg
        # backend keeps them in the stack's default one, so the next apply would rebuild them.
        raise ReconcilerError(
            f"the gateway configs and model copies of {local.location} are in {local.work_dir}, but a pg state "
            f"keeps them in {pg.work_dir}",
            "migrate a state at the default location (without --state), or --force and let the next apply "
            "re-create the gateways and model copies there")
    source.lock("state migrate", lock_timeout)
    with source:
        state = source.read()
        if not state.lineage:
            raise ReconcilerError(f"no state to migrate at {source.location}",
                                  "apply the stack first, or migrate in the other direction")
        target.lock("state migrate", lock_timeout)
        with target:
            existing = target.read()
            if existing.lineage and not force:
                raise ReconcilerError(
                    f"{target.location} already holds a state of stack {existing.stack} "
                    f"(lineage {existing.lineage}, serial {existing.serial})",
                    "`reconciler state history` shows it; --force replaces it (for pg it stays in the history)")
            written = _replace(target, state, _written_serial(existing, state.serial))
    return Transfer(source.location, target.location, written)
