"""Errors a driver step raises. Pure definitions."""
from __future__ import annotations

from reconciler.errors import DriverError
from reconciler.state.model import StateRecord


class StepFailed(DriverError):
    """A step failed after creating something; `record` says what exists (saved as tainted)."""

    def __init__(self, error: DriverError, record: StateRecord | None) -> None:
        super().__init__(error.summary, error.hint)
        self.record = record
