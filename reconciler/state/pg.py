"""The `pg` state backend: a stack's state in PostgreSQL, as Terraform's pg backend keeps it.

In schema SCHEMA (default `reconciler`): `states` holds one row per stack name (lineage, serial,
the state as JSON text), `state_history` every version ever written (a row per write, never
updated), `state_locks` who holds each lock. The lock itself is a session-level advisory lock
(`pg_try_advisory_lock`) held by the connection of the operation that took it: the server drops
it when that session ends, so a holder killed with -9 frees it as soon as its socket closes.
Each write (a whole state, or one apply step) is one transaction updating the row and adding the
history row, so a crash or a stopped server leaves the last committed step. After a lost
connection the store refuses every further write: its lock went with the session, and
reconnecting would write without it.

The connection string comes from the environment (`PG_CONN_STR`, or the variable the stack
settings name), never from the stack. psycopg is imported only when a pg store is used.
Side effects: the database only.
"""
from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import os
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from reconciler.errors import ReconcilerError, StateCorrupt, StateLocked
from reconciler.state.backend import LockInfo, StateBackend, StateVersion
from reconciler.state.model import StateFile

DEFAULT_CONN_STR_ENV = "PG_CONN_STR"
DEFAULT_SCHEMA = "reconciler"
CONNECT_TIMEOUT_SECONDS = 10
# TCP keepalives: a server that vanishes without closing the socket (a network partition) is
# noticed within about 25 s, instead of a write that waits forever.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
# An advisory lock key of its own for creating the tables, so two first runs do not race.
SCHEMA_LOCK_KEY = 0x7265636F6E63696C  # "reconcil"


def advisory_key(schema: str, name: str) -> int:
    """The signed 64-bit advisory lock key of one stack's state. Pure."""
    return int.from_bytes(hashlib.sha256(f"{schema}/{name}".encode()).digest()[:8], "big", signed=True)


def lock_ids(key: int) -> tuple[int, int]:
    """How pg_locks shows a bigint advisory key: (classid, objid), the high and low 32 bits. Pure."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF


def server_of(conninfo: str) -> str:
    """host:port/dbname of a connection string, without user or password, for messages. Pure
    but for psycopg's parser."""
    from psycopg.conninfo import conninfo_to_dict
    try:
        parts = conninfo_to_dict(conninfo)
    except Exception:  # noqa: BLE001 - a malformed string is reported when connecting
        return "PostgreSQL"
    host = parts.get("host") or "localhost"
    return f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or parts.get('user') or ''}"


class PgStateStore(StateBackend):
    kind = "pg"

    def __init__(self, stack: str, name: str, work_dir: Path, conn_str_env: str = DEFAULT_CONN_STR_ENV,
                 schema: str = DEFAULT_SCHEMA) -> None:
        self.stack = stack
        self.name = name
        self.schema = schema
        self.conn_str_env = conn_str_env
        self._work_dir = Path(work_dir)
        self._key = advisory_key(schema, name)
        self._session = None  # the connection that holds the lock
        self._lock_info: LockInfo | None = None
        self._server = ""
        self._lost = ""  # why the session's connection was lost, once it was

    @property
    def location(self) -> str:
        return f"pg:{self.schema}/{self.name}"

    @property
    def work_dir(self) -> Path:
        return self._work_dir

    # -- connections -----------------------------------------------------------------------
    def _conninfo(self) -> str:
        conninfo = os.environ.get(self.conn_str_env, "")
        if not conninfo:
            raise ReconcilerError(
                f"the pg state backend needs a connection string in ${self.conn_str_env}, which is not set",
                f"export {self.conn_str_env}='postgresql://USER@HOST:5432/DB' (a password in it, or in "
                "~/.pgpass / $PGPASSWORD); it is read from the environment only, never from the stack")
        self._server = self._server or server_of(conninfo)
        return conninfo

    def _connect(self):
        try:
            import psycopg
        except ImportError as error:
            raise ReconcilerError("the pg state backend needs psycopg, which is not installed",
                                  "pip install 'reconciler[pg]' (or: pip install 'psycopg[binary]')") from error
        conninfo = self._conninfo()
        try:
            connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                         application_name=f"reconciler {self.stack}", **KEEPALIVES)
        except psycopg.Error as error:
            raise self._unreachable(error, "connect to") from error
        try:
            self._ensure_tables(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _unreachable(self, error, doing: str) -> ReconcilerError:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return ReconcilerError(f"cannot {doing} the PostgreSQL state backend at {self._server or 'PostgreSQL'} "
                               f"({self.location}): {reason}",
                               f"check that the server runs and ${self.conn_str_env} names it")

    def _table(self, name: str):
        from psycopg import sql
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    def _ensure_tables(self, connection) -> None:
        from psycopg import sql
        import psycopg
        statements = [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)),
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, stack text NOT NULL, "
                    "lineage text NOT NULL, serial bigint NOT NULL, data text NOT NULL, "
                    "updated_at timestamptz NOT NULL DEFAULT now())").format(self._table("states")),
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, name text NOT NULL, "
                    "lineage text NOT NULL, serial bigint NOT NULL, records integer NOT NULL, data text NOT NULL, "
                    "written_by text NOT NULL, written_at timestamptz NOT NULL DEFAULT now())"
                    ).format(self._table("state_history")),
            sql.SQL("CREATE INDEX IF NOT EXISTS state_history_name ON {} (name, id)"
                    ).format(self._table("state_history")),
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, session integer NOT NULL, "
                    "info text NOT NULL)").format(self._table("state_locks")),
        ]
        try:
            exists = connection.execute("SELECT to_regclass(%s) IS NOT NULL",
                                        (f'"{self.schema}".state_locks',)).fetchone()[0]
            if exists:
                return
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                for statement in statements:
                    connection.execute(statement)
        except psycopg.Error as error:
            raise self._unreachable(error, "create the tables of") from error

    def _run(self, work, doing: str = "read state from"):
        """`work(connection)` on the session when this process holds the lock, else on a
        connection of its own."""
        import psycopg
        if self._session is not None:
            if self._lost:
                raise self._lost_error()
            try:
                return work(self._session)
            except psycopg.OperationalError as error:
                self._lost = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise self._lost_error() from error
            except psycopg.Error as error:
                raise self._unreachable(error, doing) from error
        connection = self._connect()
        try:
            return work(connection)
        except psycopg.Error as error:
            raise self._unreachable(error, doing) from error
        finally:
            connection.close()

    def _lost_error(self) -> ReconcilerError:
        return ReconcilerError(
            f"lost the connection to the PostgreSQL state backend at {self._server} ({self._lost}); "
            "this step's result was not saved, and the state lock went with the connection",
            "the state keeps what the last committed step wrote (`reconciler state history` shows it); when "
            "the server answers again, run the same command again: objects made since are found by their labels")

    # -- reading ---------------------------------------------------------------------------
    def _row(self, connection):
        return connection.execute(
            self._sql("SELECT stack, data FROM {} WHERE name = %s", "states"), (self.name,)).fetchone()

    def _sql(self, text: str, table: str):
        from psycopg import sql
        return sql.SQL(text).format(self._table(table))

    def exists(self) -> bool:
        return self._run(lambda c: self._row(c) is not None)

    def read(self) -> StateFile:
        row = self._run(self._row)
        if row is None:
            return StateFile.empty(self.stack)
        stack, data = row
        if stack != self.stack:
            raise ReconcilerError(f"state {self.location} belongs to stack {stack!r}, not {self.stack!r}",
                                  "give this stack its own `pg: {name: ...}` in the stack settings")
        try:
            return StateFile.from_dict(json.loads(data))
        except (ValueError, KeyError, TypeError, AttributeError, ReconcilerError) as error:
            raise StateCorrupt(f"state {self.location} is corrupt: {error}",
                               "`reconciler state history` lists the earlier versions; push a good one "
                               "with `reconciler state push --force`") from error

    def history(self) -> list[StateVersion]:
        rows = self._run(lambda c: c.execute(self._sql(
            "SELECT serial, lineage, written_at, written_by, records FROM {} WHERE name = %s ORDER BY id",
            "state_history"), (self.name,)).fetchall())
        return [StateVersion(serial=serial, lineage=lineage, written_by=by, records=records,
                             written_at=at.astimezone(timezone.utc).isoformat(timespec="seconds"))
                for serial, lineage, at, by, records in rows]

    # -- writing ---------------------------------------------------------------------------
    def write(self, state: StateFile) -> StateFile:
        if self._session is None:
            raise RuntimeError("state written without holding the lock")
        written = dataclasses.replace(state.ensure_lineage(), serial=state.serial + 1)
        self._run(lambda c: self._store(c, written), "write state to")
        return written

    def write_step(self, state: StateFile, changed=None) -> StateFile:
        # A row write per step is already one atomic, durable transaction: no journal needed.
        return self.write(state)

    def _store(self, connection, written: StateFile) -> None:
        data = json.dumps(written.to_dict(), indent=2, sort_keys=False) + "\n"
        info = self._lock_info
        by = f"{info.who} ({info.operation})" if info else ""
        with connection.transaction():
            current = connection.execute(self._sql("SELECT lineage, serial FROM {} WHERE name = %s FOR UPDATE",
                                                   "states"), (self.name,)).fetchone()
            if current and current[0] == written.lineage and current[1] >= written.serial:
                # Only a writer that bypassed the lock (force-unlock --force) can have done this.
                raise ReconcilerError(
                    f"state {self.location} was written by another operation meanwhile (serial {current[1]}, "
                    f"this one would write {written.serial})", "run the command again: it reads the new state")
            connection.execute(self._sql(
                "INSERT INTO {} (name, stack, lineage, serial, data, updated_at) VALUES (%s, %s, %s, %s, %s, now()) "
                "ON CONFLICT (name) DO UPDATE SET stack = EXCLUDED.stack, lineage = EXCLUDED.lineage, "
                "serial = EXCLUDED.serial, data = EXCLUDED.data, updated_at = now()", "states"),
                (self.name, self.stack, written.lineage, written.serial, data))
            connection.execute(self._sql(
                "INSERT INTO {} (name, lineage, serial, records, data, written_by) VALUES (%s, %s, %s, %s, %s, %s)",
                "state_history"), (self.name, written.lineage, written.serial, len(written.records), data, by))

    # -- locking ---------------------------------------------------------------------------
    def lock(self, operation: str, timeout: float = 0.0) -> LockInfo:
        import psycopg
        connection = self._connect()
        deadline = time.monotonic() + timeout
        try:
            while not connection.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()[0]:
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                holder = self._current_holder(connection)
                raise StateLocked(
                    f"state {self.location} is locked by another operation",
                    (holder.describe() + "\n  Wait for it or retry with --lock-timeout. The lock goes with its "
                     "process's database session: if that process hangs, stop it; only if it runs on a machine "
                     f"you cannot reach: reconciler force-unlock {holder.id} --stack STACK_DIR --force")
                    if holder else "another reconciler process holds the lock; retry with --lock-timeout")
            host = socket.gethostname()
            info = LockInfo(id=str(uuid.uuid4()), who=f"{getpass.getuser()}@{host}", operation=operation,
                            created=datetime.now(timezone.utc).isoformat(timespec="seconds"), pid=os.getpid(),
                            host=host)
            connection.execute(self._sql(
                "INSERT INTO {} (name, session, info) VALUES (%s, pg_backend_pid(), %s) ON CONFLICT (name) "
                "DO UPDATE SET session = EXCLUDED.session, info = EXCLUDED.info", "state_locks"),
                (self.name, json.dumps(dataclasses.asdict(info))))
        except psycopg.Error as error:
            connection.close()
            raise self._unreachable(error, "lock the state in") from error
        except BaseException:
            connection.close()
            raise
        self._session, self._lock_info, self._lost = connection, info, ""
        return info

    def unlock(self) -> None:
        if self._session is None:
            return
        connection, self._session, self._lock_info = self._session, None, None
        try:
            if not self._lost:
                connection.execute(self._sql("DELETE FROM {} WHERE name = %s AND session = pg_backend_pid()",
                                             "state_locks"), (self.name,))
                connection.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        except Exception:  # noqa: BLE001 - closing the session below releases the lock anyway
            pass
        finally:
            connection.close()

    def _holder_session(self, connection) -> int | None:
        classid, objid = lock_ids(self._key)
        row = connection.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid AND objid = %s::oid "
            "AND objsubid = 1 AND granted", (classid, objid)).fetchone()
        return row[0] if row else None

    def _note(self, connection) -> tuple[int, LockInfo] | None:
        row = connection.execute(self._sql("SELECT session, info FROM {} WHERE name = %s", "state_locks"),
                                 (self.name,)).fetchone()
        if row is None:
            return None
        try:
            return row[0], LockInfo(**json.loads(row[1]))
        except (ValueError, TypeError):
            return None

    def _current_holder(self, connection) -> LockInfo | None:
        """The note of the session that holds the lock now. A holder writes its note just after
        taking the lock, so a note of another session is waited for, briefly."""
        deadline = time.monotonic() + 2.0
        while True:
            session, note = self._holder_session(connection), self._note(connection)
            if note and session == note[0]:
                return note[1]
            if session is None or time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def lock_holder(self) -> LockInfo | None:
        if self._session is not None and self._lock_info is not None:
            return self._lock_info
        found = self._run(lambda c: self._note(c))
        return found[1] if found else None

    def force_unlock(self, lock_id: str, force: bool = False) -> LockInfo:
        """Refused while the holder's session is alive, unless `force`: then that session is
        terminated (the server drops its lock). A note whose session is gone is just removed."""
        def unlock(connection) -> LockInfo:
            note, session = self._note(connection), self._holder_session(connection)
            if note is None and session is None:
                raise ReconcilerError(f"state {self.location} is not locked", "nothing to unlock")
            # The note names the holder when its session holds the lock, or when no session does
            # (a dead holder's note, left for force-unlock to clear).
            holder = note[1] if note and (session is None or note[0] == session) else None
            if holder is None:
                raise ReconcilerError(f"state {self.location} is locked by a session that left no note "
                                      f"(server process {session})", "wait for it; it is taking the lock now")
            if holder.id != lock_id:
                raise ReconcilerError(f"lock ID {lock_id} does not match the current lock {holder.id}",
                                      "pass the ID printed in the lock error")
            if session is not None and not force:
                raise ReconcilerError(
                    f"the lock is held by a running process (PID {holder.pid} on {holder.host}, "
                    f"{holder.operation}, since {holder.created})",
                    f"wait for it, or stop it on {holder.host}: its lock goes with its session. Only if it can "
                    "never finish: force-unlock ... --force ends its database session (its changes may then be "
                    "lost or removed as orphans by the next apply)")
            if session is not None:
                connection.execute("SELECT pg_terminate_backend(%s)", (session,))
            connection.execute(self._sql("DELETE FROM {} WHERE name = %s", "state_locks"), (self.name,))
            return holder
        return self._run(unlock, "unlock the state in")
