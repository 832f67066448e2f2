"""The security defaults SECURITY.md promises, checked on the real engine."""
from __future__ import annotations

import json
import stat

import pytest

pytestmark = pytest.mark.integration


def test_every_container_is_loopback_only_and_without_new_privileges(blue_green):
    blue_green.apply()
    containers = blue_green.containers()
    # (#15: the health probe and restarter beside the gateway; their own rules below.)
    assert {c.labels["org.reconciler.role"] for c in containers} == {"deployment", "gateway", "health-probe",
                                                                      "health-restarter"}
    for container in containers:
        host_config = container.attrs["HostConfig"]
        assert "no-new-privileges:true" in host_config["SecurityOpt"], container.name
        assert host_config["Privileged"] is False
        bindings = [b for bs in (host_config["PortBindings"] or {}).values() for b in bs]
        role = container.labels["org.reconciler.role"]
        if role == "gateway":
            assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), container.name
        else:  # issue 12: deployments publish nothing; the gateway checks the key in front of them
            assert not bindings, container.name
        writable = sorted(m["Destination"] for m in container.attrs["Mounts"] if m["RW"])
        if role.startswith("health-"):
            # The probe writes only its health files; only the restarter, with no network at all,
            # reaches the engine.
            assert host_config["CapDrop"] == ["ALL"] and container.attrs["Config"]["User"] != "", container.name
            assert writable == (["/var/lib/reconciler-health", "/var/run/docker.sock"] if role == "health-restarter"
                                else ["/var/lib/reconciler-health"]), container.name
            if role == "health-restarter":
                assert host_config["NetworkMode"] == "none"
        else:
            assert writable == [], container.name


def test_secrets_on_disk_are_private(blue_green):
    blue_green.apply()
    state_dir = blue_green.state.parent
    for path in (blue_green.state, blue_green.state.with_name(blue_green.state.name + ".backup")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # Issue 12: by identity (the state's lineage), not by stack name; keys.json holds the keys too.
    gateway_dir = state_dir / "gateways" / json.loads(blue_green.state.read_text())["lineage"] / "blue-green"
    assert stat.S_IMODE(gateway_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((gateway_dir / "nginx.conf").stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((gateway_dir / "keys.json").stat().st_mode) & 0o077 == 0


def test_model_store_copy_is_read_only(blue_green):
    blue_green.apply()
    store = blue_green.state.parent / "models"
    for path in store.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        # store/<identity>/<digest>: the two directory levels above a copy stay writable.
        assert mode & 0o222 == 0 or store in (path.parent, path.parent.parent), (path, oct(mode))
