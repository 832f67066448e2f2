"""The drivers by name, and which one serves a stack. Pure: a driver's module (and the Docker
SDK) is imported only when that driver is asked for, so validate and plan --no-refresh never
load it. planning/field_policy.py keeps its own list of driver names (planning imports no
driver); a unit test keeps the two equal."""
from __future__ import annotations

from importlib import import_module

from reconciler.drivers.base import Driver
from reconciler.errors import ReconcilerError
from reconciler.planning.field_policy import DEFAULT_DRIVER

_DRIVERS = {
    "docker": ("reconciler.drivers.docker.driver", "DockerDriver"),
    "swarm": ("reconciler.drivers.swarm.driver", "SwarmDriver"),
}
DRIVER_NAMES = tuple(_DRIVERS)


def driver_class(name: str) -> type[Driver]:
    if name not in _DRIVERS:
        known = ", ".join(DRIVER_NAMES)
        raise ReconcilerError(f"unknown driver {name!r}; known drivers: {known}",
                              f"use one of {known} (`--driver`, or `driver:` in the stack settings)")
    module, attribute = _DRIVERS[name]
    return getattr(import_module(module), attribute)


def driver_named(name: str) -> Driver:
    """A new driver of that name; an unknown name is an error naming the known ones."""
    return driver_class(name)()


def recorded_driver(state) -> str:
    """The driver the state's records were made with ("" for an empty state). Records of
    different drivers are an error: no single engine holds all of them."""
    names = {record.driver for record in state.records.values()}
    if len(names) > 1:
        by_driver = {name: sorted(a for a, r in state.records.items() if r.driver == name) for name in sorted(names)}
        listing = "; ".join(f"{name}: {', '.join(map(str, addresses[:3]))}{' ...' if len(addresses) > 3 else ''}"
                            for name, addresses in by_driver.items())
        raise ReconcilerError(f"state of stack {state.stack} has records of different drivers ({listing})",
                              "a stack lives on one engine; remove the records of the wrong driver with "
                              "`reconciler state rm ADDRESS` (and their objects by hand), then plan again")
    return names.pop() if names else ""


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
