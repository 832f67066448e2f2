"""Benchmark: the apply engine with a driver that does nothing (issue 16).

Creates N deployments (one shared model, one endpoint per 10 deployments) from an empty state
through `reconciler.apply.Applier` with the real state store in a temporary directory, so what
is measured is the engine itself: the step graph, the scheduling, and state durability after
every step. Side by side in one run:

  * journal:    today's engine (state.store.write_step: one fsync'd journal line per step,
                folded into the file when the lock is released);
  * whole file: the same engine with each step written as a whole state file (copy to .backup,
                json.dumps(indent=2), two fsyncs and a directory fsync), as before issue 16.

Target: 1,000 deployments in under 2 s, linear from 100 to 5,000 (journal). The whole-file
variant is run only up to --whole-max (it is quadratic: 57 s at 1,000 on this machine).

    python bench/bench_apply_engine.py [--sizes 100,500,1000,2000,5000] [--whole-max 500] [--no-write]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks_md import publish
from reconciler.addresses import Address
from reconciler.apply import Applier
from reconciler.config.graph import DesiredGraph, DesiredResource, spec_hash
from reconciler.drivers.base import StepContext
from reconciler.planning.planner import PlanOptions, make_plan
from reconciler.state.model import StateRecord
from reconciler.state.store import StateStore

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Apply engine, no-op driver (issue 16)"
STACK = "bench"


class NoOpDriver:
    """Returns the record a step asks for; touches nothing."""

    name = "docker"
    routes_endpoint_after_create = False  # the engine's own cost, one step per change as before

    def preflight(self, specs) -> None:
        pass

    def create(self, address, spec, spec_hash_, ctx: StepContext, prior=None) -> StateRecord:
        return StateRecord(address, self.name, spec, spec_hash_, status="ready")

    def update(self, record, spec, spec_hash_, ctx) -> StateRecord:
        return StateRecord(record.address, self.name, spec, spec_hash_, status="ready")

    def delete(self, record, ctx) -> None:
        pass

    def finish(self, ctx) -> None:
        pass


class WholeFileStore(StateStore):
    """Every step a whole-file write, as the engine did before the journal."""

    def write_step(self, state, changed=None):
        return self.write(state)


def desired(count: int) -> DesiredGraph:
    resources = {}
    model = Address("model", "shared:1")
    resources[model] = DesiredResource(model, {"name": "shared", "version": "1", "content_digest": "sha256:0"},
                                       "sha256:m", (), "bench.yml:1")
    endpoints: dict[int, list[Address]] = {}
    for index in range(count):
        endpoint = f"ep-{index // 10}"
        address = Address("deployment", f"{endpoint}/d{index}")
        spec = {"endpoint": endpoint, "name": f"d{index}", "image": "demo:1", "instance_count": 1,
                "routes": {"scoring": {"port": 8501, "path": "/score"}},
                "request_settings": {"request_timeout_ms": 5000}, "model": {"address": str(model)},
                "environment_variables": {"INDEX": str(index)}}
        resources[address] = DesiredResource(address, spec, spec_hash(spec), (model,), "bench.yml:1")
        endpoints.setdefault(index // 10, []).append(address)
    for number, deployments in endpoints.items():
        address = Address("endpoint", f"ep-{number}")
        spec = {"name": f"ep-{number}", "auth_mode": "key", "traffic": {deployments[0].short_name: 100},
                "mirror_traffic": {}}
        resources[address] = DesiredResource(address, spec, spec_hash(spec), tuple(deployments), "bench.yml:1")
    return DesiredGraph(STACK, dict(sorted(resources.items())))


def apply_once(count: int, store_class) -> tuple[float, int]:
    """Seconds for the engine to create `count` deployments, and bytes written to state."""
    with tempfile.TemporaryDirectory() as directory:
        store = store_class(Path(directory) / f"{STACK}.json", STACK)
        plan = make_plan(desired(count), store.read(), PlanOptions())
        started = time.perf_counter()
        store.lock("bench")
        with store:
            result = Applier(NoOpDriver(), store, store.read(), plan,
                             {"stack": STACK, "stack_dir": Path(directory), "state_dir": Path(directory)},
                             parallelism=10).run()
        elapsed = time.perf_counter() - started
        assert result.ok and len(store.read().records) == len(plan.actionable)
        return elapsed, (Path(directory) / f"{STACK}.json").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500,1000,2000,5000")
    parser.add_argument("--whole-max", type=int, default=500)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    for count in [int(s) for s in args.sizes.split(",")]:
        journal, size = apply_once(count, StateStore)
        whole = apply_once(count, WholeFileStore)[0] if count <= args.whole_max else None
        rows.append((count, journal, whole, size))
        print(f"{count:>5} deployments: journal {journal:6.2f} s"
              + (f", whole file {whole:6.2f} s ({whole / journal:4.1f}x)" if whole else "") +
              f", state {size / 1e6:.1f} MB", flush=True)
    first = rows[0]
    lines = [SECTION, "",
             f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python bench/bench_apply_engine.py` "
             "(one run, both variants side by side): N deployments (+1 model, N/10 endpoints) created from an "
             "empty state by the apply engine with a driver that does nothing and the real state store.", "",
             "| deployments | steps | journal (s) | per step (ms) | whole-file writes (s) | ratio | state file |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for count, journal, whole, size in rows:
        steps = count + 1 + count // 10
        lines.append(f"| {count:,} | {steps:,} | {journal:.2f} | {1000 * journal / steps:.2f} | "
                     + (f"{whole:.2f} | {whole / journal:.1f}x" if whole else "not run (quadratic) | ")
                     + f" | {size / 1e6:.1f} MB |")
    biggest = rows[-1]
    per_step_first = first[1] / (first[0] + 1 + first[0] // 10)
    per_step_last = biggest[1] / (biggest[0] + 1 + biggest[0] // 10)
    at_1000 = next((r[1] for r in rows if r[0] == 1000), None)
    lines += ["", f"Target: 1,000 deployments in under 2 s: "
              + (f"{at_1000:.2f} s, {'PASS' if at_1000 < 2 else 'FAIL'}" if at_1000 else "not measured")
              + f". Linear: {per_step_first * 1000:.2f} ms per step at {first[0]:,}, "
              f"{per_step_last * 1000:.2f} ms at {biggest[0]:,} ({per_step_last / per_step_first:.2f}x)."]
    text = "\n".join(lines) + "\n"
    publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    main()
