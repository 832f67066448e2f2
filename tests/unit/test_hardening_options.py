"""How the docker driver confines deployment and gateway containers (pure option builders),
the instance type table they use (issue 12, finding 10), and the engine's CPU count they are
capped at (asked once per driver; a fake engine)."""
from __future__ import annotations

import pytest

from reconciler.config.instance_types import GIB, container_cpus, size_of
from reconciler.drivers.docker import gateway
from reconciler.drivers.docker.containers import hardening_options

SPEC = {"instance_type": "Standard_DS3_v2", "memory": None, "read_only_root_filesystem": True}


@pytest.mark.parametrize("name,spec,engine_cpus,expected", [
    ("DS3_v2 on a 2-CPU engine", SPEC, 2, {"nano_cpus": 2_000_000_000, "mem_limit": 14 * GIB}),
    ("DS3_v2 on a 16-CPU engine", SPEC, 16, {"nano_cpus": 4_000_000_000, "mem_limit": 14 * GIB}),
    ("F2s_v2, case-insensitive", {**SPEC, "instance_type": "standard_f2s_v2"}, 8,
     {"nano_cpus": 2_000_000_000, "mem_limit": 4 * GIB}),
    ("local.memory overrides", {**SPEC, "memory": "512m"}, 2, {"nano_cpus": 2_000_000_000, "mem_limit": "512m"}),
    ("unknown type: no CPU or memory limit", {**SPEC, "instance_type": "Standard_Nope"}, 2, {}),
    ("no type (a record from before)", {}, 2, {}),
])
def test_sizes(name, spec, engine_cpus, expected):
    options = hardening_options(spec, engine_cpus)
    assert {k: options[k] for k in ("nano_cpus", "mem_limit") if k in options} == expected
    assert options["pids_limit"] == 1024 and options["cap_drop"] == ["ALL"]
    assert options["cap_add"] == ["NET_BIND_SERVICE"] and options["security_opt"] == ["no-new-privileges:true"]


def test_read_only_root_is_the_default_and_can_be_turned_off():
    assert hardening_options(SPEC, 2)["read_only"] is True and "/tmp" in hardening_options(SPEC, 2)["tmpfs"]
    assert hardening_options({}, 2)["read_only"] is True  # absent equals default
    relaxed = hardening_options({**SPEC, "read_only_root_filesystem": False}, 2)
    assert "read_only" not in relaxed and "tmpfs" not in relaxed


def test_documented_sizes():
    assert (size_of("Standard_DS2_v2").cpus, size_of("Standard_DS2_v2").memory_gib) == (2, 7)
    assert (size_of("Standard_DS4_v2").cpus, size_of("Standard_DS4_v2").memory_gib) == (8, 28)
    assert container_cpus(size_of("Standard_DS4_v2"), 0) == 8  # engine CPU count unknown: the SKU's


def test_gateway_has_no_capability_and_a_non_root_user(monkeypatch):
    monkeypatch.setattr(gateway.os, "geteuid", lambda: 0)
    options = gateway.hardening_options()
    assert options["user"] == "65532:65532" and options["cap_drop"] == ["ALL"] and "cap_add" not in options
    assert options["read_only"] is True and set(options["tmpfs"]) == {"/tmp", "/run"}
    assert "uid=65532" in options["tmpfs"]["/run"]
    monkeypatch.setattr(gateway.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(gateway.os, "getegid", lambda: 1000)
    assert gateway.hardening_options()["user"] == "1000:1000"  # owns the config directory already


def test_parallel_deployment_steps_ask_the_engine_its_cpus_once():
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from reconciler.drivers.docker.driver import DockerDriver

    class SlowInfo:
        calls = 0
        lock = threading.Lock()

        def info(self):
            with self.lock:
                SlowInfo.calls += 1
            time.sleep(0.05)  # an engine round trip: long enough for the other steps to ask too
            return {"NCPU": 2}

    driver = DockerDriver(SlowInfo())
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: driver.engine_cpus(), range(8)))
    assert answers == [2] * 8 and SlowInfo.calls == 1
