"""A short run of the crash-safety trials (bench/crash_trials.py runs 50 for RELIABILITY.md)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


@pytest.fixture(params=["local", "pg"])
def backend(request) -> dict:
    """Where the trials keep state: the local file, or the session's PostgreSQL."""
    if request.param == "pg":
        return {"backend": "pg", "schema": request.getfixturevalue("pg_schema")}
    return {"backend": "local"}


def test_kill_9_during_apply_always_converges(docker_client, backend, monkeypatch, tmp_path):
    from crash_trials import run_trials
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "states"))
    outcome = run_trials(trials=6, seed=7, **backend)
    assert outcome.failures == []
    assert outcome.converged == outcome.trials == 6
    assert outcome.orphans_left == 0
