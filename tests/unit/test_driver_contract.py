"""The driver contract: every driver implements all of `Driver`, its capabilities are declared
(not probed), a missing capability is a clear error, and the registry knows exactly the drivers
planning has policies for. No engine: drivers connect lazily."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from reconciler.drivers.base import (Driver, SupportsImport, SupportsKeyRotation, SupportsRecover, SupportsStatus,
                                     require)
from reconciler.drivers.registry import DRIVER_NAMES, driver_class, driver_named
from reconciler.errors import ReconcilerError
from reconciler.planning.field_policy import DRIVERS, POLICIES

ROOT = Path(__file__).resolve().parents[2] / "reconciler"


def test_registry_names_are_the_drivers_planning_has_policies_for():
    assert set(DRIVER_NAMES) == set(POLICIES) == set(DRIVERS)


@pytest.mark.parametrize("name", DRIVER_NAMES)
def test_every_driver_is_complete_and_named_as_registered(name):
    cls = driver_class(name)
    assert issubclass(cls, Driver) and not inspect.isabstract(cls), getattr(cls, "__abstractmethods__", ())
    assert driver_named(name).name == name


def test_capabilities_are_declared():
    compact = {name: sorted(c.__name__ for c in (SupportsImport, SupportsRecover, SupportsKeyRotation, SupportsStatus)
                            if issubclass(driver_class(name), c)) for name in DRIVER_NAMES}
    assert compact == {"docker": ["SupportsImport", "SupportsKeyRotation", "SupportsRecover", "SupportsStatus"],
                       "swarm": ["SupportsKeyRotation"]}


def test_a_missing_capability_is_a_clear_error():
    with pytest.raises(ReconcilerError) as caught:
        require(driver_named("swarm"), SupportsImport, "reconciler import")
    assert caught.value.summary == "`reconciler import` is not supported by the swarm driver"
    assert "docker service rm" in caught.value.hint


def test_an_unknown_driver_is_an_error_naming_the_known_ones():
    with pytest.raises(ReconcilerError) as caught:
        driver_named("kubernetes")
    assert caught.value.summary == "unknown driver 'kubernetes'; known drivers: docker, swarm"


def test_every_method_called_on_a_driver_is_declared_by_the_contract():
    """`driver.X(` anywhere outside the drivers names a method of Driver or of a capability."""
    declared = set()
    for interface in (Driver, SupportsImport, SupportsRecover, SupportsKeyRotation, SupportsStatus):
        declared |= {n for n, _ in inspect.getmembers(interface, inspect.isfunction)}
    called = set()
    for path in ROOT.rglob("*.py"):
        if "drivers" in path.parts:
            continue
        called |= set(re.findall(r"\b(?:driver|importer|recoverer|rotator)\.(\w+)\(", path.read_text()))
    assert called and called <= declared, called - declared


def test_no_driver_is_probed_with_getattr():
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if re.search(r"getattr\(\s*(self\.)?driver\b", p.read_text())]
    assert offenders == []
