"""The local state backend: one JSON file per stack, written atomically, guarded by a lock file.

Where a stack's state lives by default does not depend on the working directory: a per-user
directory keyed by the stack directory's absolute path (`default_state_path`), under
$RECONCILER_STATE_DIR, else $XDG_STATE_HOME/reconciler, else ~/.local/state/reconciler. Its
gateway configs and model copies live beside it. `--state` names any other file.

Side effects live here (files, fsync, flock). Writes: temp file in the same directory, fsync,
rename; the previous file is kept as `<state>.backup`; files are mode 0600 because endpoint
keys live in state. The lock is an flock on `<state>.lock` (released by the kernel if the
holder dies) whose content says who holds it; `force-unlock` removes that file.
"""
from __future__ import annotations

import dataclasses
import fcntl
import getpass
import hashlib
import json
import os
import re
import socket
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from reconciler.addresses import Address
from reconciler.errors import ReconcilerError, StateCorrupt, StateLocked
from reconciler.state.backend import LockInfo, StateBackend, StateVersion
from reconciler.state.model import StateFile, StateRecord

__all__ = ["LockInfo", "StateStore", "default_state_path", "default_states", "state_root"]

STATE_DIR_ENV = "RECONCILER_STATE_DIR"
STATE_FILE_NAME = "state.json"
# Before the default moved: `state/<stack>.json` relative to the working directory.
LEGACY_STATE_DIR = Path("state")


def state_root() -> Path:
    """The per-user directory that holds every stack's default state directory."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV]).expanduser().resolve()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser().resolve() / "reconciler"


def default_state_path(stack_dir: Path) -> Path:
    """`<state root>/<folder name>-<hash of the absolute stack path>/state.json`: the same stack
    finds its state from any working directory, and envs/prod/fraud and envs/staging/fraud
    never share one."""
    absolute = Path(stack_dir).resolve()
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", absolute.name)[:40] or "stack"
    digest = hashlib.sha256(str(absolute).encode()).hexdigest()[:12]
    return state_root() / f"{readable}-{digest}" / STATE_FILE_NAME


def default_states() -> list[Path]:
    """Every state file at a default location (for commands given no --stack)."""
    root = state_root()
    return sorted(root.glob(f"*/{STATE_FILE_NAME}")) if root.is_dir() else []


def legacy_state_path(stack: str) -> Path:
    return LEGACY_STATE_DIR / f"{stack}.json"


class StateStore(StateBackend):
    """The `local` backend."""

    kind = "local"

    def __init__(self, path: Path, stack: str) -> None:
        self.path = Path(path)
        self.stack = stack
        self.backup_path = self.path.with_name(self.path.name + ".backup")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self._lock_fd: int | None = None
        # What the file plus the journal hold now, as this process wrote it (write_step appends
        # to it); None until this lock session's first write.
        self._on_disk: StateFile | None = None
        self._journal_synced = False

    @property
    def location(self) -> str:
        return str(self.path.resolve())

    @property
    def work_dir(self) -> Path:
        return self.path.parent

    # -- reading --------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.exists()

    def history(self) -> list[StateVersion]:
        """A local state keeps one earlier version: `<state>.backup`."""
        versions = []
        for path in (self.backup_path, self.path):
            try:
                data = json.loads(path.read_text())
                stamp = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
            except (OSError, ValueError):
                continue
            state = self.read() if path == self.path else None
            versions.append(StateVersion(
                serial=state.serial if state else int(data.get("serial", 0)),
                lineage=state.lineage if state else str(data.get("lineage", "")),
                written_at=stamp, written_by="",
                records=len(state.records) if state else len(data.get("records", ()))))
        return versions

    def read(self) -> StateFile:
        """The current state; an empty one (new lineage) when no file exists yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return StateFile.empty(self.stack)
        except OSError as error:
            raise ReconcilerError(f"cannot read state file {self.path}: {error.strerror}",
                                  "check the file's permissions") from error
        try:
            # Decoding is part of parsing: bytes that are not UTF-8, or JSON that is not an
            # object (AttributeError on .get), are corruption too, never a traceback.
            state = StateFile.from_dict(json.loads(raw.decode("utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError, ReconcilerError) as error:
            backup = (f"the previous version is in {self.backup_path}; inspect it and copy it over "
                      f"{self.path} if it is right") if self.backup_path.exists() else \
                "no backup exists; `reconciler state recover` can rebuild records from container labels"
            raise StateCorrupt(f"state file {self.path} is corrupt: {error}", backup) from error
        if state.stack != self.stack:
            raise ReconcilerError(f"state file {self.path} belongs to stack {state.stack!r}, not {self.stack!r}",
                                  "pass --state with this stack's own state file")
        return replay_journal(state, self._journal_bytes())

    def _journal_bytes(self) -> bytes:
        try:
            return self.journal_path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as error:
            raise ReconcilerError(f"cannot read state journal {self.journal_path}: {error.strerror}",
                                  "check the file's permissions") from error

    # -- writing --------------------------------------------------------------------------
    def write(self, state: StateFile) -> StateFile:
        """Persist `state` with serial + 1 as a whole file; returns what was written. Caller
        must hold the lock. Steps written with write_step before are folded in (and gone)."""
        self._require_lock()
        written = dataclasses.replace(state.ensure_lineage(), serial=state.serial + 1)
        self._write_file(written)
        return written

    def write_step(self, state: StateFile, changed=None) -> StateFile:
        """Persist `state` (serial + 1) durably by appending what changed since the last write
        to the journal: one fsync'd line instead of a whole file with backup, so an apply of N
        steps writes O(N) bytes, not O(N^2). The first write of a lock session, and any state
        of another lineage, is a whole-file write. `checkpoint` (called by unlock) folds the
        journal into the file. `changed`: the addresses this step put or removed, when the
        caller knows them (the apply engine does); otherwise every record is compared."""
        self._require_lock()
        written = dataclasses.replace(state.ensure_lineage(), serial=state.serial + 1)
        base = self._on_disk
        if base is None or base.lineage != written.lineage or base.serial != state.serial:
            self._write_file(written)
            return written
        line = journal_line(base, written, changed)
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if not self._journal_synced:
            _fsync_directory(self.path.parent)  # the journal's own name must survive a crash too
            self._journal_synced = True
        self._on_disk = written
        return written

    def checkpoint(self) -> None:
        """Fold the journal into the state file (with the file before it as .backup)."""
        if self._lock_fd is None or not self.journal_path.exists():
            return
        # What this session wrote is known; only a journal left by a crash needs replaying.
        self._write_file(self._on_disk if self._journal_synced and self._on_disk is not None else self.read())

    def _write_file(self, written: StateFile) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _atomic_write(self.backup_path, self.path.read_bytes())
        _atomic_write(self.path, (json.dumps(written.to_dict(), indent=2, sort_keys=False) + "\n").encode())
        # Everything in the journal is in the file now; a crash before this unlink leaves
        # lines whose serials the next read skips.
        if self.journal_path.exists():
            self.journal_path.unlink()
            _fsync_directory(self.path.parent)
        self._on_disk = written
        self._journal_synced = False

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("state written without holding the lock")

    # -- locking --------------------------------------------------------------------------
    def lock(self, operation: str, timeout: float = 0.0) -> LockInfo:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                holder = self.lock_holder()
                # The hint names --stack as well: with --state alone force-unlock reads the
                # stack name from the state file, which a first apply may not have written yet.
                raise StateLocked(
                    f"state {self.path} is locked by another operation",
                    (holder.describe() + "\n  Wait for it or retry with --lock-timeout. The lock goes with its "
                     "process: if that process hangs, stop it; only if it runs on a machine you cannot reach: "
                     f"reconciler force-unlock {holder.id} --stack {self.stack} --state {self.path} --force")
                    if holder else "another reconciler process holds the lock; retry with --lock-timeout")
            if not _same_file(fd, self.lock_path):
                os.close(fd)  # force-unlocked between open and flock; take the new file
                continue
            info = LockInfo(id=str(uuid.uuid4()), who=f"{getpass.getuser()}@{socket.gethostname()}",
                            operation=operation, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            pid=os.getpid(), host=socket.gethostname())
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(dataclasses.asdict(info)).encode())
            os.fsync(fd)
            self._lock_fd = fd
            return info

    def unlock(self) -> None:
        if self._lock_fd is None:
            return
        try:
            self.checkpoint()
        finally:
            self._release()

    def _release(self) -> None:
        self._on_disk = None
        if _same_file(self._lock_fd, self.lock_path):
            self.lock_path.unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None

    def lock_holder(self) -> LockInfo | None:
        try:
            return LockInfo(**json.loads(self.lock_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def force_unlock(self, lock_id: str, force: bool = False) -> LockInfo:
        """Remove the lock file. Refused while a process still holds the flock, unless `force`:
        that process is alive (the kernel drops a dead holder's flock), and a second writer
        beside it would delete what it is creating as orphans."""
        holder = self.lock_holder()
        if holder is None:
            raise ReconcilerError(f"state {self.path} is not locked", "nothing to unlock")
        if holder.id != lock_id:
            raise ReconcilerError(f"lock ID {lock_id} does not match the current lock {holder.id}",
                                  "pass the ID printed in the lock error")
        if not force and self._flock_is_held():
            here = holder.host == socket.gethostname()
            where = f"PID {holder.pid} on this machine" if here else f"PID {holder.pid} on {holder.host}"
            raise ReconcilerError(
                f"the lock is held by a running process ({where}, {holder.operation}, since {holder.created})",
                (f"wait for it, or stop it (`kill {holder.pid}`): its lock goes with it. " if here else
                 f"wait for it, or stop it on {holder.host}: its lock goes with it. ") +
                "Only if it can never finish: force-unlock ... --force (its changes may then be lost or "
                "removed as orphans by the next apply)")
        self.lock_path.unlink(missing_ok=True)
        return holder

    def _flock_is_held(self) -> bool:
        """Whether some process holds the flock on the lock file right now."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)



def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _atomic_write(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory_path: Path) -> None:
    directory = os.open(directory_path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# -- the journal (pure) ------------------------------------------------------------------------
def journal_line(before: StateFile, after: StateFile, changed=None) -> bytes:
    """One line: the records `after` puts or removes relative to `before` (only among
    `changed` when given: O(step) instead of O(state)), its serial and lineage, and a checksum,
    so that a line torn by a crash is recognised and ignored."""
    if changed is None:
        put = {str(a): r.to_dict() for a, r in after.records.items() if before.records.get(a) is not r}
        removed = [str(a) for a in sorted(set(before.records) - set(after.records))]
    else:
        put = {str(a): after.records[a].to_dict() for a in changed
               if a in after.records and before.records.get(a) is not after.records[a]}
        removed = [str(a) for a in sorted(changed) if a in before.records and a not in after.records]
    body = json.dumps({"serial": after.serial, "lineage": after.lineage, "put": put, "remove": removed},
                      sort_keys=True, separators=(",", ":"))
    return (json.dumps({"sha256": hashlib.sha256(body.encode()).hexdigest(), "entry": body}) + "\n").encode()


def replay_journal(state: StateFile, data: bytes) -> StateFile:
    """`state` with every intact journal entry that follows it applied, in order. Entries the
    file already holds (serial not above it) are skipped; replay stops at the first line that
    is torn, corrupt, of another lineage or not the next serial: what follows it was never
    acknowledged as written."""
    records: dict | None = None  # one copy of the records for the whole replay, made at the first entry
    for raw in data.split(b"\n")[:-1]:  # the part after the last newline is a torn write
        try:
            line = json.loads(raw)
            body = line["entry"]
            if hashlib.sha256(body.encode()).hexdigest() != line["sha256"]:
                break
            entry = json.loads(body)
            serial = int(entry["serial"])
            removed = {Address.parse(a) for a in entry["remove"]}
            put = {Address.parse(a): StateRecord.from_dict(r) for a, r in entry["put"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, ReconcilerError):
            break
        if serial <= state.serial:
            continue
        if serial != state.serial + 1 or (state.lineage and entry["lineage"] != state.lineage):
            break
        records = dict(state.records) if records is None else records
        for address in removed:
            records.pop(address, None)
        records.update(put)
        state = StateFile(state.stack, entry["lineage"], serial, state.records, state.format_version)
    return state if records is None else dataclasses.replace(state, records=records)
