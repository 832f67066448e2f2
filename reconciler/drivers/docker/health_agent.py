"""The docker driver's health supervisor: what runs between applies, inside two small containers
per endpoint, so that an instance failing readiness leaves its gateway's rotation and one
failing liveness is restarted (Docker restarts a plain container only when it exits).

Stdlib only (and reconciler.drivers.common.probes, itself stdlib only): the package is
bind-mounted read-only into the gateway image, which has python3 and nothing else.

Two roles, two containers (see DESIGN.md, "Runtime health"):
  probe      on the stack network, no Docker access. Probes every instance's readiness and
             liveness routes with the deployment's probe settings; rewrites the gateway's
             rotation files (`d_<route id>.conf`, included by nginx.conf) and signals the
             gateway's nginx master (SIGHUP: graceful reload; it shares the gateway's pid
             namespace and user); writes `status.json` and `restart-requests.json`.
  restart    no network at all, the Docker socket. Restarts exactly the containers that the
             probe asks for, and only those named in `config.json` that carry this stack's
             identity and the deployment role; counts them in `restarts.json`.
Files live in the endpoint's health directory (HEALTH_DIR), written by apply (`config.json`,
first rotation files) and by these two (everything else); writes are atomic renames.
Both roles follow `config.json` by themselves (no restart when apply changes it): apply
rewrites it, the rotation files and the gateway's config while holding `lock` (flock), and the
probe holds the same lock while it publishes, re-reading `config.json` first, so it never writes
back the instances of a config apply has replaced (DESIGN.md, "Runtime health").

Pure parts (tested without Docker): `ProbeTrack`, `status_view`, `may_restart`, `carried_tracks`.
"""
from __future__ import annotations

import fcntl
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.drivers.common.probes import http_ok, next_probe_at
from reconciler.drivers.common.rotation import rotation_maps

HEALTH_DIR = Path(os.environ.get("RECONCILER_HEALTH_DIR", "/var/lib/reconciler-health"))
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
REQUESTS_FILE = "restart-requests.json"
RESTARTS_FILE = "restarts.json"
LOCK_FILE = "lock"
DOCKER_SOCKET = "/var/run/docker.sock"
RESTART_STOP_TIMEOUT = 10
TICK_SECONDS = 0.2
# How often the probe looks whether apply changed config.json (a stat and a read of a small file).
CONFIG_POLL_SECONDS = 0.5
STATUS_EVERY_SECONDS = 5


# -- pure -----------------------------------------------------------------------------------
@dataclass
class ProbeTrack:
    """One probe of one instance, as a kubelet counts it: `passing` flips to False after
    failure_threshold failures in a row and back to True after success_threshold successes."""
    settings: dict
    passing: bool = True
    successes: int = 0
    failures: int = 0
    failing_since: float | None = None
    last_error: str = ""

    def record(self, ok: bool, error: str, now: float) -> bool:
        """Count one probe result; True when `passing` changed."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if not self.passing and self.successes >= self.settings["success_threshold"]:
                self.passing, self.failing_since, self.last_error = True, None, ""
                return True
            if self.passing:
                self.failing_since = None
            return False
        self.successes, self.failures, self.last_error = 0, self.failures + 1, error
        if self.failing_since is None:
            self.failing_since = now
        if self.passing and self.failures >= self.settings["failure_threshold"]:
            self.passing = False
            return True
        return False


def status_view(config: dict, readiness: dict[str, ProbeTrack], liveness: dict[str, ProbeTrack],
                requested: dict[str, int], now_wall: float, now_mono: float) -> dict:
    """status.json: per instance name, in rotation or not, since when readiness fails (wall
    clock), the last error and the restarts asked for."""
    def since(track: ProbeTrack) -> float | None:
        return None if track.failing_since is None else round(now_wall - (now_mono - track.failing_since), 3)

    instances = {}
    for deployment in config["deployments"]:
        for instance in deployment["instances"]:
            name = instance["name"]
            ready, live = readiness[name], liveness[name]
            instances[name] = {"deployment": deployment["name"], "container": instance["id"],
                               "in_rotation": ready.passing, "readiness_failing_since": since(ready),
                               "readiness_error": ready.last_error, "liveness_failing_since": since(live),
                               "liveness_error": live.last_error, "restarts_requested": requested.get(instance["id"], 0)}
    return {"updated": round(now_wall, 3), "instances": instances}


def instance_keys(config: dict) -> dict[str, tuple]:
    """Per instance name, what its probe tracks depend on: its container and its deployment's
    probe settings."""
    return {i["name"]: (i["id"], json.dumps([d["readiness_probe"], d["liveness_probe"], i.get("readiness"),
                                             i.get("liveness")], sort_keys=True))
            for d in config["deployments"] for i in d["instances"]}


def carried_tracks(old: dict, new: dict) -> set[str]:
    """The instances of a new config whose probe tracks carry over from the old one (same
    container, same probes): an instance out of rotation stays out across a re-point."""
    before, after = instance_keys(old), instance_keys(new)
    return {name for name, key in after.items() if before.get(name) == key}


# -- files ----------------------------------------------------------------------------------
@contextmanager
def exclusive(directory: Path, timeout: float = 10.0):
    """The health directory's lock (flock on `lock`), shared by apply on the host and the probe
    in its container (the same file through a bind mount). Bounded: a holder that died has
    released it (the kernel drops a dead process's flocks)."""
    with open(directory / LOCK_FILE, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{directory / LOCK_FILE} stayed locked for {timeout:.0f} s") from None
                time.sleep(0.01)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json(path: Path, data: dict) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(temp, path)


def read_json(path: Path, default: dict) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def write_rotation(directory: Path, route_id: str, servers: list[str], max_tries: int) -> bool:
    """Rewrite d_<id>.conf when it changes; True when it did."""
    text = rotation_maps(route_id, servers, max_tries)
    path = directory / f"d_{route_id}.conf"
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)
    return True


# -- probe role -----------------------------------------------------------------------------
def is_routing_master(command: bytes) -> bool:
    """Whether a process's command line is the gateway's routing nginx master, not its edge's:
    the edge has no rotation, and reloading it would close its idle client connections."""
    return command.startswith(b"nginx: master process") and b"edge.conf" not in command


def nginx_master() -> int | None:
    """The gateway's routing nginx master, seen through the shared pid namespace."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if is_routing_master((entry / "cmdline").read_bytes()):
                    return int(entry.name)
            except OSError:
                continue
    return None


@dataclass
class Prober:
    """Probes every instance of `config` and publishes what it found. `follow` moves it onto a
    new config: watches of instances that left stop, new ones start, and an instance whose
    container and probes are unchanged keeps its counts (so one out of rotation stays out)."""
    config: dict
    directory: Path = HEALTH_DIR
    readiness: dict[str, ProbeTrack] = field(default_factory=dict)
    liveness: dict[str, ProbeTrack] = field(default_factory=dict)
    requested: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Event = field(default_factory=threading.Event)
    retired: threading.Event = field(default_factory=threading.Event)
    config_text: str = ""

    def __post_init__(self) -> None:
        self.requested = {k: int(v) for k, v in read_json(self.directory / REQUESTS_FILE, {}).items()}
        self._track({"deployments": []}, self.config)

    def _track(self, old: dict, new: dict) -> None:
        kept = carried_tracks(old, new)
        readiness, liveness = {}, {}
        for deployment in new["deployments"]:
            for instance in deployment["instances"]:
                name = instance["name"]
                carried = name in kept
                readiness[name] = self.readiness[name] if carried else ProbeTrack(deployment["readiness_probe"])
                liveness[name] = self.liveness[name] if carried else ProbeTrack(deployment["liveness_probe"])
        self.readiness, self.liveness = readiness, liveness

    def start_watches(self) -> None:
        retired = self.retired
        for deployment in self.config["deployments"]:
            for instance in deployment["instances"]:
                for kind in ("readiness", "liveness"):
                    threading.Thread(target=self.watch, args=(deployment, instance, kind, retired), daemon=True).start()

    def follow(self, config: dict) -> None:
        """Move onto `config` (apply rewrote config.json). Called with the directory locked."""
        with self.lock:
            self.retired.set()  # the old watches end at their next wake, without counting
            self.retired = threading.Event()
            self._track(self.config, config)
            self.config = config
        self.start_watches()
        print(f"following config.json: {sum(len(d['instances']) for d in config['deployments'])} instance(s)",
              flush=True)

    def watch(self, deployment: dict, instance: dict, kind: str, retired: threading.Event) -> None:
        """Probe one route of one instance on the probe's schedule, until its config is retired."""
        settings, route = deployment[f"{kind}_probe"], instance[kind]
        # Apply waited for readiness; liveness starts counting after its initial delay.
        first_at = time.monotonic() + (settings["period"] if kind == "readiness" else settings["initial_delay"])
        slot = None
        while not retired.is_set():
            slot = next_probe_at(settings, first_at, slot, time.monotonic())
            if retired.wait(max(0.0, slot - time.monotonic())):
                return
            ok, error = http_ok(instance["name"], route["port"], route["path"], settings["timeout"])
            with self.lock:
                if retired.is_set():
                    return
                track = (self.readiness if kind == "readiness" else self.liveness)[instance["name"]]
                flipped = track.record(ok, error, time.monotonic())
                if kind == "liveness" and flipped and not track.passing:
                    self.requested[instance["id"]] = self.requested.get(instance["id"], 0) + 1
                    write_json(self.directory / REQUESTS_FILE, self.requested)
                    print(f"{instance['name']}: liveness failed {track.failures} time(s) ({error}); restart asked",
                          flush=True)
                    # Counted afresh once it is back: the first probe after initial_delay.
                    self.liveness[instance["name"]] = ProbeTrack(settings)
                    first_at, slot = time.monotonic() + settings["initial_delay"], None
                if kind == "readiness" and flipped:
                    print(f"{instance['name']}: {'back in' if track.passing else 'out of'} rotation"
                          + (f" ({error})" if error else ""), flush=True)
                self.changed.set()

    def publish(self) -> None:
        """Under the directory's lock: follow a changed config.json first, then the rotation
        files, a reload when one changed, and status.json."""
        with exclusive(self.directory):
            try:
                text = (self.directory / CONFIG_FILE).read_text()
                config = json.loads(text)
            except (OSError, ValueError):
                text, config = self.config_text, None  # being replaced: the next tick reads it
            if text != self.config_text and config is not None and "deployments" in config:
                self.config_text = text
                self.follow(config)
            with self.lock:
                rewritten = False
                for deployment in self.config["deployments"]:
                    servers = [f"{i['name']}:{deployment['scoring_port']}" for i in deployment["instances"]
                               if self.readiness[i["name"]].passing]
                    rewritten |= write_rotation(self.directory, deployment["route_id"], servers,
                                                self.config["max_tries"])
                write_json(self.directory / STATUS_FILE, status_view(self.config, self.readiness, self.liveness,
                                                                     self.requested, time.time(), time.monotonic()))
            if rewritten and (master := nginx_master()):
                os.kill(master, signal.SIGHUP)

    def config_moved(self) -> bool:
        try:
            return (self.directory / CONFIG_FILE).read_text() != self.config_text
        except OSError:
            return False

    def run(self) -> None:
        self.start_watches()
        published = 0.0
        while True:
            # status.json stays fresh even when nothing changes; a new config.json is followed
            # within CONFIG_POLL_SECONDS.
            if self.changed.wait(timeout=CONFIG_POLL_SECONDS) or self.config_moved() \
                    or time.monotonic() - published >= STATUS_EVERY_SECONDS:
                self.changed.clear()
                try:
                    self.publish()
                except TimeoutError as error:  # apply holds the lock (bounded): the next tick
                    print(error, flush=True)
                    continue
                published = time.monotonic()


# -- restart role ---------------------------------------------------------------------------
class _UnixConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(DOCKER_SOCKET)


def docker_api(method: str, path: str, timeout: float = 30) -> tuple[int, dict]:
    connection = _UnixConnection("docker", timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
        return response.status, (json.loads(body) if body[:1] == b"{" else {})
    finally:
        connection.close()


def may_restart(config: dict, container_id: str, labels: dict) -> bool:
    """Only an instance this endpoint's config names, carrying this stack's identity."""
    named = {i["id"] for d in config["deployments"] for i in d["instances"]}
    return (container_id in named and labels.get("org.reconciler.identity") == config["identity"]
            and labels.get("org.reconciler.role") == "deployment")


def restart_loop(config: dict, directory: Path = HEALTH_DIR) -> None:
    done = {k: int(v) for k, v in read_json(directory / RESTARTS_FILE, {}).items()}
    while True:
        # What it may restart is what config.json names now (apply rewrites it at each re-point).
        config = read_json(directory / CONFIG_FILE, config)
        requested = read_json(directory / REQUESTS_FILE, {})
        for container_id, count in sorted(requested.items()):
            if int(count) <= done.get(container_id, 0):
                continue
            status, info = docker_api("GET", f"/containers/{container_id}/json")
            if status != 200 or not may_restart(config, container_id, (info.get("Config") or {}).get("Labels") or {}):
                print(f"refused to restart {container_id[:12]}: not an instance of this endpoint", flush=True)
            else:
                status, _ = docker_api("POST", f"/containers/{container_id}/restart?t={RESTART_STOP_TIMEOUT}",
                                       timeout=RESTART_STOP_TIMEOUT + 30)
                print(f"restarted {info.get('Name', container_id)} (liveness): HTTP {status}", flush=True)
            done[container_id] = int(count)
            write_json(directory / RESTARTS_FILE, done)
        time.sleep(TICK_SECONDS * 5)


def main(argv: list[str]) -> None:
    role = argv[1] if len(argv) > 1 else ""
    try:
        text = (HEALTH_DIR / CONFIG_FILE).read_text()
        config = json.loads(text)
    except (OSError, ValueError):
        text, config = "", {}
    if "deployments" not in config:
        sys.exit(f"no usable {HEALTH_DIR / CONFIG_FILE}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if role == "probe":
        Prober(config, config_text=text).run()
    elif role == "restart":
        restart_loop(config)
    else:
        sys.exit("usage: health_agent probe|restart")


if __name__ == "__main__":
    main(sys.argv)
