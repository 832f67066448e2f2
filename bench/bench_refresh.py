"""Benchmark: refresh of 100 running containers (issue 6).

Applies a synthetic stack on the local Docker Engine: one endpoint whose 4 deployments of the
demo TF Serving image run 25 instances each (100 deployment containers + 1 gateway), with a
small readiness probe. Then it measures, best of --repeat runs:

  * `refresh_state` in process: wall time, and Docker API calls, counted by wrapping the
    docker SDK's HTTP session (`APIClient.request`, which every API call goes through);
  * the pieces: the one label-filtered list call, the pure fold;
  * for comparison, what a refresh built on the SDK's default (non-sparse) list would cost: it
    inspects every container, N + 1 calls;
  * `reconciler drift STACK` as a subprocess (wall time, start-up and imports included);
  * the same after making drift by hand (one container stopped, one removed, one recreated
    with another environment variable, one orphan with our labels): the fold then inspects only
    the recreated container (+ its image, for the image's own environment).

Finally it destroys the stack, checks nothing labelled is left, and rewrites the section
"## Refresh (issue 6)" of BENCHMARKS.md.

    python bench/bench_refresh.py [--deployments 4] [--instances 25] [--repeat 5] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import docker

from benchmarks_md import BENCHMARKS, machine_summary, replace_section
from reconciler.drivers.docker.driver import DockerDriver
from reconciler.drivers.docker import fold as docker_fold, model_store
from reconciler.drivers.docker.fold import DockerObservation, needed_inspections
from reconciler.refresh import refresh_state, settle
from reconciler.state.store import StateStore

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Refresh (issue 6)"
IMAGE = "reconciler/demo-tfserving:latest"

MODEL_YAML = """\
$schema: https://azuremlschemas.azureedge.net/latest/model.schema.json
name: half-plus-two
version: 1
path: ./half_plus_two
"""

DEPLOYMENT_YAML = """\
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: {name}
endpoint_name: bench
model: azureml:half-plus-two:1
environment_variables:
  MODEL_BASE_PATH: /var/azureml-app/azureml-models/half-plus-two/1
  MODEL_NAME: half_plus_two
  DEPLOYMENT_NAME: {name}
environment:
  image: {image}
  inference_config:
    liveness_route: {{port: 8501, path: /v1/models/half_plus_two}}
    readiness_route: {{port: 8501, path: /v1/models/half_plus_two}}
    scoring_route: {{port: 8501, path: /v1/models/half_plus_two:predict}}
instance_type: Standard_DS3_v2
instance_count: {instances}
readiness_probe: {{initial_delay: 0, period: 1, timeout: 2, failure_threshold: 30}}
"""


def generate_stack(parent: Path, name: str, deployments: int, instances: int) -> Path:
    stack = parent / name
    stack.mkdir()
    shutil.copytree(ROOT / "stacks" / "half-plus-two" / "half_plus_two", stack / "half_plus_two")
    (stack / "model.yml").write_text(MODEL_YAML)
    names = [f"dep{i}" for i in range(deployments)]
    shares = [100 // deployments + (1 if i < 100 % deployments else 0) for i in range(deployments)]
    traffic = "\n".join(f"  {n}: {s}" for n, s in zip(names, shares))
    (stack / "endpoint.yml").write_text(
        "$schema: https://azuremlsdk2.blob.core.windows.net/latest/managedOnlineEndpoint.schema.json\n"
        f"name: bench\nauth_mode: key\ntraffic:\n{traffic}\n")
    for n in names:
        (stack / f"{n}.yml").write_text(DEPLOYMENT_YAML.format(name=n, image=IMAGE, instances=instances))
    return stack


def cli(*args: str, expect=(0,)) -> tuple[subprocess.CompletedProcess, float]:
    launcher = [shutil.which("reconciler")] if shutil.which("reconciler") else \
        [sys.executable, "-c", "from reconciler.cli.main import main; main()"]
    started = time.perf_counter()
    result = subprocess.run([*launcher, *args], capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    elapsed = time.perf_counter() - started
    if result.returncode not in expect:
        raise SystemExit(f"`reconciler {' '.join(args)}` exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result, elapsed


class CountingClient:
    """A DockerClient whose every HTTP request to the engine is counted (and timed)."""

    def __init__(self) -> None:
        self.client = docker.from_env(timeout=120)
        self.calls: list[tuple[str, str]] = []
        api = self.client.api
        original = api.request

        def request(method, url, *args, **kwargs):
            self.calls.append((method, re.sub(r"^[a-z+]+://[^/]+", "", url).split("?")[0]))
            return original(method, url, *args, **kwargs)
        api.request = request  # instance attribute: every verb helper of requests.Session ends here

    @contextmanager
    def counting(self):
        self.calls.clear()
        yield self.calls


def docker_cli(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


def measure_refresh(counter: CountingClient, store: StateStore, repeat: int) -> dict:
    driver = DockerDriver(counter.client)
    state = store.read()
    runs, calls = [], []
    for _ in range(repeat):
        driver = DockerDriver(counter.client)  # a fresh driver per refresh, as each command has
        with counter.counting() as seen:
            started = time.perf_counter()
            _, drift = refresh_state(driver, state, store.path.parent)
            runs.append(time.perf_counter() - started)
            calls.append(list(seen))
    list_times, fold_times = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        observed = driver.list_managed(state.stack)
        list_times.append(time.perf_counter() - started)
        digests = {a: model_store.stored_digest(Path(r.outputs.get("store_path", "/nonexistent")))
                   for a, r in state.records.items() if a.startswith("model.")}
        started = time.perf_counter()
        needed_inspections(state, observed)
        settle("docker", state, docker_fold.fold(state, DockerObservation(observed, digests)))
        fold_times.append(time.perf_counter() - started)
    return {"ms": min(runs) * 1000, "calls": calls[0], "drift": drift, "list_ms": min(list_times) * 1000,
            "fold_ms": min(fold_times) * 1000, "containers": len(observed)}


def measure_naive(counter: CountingClient, stack: str, repeat: int) -> dict:
    """The SDK's default list (sparse=False) inspects every container it lists."""
    times = []
    for _ in range(repeat):
        with counter.counting() as seen:
            started = time.perf_counter()
            counter.client.containers.list(all=True, filters={"label": [f"org.reconciler.stack={stack}"]})
            times.append(time.perf_counter() - started)
            calls = len(seen)
    return {"ms": min(times) * 1000, "calls": calls}


def make_drift(counter: CountingClient, store: StateStore) -> list[str]:
    state = store.read()
    deployments = sorted(a for a in state.records if a.startswith("deployment."))
    instances = [state.records[a].outputs["instances"] for a in deployments]
    stopped, removed, recreated = instances[0][0], instances[1 % len(instances)][1], instances[-1][2]
    docker_cli("stop", "-t", "1", stopped["id"])
    docker_cli("rm", "-f", removed["id"])
    info = json.loads(docker_cli("inspect", recreated["id"]))[0]
    args = ["run", "-d", "--name", info["Name"].lstrip("/"),
            "--network", next(iter(info["NetworkSettings"]["Networks"]))]
    for key, value in info["Config"]["Labels"].items():
        args += ["--label", f"{key}={value}"]
    for item in info["Config"]["Env"]:
        args += ["-e", item]
    for mount in info["Mounts"]:
        args += ["-v", f"{mount['Source']}:{mount['Destination']}:ro"]
    docker_cli("rm", "-f", recreated["id"])
    docker_cli(*args, "-e", "DEBUG=1", "-p", "127.0.0.1::8501", info["Config"]["Image"])
    docker_cli("run", "-d", "--label", "org.reconciler.managed-by=reconciler",
               "--label", f"org.reconciler.stack={state.stack}", "--label", "org.reconciler.role=deployment",
               "--label", f"org.reconciler.address={deployments[0]}", "--init", "reconciler/base:bookworm", "sleep", "600")
    return ["1 stopped", "1 removed", "1 recreated with DEBUG=1", "1 orphan"]


def describe_calls(calls: list[tuple[str, str]]) -> str:
    counts: dict[str, int] = {}
    for method, path in calls:
        key = f"{method} {re.sub(r'/[0-9a-f]{64}|/sha256:[0-9a-f]{64}', '/{id}', re.sub(r'^/v[0-9.]+', '', path))}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} x `{k}`" for k, n in counts.items())


def section(r: dict, repeat: int) -> str:
    clean, dirty, naive = r["clean"], r["dirty"], r["naive"]
    kinds: dict[str, int] = {}
    for item in dirty["drift"]:
        kinds[item.kind] = kinds.get(item.kind, 0) + 1
    target = 1
    verdict = "PASS" if len(clean["calls"]) <= target else "FAIL"
    return f"""{SECTION}

`python bench/bench_refresh.py` — refresh of {r['containers']} running deployment containers: one
endpoint with {r['deployments']} deployments x {r['instances']} instances of the demo TF Serving image
(readiness probe: initial_delay 0, period 1 s), plus its gateway; {clean['containers']} containers carry
the stack's labels. Applied with the CLI in {r['apply_s']:.0f} s (destroyed in {r['destroy_s']:.0f} s;
containers left with the stack's label afterwards: {r['left']}). Docker API calls are counted by wrapping
the docker SDK's `APIClient.request` (every engine request goes through it). In-process times are the
best of {repeat} runs, each with a fresh driver; CLI wall = `reconciler drift STACK` in a new
interpreter (start-up, imports and the client's `GET /_ping` included), best of {repeat}.

Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on {r['machine']}.

| refresh | containers | API calls | which | refresh ms | list call ms | fold ms | `reconciler drift` wall s |
|---|---:|---:|---|---:|---:|---:|---:|
| no drift | {clean['containers']} | **{len(clean['calls'])}** | {describe_calls(clean['calls'])} | {clean['ms']:.0f} | {clean['list_ms']:.0f} | {clean['fold_ms']:.1f} | {r['cli_clean']:.2f} |
| with drift ({', '.join(r['made'])}) | {dirty['containers']} | **{len(dirty['calls'])}** | {describe_calls(dirty['calls'])} | {dirty['ms']:.0f} | {dirty['list_ms']:.0f} | {dirty['fold_ms']:.1f} | {r['cli_dirty']:.2f} |
| for comparison: SDK default list (inspects each) | {clean['containers']} | {naive['calls']} | list + 1 inspect per container | {naive['ms']:.0f} | | | |

With drift, the fold found {len(dirty['drift'])} change(s): {', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))};
only the recreated container was inspected (and its image, whose own ENV tells an added variable
from an image default). The refresh also hashes the model store copy (files, no API call) and
reads the gateway config digest (one file). `reconciler drift` exited 0 without drift and 2 with it.
`reconciler apply` then repaired everything in {r['repair_s']:.0f} s ("{r['repair_summary']}": the
recreated container replaces its whole deployment of {r['instances']}, create-then-delete), after
which `reconciler drift` exited 0.

Target: one label-filtered list call per refresh, inspect only what it needs — **{verdict}**:
{len(clean['calls'])} call(s) without drift, {len(dirty['calls'])} with {len(r['made'])} hand-made changes.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=4)
    parser.add_argument("--instances", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="reconciler-bench-refresh-"))
    name = f"bench-rf-{os.urandom(3).hex()}"
    stack_dir = generate_stack(workdir, name, args.deployments, args.instances)
    state_path = workdir / "state" / f"{name}.json"
    common = ["--state", str(state_path)]
    results = {"deployments": args.deployments, "instances": args.instances,
               "containers": args.deployments * args.instances, "machine": machine_summary(docker.from_env().version().get("Version", "?"))}
    counter = CountingClient()
    try:
        _, results["apply_s"] = cli("apply", str(stack_dir), *common, "--auto-approve")
        print(f"applied {results['containers']} containers in {results['apply_s']:.1f} s", flush=True)
        store = StateStore(state_path, name)
        results["clean"] = measure_refresh(counter, store, args.repeat)
        results["naive"] = measure_naive(counter, name, args.repeat)
        results["cli_clean"] = min(cli("drift", str(stack_dir), *common)[1] for _ in range(args.repeat))
        results["made"] = make_drift(counter, store)
        results["dirty"] = measure_refresh(counter, store, args.repeat)
        results["cli_dirty"] = min(cli("drift", str(stack_dir), *common, expect=(2,))[1] for _ in range(args.repeat))
        print(f"no drift: {len(results['clean']['calls'])} call(s), {results['clean']['ms']:.0f} ms; with drift: "
              f"{len(results['dirty']['calls'])} call(s), {results['dirty']['ms']:.0f} ms", flush=True)
        repair, results["repair_s"] = cli("apply", str(stack_dir), *common, "--auto-approve")
        results["repair_summary"] = repair.stdout.strip().splitlines()[-1]
        cli("drift", str(stack_dir), *common)  # exit 0 again, or this raises
    finally:
        _, results["destroy_s"] = cli("destroy", str(stack_dir), *common, "--auto-approve", expect=(0, 1))
        leftovers = counter.client.containers.list(all=True, filters={"label": f"org.reconciler.stack={name}"})
        results["left"] = len(leftovers)
        for container in leftovers:  # the hand-made orphan if the destroy ran before an apply removed it
            container.remove(force=True)
        for network in counter.client.networks.list(filters={"label": f"org.reconciler.stack={name}"}):
            network.remove()
        shutil.rmtree(workdir, ignore_errors=True)
    text = section(results, args.repeat)
    print("\n" + text)
    if not args.no_write:
        replace_section(SECTION, text)
        print(f"updated {BENCHMARKS}")


if __name__ == "__main__":
    main()
