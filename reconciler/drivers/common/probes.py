"""HTTP readiness probing with Azure ML's probe settings, on a kubelet's schedule (`next_probe_at`,
pure: the first probe at initial_delay, then one every period), with optional uncounted early
polls between scheduled probes until the first success (`wait_until_ready`). Side effects: HTTP to 127.0.0.1,
to a container's address on a stack network, or (remote engines, whose container addresses the
client cannot reach) a GET run inside the container through the engine's exec API; the clock and
sleep are injectable."""
from __future__ import annotations

import http.client
import shlex
import ssl
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ProbeResult:
    ready: bool
    attempts: int
    last_error: str


def http_ok(host: str, port: int, path: str, timeout: float, tls: "ssl.SSLContext | None" = None) -> tuple[bool, str]:
    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls) if tls else \
        http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        if 200 <= response.status < 300:
            return True, ""
        return False, f"GET {path} answered HTTP {response.status}"
    except (OSError, http.client.HTTPException) as error:
        return False, f"GET {path} failed: {error or type(error).__name__}"
    finally:
        connection.close()


def in_container_get(port: int, path: str, wait: int) -> str:
    """A shell command that GETs http://127.0.0.1:PORT/PATH inside a container with whatever the
    image has: python3, wget, curl, or bash's /dev/tcp (serving images often lack the others);
    exit 0 on 2xx. One line of output per tool tried: "not found", or why (pure)."""
    url = f"http://127.0.0.1:{port}{path}"
    python = (f"import sys, urllib.request as u\ntry: u.urlopen(sys.argv[1], timeout={wait})\n"
              "except Exception as e: sys.exit('GET %s: %s' % (sys.argv[1], e))")
    raw = ('exec 3<>/dev/tcp/127.0.0.1/"$1" && printf "GET %s HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n" "$2" >&3 '
           '&& IFS= read -r line <&3 && case "$line" in "HTTP/1."?" 2"*) exit 0;; esac; exit 1')
    return " || ".join([
        f"python3 -c {shlex.quote(python)} {shlex.quote(url)}",
        f"wget -q -T {wait} -O /dev/null {shlex.quote(url)}",
        f"curl -fsS -m {wait} -o /dev/null {shlex.quote(url)}",
        f"bash -c {shlex.quote(raw)} probe {port} {shlex.quote(path)}",
    ])


def exec_probe(client) -> "Callable[[str, int, str, float], tuple[bool, str]]":
    """A probe (container id, port, path, timeout) that GETs from inside the container through
    the engine's exec API: for engines whose container addresses the client cannot reach."""
    def probe(container_id: str, port: int, path: str, timeout: float) -> tuple[bool, str]:
        command = ["sh", "-c", in_container_get(port, path, max(1, int(timeout)))]
        try:
            result = client.containers.get(container_id).exec_run(command)
        except Exception as error:  # noqa: BLE001 - the container went away, or the engine refused exec
            return False, f"GET {path} inside the container failed: {error}"
        if result.exit_code == 0:
            return True, ""
        output = result.output.decode("utf-8", "replace").strip().splitlines()
        return False, output[0] if output else f"GET {path} inside the container exited {result.exit_code}"
    return probe


def wait_answering(port: int, path: str, timeout: float, interval: float, host: str = "127.0.0.1",
                   tls: "ssl.SSLContext | None" = None) -> str:
    """GET HOST:PORT/PATH (https with `tls`) until it answers 2xx (returns "") or `timeout`
    passes (returns the last error): for a listener that is starting, where probe settings do
    not apply."""
    deadline = time.monotonic() + timeout
    error = ""
    while time.monotonic() < deadline:
        ok, error = http_ok(host, port, path, 1, tls)
        if ok:
            return ""
        time.sleep(interval)
    return error or f"GET {path} not tried within {timeout}s"


Target = Callable[[], "tuple[str, int] | None"]


class Cancelled(Exception):
    """Raised by a `sleep` to end a wait early (a sibling instance failed: the step fails anyway)."""


def next_probe_at(settings: dict, first_at: float, last_probe_slot: float | None, now: float) -> float:
    """When the next probe is due (pure): the first at `first_at` (start + initial_delay), then one
    every `period` on that grid. A probe that overran its slot is followed at once by one late
    probe, then the grid resumes, as a kubelet's ticker does (missed ticks are dropped, not
    caught up)."""
    if last_probe_slot is None:
        return first_at
    slot = last_probe_slot + settings["period"]
    while slot + settings["period"] <= now:
        slot += settings["period"]
    return slot


# Early polls come every `first` seconds for the first EARLY_STEADY_SECONDS after a failed
# probe (most servers come up within them: 20 ms apart, a server is seen within 20 ms of
# listening), then each pause is EARLY_POLL_GROWTH times the one before, and they end once a
# pause would reach the period: not a request every 20 ms in its log for as long as it fails.
EARLY_STEADY_SECONDS = 0.5
EARLY_POLL_GROWTH = 1.5


def early_poll_gaps(first: float, period: float) -> list[float]:
    """The pauses before each early poll (pure): `first` until they add up to
    EARLY_STEADY_SECONDS, then growing, all under `period`."""
    gaps: list[float] = []
    gap, elapsed = first, 0.0
    while gap < period:
        gaps.append(gap)
        elapsed += gap
        if elapsed >= EARLY_STEADY_SECONDS - 1e-9:
            gap *= EARLY_POLL_GROWTH
    return gaps


def wait_until_ready(target: "int | Target", path: str, settings: dict, still_running: Callable[[], bool],
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic,
                     probe: "Callable[[str, int, str, float], tuple[bool, str]] | None" = None,
                     early_poll: float | None = None, started_at: float | None = None) -> ProbeResult:
    """Probe like a kubelet: the first probe at initial_delay after the call (the container has
    just started), then every period; ready after success_threshold successes in a row, failed
    after failure_threshold failures in a row or when the container stops. `target`: a port on
    127.0.0.1, or a function giving (host, port) per probe (None: no address yet, which counts as
    a failed probe). `sleep` may raise Cancelled to give up (the result is then not ready).

    `early_poll` (seconds; only with success_threshold 1): after a failed probe, uncounted polls
    between the scheduled ones (`early_poll_gaps`: `early_poll` apart for half a second, then
    each pause longer, none once a pause would reach the period), and the first that answers 2xx makes
    the instance ready then. A server listening 0.2 s after its start is otherwise ready only a whole
    period later (#16). Failures still count on the schedule alone, so when a deployment is
    declared failed, and after how many probes, is unchanged; nothing polls before
    initial_delay. `started_at` (the `clock` time the container started; default: now) is
    where the schedule begins."""
    where: Target = (lambda: ("127.0.0.1", target)) if isinstance(target, int) else target
    probe = probe or http_ok
    first_at = (clock() if started_at is None else started_at) + settings["initial_delay"]
    gaps = early_poll_gaps(early_poll, settings["period"]) \
        if early_poll is not None and settings["success_threshold"] == 1 else []
    slot: float | None = None
    address = None
    last_at = 0.0  # when the last probe or early poll ended
    successes = failures = attempts = 0
    last_error = ""

    def answered_early(until: float) -> bool:
        """Early polls due before `until`, each gap after the last probe or poll ended."""
        nonlocal address, last_at
        while gaps and last_at + gaps[0] < until:
            pause = last_at + gaps.pop(0) - clock()
            if pause > 0:
                sleep(pause)
            if until - clock() <= 0:
                return False
            # The scheduled probe's address, unless it had none: no engine call per early poll.
            address = address or where()
            ok = bool(address) and probe(*address, path, min(settings["timeout"], until - clock()))[0]
            last_at = clock()
            if ok:
                return True
        return False

    try:
        while True:
            slot = next_probe_at(settings, first_at, slot, clock())
            if attempts and answered_early(slot):
                return ProbeResult(True, attempts, "")
            delay = slot - clock()
            if delay > 0:
                sleep(delay)
            if not still_running():
                return ProbeResult(False, attempts, "container stopped")
            attempts += 1
            address = where()
            ok, error = probe(*address, path, settings["timeout"]) if address else (False, "container has no address")
            last_at = clock()
            if ok:
                successes, failures = successes + 1, 0
                if successes >= settings["success_threshold"]:
                    return ProbeResult(True, attempts, "")
            else:
                successes, failures, last_error = 0, failures + 1, error
                if failures >= settings["failure_threshold"]:
                    return ProbeResult(False, attempts, last_error)
    except Cancelled:
        return ProbeResult(False, attempts, "cancelled: another instance failed")
