"""Benchmark: a no-op `reconciler plan --no-refresh` on synthetic stacks of 10, 100 and 1,000
deployments (issue 3). Target: under 1 s at 1,000 deployments without refresh.

For each size it writes a stack to a temporary directory (one shared model directory; one
endpoint per deployment with 100% traffic, since a split must add up to 100), then a state
file whose records equal the desired specs, as if the stack had just been applied. Nothing
touches a container engine. It then times, best of 3:

  * in process: load_stack (parse + schema + graph), read state + make_plan, render text;
  * the `reconciler plan STACK --state FILE --no-refresh` command as a subprocess (wall time,
    including interpreter start-up and imports).

and rewrites the section "## No-op plan (issue 3)" of BENCHMARKS.md with the numbers.

    python bench/bench_plan.py [--sizes 10,100,1000] [--repeat 3] [--no-write] [--profile]

--profile prints where the in-process time goes (cProfile, by own time) for the largest size.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks_md import BENCHMARKS, machine_summary, replace_section
from reconciler.config.stack import load_stack
from reconciler.planning.planner import PlanOptions, make_plan
from reconciler.render.text import render_plan
from reconciler.state.model import StateRecord
from reconciler.state.store import StateStore

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## No-op plan (issue 3)"
TARGET_N, TARGET_SECONDS = 1000, 1.0
NO_CHANGES = "No changes. Your infrastructure matches the configuration."

MODEL_YAML = """\
$schema: https://azuremlschemas.azureedge.net/latest/model.schema.json
name: shared-model
version: 1
path: ./model
type: custom_model
description: one model directory shared by every deployment
"""

ENDPOINT_YAML = """\
$schema: https://azuremlsdk2.blob.core.windows.net/latest/managedOnlineEndpoint.schema.json
name: {endpoint}
description: synthetic endpoint {index}
auth_mode: key
traffic:
  {deployment}: 100
"""

DEPLOYMENT_YAML = """\
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: {deployment}
endpoint_name: {endpoint}
model: azureml:shared-model:1
environment_variables:
  MODEL_BASE_PATH: /var/azureml-app/azureml-models/shared-model/1
  MODEL_NAME: half_plus_two
  API_KEY: not-a-real-key-{index}
environment:
  image: reconciler/demo-tfserving:latest
  inference_config:
    liveness_route:
      port: 8501
      path: /v1/models/half_plus_two
    readiness_route:
      port: 8501
      path: /v1/models/half_plus_two
    scoring_route:
      port: 8501
      path: /v1/models/half_plus_two:predict
instance_type: Standard_DS3_v2
instance_count: 1
readiness_probe:
  initial_delay: 1
  period: 1
liveness_probe:
  initial_delay: 5
  period: 5
tags:
  team: bench
  index: "{index}"
"""


def generate_stack(parent: Path, count: int) -> Path:
    """A valid stack with `count` endpoints, each with one deployment of the shared model."""
    stack = parent / f"bench-{count}"
    model = stack / "model" / "1"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"\x08\x01" * 64)
    (model / "variables" / "variables.index").write_bytes(b"\x00" * 32)
    (stack / "model.yml").write_text(MODEL_YAML)
    for directory in ("endpoints", "deployments"):
        (stack / directory).mkdir()
    for index in range(count):
        names = {"index": index, "endpoint": f"ep-{index:05d}", "deployment": f"dep-{index:05d}"}
        (stack / "endpoints" / f"{names['endpoint']}.yml").write_text(ENDPOINT_YAML.format(**names))
        (stack / "deployments" / f"{names['deployment']}.yml").write_text(DEPLOYMENT_YAML.format(**names))
    return stack


def write_applied_state(stack: Path, state_path: Path) -> int:
    """State whose records equal the desired specs, written as apply writes it."""
    graph = load_stack(stack)
    store = StateStore(state_path, graph.stack)
    store.lock("bench")
    with store:
        state = store.read()
        for resource in graph.resources.values():
            state = state.with_record(StateRecord(str(resource.address), "docker", resource.spec,
                                                  resource.spec_hash, tuple(map(str, resource.depends_on))))
        store.write(state)
    return len(graph.resources)


def time_in_process(stack: Path, state_path: Path) -> dict[str, float]:
    """One no-op plan, phase by phase, as `reconciler plan --no-refresh` runs it (ms)."""
    started = time.perf_counter()
    graph = load_stack(stack)
    loaded = time.perf_counter()
    state = StateStore(state_path, graph.stack).read()
    plan = make_plan(graph, state, PlanOptions(created_at=datetime.now(timezone.utc).isoformat()))
    planned = time.perf_counter()
    text = render_plan(plan, color=False)
    rendered = time.perf_counter()
    if plan.has_changes() or not text.endswith(NO_CHANGES):
        raise SystemExit(f"bench stack {stack.name} is not a no-op plan:\n{text[:2000]}")
    return {"load": (loaded - started) * 1000, "plan": (planned - loaded) * 1000,
            "render": (rendered - planned) * 1000, "total": (rendered - started) * 1000}


def time_cli(stack: Path, state_path: Path) -> float:
    """Wall time of the plan command in a fresh interpreter (s)."""
    # The installed console script, as a user runs it; the same entry point via -c otherwise.
    launcher = [shutil.which("reconciler")] if shutil.which("reconciler") else \
        [sys.executable, "-c", "from reconciler.cli.main import main; main()"]
    command = [*launcher, "plan", str(stack), "--state", str(state_path), "--no-refresh", "--detailed-exitcode"]
    env = {**os.environ, "NO_COLOR": "1"}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or NO_CHANGES not in result.stdout:
        raise SystemExit(f"`{' '.join(command)}` exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return elapsed


def measure(count: int, repeat: int, workdir: Path, profile: bool = False) -> dict:
    stack = generate_stack(workdir, count)
    state_path = workdir / f"bench-{count}.state.json"
    resources = write_applied_state(stack, state_path)
    runs = [time_in_process(stack, state_path) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["total"])
    cli = min(time_cli(stack, state_path) for _ in range(repeat))
    if profile:
        import cProfile
        import pstats
        profiler = cProfile.Profile()
        profiler.runcall(time_in_process, stack, state_path)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return {"n": count, "resources": resources, **best, "cli": cli}


def section(results: list[dict], repeat: int) -> str:
    at_target = next((r for r in results if r["n"] == TARGET_N), None)
    if at_target is None:
        verdict = f"not measured (run with {TARGET_N} in --sizes)"
    else:
        # Judged on the whole command, start-up included: that is what a user waits for.
        passed = at_target["cli"] < TARGET_SECONDS
        verdict = (f"**{'PASS' if passed else 'FAIL'}**: {at_target['cli']:.2f} s for the whole command "
                   f"({at_target['total']:.0f} ms of it in load + plan + render)")
    rows = "\n".join(
        f"| {r['n']:,} | {r['resources']:,} | {r['load']:.0f} | {r['plan']:.0f} | {r['render']:.1f} | "
        f"{r['total']:.0f} | {r['cli']:.2f} |" for r in results)
    return f"""{SECTION}

`python bench/bench_plan.py` — a no-op `reconciler plan --no-refresh`: synthetic stacks of N
deployments (one endpoint each, one shared model directory, so 2N+1 resources) whose state
file already matches the configuration. In-process phases are the best of {repeat} runs: load =
`load_stack` (YAML, JSON Schema, graph, model fingerprint), plan = read state + `make_plan`,
render = text rendering. CLI wall = `reconciler plan STACK --state FILE --no-refresh` in a new
interpreter (start-up and imports included), best of {repeat}.

Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on {machine_summary()}.

| N deployments | resources | load ms | plan ms | render ms | total ms | CLI wall s |
|---:|---:|---:|---:|---:|---:|---:|
{rows}

Target: < {TARGET_SECONDS:g} s at {TARGET_N:,} deployments without refresh — {verdict}.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated deployment counts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    parser.add_argument("--profile", action="store_true", help="cProfile the largest size")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    try:
        results = []
        sizes = [int(n) for n in args.sizes.split(",")]
        for count in sizes:
            results.append(measure(count, args.repeat, workdir, args.profile and count == max(sizes)))
            r = results[-1]
            print(f"N={count}: load {r['load']:.0f} ms, plan {r['plan']:.0f} ms, render {r['render']:.1f} ms, "
                  f"total {r['total']:.0f} ms, CLI {r['cli']:.2f} s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = section(results, args.repeat)
    print("\n" + text)
    if not args.no_write:
        replace_section(SECTION, text)
        print(f"updated {BENCHMARKS}")


if __name__ == "__main__":
    main()
