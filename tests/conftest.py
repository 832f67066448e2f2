"""Shared fixtures: a writable copy of a valid stack to break in one place per test."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_STACK = ROOT / "stacks" / "half-plus-two"


@pytest.fixture
def demo_stack(tmp_path) -> Path:
    """A copy of stacks/half-plus-two that a test may change."""
    target = tmp_path / "half-plus-two"
    shutil.copytree(DEMO_STACK, target)
    return target
