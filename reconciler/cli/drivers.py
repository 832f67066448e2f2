"""Which driver serves a stack. Choosing is pure; drivers are imported lazily so that
validate and plan --no-refresh never need the Docker SDK's connection."""
from __future__ import annotations

import click

from reconciler.errors import ReconcilerError
from reconciler.planning.field_policy import DEFAULT_DRIVER, DRIVERS


def driver_named(name: str):
    if name == "swarm":
        from reconciler.drivers.swarm.driver import SwarmDriver
        return SwarmDriver()
    from reconciler.drivers.docker.driver import DockerDriver
    return DockerDriver()


def recorded_driver(state) -> str:
    """The driver the state's records were made with ("" for an empty state)."""
    names = {record.driver for record in state.records.values()}
    return names.pop() if len(names) == 1 else min(names, default="")


def choose_driver(option: str | None, configured: str, state) -> str:
    """`--driver` wins over the stack settings, which win over what state was made with.
    Moving a stack between engines is a destroy and an apply, never a silent switch: the
    objects in state live on the other engine, and this one would not find them."""
    recorded = recorded_driver(state)
    chosen = option or configured or recorded or DEFAULT_DRIVER
    if recorded and recorded != chosen:
        source = "--driver" if option else "the stack settings"
        raise ReconcilerError(
            f"stack {state.stack} was applied with the {recorded} driver, but {source} asks for {chosen}",
            f"to move it, run `reconciler destroy STACK_DIR --driver {recorded}` first, then apply with {chosen}; "
            f"or keep `driver: {recorded}`")
    return chosen


def driver_option(command):
    return click.option("--driver", "driver_name", type=click.Choice(DRIVERS), default=None,
                        help="Container engine to use; overrides the stack's `driver:` setting.")(command)
