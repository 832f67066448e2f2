"""Shared fixtures: a writable copy of a valid stack to break in one place per test."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Model fingerprints are cached per user (reconciler/config/model_content.py); the tests keep
# theirs apart from the machine's, in a folder of their own.
os.environ.setdefault("RECONCILER_CACHE_DIR", tempfile.mkdtemp(prefix="reconciler-test-cache-"))

ROOT = Path(__file__).resolve().parents[1]
DEMO_STACK = ROOT / "stacks" / "half-plus-two"


@pytest.fixture
def demo_stack(tmp_path) -> Path:
    """A copy of stacks/half-plus-two that a test may change."""
    target = tmp_path / "half-plus-two"
    shutil.copytree(DEMO_STACK, target)
    return target


# -- PostgreSQL (the pg state backend) ----------------------------------------------------------
@pytest.fixture(scope="session")
def pg_cluster():
    """The session's own PostgreSQL server (tests/pgcluster.py), started at first use."""
    from tests.pgcluster import PgCluster, postgres_bindir
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (scripts/setup.sh installs Debian's postgresql)")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def pg_conn_str(pg_cluster, monkeypatch) -> str:
    """PG_CONN_STR set to the session's server, for this process and the ones it starts."""
    monkeypatch.setenv("PG_CONN_STR", pg_cluster.conninfo)
    return pg_cluster.conninfo


_schemas = iter(range(1, 1_000_000))


@pytest.fixture
def pg_schema(pg_conn_str) -> str:
    """A schema of this test's own, so that tests never see each other's states."""
    return f"t{os.getpid()}_{next(_schemas)}"
