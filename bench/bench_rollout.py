"""Benchmark: how fast a deployment becomes ready and a rollout completes on the docker driver
(issue 16), everything side by side in one run on the local Docker Engine.

  * floor: `docker run -d` of the demo image on a user bridge network, then GET of its
    readiness route at the container's IP every 10 ms until it answers 200; and "floor 3", three
    of those side by side until all three answer (what the engine alone needs for 3 instances);
  * replace: `reconciler apply STACK --auto-approve` (a new interpreter: CLI start included)
    after the deployment's image tag changed (the demo image tagged a second time), for a
    1-instance and a 3-instance deployment; the floors and the two replaces are interleaved,
    one of each per round;
  * 20 deployments from empty: docker-compose 1.29 (`up -d` of 20 demo services on one
    network, then the same 10 ms readiness poll of every container at its IP until all answer)
    against `reconciler apply` of one stack with one endpoint and 20 deployments (traffic on
    one), interleaved, and beside them "floor N": 20 `docker run -d` side by side until all
    answer, what the engine alone needs.

The bench stacks probe with initial_delay 0 and period 1 (the schema's minima). The package's
bytecode is compiled first (`python -m compileall reconciler`, as scripts/setup.sh does and as
an installed wheel has it; this machine sets PYTHONDONTWRITEBYTECODE=1, so otherwise every CLI
start would compile the package from source). Everything the bench makes is labelled or named after its own run and
removed at the end, also on failure.

    python bench/bench_rollout.py [--rounds 5] [--compose-rounds 3] [--no-write]
"""
from __future__ import annotations

import argparse
import http.client
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import docker

from reconciler.drivers.docker.engine import remove_released_network

from bench_startup import compile_package
from benchmarks_md import publish

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Rollout and readiness on the docker driver (issue 16)"
IMAGE = "reconciler/demo-tfserving:latest"
IMAGE_B = "reconciler/demo-tfserving:bench-b"
COMPOSE = "/usr/bin/docker-compose"
READY_PATH = "/v1/models/half_plus_two"
PORT = 8501
POLL = 0.01
WAIT_LIMIT = 120.0  # any one readiness wait or command; a bench that hangs is a failed bench
BENCH_LABEL = "org.reconciler.bench"
PROBE = "readiness_probe:\n  initial_delay: 0\n  period: 1\n  failure_threshold: 30\n"


def run(argv: list[str], env: dict | None = None, cwd: Path = ROOT) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=WAIT_LIMIT * 2)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: "
                           f"{(result.stdout + result.stderr).decode()[-1500:]}")
    return elapsed


def answers(host: str, port: int = PORT, path: str = READY_PATH) -> bool:
    """Whether GET http://HOST:PORT/PATH answers 200 within a second (a readiness poll)."""
    connection = http.client.HTTPConnection(host, port, timeout=1)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        connection.close()


def container_ip(client: docker.DockerClient, container_id: str, network: str) -> str | None:
    networks = client.api.inspect_container(container_id)["NetworkSettings"]["Networks"] or {}
    return (networks.get(network) or {}).get("IPAddress") or None


def wait_all_answer(client: docker.DockerClient, container_ids: list[str], network: str) -> None:
    """Poll every container's readiness route at its IP until all answer (bounded in time)."""
    deadline = time.monotonic() + WAIT_LIMIT
    pending = set(container_ids)
    addresses: dict[str, str] = {}
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} container(s) not ready within {WAIT_LIMIT}s")
        for container_id in sorted(pending):
            if container_id not in addresses:
                address = container_ip(client, container_id, network)
                if address is None:
                    continue
                addresses[container_id] = address
            if answers(addresses[container_id]):
                pending.discard(container_id)
        if pending:
            time.sleep(POLL)


# -- the floor --------------------------------------------------------------------------
def floor_once(client: docker.DockerClient, network: str, model_dir: Path, run_id: str, instances: int = 1) -> float:
    """`docker run -d` of `instances` demo containers at once, until all answer their readiness route."""
    argv = ["docker", "run", "-d", "--network", network, "--label", f"{BENCH_LABEL}={run_id}",
            "-v", f"{model_dir}:/models/half_plus_two:ro", "-e", "MODEL_NAME=half_plus_two", IMAGE]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=instances) as pool:
        results = list(pool.map(lambda _: subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_LIMIT),
                                range(instances)))
    container_ids = [result.stdout.strip() for result in results if result.returncode == 0]
    try:
        failed = [result.stderr for result in results if result.returncode != 0]
        if failed:
            raise RuntimeError(f"docker run failed: {failed[0]}")
        wait_all_answer(client, container_ids, network)
        return time.perf_counter() - started
    finally:
        for container_id in container_ids:
            client.api.remove_container(container_id, force=True)


# -- reconciler stacks --------------------------------------------------------------------
class Stack:
    """A bench copy of a demo stack, driven by the CLI in a new interpreter each time."""

    def __init__(self, scratch: Path, name: str, env: dict) -> None:
        self.name = name
        self.dir = scratch / name
        self.state = scratch / "state" / f"{name}.json"
        self.env = env

    def command(self, verb: str) -> list[str]:
        return [sys.executable, "-m", "reconciler", verb, str(self.dir), "--state", str(self.state),
                "--auto-approve"]

    def apply(self) -> float:
        return run(self.command("apply"), self.env)

    def destroy(self, client: docker.DockerClient) -> None:
        try:
            if self.state.exists():
                run(self.command("destroy"), self.env)
        finally:
            # Whatever a failed run left of this stack (ours only: the stack name is this run's).
            filters = {"label": f"org.reconciler.stack={self.name}"}
            for container in client.containers.list(all=True, filters=filters):
                container.remove(force=True)
            for network in client.networks.list(filters=filters):
                remove_released_network(network)


def probe_settings(text: str) -> str:
    start = text.index("readiness_probe:")
    end = text.index("liveness_probe:")
    return text[:start] + PROBE + text[end:]


def replace_stack(scratch: Path, run_id: str, instances: int, env: dict) -> Stack:
    stack = Stack(scratch, f"bench-{run_id}-r{instances}", env)
    shutil.copytree(ROOT / "stacks" / "half-plus-two", stack.dir)
    deployment = stack.dir / "deployment.yml"
    text = probe_settings(deployment.read_text()).replace("instance_count: 1", f"instance_count: {instances}")
    deployment.write_text(text)
    return stack


def set_image(stack: Stack, image: str) -> None:
    deployment = stack.dir / "deployment.yml"
    text = deployment.read_text()
    for candidate in (IMAGE, IMAGE_B):
        text = text.replace(f"image: {candidate}\n", f"image: {image}\n")
    deployment.write_text(text)


def twenty_stack(scratch: Path, run_id: str, count: int, env: dict, round_: int) -> Stack:
    stack = Stack(scratch, f"bench-{run_id}-n{round_}", env)
    source = ROOT / "stacks" / "half-plus-two"
    stack.dir.mkdir()
    shutil.copytree(source / "half_plus_two", stack.dir / "half_plus_two")
    shutil.copy(source / "model.yml", stack.dir / "model.yml")
    (stack.dir / "endpoint.yml").write_text(
        (source / "endpoint.yml").read_text().replace("name: half-plus-two", "name: many")
        .replace("  tfserving: 100", "  d00: 100"))
    template = probe_settings((source / "deployment.yml").read_text()).replace(
        "endpoint_name: half-plus-two", "endpoint_name: many")
    for index in range(count):
        (stack.dir / f"d{index:02d}.yml").write_text(template.replace("name: tfserving", f"name: d{index:02d}"))
    return stack


# -- docker-compose -------------------------------------------------------------------------
def compose_file(directory: Path, count: int, model_dir: Path, run_id: str) -> Path:
    lines = ['version: "3.8"', "services:"]
    for index in range(count):
        lines += [f"  d{index:02d}:", f"    image: {IMAGE}", "    networks: [serving]",
                  "    environment:", "      MODEL_NAME: half_plus_two",
                  f"    volumes: ['{model_dir}:/models/half_plus_two:ro']",
                  f"    labels: {{{BENCH_LABEL}: '{run_id}'}}"]
    lines += ["networks:", "  serving:", f"    labels: {{{BENCH_LABEL}: '{run_id}'}}"]
    path = directory / "docker-compose.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def compose_once(client: docker.DockerClient, directory: Path, project: str, count: int) -> float:
    base = [COMPOSE, "-p", project, "-f", str(directory / "docker-compose.yml")]
    started = time.perf_counter()
    try:
        run([*base, "up", "-d"], cwd=directory)
        ids = [c.id for c in client.containers.list(filters={"label": f"com.docker.compose.project={project}"})]
        if len(ids) != count:
            raise RuntimeError(f"compose started {len(ids)} containers, not {count}")
        wait_all_answer(client, ids, f"{project}_serving")
        return time.perf_counter() - started
    finally:
        run([*base, "down", "--timeout", "2"], cwd=directory)


def reconciler_many_once(client: docker.DockerClient, stack: Stack) -> float:
    try:
        return stack.apply()
    finally:
        stack.destroy(client)


# -- the run ------------------------------------------------------------------------------
def machine() -> str:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"nproc {os.cpu_count()}, load average {load} at the start"


def ratio_line(label: str, value: float, base: float, limit: float, base_name: str) -> str:
    ratio = value / base
    return (f"- {label}: {value:.2f} s / {base:.2f} s ({base_name}) = **{ratio:.2f}x**, "
            f"target at most {limit}x: {'PASS' if ratio <= limit else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compose-rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    client = docker.from_env()
    run_id = secrets.token_hex(3)
    at_start = machine()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    floor_network = f"bench-{run_id}-floor"
    samples: dict[str, list[float]] = {"floor": [], "floor 3": [], "replace 1": [], "replace 3": [], "floor N": [],
                                       "compose": [], "reconciler": []}
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as scratch_name:
        scratch = Path(scratch_name)
        (scratch / "state").mkdir()
        compile_package()
        model_dir = ROOT / "stacks" / "half-plus-two" / "half_plus_two"
        client.images.get(IMAGE).tag(*IMAGE_B.split(":"))
        client.networks.create(floor_network, driver="bridge", labels={BENCH_LABEL: run_id})
        stacks = [replace_stack(scratch, run_id, n, env) for n in (1, 3)]
        compose_dir = scratch / "compose"
        compose_dir.mkdir()
        compose_file(compose_dir, args.count, model_dir, run_id)
        try:
            for stack in stacks:
                stack.apply()
            image = IMAGE
            for _ in range(args.rounds):
                image = IMAGE_B if image == IMAGE else IMAGE
                samples["floor"].append(floor_once(client, floor_network, model_dir, run_id))
                samples["floor 3"].append(floor_once(client, floor_network, model_dir, run_id, instances=3))
                for stack, key in zip(stacks, ("replace 1", "replace 3")):
                    set_image(stack, image)
                    samples[key].append(stack.apply())
            for stack in stacks:
                stack.destroy(client)
            for round_ in range(args.compose_rounds):
                samples["floor N"].append(floor_once(client, floor_network, model_dir, run_id, instances=args.count))
                samples["compose"].append(compose_once(client, compose_dir, f"bench{run_id}c{round_}", args.count))
                many = twenty_stack(scratch, run_id, args.count, env, round_)
                samples["reconciler"].append(reconciler_many_once(client, many))
        finally:
            for stack in stacks:
                stack.destroy(client)
            for container in client.containers.list(all=True, filters={"label": f"{BENCH_LABEL}={run_id}"}):
                container.remove(force=True)
            for network in client.networks.list(filters={"label": f"{BENCH_LABEL}={run_id}"}):
                remove_released_network(network)
            client.images.remove(IMAGE_B, noprune=True)
    median = {key: statistics.median(values) for key, values in samples.items()}
    text = render(args, median, samples, at_start)
    publish(SECTION, text, write=not args.no_write)


def render(args, median: dict, samples: dict, at_start: str) -> str:
    spread = {key: f"{min(values):.2f}-{max(values):.2f}" for key, values in samples.items()}
    rows = [
        ("floor", "`docker run -d` of the demo image on a user bridge network until its readiness route "
                  "answers 200 at the container's IP (10 ms poll)", args.rounds),
        ("floor 3", "the same for 3 containers at once (three `docker run -d` side by side), until all three "
                    "answer", args.rounds),
        ("replace 1", "`reconciler apply --auto-approve` after the image tag of a 1-instance deployment "
                      "changed: CLI start, refresh, plan, new container, readiness, gateway re-point, old "
                      "container removed", args.rounds),
        ("replace 3", "the same for a 3-instance deployment", args.rounds),
        ("floor N", f"the floor for {args.count} containers at once ({args.count} `docker run -d` side by side), "
                    "until all answer", args.compose_rounds),
        ("compose", f"`docker-compose up -d` of {args.count} demo services on one network, then the "
                    "floor's readiness poll of every container at its IP until all answer", args.compose_rounds),
        ("reconciler", f"`reconciler apply --auto-approve` from empty of one endpoint with {args.count} "
                       "deployments (traffic on one; +1 model copy, +1 gateway container)", args.compose_rounds),
    ]
    lines = [SECTION, "",
             f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python bench/bench_rollout.py` in one "
             f"run on the local Docker Engine; {at_start}. The machine is shared (2 cores, with the Docker "
             "daemon and other work running), so absolute times move between runs; the ratios compare "
             "runs interleaved in the same minutes. The bench stacks probe readiness with initial_delay 0 "
             "and period 1 s (the schema's minima: initial_delay may be 0, period not under 1). The CLI "
             "runs with the package's bytecode compiled first, as an installed wheel has it.", "",
             "| row | what it measures | runs | median (s) | min-max (s) |", "|---|---|---:|---:|---:|"]
    for key, what, runs in rows:
        lines.append(f"| {key} | {what} | {runs} | {median[key]:.2f} | {spread[key]} |")
    lines += ["", "Targets:",
              ratio_line("1-instance replace", median["replace 1"], median["floor"], 2, "floor"),
              ratio_line("3-instance replace", median["replace 3"], median["replace 1"], 1.2, "1-instance replace")
              + f"; the engine alone takes {median['floor 3'] / median['floor']:.2f}x as long for 3 containers "
              f"as for one (floor 3 / floor), and the two extra instances add "
              f"{median['replace 3'] - median['replace 1']:+.2f} s to a replace against "
              f"{median['floor 3'] - median['floor']:+.2f} s to the floor",
              ratio_line(f"apply of {args.count} deployments", median["reconciler"], median["compose"], 0.8,
                         "docker-compose 1.29")
              + f"; the engine alone, {args.count} `docker run -d` side by side (floor N), takes "
              f"{median['floor N']:.2f} s, {median['floor N'] / median['compose']:.2f}x docker-compose"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
