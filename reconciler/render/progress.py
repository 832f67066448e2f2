"""Apply progress as Terraform-style lines, rendered from the engine's step events. Pure
(`progress_line`); `ProgressPrinter` is the hook that hands each line to an echo function.

    deployment.ep/blue: Creating...
    deployment.ep/blue: Still creating... [10s elapsed]
    deployment.ep/blue: Creation complete after 12s
    deployment.ep/blue: Destroying old...            (the deposed half of a create-then-delete)
    endpoint.ep: Routing to its deployments...       (an endpoint created unrouted, once they are ready)
    endpoint.ep: Routing complete after 0s
"""
from __future__ import annotations

from typing import Callable

from reconciler.events import (ApplyStarted, DriverMessage, Hook, StepCompleted, StepEvent, StepFailedEvent,
                               StepSkipped, StepStarted, StepStillRunning)

# operation -> (starting, finished noun, still-running participle)
VERBS = {"create": ("Creating", "Creation", "creating"), "update": ("Modifying", "Modifications", "modifying"),
         "delete": ("Destroying", "Destruction", "destroying"),
         "destroy-deposed": ("Destroying old", "Destruction of old", "destroying"),
         "route": ("Routing to its deployments", "Routing", "routing")}


def progress_line(event: StepEvent) -> str | None:
    """The line shown for `event`, or None when it shows nothing (a skipped step is listed once,
    at the end, by the front end)."""
    if isinstance(event, ApplyStarted):
        return ""  # a blank line between the plan (and its confirmation) and the progress
    if isinstance(event, DriverMessage):
        return event.text
    if isinstance(event, StepSkipped):
        return None
    starting, noun, participle = VERBS[event.step.operation]
    address = event.step.address
    if isinstance(event, StepStarted):
        return f"{address}: {starting}..."
    if isinstance(event, StepStillRunning):
        return f"{address}: Still {participle}... [{int(event.elapsed)}s elapsed]"
    if isinstance(event, StepCompleted):
        return f"{address}: {noun} complete after {int(event.elapsed)}s"
    if isinstance(event, StepFailedEvent):
        return f"{address}: {noun} failed after {int(event.elapsed)}s"
    raise TypeError(f"unknown apply event {event!r}")


class ProgressPrinter(Hook):
    """Echoes the progress line of every event that has one."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo

    def on_event(self, event: StepEvent) -> None:
        line = progress_line(event)
        if line is not None:
            self.echo(line)
