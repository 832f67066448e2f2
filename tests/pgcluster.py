"""A PostgreSQL cluster of the test session's own: initdb into a temporary data directory, its own
unix socket directory and a free loopback port, started with pg_ctl and stopped at the end. It
never touches a system cluster. As root it runs the server as the `postgres` user (PostgreSQL
refuses to run as root), which Debian's postgresql package creates.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "reconciler"


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: Debian keeps them out of PATH, under /usr/lib/postgresql/N/bin."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found and shutil.which("pg_ctl") else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PgCluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="reconciler-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sockets"
        self.log = self.base / "server.log"
        self.port = free_port()
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            self._run_as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
            os.chown(self.base, user.pw_uid, user.pw_gid)
        self._as_owner(["mkdir", "-p", str(self.sockets)])
        self._as_owner([str(bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                        "-E", "UTF8", "--no-sync", "--no-instructions"])

    @property
    def conninfo(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(self._run_as + argv, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets}"
        self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                        "-o", options, "start"], timeout=90)
        socket_file = self.sockets / f".s.PGSQL.{self.port}"
        deadline = time.monotonic() + 30
        while not socket_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not make its socket {socket_file}:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends sessions cleanly; `immediate` is a server that vanishes mid-transaction."""
        if (self.data / "postmaster.pid").exists():
            self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], timeout=90)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def use_pg_backend(stack_dir: Path, schema: str, name: str | None = None) -> None:
    """Make `stack_dir` keep its state in PostgreSQL (its settings document)."""
    lines = ["$schema: https://reconciler.local/schemas/reconcilerStack.schema.json", "backend: pg",
             "pg:", f"  schema_name: {schema}"] + ([f"  name: {name}"] if name else [])
    (stack_dir / "reconciler.yml").write_text("\n".join(lines) + "\n")
