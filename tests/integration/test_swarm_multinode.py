"""The swarm driver on a real three-node swarm (issue 18): one manager and two workers, each a
dockerd in its own network namespace (swarm_cluster.py), images pulled by every node from a
registry on the test network. The demo stack is applied through the CLI with DOCKER_HOST on the
manager's address, as a user would.

In order (one cluster and one stack for the module, as in test_swarm.py): three replicas spread
over the three nodes, pulling from the registry, with per-node progress; the endpoint answers
through every node's address; model configs reach every node; an image the registry does not
have is refused before any change; a rolling image update under load (hey) fails no request; a
node that cannot pull is named by `apply` and swarm rolls back;
draining a node moves its tasks and drift says so; a worker's dockerd stopped: the endpoint keeps
answering, the tasks are rescheduled, drift reports the moved tasks; kill -9 during apply on
swarm (bench/crash_trials.py's trials), re-apply converges, no orphans; destroy leaves nothing on
any node. Each test records its figure; the module writes them into docs/scaling.md.

Never touches the host's own engine (it only `docker save`s the images once).
"""
from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness import DEMO_IMAGE, GATEWAY_IMAGE, ROOT, SAMPLE_REQUEST, STACKS_DEMO_IMAGE, StackRun
from swarm_cluster import HOST_ADDRESS, REGISTRY, REGISTRY_PORT, SwarmCluster, missing_tools
from test_zero_loss import answered

pytestmark = pytest.mark.integration

ENDPOINT = "half-plus-two"
LOAD_THREADS = 4
REQUEST_TIMEOUT = 5.0
FIGURES_BEGIN, FIGURES_END = "<!-- multinode-figures:begin -->", "<!-- multinode-figures:end -->"
FIGURES: dict[str, str] = {}


# -- the cluster, the stack ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the swarm cluster needs root (ip netns, dockerd)")
    if missing := missing_tools():
        pytest.skip(f"missing {missing}: scripts/setup.sh installs them")
    started = time.monotonic()
    cluster = SwarmCluster(tmp_path_factory.mktemp("swarm-cluster"))
    try:
        cluster.start([DEMO_IMAGE, GATEWAY_IMAGE])
        FIGURES["cluster"] = (f"three nodes up, joined, images loaded into the manager once and pushed: "
                              f"{time.monotonic() - started:.0f} s")
        with pytest.MonkeyPatch.context() as patch:
            # The CLI in this process and its subprocesses (the crash trials) drive the manager
            # over tcp, and name the gateway image by the registry's host.
            patch.setenv("DOCKER_HOST", cluster.manager.tcp_url)
            patch.delenv("DOCKER_TLS_VERIFY", raising=False)
            patch.delenv("DOCKER_CERT_PATH", raising=False)
            patch.setenv("RECONCILER_GATEWAY_IMAGE", cluster.image(GATEWAY_IMAGE))
            import reconciler.drivers.common.gateway as common_gateway
            import reconciler.drivers.swarm.driver as swarm_driver
            import reconciler.drivers.swarm.gateway as swarm_gateway
            for module in (common_gateway, swarm_driver, swarm_gateway):
                patch.setattr(module, "GATEWAY_IMAGE", cluster.image(GATEWAY_IMAGE))
            yield cluster
    finally:
        cluster.stop()
        write_figures()


@pytest.fixture(scope="module")
def stack(cluster, tmp_path_factory):
    run = StackRun(tmp_path_factory.mktemp("multinode"), cluster.manager.client())
    (run.dir / "reconciler.yml").write_text("driver: swarm\n")
    run.edit("deployment.yml", f"image: {STACKS_DEMO_IMAGE}", f"image: {cluster.image(DEMO_IMAGE)}")
    run.edit("deployment.yml", "instance_count: 1", "instance_count: 3")
    # Issue 15: 2 x 4 x instance_count requests in flight; the load's threads fit on one replica.
    path = run.dir / "deployment.yml"
    path.write_text(path.read_text() + "request_settings: {max_concurrent_requests_per_instance: 4}\n")
    try:
        yield run
    finally:
        run.cleanup()


def deployment_tasks(cluster: SwarmCluster, run: StackRun) -> list[tuple[int, str, str]]:
    """(slot, node name, state) of the deployment's tasks meant to run, by slot."""
    manager = cluster.manager.client()
    service = run.records()[f"deployment.{ENDPOINT}/tfserving"]["outputs"]["service"]["id"]
    names = {n["ID"]: n["Description"]["Hostname"] for n in manager.api.nodes()}
    tasks = manager.api.tasks(filters={"service": service, "desired-state": "running"})
    return sorted((t["Slot"], names.get(t.get("NodeID"), "?"), t["Status"]["State"]) for t in tasks)


def full_capacity(cluster: SwarmCluster, run: StackRun, ready_nodes: set[str]) -> bool:
    tasks = deployment_tasks(cluster, run)
    return len(tasks) == 3 and all(state == "running" and node in ready_nodes for _, node, state in tasks)


def wait_for(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"{what} not within {timeout}s")


def score(address: str, port: int, key: str, timeout: float = REQUEST_TIMEOUT) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("POST", "/score", SAMPLE_REQUEST, {"Authorization": f"Bearer {key}",
                                                              "Content-Type": "application/json"})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def answers(address: str, port: int, key: str) -> bool:
    try:
        return score(address, port, key)[0] == 200
    except OSError:
        return False


class TimedLoad:
    """Threads sending scoring requests to one node's address until stopped (at most `limit`
    seconds): each answer's time and whether it was a 200 with predictions."""

    def __init__(self, address: str, port: int, key: str, limit: float = 180) -> None:
        self.address, self.port, self.key, self.limit = address, port, key, limit
        self.results: list[tuple[float, bool, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(LOAD_THREADS)]

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status, body = score(self.address, self.port, self.key)
                ok, why = status == 200 and b"predictions" in body, str(status)
            except OSError as error:
                ok, why = False, type(error).__name__
            with self._lock:
                self.results.append((time.monotonic(), ok, why))
            if not ok:
                time.sleep(0.05)  # a refused connection returns at once; do not spin

    def __enter__(self) -> "TimedLoad":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)

    def failures(self) -> list[tuple[float, bool, str]]:
        return [r for r in self.results if not r[1]]


def keys_and_port(run: StackRun) -> tuple[str, int]:
    outputs = run.endpoint(ENDPOINT)
    return outputs["keys"]["primary"], outputs["port"]


def load_average() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


# -- the tests, in order ---------------------------------------------------------------------------
def test_three_replicas_spread_over_the_three_nodes_each_pulling_from_the_registry(cluster, stack):
    started = time.monotonic()
    result = stack.apply()
    took = time.monotonic() - started
    tasks = deployment_tasks(cluster, stack)
    assert [(slot, state) for slot, _, state in tasks] == [(1, "running"), (2, "running"), (3, "running")]
    assert {node for _, node, _ in tasks} == {"rc-node-1", "rc-node-2", "rc-node-3"}, tasks
    # Progress per node and task: the workers had no image and pulled it from the registry.
    pulls = sorted(set(re.findall(r"task \d on node (rc-node-\d): pulling the image", result.output)))
    assert pulls == ["rc-node-1", "rc-node-2", "rc-node-3"], result.output
    for worker in cluster.workers:
        assert worker.client().images.get(cluster.image(DEMO_IMAGE))  # pulled, never loaded
    assert {i["node"] for i in stack.records()[f"deployment.{ENDPOINT}/tfserving"]["outputs"]["instances"]} == {
        "rc-node-1", "rc-node-2", "rc-node-3"}
    FIGURES["spread"] = (f"`apply` of the demo stack with 3 replicas: {took:.0f} s; slots on "
                         + ", ".join(f"{slot}: {node}" for slot, node, _ in tasks) + f" ({load_average()})")


def test_the_endpoint_answers_through_every_nodes_address(cluster, stack):
    key, port = keys_and_port(stack)
    assert stack.endpoint(ENDPOINT)["scoring_uri"] == f"http://{cluster.manager.address}:{port}/score"
    timings = []
    for node in cluster.nodes:
        started = time.monotonic()
        status, body = score(node.address, port, key)
        timings.append(f"{node.hostname} {1000 * (time.monotonic() - started):.0f} ms")
        assert status == 200 and json.loads(body) == {"predictions": [2.5, 3.0, 4.5]}, (node.hostname, body)
    FIGURES["any-node"] = "one request through each node's address (the edge runs on every node): " + \
        ", ".join(timings)


def test_model_configs_reach_every_node(cluster, stack):
    service = stack.records()[f"deployment.{ENDPOINT}/tfserving"]["outputs"]["service"]["id"]
    mount = "/var/azureml-app/azureml-models/tfserving-mounted/1"
    seen = {}
    for node in cluster.nodes:
        (container,) = node.client().containers.list(filters={"label": f"com.docker.swarm.service.id={service}"})
        code, output = container.exec_run(["sh", "-c", f"find {mount} -type f | sort"])
        assert code == 0, output
        seen[node.hostname] = output.decode().split()
    assert len({tuple(files) for files in seen.values()}) == 1 and seen["rc-node-2"], seen
    assert any(f.endswith("saved_model.pb") for f in seen["rc-node-3"]), seen


def test_an_image_the_registry_does_not_have_is_refused_before_any_change(cluster, stack):
    before = stack.state.read_text()
    services = sorted(s["ID"] for s in cluster.manager.client().api.services())
    missing = f"{REGISTRY}/reconciler/not-pushed:latest"
    stack.edit("deployment.yml", f"image: {cluster.image(DEMO_IMAGE)}", f"image: {missing}")
    image_line = next(number for number, line in enumerate((stack.dir / "deployment.yml").read_text().splitlines(), 1)
                      if line.strip() == f"image: {missing}")
    try:
        result = stack.apply(expect=1)
    finally:
        stack.edit("deployment.yml", f"image: {missing}", f"image: {cluster.image(DEMO_IMAGE)}")
    assert f"deployment.yml:{image_line}: image {missing} (deployment.{ENDPOINT}/tfserving) cannot be pulled by the swarm's nodes" \
        in result.output
    assert "the manager rc-node-1 asked its registry" in result.output and "manifest unknown" in result.output
    assert stack.state.read_text() == before
    assert sorted(s["ID"] for s in cluster.manager.client().api.services()) == services
    FIGURES["not-pushed"] = "an image the registry does not have: refused before any change: `" + \
        next(line.strip() for line in result.output.splitlines() if "cannot be pulled" in line)[:400] + "`"


def pushed_tag(cluster: SwarmCluster, tag: str) -> str:
    """The demo image under another tag, pushed: a new image reference every node pulls."""
    image = cluster.image(DEMO_IMAGE.rsplit(":", 1)[0] + ":" + tag)
    subprocess.run(["docker", "-H", cluster.manager.unix_url, "tag", cluster.image(DEMO_IMAGE), image], check=True,
                   timeout=60)
    subprocess.run(["docker", "-H", cluster.manager.unix_url, "push", image], check=True, capture_output=True,
                   timeout=300)
    return image


@pytest.fixture(scope="module")
def v2_image(cluster):
    return pushed_tag(cluster, "multinode-v2")


def test_rolling_image_update_across_nodes_under_load_fails_no_request(cluster, stack, v2_image, hey, tmp_path):
    key, port = keys_and_port(stack)
    body = tmp_path / "body.json"
    body.write_text(SAMPLE_REQUEST)
    # Bounded in time (-z) and in rate (-q per connection); stopped with SIGINT once apply returns.
    load = subprocess.Popen([hey, "-z", "150s", "-q", "30", "-c", str(LOAD_THREADS), "-t", "20", "-m", "POST",
                             "-T", "application/json", "-H", f"Authorization: Bearer {key}", "-D", str(body),
                             f"http://{cluster.manager.address}:{port}/score"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1)
        stack.edit("deployment.yml", f"image: {cluster.image(DEMO_IMAGE)}", f"image: {v2_image}")
        started = time.monotonic()
        result = stack.apply()
        took = time.monotonic() - started
        time.sleep(1)
    finally:
        load.send_signal(signal.SIGINT)
    counts = answered(load)
    assert "Apply complete!" in result.output, result.output
    assert {image for image in (t["Spec"]["ContainerSpec"]["Image"] for t in cluster.manager.client().api.tasks(
        filters={"desired-state": "running", "service": stack.records()[f"deployment.{ENDPOINT}/tfserving"][
            "outputs"]["service"]["id"]}))} == {v2_image}
    assert counts["errors"] == 0 and set(counts) == {"200", "errors"} and counts["200"] > 100, counts
    FIGURES["rolling"] = (f"rolling image update of 3 replicas on 3 nodes (each pulls the new tag; "
                          f"start-first, one at a time): {took:.0f} s; hey {LOAD_THREADS} connections: "
                          f"{counts['200']} requests answered 200, 0 failed ({load_average()})")


def registry_blocked(node, blocked: bool) -> None:
    """In the node's own namespace: its dockerd's connections to the registry are refused."""
    subprocess.run(["ip", "netns", "exec", node.name, "iptables", "-I" if blocked else "-D", "OUTPUT", "-p", "tcp",
                    "-d", HOST_ADDRESS, "--dport", str(REGISTRY_PORT), "-j", "REJECT", "--reject-with", "tcp-reset"],
                   check=True, capture_output=True, timeout=30)


def test_a_node_that_cannot_pull_is_named_and_the_update_rolls_back(cluster, stack, v2_image):
    """A worker whose dockerd cannot reach the registry, the only node taking new tasks (the
    others paused): the image is in the registry (preflight passes), the new task is rejected
    there, `apply` names the node and the engine's message, swarm rolls back and v2 keeps
    serving; once the node can pull again, the same apply converges."""
    v3 = pushed_tag(cluster, "multinode-v3")
    blocked = cluster.workers[-1]
    others = [node.hostname for node in cluster.nodes if node is not blocked]
    service = stack.records()[f"deployment.{ENDPOINT}/tfserving"]["outputs"]["service"]["id"]
    registry_blocked(blocked, True)
    try:
        for hostname in others:
            set_availability(cluster, hostname, "pause")
        stack.edit("deployment.yml", f"image: {v2_image}", f"image: {v3}")
        started = time.monotonic()
        result = stack.apply(expect=1)
        took = time.monotonic() - started
    finally:
        registry_blocked(blocked, False)
        for hostname in others:
            set_availability(cluster, hostname, "active")
    rejected = [line.strip() for line in result.output.splitlines() if f"on node {blocked.hostname}: rejected" in line]
    assert rejected, result.output
    assert "rolled it back" in result.output and blocked.hostname in result.output.split("rolled it back", 1)[1], \
        result.output
    running = {t["Spec"]["ContainerSpec"]["Image"] for t in cluster.manager.client().api.tasks(
        filters={"desired-state": "running", "service": service})}
    assert running == {v2_image}, running
    FIGURES["pull-fails"] = (f"{blocked.hostname} cannot reach the registry and is the only node taking tasks: "
                             f"`apply` failed after {took:.0f} s naming it (`{rejected[0][:240]}`), swarm rolled "
                             f"back, v2 kept serving")
    converged = stack.apply()
    assert "Apply complete!" in converged.output, converged.output
    service = stack.records()[f"deployment.{ENDPOINT}/tfserving"]["outputs"]["service"]["id"]
    assert {t["Spec"]["ContainerSpec"]["Image"] for t in cluster.manager.client().api.tasks(
        filters={"desired-state": "running", "service": service})} == {v3}


def drift_of(run: StackRun):
    return run.run("drift", str(run.dir), "--state", str(run.state))


def accept_moves(run: StackRun) -> None:
    """`apply --refresh-only` records where the swarm moved the tasks: drift is clean after."""
    run.apply("--refresh-only")
    assert drift_of(run).exit_code == 0
    assert run.plan("--detailed-exitcode").exit_code == 0


def set_availability(cluster: SwarmCluster, hostname: str, availability: str) -> None:
    node = next(n for n in cluster.manager.client().nodes.list() if n.attrs["Description"]["Hostname"] == hostname)
    node.update({**node.attrs["Spec"], "Availability": availability})


def roll_away_from(cluster: SwarmCluster, run: StackRun, hostnames: set[str]) -> None:
    """A rolling update through reconciler (a new environment variable) while `hostnames`
    take no new task: the replicas land on the other nodes and the records say where."""
    for hostname in hostnames:
        set_availability(cluster, hostname, "pause")
    try:
        path = run.dir / "deployment.yml"
        text = re.sub(r"\n  ROLLED: .*", "", path.read_text())
        path.write_text(text.replace("  MODEL_NAME: half_plus_two\n",
                                     f"  MODEL_NAME: half_plus_two\n  ROLLED: away-{time.monotonic_ns()}\n", 1))
        run.apply()
    finally:
        for hostname in hostnames:
            set_availability(cluster, hostname, "active")


def worker_to_lose(cluster: SwarmCluster, run: StackRun):
    """A worker running a deployment task but not the gateway (one gateway task: its node's
    loss is an outage until the swarm restarts it elsewhere; docs/scaling.md says so), and the
    gateway's node."""
    manager = cluster.manager.client()
    names = {n["ID"]: n["Description"]["Hostname"] for n in manager.api.nodes()}
    gateway_nodes = {names.get(t.get("NodeID")) for t in manager.api.tasks(
        filters={"service": run.endpoint(ENDPOINT)["gateway"]["id"], "desired-state": "running"})}
    placed = {node for _, node, _ in deployment_tasks(cluster, run)}
    candidates = [w for w in cluster.workers if w.hostname in placed]
    return next((w for w in candidates if w.hostname not in gateway_nodes), (candidates or cluster.workers)[0]), \
        gateway_nodes


def worker_without_gateway(cluster: SwarmCluster, run: StackRun):
    """A worker with a replica and without the gateway, and the gateway's nodes: losing or
    draining the gateway's node is the outage docs/scaling.md states (stop-first, as any
    reschedule), so these tests take a node with replicas only. The rolling update may have put
    two replicas on the gateway's node: they are rolled once more with it paused, so that the
    other nodes get them."""
    worker, gateway_nodes = worker_to_lose(cluster, run)
    if worker.hostname in gateway_nodes:
        roll_away_from(cluster, run, gateway_nodes)
        worker, gateway_nodes = worker_to_lose(cluster, run)
    assert worker.hostname not in gateway_nodes, (deployment_tasks(cluster, run), gateway_nodes)
    return worker, gateway_nodes


def test_a_worker_lost_the_endpoint_keeps_answering_and_drift_reports_its_tasks(cluster, stack):
    key, port = keys_and_port(stack)
    lost, gateway_nodes = worker_without_gateway(cluster, stack)
    with TimedLoad(cluster.manager.address, port, key) as load:
        time.sleep(2)
        stopped_at = time.monotonic()
        lost.kill(signal.SIGTERM)
        stop_took = time.monotonic() - stopped_at
        down = wait_for(lambda: cluster.node_states().get(lost.hostname, ("", ""))[0] == "down", 90,
                        f"{lost.hostname} seen down") + stop_took
        ready = {n.hostname for n in cluster.nodes} - {lost.hostname}
        full = wait_for(lambda: full_capacity(cluster, stack, ready), 120, "three healthy tasks again") + down
        time.sleep(2)
    failed = load.failures()
    answered_after = [r for r in load.results if r[0] > stopped_at + full]
    drift = drift_of(stack)
    FIGURES["node-loss"] = (f"{lost.hostname}'s dockerd stopped (SIGTERM, {stop_took:.1f} s) under {LOAD_THREADS} "
                            f"threads: seen down after {down:.1f} s, 3 healthy replicas again after {full:.1f} s; "
                            f"{len(load.results)} requests, {len(failed)} failed "
                            f"({', '.join(sorted({w for _, _, w in failed})) or 'none'}); gateway on "
                            f"{', '.join(sorted(filter(None, gateway_nodes)))} ({load_average()})")
    assert answered_after and all(ok for _, ok, _ in answered_after), answered_after[:5]
    assert drift.exit_code == 2 and f"ran on node {lost.hostname}, which is down" in drift.output, drift.output
    accept_moves(stack)
    lost.start()
    cluster.wait_ready(3)


def test_draining_a_node_moves_its_tasks_and_drift_reports_them(cluster, stack):
    key, port = keys_and_port(stack)
    drained, gateway_nodes = worker_without_gateway(cluster, stack)
    try:
        with TimedLoad(cluster.manager.address, port, key) as load:
            time.sleep(1)
            set_availability(cluster, drained.hostname, "drain")
            ready = {n.hostname for n in cluster.nodes} - {drained.hostname}
            moved = wait_for(lambda: full_capacity(cluster, stack, ready), 120, "tasks moved off the drained node")
            wait_for(lambda: answers(cluster.manager.address, port, key), 60, "the endpoint answering again")
            time.sleep(1)
        drift = drift_of(stack)
        assert drift.exit_code == 2, drift.output
        assert f"ran on node {drained.hostname}, which is drain; the swarm runs it on node" in drift.output, drift.output
        failed = load.failures()
        FIGURES["drain"] = (f"drain {drained.hostname} (replicas, not the gateway): its tasks moved and healthy on the other nodes in {moved:.1f} s; "
                            f"{len(load.results)} requests, {len(failed)} failed "
                            f"({', '.join(sorted({w for _, _, w in failed})) or 'none'}); drift reported "
                            f"`moved` ({load_average()})")
        assert len(failed) == 0, failed[:5]
    finally:
        set_availability(cluster, drained.hostname, "active")
    accept_moves(stack)


def test_kill_9_during_apply_on_swarm_converges_without_orphans(cluster, monkeypatch, tmp_path):
    """bench/crash_trials.py's trials on the swarm: the blue-green stack with `driver: swarm`
    and the registry's images; an orphan is a labelled service no record names."""
    sys.path.insert(0, str(ROOT / "bench"))
    import crash_trials

    manager = cluster.manager.client()
    image = cluster.image(DEMO_IMAGE)

    class LaterKills(random.Random):
        """The trials kill 0-3 s after the start; the CLI itself takes ~2 s to start on a loaded
        machine, and a swarm step 5-20 s: 2-12 s lands kills inside the steps."""

        def uniform(self, a: float, b: float) -> float:
            return super().uniform(a + 2.0, b + 9.0)

    class SwarmTrials(crash_trials.Trials):
        def __init__(self, workdir: Path, seed: int, *backend) -> None:
            super().__init__(workdir, seed, *backend)
            self.random = LaterKills(seed)
            (self.stack / "reconciler.yml").write_text("driver: swarm\n")
            for document in ("blue.yml", "green.yml"):
                self.edit(document, rf"^(\s*)image: {re.escape(STACKS_DEMO_IMAGE)}$", rf"\g<1>image: {image}")
            self.client = manager

        def owned_ids(self) -> set[str]:
            ids = set()
            for record in (self.read_state() or {"records": []})["records"]:
                ids |= {(record["outputs"].get(k) or {}).get("id") for k in ("service", "gateway", "edge")}
            return ids - {None}

        def labelled_ids(self) -> set[str]:
            return {s["ID"] for s in manager.api.services(filters={"label": f"org.reconciler.stack={self.name}"})}

        def cleanup(self) -> int:
            crash_trials.reconciler(*self.args("destroy"))
            return len(self.labelled_ids())

    class NodeGatewayClient:
        """crash_trials' endpoint check, through the manager's address instead of 127.0.0.1."""

        def __init__(self, port: int, key: str) -> None:
            self.port, self.key = port, key

        def score(self):
            status, body = score(cluster.manager.address, self.port, self.key)
            return status, {}, body

    monkeypatch.setattr(crash_trials, "Trials", SwarmTrials)
    monkeypatch.setattr(crash_trials, "GatewayClient", NodeGatewayClient)
    started = time.monotonic()
    outcome = crash_trials.run_trials(trials=4, seed=18)
    FIGURES["crash"] = (f"kill -9 of `apply`/`destroy` at a random moment, then a normal apply: "
                        f"{outcome.converged}/{outcome.trials} converged, {outcome.orphans_left} orphan services, "
                        f"kill points {dict(sorted(outcome.kill_points.items()))} "
                        f"({time.monotonic() - started:.0f} s, {load_average()})")
    assert outcome.failures == []
    assert outcome.converged == outcome.trials == 4 and outcome.orphans_left == 0
    assert outcome.killed_mid_step >= 1, outcome.kill_points


def test_destroy_leaves_nothing_on_any_node(cluster, stack):
    destroyed = stack.run("destroy", str(stack.dir), "--state", str(stack.state), "--auto-approve")
    assert destroyed.exit_code == 0, destroyed.output
    label = {"label": [f"org.reconciler.stack={stack.name}"]}
    manager = cluster.manager.client()
    assert manager.api.services(filters=label) == [] and manager.configs.list(filters=label) == []
    assert manager.secrets.list(filters=label) == [] and manager.networks.list(filters=label) == []
    def task_containers(node, every: bool) -> list[str]:
        # The plain list call: containers.list() inspects each listed container, and one
        # removed in between (as these are being) raises NotFound.
        return [f"{c['Names'][0]} ({c['State']})" for c in node.client().api.containers(all=every)
                if (c.get("Labels") or {}).get("com.docker.swarm.service.name", "").startswith("rc-")]

    for node in cluster.nodes:
        wait_for(lambda node=node: not task_containers(node, every=False), 60,
                 f"the stack's task containers stopped on {node.hostname}")
    # Exited task containers are swarm's task history, which each node's agent removes itself
    # (reconciler talks to the manager only); a node whose dockerd was stopped and started
    # again may keep those of its old tasks for a while. Reported, not failed.
    time.sleep(5)
    kept = {node.hostname: task_containers(node, every=True) for node in cluster.nodes}
    FIGURES["destroy"] = ("every service, config, secret and network of the stack gone, no task container running "
                          "on any node; exited task containers still listed 5 s later: "
                          + (", ".join(f"{h}: {len(c)}" for h, c in kept.items() if c) or "none"))


# -- figures -------------------------------------------------------------------------------------
def write_figures() -> None:
    """The figures of this run into docs/scaling.md, between its markers (the file keeps the rest)."""
    if not FIGURES:
        return
    path = ROOT / "docs" / "scaling.md"
    if not path.exists():
        return
    text = path.read_text()
    if FIGURES_BEGIN not in text or FIGURES_END not in text:
        return
    order = ["cluster", "spread", "any-node", "not-pushed", "rolling", "pull-fails", "drain", "node-loss", "crash", "destroy"]
    lines = [FIGURES_BEGIN, f"Last run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} cores, `{sys.executable.rsplit('/', 1)[-1]} -m pytest "
             "tests/integration/test_swarm_multinode.py`:", ""]
    lines += [f"- **{name}**: {FIGURES[name]}" for name in order if name in FIGURES]
    lines.append(FIGURES_END)
    head, rest = text.split(FIGURES_BEGIN, 1)
    path.write_text(head + "\n".join(lines) + rest.split(FIGURES_END, 1)[1])
