"""Crash safety: kill -9 `reconciler apply` at random moments, then check a new apply converges.

Each trial changes the blue-green stack (force a replacement, move traffic, scale, or destroy),
starts `apply` (or `destroy`) in a subprocess, kills it with SIGKILL after a random delay, then
runs a normal apply and checks: it succeeds, the state file parses, a second plan has no changes,
no container of the stack is left that state does not own, and the endpoint answers.

    python bench/crash_trials.py [--trials 50] [--seed 1] [--write RELIABILITY.md]
    PG_CONN_STR=postgresql://... python bench/crash_trials.py --backend pg [--schema NAME]

With `--backend pg` the stack keeps its state in PostgreSQL (`backend: pg` in its settings) and
the trials read it with `reconciler state pull`.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from gateway_client import GatewayClient  # noqa: E402

CHANGES = ("replace-blue", "move-traffic", "scale-green", "destroy", "replace-both")


@dataclass
class Outcome:
    trials: int = 0
    killed_mid_step: int = 0
    converged: int = 0
    state_parsed: int = 0
    orphans_left: int = 0
    failures: list[str] = field(default_factory=list)
    kill_points: dict[str, int] = field(default_factory=dict)


def reconciler(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True,
                          timeout=timeout)


class Trials:
    def __init__(self, workdir: Path, seed: int, backend: str = "local", schema: str = "crash_trials") -> None:
        self.random = random.Random(seed)
        self.name = f"crash-{seed}-{os.getpid()}"
        self.stack = workdir / self.name
        shutil.copytree(ROOT / "stacks" / "blue-green", self.stack)
        self.backend = backend
        if backend == "pg":
            (self.stack / "reconciler.yml").write_text(f"backend: pg\npg:\n  schema_name: {schema}\n")
            self.state_option: list[str] = []
            self.state = None
        else:
            self.state = workdir / "state" / f"{self.name}.json"
            self.state_option = ["--state", str(self.state)]
        self.client = docker.from_env()
        self.version = 0

    def args(self, command: str) -> list[str]:
        return [command, str(self.stack), *self.state_option, "--auto-approve"]

    def read_state(self) -> dict | None:
        """The stored state (None when there is none yet); ValueError when it does not parse."""
        if self.backend == "pg":
            pulled = reconciler("state", "pull", "--stack", str(self.stack))
            if pulled.returncode != 0:
                raise ValueError(pulled.stderr.strip())
            state = json.loads(pulled.stdout)
            return state if state["lineage"] else None
        return json.loads(self.state.read_text()) if self.state.exists() else None

    def edit(self, file: str, pattern: str, replacement: str) -> None:
        path = self.stack / file
        path.write_text(re.sub(pattern, replacement, path.read_text(), count=1, flags=re.M))

    def change(self, kind: str) -> str:
        self.version += 1
        if kind in ("replace-blue", "replace-both"):
            self.edit("blue.yml", r"^  DEPLOYMENT_NAME: .*$", f"  DEPLOYMENT_NAME: blue-{self.version}")
        if kind == "replace-both":
            self.edit("green.yml", r"^  DEPLOYMENT_NAME: .*$", f"  DEPLOYMENT_NAME: green-{self.version}")
        if kind == "move-traffic":
            blue = self.random.choice([0, 10, 50, 90, 100])
            self.edit("endpoint.yml", r"^  blue: \d+$", f"  blue: {blue}")
            self.edit("endpoint.yml", r"^  green: \d+$", f"  green: {100 - blue}")
        if kind == "scale-green":
            self.edit("green.yml", r"^instance_count: \d+$", f"instance_count: {self.random.choice([1, 2, 3])}")
        return "destroy" if kind == "destroy" else "apply"

    def owned_ids(self) -> set[str]:
        records = (self.read_state() or {"records": []})["records"]
        ids = set()
        for record in records:
            ids |= {i["id"] for i in record["outputs"].get("instances", [])}
            if record["outputs"].get("gateway"):
                ids.add(record["outputs"]["gateway"]["id"])
            # The endpoint's health supervisor (probe and restarter containers).
            ids |= {item["id"] for item in (record["outputs"].get("health") or {}).values() if item}
        return ids

    def labelled_ids(self) -> set[str]:
        return {c.id for c in self.client.containers.list(
            all=True, sparse=True, filters={"label": f"org.reconciler.stack={self.name}"})}

    def trial(self, number: int, outcome: Outcome) -> None:
        kind = self.random.choice(CHANGES)
        command = self.change(kind)
        delay = self.random.uniform(0.0, 3.0)
        process = subprocess.Popen([sys.executable, "-m", "reconciler", *self.args(command)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        time.sleep(delay)
        killed = process.poll() is None
        if killed:
            os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate()[0]
        in_flight = [line.split(":", 1)[0] + ": " + line.split(": ", 1)[1] for line in output.splitlines()
                     if line.endswith("...") and ": " in line]
        point = in_flight[-1] if killed and in_flight else ("before any step" if killed else "after finishing")
        outcome.trials += 1
        outcome.killed_mid_step += int(killed and bool(in_flight))
        key = re.sub(r"[.:].*?: ", ": ", point) if killed and in_flight else point
        outcome.kill_points[key] = outcome.kill_points.get(key, 0) + 1

        label = f"trial {number} ({kind}, killed after {delay:.2f}s at {point})"
        try:
            self.read_state()
            outcome.state_parsed += 1
        except ValueError as error:
            outcome.failures.append(f"{label}: state file does not parse: {error}")
            return
        if command == "destroy":
            self.change("replace-blue")  # and bring it back
        result = reconciler(*self.args("apply"))
        if result.returncode != 0:
            outcome.failures.append(f"{label}: converging apply failed:\n{result.stdout}\n{result.stderr}")
            return
        check = reconciler("plan", str(self.stack), *self.state_option, "--detailed-exitcode")
        if check.returncode != 0:
            outcome.failures.append(f"{label}: plan after converging is not empty:\n{check.stdout}{check.stderr}")
            return
        orphans = self.labelled_ids() - self.owned_ids()
        outcome.orphans_left += len(orphans)
        if orphans:
            outcome.failures.append(f"{label}: {len(orphans)} orphan container(s) left")
            return
        endpoint = [r for r in self.read_state()["records"]
                    if r["address"] == "endpoint.blue-green"][0]["outputs"]
        status, _, body = GatewayClient(endpoint["port"], endpoint["keys"]["primary"]).score()
        if status != 200:
            outcome.failures.append(f"{label}: endpoint answered {status}: {body!r}")
            return
        outcome.converged += 1

    def cleanup(self) -> int:
        reconciler(*self.args("destroy"))
        left = self.labelled_ids()
        for container_id in left:
            self.client.containers.get(container_id).remove(force=True)
        return len(left)


def run_trials(trials: int, seed: int, backend: str = "local", schema: str = "crash_trials") -> Outcome:
    outcome = Outcome()
    with tempfile.TemporaryDirectory() as workdir:
        runner = Trials(Path(workdir), seed, backend, schema)
        try:
            first = reconciler(*runner.args("apply"))
            assert first.returncode == 0, first.stdout + first.stderr
            for number in range(1, trials + 1):
                runner.trial(number, outcome)
        finally:
            left = runner.cleanup()
            if left:
                outcome.failures.append(f"destroy left {left} container(s)")
    return outcome


def report(outcome: Outcome, seconds: float, seed: int) -> str:
    points = "\n".join(f"| {point} | {count} |" for point, count in sorted(outcome.kill_points.items()))
    return f"""## Crash safety (kill -9 during apply)

`python bench/crash_trials.py --trials {outcome.trials} --seed {seed}` on the real Docker Engine
({os.cpu_count()} cores), {seconds:.0f} s. Each trial changes the blue-green stack, kills `apply` or
`destroy` with SIGKILL at a random moment (0-3 s), then runs a normal apply.

| Measure | Result |
|---|---|
| trials | {outcome.trials} |
| killed while a step was running | {outcome.killed_mid_step} |
| state file parsed after the kill | {outcome.state_parsed} / {outcome.trials} |
| converged (apply ok, next plan empty, endpoint answers) | {outcome.converged} / {outcome.trials} |
| orphan containers left after converging | {outcome.orphans_left} |
| data lost (records or keys) | {0 if not outcome.failures else 'see failures'} |

Where the kill landed (step in flight):

| Kill point | Trials |
|---|---|
{points}

Failures: {len(outcome.failures)}
""" + "".join(f"\n- {f}" for f in outcome.failures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", type=Path, help="Replace the crash-safety section of this Markdown file.")
    parser.add_argument("--backend", choices=("local", "pg"), default="local")
    parser.add_argument("--schema", default="crash_trials", help="The pg schema of the trials' state.")
    options = parser.parse_args()
    started = time.monotonic()
    outcome = run_trials(options.trials, options.seed, options.backend, options.schema)
    text = report(outcome, time.monotonic() - started, options.seed)
    print(text)
    if options.write:
        existing = options.write.read_text() if options.write.exists() else "# Reliability\n\n"
        head, marker, tail = existing.partition("## Crash safety (kill -9 during apply)")
        rest = tail.split("\n## ", 1)[1] if "\n## " in tail else ""
        options.write.write_text(head + text + ("\n## " + rest if rest else ""))
    sys.exit(1 if outcome.failures else 0)


if __name__ == "__main__":
    main()
