"""Kill-window test (issue 12, finding 3): a blue/green rollout (blue's image replaced,
create-before-destroy) killed with SIGKILL at every step boundary, under load.

After each kill: the endpoint has answered every request (bound: 0 failures, the kill
included: SIGKILL after a completed step lands between engine calls, and a reload already
sent has finished draining before its step completes); `drift` does not say "No drift" while
the gateway's config on disk routes to anything but what state considers serving; `plan` is
not "No changes" while anything is half-way (a deposed record, or such a gateway); the next
apply converges (plan then says No changes) and the endpoint still answers. Also an apply from
empty killed between a new endpoint's create and its route step (#16: its gateway starts
beside its deployments and is routed to them after). Run with the state in
the local file and in PostgreSQL (`backend: pg`): a step is one journal line or one transaction.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway_client import GatewayClient  # tests/integration, on the path by conftest.py
from harness import DEMO_IMAGE, ROOT

from reconciler.operations.plan import open_store
from reconciler.state.backend import StateBackend
from reconciler.state.store import StateStore, default_state_path
from tests.pgcluster import use_pg_backend

pytestmark = pytest.mark.integration

MAX_STEPS = 8          # a rollout of one deployment has 3 steps; beyond this something is wrong
MAX_REQUESTS = 20000
MAX_SECONDS = 150

# Runs one apply in its own process and SIGKILLs it right after its Nth completed step, or
# (argv[3] not a number) once every step id of the comma-separated list has completed.
KILLER = """
import os, signal, sys
from pathlib import Path
from reconciler.events import Hook, StepCompleted
from reconciler.operations.apply import ApplyRequest, apply

class KillAfter(Hook):
    completed = 0
    waited = set() if sys.argv[3].isdigit() else set(sys.argv[3].split(","))
    def on_event(self, event):
        if isinstance(event, StepCompleted):
            self.completed += 1
            self.waited.discard(event.step.id)
            print("completed", event.step.id, flush=True)
            if (self.completed == int(sys.argv[3])) if sys.argv[3].isdigit() else not self.waited:
                os.kill(os.getpid(), signal.SIGKILL)

outcome = apply(ApplyRequest(Path(sys.argv[1]), state_path=Path(sys.argv[2]) if sys.argv[2] else None),
                hooks=[KillAfter()])
print("finished", outcome.status, flush=True)
"""


class Load(threading.Thread):
    """Requests to the endpoint with its key, bounded in count and time; every answer counted."""

    def __init__(self, port: int, key: str) -> None:
        super().__init__(daemon=True)
        self.client = GatewayClient(port, key, timeout=10)
        self.stop = threading.Event()
        self.sent = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        while not self.stop.is_set() and self.sent < MAX_REQUESTS and time.monotonic() < deadline:
            try:
                status, _, body = self.client.score()
                if status != 200:
                    self.note(f"{status}: {body[:120]!r}")
            except Exception as error:  # noqa: BLE001 - any failed request counts
                self.note(f"{type(error).__name__}: {error}")
            self.sent += 1
            time.sleep(0.01)
        self.client.close()

    def note(self, failure: str) -> None:
        with self.lock:
            self.failures.append(failure)

    def failed(self) -> int:
        with self.lock:
            return len(self.failures)


def routed_hosts(work_dir: Path) -> set[str]:
    """The container names the gateway config on disk (what nginx runs) sends requests to."""
    [config] = list((work_dir / "gateways").glob("*/blue-green/nginx.conf"))
    # (#15: the servers of each deployment are in the rotation files nginx.conf includes.)
    text = config.read_text() + "".join(path.read_text() for path in sorted(config.parent.glob("health/d_*.conf"))
                                        if f'/health/{path.name}"' in config.read_text())
    return set(re.findall(r'"(rc-[A-Za-z0-9_.-]+):8501"', text)) or set(re.findall(r"(rc-[A-Za-z0-9_.-]+):8501", text))


def records_now(store: StateBackend) -> dict:
    """State as the next command reads it: the file with its per-step journal replayed (a
    killed apply leaves its completed steps in the journal, not yet in the file), or pg's row."""
    state = store.read()
    return {str(a): {"status": r.status, "outputs": r.outputs} for a, r in state.records.items()}


def serving_hosts(records: dict) -> set[str]:
    """What state considers serving: per deployment, its ready record, else a ready deposed one."""
    chosen: dict[str, dict] = {}
    for address, record in sorted(records.items()):
        if not address.startswith("deployment.") or "~orphan-" in address or record.get("status", "ready") != "ready":
            continue
        name = address.split("/", 1)[1].split("~", 1)[0]
        if "~deposed-" not in address or name not in chosen:
            chosen[name] = record
    return {i["name"] for r in chosen.values() for i in r["outputs"].get("instances", [])}


@pytest.fixture(params=["local", "pg"])
def where(request, blue_green, monkeypatch, tmp_path) -> dict:
    """Where the stack's state is: its --state file, or PostgreSQL through its settings."""
    if request.param == "pg":
        monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "states"))
        use_pg_backend(blue_green.dir, request.getfixturevalue("pg_schema"))
        return {"args": [], "killer": "", "store": open_store(blue_green.name, None, blue_green.dir),
                "work_dir": default_state_path(blue_green.dir).parent}
    return {"args": ["--state", str(blue_green.state)], "killer": str(blue_green.state),
            "store": StateStore(blue_green.state, blue_green.name), "work_dir": blue_green.state.parent}


def test_rollout_killed_at_every_step_boundary_under_load(blue_green, docker_client, where):
    stack = blue_green
    store, work_dir, state_args = where["store"], where["work_dir"], where["args"]

    def apply_converging():
        result = stack.run("apply", str(stack.dir), *state_args, "--auto-approve")
        assert result.exit_code == 0, result.output
    tag = f"reconciler/demo-tfserving:kw-{stack.name}"
    docker_client.images.get(DEMO_IMAGE).tag(tag)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    try:
        apply_converging()
        outputs = records_now(store)["endpoint.blue-green"]["outputs"]
        load = Load(outputs["port"], outputs["keys"]["primary"])
        load.start()
        images = [tag, DEMO_IMAGE]
        current = DEMO_IMAGE
        boundaries, stale_seen = [], 0
        for kill_after in range(1, MAX_STEPS + 1):
            target = images[(kill_after - 1) % 2]
            stack.edit("blue.yml", f"image: {current}", f"image: {target}")
            current = target
            before = load.failed()
            run = subprocess.run([sys.executable, "-c", KILLER, str(stack.dir), where["killer"], str(kill_after)],
                                 capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
            if run.returncode == 0:
                assert "finished applied" in run.stdout, run.stdout + run.stderr
                assert boundaries, "the rollout never had a step boundary to kill at"
                break
            assert run.returncode == -9, run.stdout + run.stderr
            boundaries.append(kill_after)
            records = records_now(store)
            routed, serving = routed_hosts(work_dir), serving_hosts(records)
            gateway_stale = routed != serving
            stale_seen += gateway_stale
            half_way = gateway_stale or any("~deposed-" in a or "~orphan-" in a for a in records)
            drift = stack.run("drift", str(stack.dir), *state_args)
            plan = stack.run("plan", str(stack.dir), *state_args, "--detailed-exitcode")
            label = f"killed after step {kill_after} ({run.stdout.strip()})"
            if gateway_stale:
                assert drift.exit_code == 2 and "gateway-stale" in drift.output, f"{label}: routes {routed}, " \
                    f"state serves {serving}:\n{drift.output}"
            assert drift.exit_code in (0, 2), f"{label}:\n{drift.output}"
            if half_way:
                assert plan.exit_code == 2 and "No changes" not in plan.output, f"{label}:\n{plan.output}"
            apply_converging()
            converged = stack.run("plan", str(stack.dir), *state_args, "--detailed-exitcode")
            assert converged.exit_code == 0 and "No changes" in converged.output, f"{label}:\n{converged.output}"
            assert routed_hosts(work_dir) == serving_hosts(records_now(store)), label
            assert load.failed() == before, f"{label}: {load.failures[before:]}"
        else:
            pytest.fail(f"apply still had steps left after {MAX_STEPS} kills")
        load.stop.set()
        load.join(timeout=15)
        assert load.sent > 0 and load.failures == [], load.failures[:5]
        assert len(boundaries) >= 2, boundaries  # new blue created, gateway re-pointed, old blue deleted
        assert stale_seen, "no kill left the gateway routing to the deposed blue: the window was not hit"
        print(f"killed after steps {boundaries}; {load.sent} requests, 0 failed; {stale_seen} stale gateway(s)")
    finally:
        try:
            docker_client.images.remove(tag, noprune=True)
        except Exception:  # noqa: BLE001 - a tag still in use by a container goes with the stack's cleanup
            pass
    assert time.monotonic() - started < 240


def test_apply_from_empty_killed_between_the_endpoints_create_and_its_route_step(blue_green, docker_client):
    """#16: the gateway was created routing nothing and blue became ready, then the apply died
    before the route step: drift says gateway-stale, plan re-points, the next apply converges."""
    stack = blue_green
    # Green is not ready before 3 s: the kill lands while the route step still waits for it.
    stack.edit("green.yml", "readiness_probe: {initial_delay: 0, period: 1}",
               "readiness_probe: {initial_delay: 3, period: 1}")
    store, state_args = StateStore(stack.state, stack.name), ["--state", str(stack.state)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", KILLER, str(stack.dir), str(stack.state),
                          "endpoint.blue-green:create,deployment.blue-green/blue:create"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert run.returncode == -9, run.stdout + run.stderr
    assert "endpoint.blue-green:route" not in run.stdout, run.stdout
    records = records_now(store)
    assert "endpoint.blue-green" in records and "deployment.blue-green/blue" in records, sorted(records)
    routed, serving = routed_hosts(stack.state.parent), serving_hosts(records)
    assert routed != serving, f"the gateway already routed what state serves ({routed}): the window was not hit"
    drift = stack.run("drift", str(stack.dir), *state_args)
    assert drift.exit_code == 2 and "gateway-stale" in drift.output, drift.output
    plan = stack.run("plan", str(stack.dir), *state_args, "--detailed-exitcode")
    assert plan.exit_code == 2 and "endpoint.blue-green changed outside reconciler, so will be repaired" in plan.output, \
        plan.output
    result = stack.run("apply", str(stack.dir), *state_args, "--auto-approve")
    assert result.exit_code == 0, result.output
    converged = stack.run("plan", str(stack.dir), *state_args, "--detailed-exitcode")
    assert converged.exit_code == 0 and "No changes" in converged.output, converged.output
    records = records_now(store)
    assert routed_hosts(stack.state.parent) == serving_hosts(records) != set()
    outputs = records["endpoint.blue-green"]["outputs"]
    client = GatewayClient(outputs["port"], outputs["keys"]["primary"])
    try:
        assert [client.score(deployment=name)[0] for name in ("blue", "green")] == [200, 200]
    finally:
        client.close()
