"""The state backend interface: what the rest of the code holds when it reads, locks and writes a
stack's state. Two implementations: `local` (state/store.py: a JSON file, its journal, an flock)
and `pg` (state/pg.py: a PostgreSQL row per stack, a history table, an advisory lock). The
operations, the apply engine and the CLI see only this interface and never ask which one they have.

Pure but for the abstract methods, whose implementations own every side effect of state.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from reconciler.state.model import StateFile


PG_LOCATION_PREFIX = "pg:"


def as_location(path_or_location) -> str:
    """A state's location as plans and labels write it: `pg:...` as is, a file path absolute. Pure
    but for resolving the path."""
    text = str(path_or_location)
    return text if text.startswith(PG_LOCATION_PREFIX) else str(Path(text).resolve())


@dataclass(frozen=True)
class LockInfo:
    """Who holds a state lock: the same fields for every backend, so the refusal reads alike."""
    id: str
    who: str
    operation: str
    created: str
    pid: int
    host: str

    def describe(self) -> str:
        return (f"ID: {self.id}\n  Operation: {self.operation}\n  Who: {self.who}\n"
                f"  PID: {self.pid} on {self.host}\n  Created: {self.created}")


@dataclass(frozen=True)
class StateVersion:
    """One stored version of a stack's state (`reconciler state history`)."""
    serial: int
    lineage: str
    written_at: str
    written_by: str  # "user@host (operation)", when the backend knows
    records: int


class StateBackend(ABC):
    """A stack's state. `read` needs no lock; every write needs the lock (`lock`, then use the
    backend as a context manager, which unlocks). `write` and `write_step` return what they
    stored, with serial + 1; each one is atomic and durable when it returns."""

    kind: str  # "local" | "pg"
    stack: str

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the state is, as plans record it and object labels carry it: an absolute file
        path, or `pg:SCHEMA/NAME` (never a connection string: those hold passwords)."""

    @property
    @abstractmethod
    def work_dir(self) -> Path:
        """The local directory of this stack's gateway configs and model copies."""

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def read(self) -> StateFile: ...

    @abstractmethod
    def write(self, state: StateFile) -> StateFile: ...

    @abstractmethod
    def write_step(self, state: StateFile, changed=None) -> StateFile:
        """As `write`, for one apply step; `changed` names the addresses the step touched."""

    @abstractmethod
    def lock(self, operation: str, timeout: float = 0.0) -> LockInfo:
        """Take the lock or raise StateLocked naming the holder (after waiting `timeout` s)."""

    @abstractmethod
    def unlock(self) -> None: ...

    @abstractmethod
    def lock_holder(self) -> LockInfo | None: ...

    @abstractmethod
    def force_unlock(self, lock_id: str, force: bool = False) -> LockInfo: ...

    @abstractmethod
    def history(self) -> list[StateVersion]:
        """The stored versions, oldest first."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unlock()
