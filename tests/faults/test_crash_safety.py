"""A short run of the crash-safety trials (bench/crash_trials.py runs 50 for RELIABILITY.md)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def test_kill_9_during_apply_always_converges(docker_client):
    from crash_trials import run_trials
    outcome = run_trials(trials=6, seed=7)
    assert outcome.failures == []
    assert outcome.converged == outcome.trials == 6
    assert outcome.orphans_left == 0
