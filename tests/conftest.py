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
