"""Benchmark: the endpoint gateway on a real Docker Engine (issue 5). Two targets:

  * latency overhead of the gateway: p99 (gateway) - p99 (direct) < 1 ms;
  * zero-downtime rollout: no failed request while a deployment is replaced and traffic moves.

It copies stacks/blue-green to a temporary directory under a unique stack name, applies it with
the CLI (`reconciler apply DIR --state TMP/state.json --auto-approve`, a subprocess), and reads the
gateway port, the primary key and the host port of blue's first container from the state file.

Latency (issue 15: with the request semantics on, the docs/endpoint.md rules): N sequential
keep-alive POSTs of {"instances": [1.0, 2.0, 5.0]} straight to blue's
container (`/v1/models/half_plus_two:predict`) and N through the gateway (`/score`, Bearer key,
`azureml-model-deployment: blue`, so both reach the same container), one http.client connection
each, interleaved in blocks of 100 (which path goes first alternates per block) to cancel drift,
after a warm-up. Timed with time.perf_counter_ns around request + full response read. Then the
same at concurrency 1 and 8 with hey (per-request latencies from its CSV output), in blocks that
alternate which path goes first. Blue is published on 127.0.0.1 for the direct path and allows
16 requests in flight (2 x 8 x 1), so no 429 is measured.

Rollout: 4 client threads (tests/integration/gateway_client.GatewayClient, keep-alive, no
deployment header so the 90/10 split applies) send steady load while the benchmark
  1. edits blue.yml (DEPLOYMENT_NAME: blue -> blue-v2, forces a create-then-delete replacement), applies;
  2. moves traffic 90/10 -> 0/100, applies (in place: the gateway reloads);
  3. moves traffic 0/100 -> 100/0, applies.
A request fails when it gets a non-200 answer or a connection error. A keep-alive connection the
server closed between requests, retried once on a fresh connection by GatewayClient, is not a
failure; such retries are counted and shown separately. It also checks that once an apply has
returned no answer comes from where traffic no longer goes (old blue container, 0% deployment).

The stack is always destroyed at the end, and no container labelled org.reconciler.stack=<name>
may remain. The results replace the section "## Gateway under rollout (issue 5)" of BENCHMARKS.md.

    python bench/bench_gateway.py [--requests 3000] [--no-write]
"""
from __future__ import annotations

import argparse
import gc
import http.client
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from gateway_client import SAMPLE, GatewayClient  # noqa: E402

from reconciler.drivers.docker.engine import remove_released_network  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from benchmarks_md import publish  # noqa: E402

SECTION = "## Gateway under rollout (issue 5)"
ENDPOINT = "blue-green"
LABEL_STACK = "org.reconciler.stack"
DIRECT_PATH = "/v1/models/half_plus_two:predict"
EXPECTED = [2.5, 3.0, 4.5]
BLOCK = 100
WARMUP = 200
THREADS = 4
TARGET_OVERHEAD_MS = 1.0
PERCENTILES = (50, 90, 99)
CONCURRENCY = (1, 8)


# -- the stack, through the CLI ----------------------------------------------------------------
class Stack:
    def __init__(self, workdir: Path) -> None:
        self.name = f"bench-gw-{secrets.token_hex(3)}"
        self.dir = workdir / self.name  # the stack is named after its directory
        shutil.copytree(ROOT / "stacks" / "blue-green", self.dir)
        # Direct = blue's port published on 127.0.0.1 (deployments publish none by default), and
        # room for CONCURRENCY[-1] requests in flight (2 x 8 x 1 = 16) so that no 429 is measured.
        self.edit("blue.yml", "instance_count: 1\n", "instance_count: 1\nlocal: {publish_ports: true}\n")
        for document in ("blue.yml", "green.yml"):
            path = self.dir / document
            path.write_text(path.read_text() + "request_settings: {max_concurrent_requests_per_instance: 8}\n")
        self.state = workdir / "state" / "state.json"
        self.state.parent.mkdir()

    def cli(self, *args: str, check: bool = True) -> tuple[str, float]:
        command = [sys.executable, "-c", "from reconciler.cli.main import main; main()", *args]
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "NO_COLOR": "1"})
        elapsed = time.monotonic() - started
        output = result.stdout + result.stderr
        if check and result.returncode != 0:
            raise RuntimeError(f"`reconciler {' '.join(args)}` exited {result.returncode}:\n{output}")
        return output, elapsed

    def apply(self) -> tuple[str, float]:
        return self.cli("apply", str(self.dir), "--state", str(self.state), "--auto-approve")

    def destroy(self) -> tuple[str, float]:
        return self.cli("destroy", str(self.dir), "--state", str(self.state), "--auto-approve", check=False)

    def edit(self, file: str, old: str, new: str) -> None:
        path = self.dir / file
        text = path.read_text()
        if old not in text:
            raise RuntimeError(f"{old!r} not in {path}")
        path.write_text(text.replace(old, new, 1))

    def records(self) -> dict:
        return {r["address"]: r for r in json.loads(self.state.read_text())["records"]}


def expect_summary(output: str, summary: str) -> None:
    if summary not in output:
        raise RuntimeError(f"expected {summary!r} in the apply output:\n{output}")


# -- latency ---------------------------------------------------------------------------------
def timed_post(connection: http.client.HTTPConnection, path: str, headers: dict, expect_deployment: str | None) -> int:
    started = time.perf_counter_ns()
    connection.request("POST", path, body=SAMPLE, headers=headers)
    response = connection.getresponse()
    body = response.read()
    elapsed = time.perf_counter_ns() - started
    if response.status != 200 or json.loads(body)["predictions"] != EXPECTED:
        raise RuntimeError(f"POST {path} answered {response.status}: {body[:200]!r}")
    if expect_deployment and response.getheader("azureml-model-deployment") != expect_deployment:
        raise RuntimeError(f"gateway answered from {response.getheader('azureml-model-deployment')!r}")
    return elapsed


def percentile(sorted_values: list, p: float):
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def measure_latency(gateway_port: int, key: str, direct_port: int, n: int) -> dict:
    direct = http.client.HTTPConnection("127.0.0.1", direct_port, timeout=10)
    gateway = http.client.HTTPConnection("127.0.0.1", gateway_port, timeout=10)
    plain = {"Content-Type": "application/json"}
    routed = {**plain, "Authorization": f"Bearer {key}", "azureml-model-deployment": "blue"}
    paths = {"direct": (direct, DIRECT_PATH, plain, None), "gateway": (gateway, "/score", routed, "blue")}
    samples: dict[str, list[int]] = {"direct": [], "gateway": []}
    try:
        for name in ("direct", "gateway"):
            for _ in range(WARMUP):
                timed_post(*paths[name])
        gc.collect()
        gc.disable()
        started = time.monotonic()
        done = 0
        block = 0
        while done < n:
            size = min(BLOCK, n - done)
            order = ("direct", "gateway") if block % 2 == 0 else ("gateway", "direct")
            for name in order:
                connection, path, headers, deployment = paths[name]
                samples[name].extend(timed_post(connection, path, headers, deployment) for _ in range(size))
            done += size
            block += 1
        wall = time.monotonic() - started
    finally:
        gc.enable()
        direct.close()
        gateway.close()
    return with_latency_stats({"n": n, "blocks": block, "wall": wall}, samples)


def with_latency_stats(result: dict, samples: dict[str, list[int]]) -> dict:
    """`result` with each path's percentiles, mean and max (ms, from ns samples) and the
    gateway's overhead over direct per percentile."""
    result["stats"] = {}
    for name, values in samples.items():
        values.sort()
        result["stats"][name] = {**{p: percentile(values, p) / 1e6 for p in PERCENTILES},
                                 "mean": sum(values) / len(values) / 1e6, "max": values[-1] / 1e6}
    result["overhead"] = {p: result["stats"]["gateway"][p] - result["stats"]["direct"][p] for p in PERCENTILES}
    return result


def hey_latencies(url: str, headers: dict, concurrency: int, n: int) -> list[int]:
    """Per-request latencies (ns) of `n` POSTs by hey at `concurrency` (Go, keep-alive where the
    server allows it): the Python client's own GIL would dominate at concurrency 8."""
    command = ["hey", "-n", str(n), "-c", str(concurrency), "-m", "POST", "-T", "application/json",
               "-d", SAMPLE.decode(), "-o", "csv", "-t", "10"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    result = subprocess.run(command + [url], capture_output=True, text=True, timeout=120, check=True)
    rows = [line.split(",") for line in result.stdout.splitlines()[1:] if line]
    statuses = Counter(row[6] for row in rows)
    if set(statuses) != {"200"}:
        raise RuntimeError(f"hey {url}: statuses {dict(statuses)} (expected only 200)")
    # hey leaves requests that failed to connect out of its CSV: the demo server's listen
    # backlog (5, Python's default) overflows now and then at concurrency 8, direct or not.
    HEY_ERRORS[url] = HEY_ERRORS.get(url, 0) + n - len(rows)
    return [int(float(row[0]) * 1e9) for row in rows]


HEY_ERRORS: dict[str, int] = {}


def measure_concurrent(gateway_port: int, key: str, direct_port: int, concurrency: int, n: int) -> dict:
    """Like measure_latency, at `concurrency` with hey: blocks alternate gateway/direct."""
    urls = {"direct": (f"http://127.0.0.1:{direct_port}{DIRECT_PATH}", {}),
            "gateway": (f"http://127.0.0.1:{gateway_port}/score",
                        {"Authorization": f"Bearer {key}", "azureml-model-deployment": "blue"})}
    block = max(BLOCK * concurrency, 200)
    for name in urls:
        hey_latencies(*urls[name], concurrency, WARMUP)
    samples: dict[str, list[int]] = {"direct": [], "gateway": []}
    started = time.monotonic()
    blocks = 0
    while len(samples["gateway"]) < n:
        size = min(block, n - len(samples["gateway"]))
        for name in (("direct", "gateway") if blocks % 2 == 0 else ("gateway", "direct")):
            samples[name] += hey_latencies(*urls[name], concurrency, size)
        blocks += 1
    return with_latency_stats({"n": n, "blocks": blocks, "block": block, "wall": time.monotonic() - started,
                               "concurrency": concurrency,
                               "errors": {name: HEY_ERRORS.pop(urls[name][0], 0) for name in urls}}, samples)


# -- rollout ---------------------------------------------------------------------------------
class TracingConnection(http.client.HTTPConnection):
    """Remembers how it last failed, so the retries GatewayClient makes can be classified."""

    failure: str | None = None

    def request(self, *args, **kwargs):
        try:
            return super().request(*args, **kwargs)
        except Exception as error:
            self.failure = f"sending: {type(error).__name__}"
            raise

    def getresponse(self):
        try:
            return super().getresponse()
        except Exception as error:
            self.failure = f"awaiting the answer: {type(error).__name__}"
            raise


class Load:
    """THREADS keep-alive clients sending through the gateway until stopped."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.stop = threading.Event()
        self.results: list[list[tuple]] = [[] for _ in range(THREADS)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(THREADS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _client(self) -> GatewayClient:
        client = GatewayClient(self.port, self.key)
        client.connection = TracingConnection("127.0.0.1", self.port, timeout=client.timeout)
        return client

    def _run(self, index: int) -> None:
        client = self._client()
        out = self.results[index]
        while not self.stop.is_set():
            connection = client.connection
            started = time.monotonic()
            try:
                status, headers, body = client.score()
                retried = (connection.failure or "unknown") if client.connection is not connection else None
                ok_body = status != 200 or json.loads(body).get("predictions") == EXPECTED
                # (start, end, status, routed-to, answered-by, how the first connection failed when
                #  GatewayClient retried on a fresh one, error)
                out.append((started, time.monotonic(), status, headers.get("azureml-model-deployment"),
                            headers.get("x-demo-deployment"), retried,
                            None if ok_body else f"wrong body {body[:100]!r}"))
                if retried:  # GatewayClient reconnected with a plain connection: trace the next one too
                    client.close()
                    client = self._client()
            except (OSError, http.client.HTTPException) as error:
                out.append((started, time.monotonic(), None, None, None, connection.failure,
                            f"{type(error).__name__}: {error}"))
                client.close()
                client = self._client()
        client.close()

    def all(self) -> list[tuple]:
        return sorted((r for rs in self.results for r in rs), key=lambda r: r[0])


def summarise(requests: list[tuple]) -> dict:
    failed = [r for r in requests if r[2] != 200 or r[6]]
    latencies = sorted(r[1] - r[0] for r in requests)
    return {"total": len(requests),
            "non200": sum(1 for r in requests if r[2] is not None and r[2] != 200),
            "errors": sum(1 for r in requests if r[2] is None),
            "bad_body": sum(1 for r in requests if r[2] == 200 and r[6]),
            "failed": len(failed), "retried": sum(1 for r in requests if r[5] and r[2] is not None),
            "retry_kinds": Counter(r[5] for r in requests if r[5] and r[2] is not None),
            "statuses": Counter(r[2] for r in failed), "examples": [r[6] or f"HTTP {r[2]}" for r in failed[:5]],
            "routed": Counter(r[3] for r in requests if r[2] == 200),
            "answered_by": Counter(r[4] for r in requests if r[2] == 200),
            "p99_ms": percentile(latencies, 99) * 1e3 if latencies else 0.0,
            "max_ms": latencies[-1] * 1e3 if latencies else 0.0}


def gateway_container(client: docker.DockerClient, stack: str):
    (container,) = client.containers.list(filters={"label": [f"{LABEL_STACK}={stack}", "org.reconciler.role=gateway"]})
    return container.id, container.attrs["State"]["StartedAt"]


def run_rollout(stack: Stack, client: docker.DockerClient, port: int, key: str) -> dict:
    gateway_before = gateway_container(client, stack.name)
    phases = [
        ("replace blue (env change)", "blue.yml", "  DEPLOYMENT_NAME: blue\n", "  DEPLOYMENT_NAME: blue-v2\n",
         "Resources: 1 added, 1 changed, 1 destroyed.",
         # after apply: blue answers only from the new containers
         lambda r: r[3] == "green" and r[4] == "green" or r[3] == "blue" and r[4] == "blue-v2"),
        ("traffic 90/10 -> 0/100", "endpoint.yml", "  blue: 90\n  green: 10", "  blue: 0\n  green: 100",
         "Resources: 0 added, 1 changed, 0 destroyed.", lambda r: r[3] == "green"),
        ("traffic 0/100 -> 100/0", "endpoint.yml", "  blue: 0\n  green: 100", "  blue: 100\n  green: 0",
         "Resources: 0 added, 1 changed, 0 destroyed.", lambda r: r[3] == "blue" and r[4] == "blue-v2"),
    ]
    load = Load(port, key)
    windows = []
    load.start()
    try:
        load_started = time.monotonic()
        time.sleep(2)
        for name, file, old, new, summary, after_ok in phases:
            stack.edit(file, old, new)
            began = time.monotonic()
            output, _ = stack.apply()
            returned = time.monotonic()
            expect_summary(output, summary)
            if name.startswith("replace"):
                expect_summary(output, f"deployment.{ENDPOINT}/blue: Destruction of old complete")
            windows.append({"name": name, "began": began, "returned": returned, "after_ok": after_ok})
            time.sleep(1.5)  # and keep sending once the apply has returned
    finally:
        load.finish()
    load_ended = time.monotonic()
    gateway_after = gateway_container(client, stack.name)
    requests = load.all()
    result = {"overall": summarise(requests), "seconds": load_ended - load_started,
              "gateway_kept": gateway_before == gateway_after, "phases": [],
              "baseline": summarise([r for r in requests if r[0] < windows[0]["began"]]),
              "baseline_s": windows[0]["began"] - load_started}
    for i, window in enumerate(windows):
        end = windows[i + 1]["began"] if i + 1 < len(windows) else load_ended
        during = [r for r in requests if window["began"] <= r[0] < window["returned"]]
        after = [r for r in requests if window["returned"] <= r[0] < end and r[2] == 200]
        stale = [r for r in after if not window["after_ok"](r)]
        result["phases"].append({"name": window["name"], "apply_s": window["returned"] - window["began"],
                                 "during": summarise(during), "after_total": len(after),
                                 "stale_after": len(stale), "stale_examples": Counter((r[3], r[4]) for r in stale)})
    return result


# -- report ----------------------------------------------------------------------------------
def machine(client: docker.DockerClient) -> str:
    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()} "
            f"({platform.python_implementation()}), Docker Engine {client.version()['Version']}, "
            f"{platform.system()} {platform.release()}")


def verdict(passed: bool) -> str:
    return "**PASS**" if passed else "**FAIL**"


def busy_warning(info: dict) -> str:
    """A note when other work shared the cores: then the latencies measure that contention."""
    load = float(info["loadavg"].split(" / ")[0])
    if load <= (os.cpu_count() or 1):
        return ""
    return (f"\n**The machine was busy** (load average {load:.1f} on {os.cpu_count()} cores, other work running): the\n"
            "latencies below measure that contention more than the gateway; the latency targets are only\n"
            "meaningful on an otherwise idle machine (the rollout's failed-request count is meaningful either way).\n")


def concurrent_section(results: list[dict]) -> str:
    """The hey runs: one table per concurrency, the target judged at the highest one."""
    parts = [f"""### Latency overhead at concurrency {", ".join(str(r["concurrency"]) for r in results)} (issue 15)

With the request semantics on (per-deployment hop over a unix socket with its in-flight limit,
x-request-id, the JSON access log line and the Lua metrics of every request), every connection
kept alive: the client's (by the gateway's edge, which a route change does not reload), the
edge's to the routing nginx, the hop's and the model's. `hey -c C` (Go, keep-alive on both
paths). What each part costs: "Gateway latency, cause by cause (issue 15)".
N = {results[0]['n']:,} requests per path and concurrency, in blocks of
at least {results[0]['block']:,} that alternate which path goes first, after {WARMUP} warm-up
requests per path. Milliseconds:
"""]
    for result in results:
        stats = result["stats"]
        rows = "\n".join(
            f"| {name} | " + " | ".join(f"{stats[name][p]:.3f}" for p in PERCENTILES)
            + f" | {stats[name]['mean']:.3f} | {stats[name]['max']:.2f} |" for name in ("direct", "gateway"))
        rows += "\n| **overhead** | " + " | ".join(f"**{result['overhead'][p]:+.3f}**" for p in PERCENTILES) + " | | |"
        errors = ", ".join(f"{name} {count}" for name, count in result["errors"].items())
        parts.append(f"""Concurrency {result['concurrency']} ({result['blocks']} blocks, {result['wall']:.1f} s; requests hey
could not connect, warm-up included: {errors}):

| path | p50 | p90 | p99 | mean | max |
|---|---:|---:|---:|---:|---:|
{rows}
""")
    top = results[-1]
    parts.append(f"Target: p99 overhead < {TARGET_OVERHEAD_MS:g} ms at concurrency {top['concurrency']} — "
                 f"{verdict(top['overhead'][99] < TARGET_OVERHEAD_MS)}: {top['overhead'][99]:+.3f} ms.\n")
    return "\n".join(parts)


def section(info: dict) -> str:
    lat, roll = info["latency"], info["rollout"]
    stats = lat["stats"]
    rows = "\n".join(
        f"| {name} | " + " | ".join(f"{stats[name][p]:.3f}" for p in PERCENTILES)
        + f" | {stats[name]['mean']:.3f} | {stats[name]['max']:.2f} |" for name in ("direct", "gateway"))
    rows += "\n| **overhead** (gateway - direct) | " + " | ".join(f"**{lat['overhead'][p]:+.3f}**" for p in PERCENTILES) \
        + f" | {stats['gateway']['mean'] - stats['direct']['mean']:+.3f} | |"
    latency_ok = lat["overhead"][99] < TARGET_OVERHEAD_MS
    overall = roll["overall"]
    rollout_ok = overall["failed"] == 0
    b = roll["baseline"]
    phase_rows = [f"| (steady load before the first apply) | ({roll['baseline_s']:.1f}) | {b['total']:,} | {b['non200']} | "
                  f"{b['errors']} | {b['retried']} | {b['p99_ms']:.1f} | {b['max_ms']:.0f} | | |"]
    for phase in roll["phases"]:
        d = phase["during"]
        phase_rows.append(
            f"| {phase['name']} | {phase['apply_s']:.1f} | {d['total']:,} | {d['non200']} | {d['errors']} | "
            f"{d['retried']} | {d['p99_ms']:.1f} | {d['max_ms']:.0f} | {phase['after_total']:,} | {phase['stale_after']} |")
    phase_rows = "\n".join(phase_rows)
    failures = ""
    if overall["failed"]:
        failures = (f"\nFailed requests by status (None = connection error): {dict(overall['statuses'])}; "
                    f"first ones: {overall['examples']}.\n")
    stale = sum(p["stale_after"] for p in roll["phases"])
    stale_examples = sum((p["stale_examples"] for p in roll["phases"]), Counter())
    if stale_examples:
        failures += f"\nStale answers (routed to, answered by): {dict(stale_examples)}.\n"
    retry_kinds = ", ".join(f"{count} x {kind}" for kind, count in overall["retry_kinds"].most_common()) or "none"
    cleanup = info["cleanup"]
    return f"""{SECTION}

`python bench/bench_gateway.py` — stacks/blue-green (2 deployments of the demo TF Serving image, 1
instance each, behind the endpoint's nginx gateway) applied under a fresh stack name with the CLI,
on the local Docker Engine; every client and server is on this one machine.

Measured {info['date']} in one run on {info['machine']}; load average {info['loadavg']} at
the start. Apply of the stack {info['apply_s']:.1f} s, destroy {cleanup['destroy_s']:.1f} s; containers labelled
org.reconciler.stack=<stack> left after the destroy: {cleanup['left']}.
{busy_warning(info)}
### Latency overhead

N = {lat['n']:,} sequential keep-alive POSTs of `{SAMPLE.decode()}` per path (after {WARMUP} warm-up
requests each), interleaved in {lat['blocks']} blocks of {BLOCK} alternating which path goes first;
one http.client connection per path, time.perf_counter_ns around request + full response. Direct =
blue's container on its published host port (`{DIRECT_PATH}`); gateway = `/score` with the
Bearer key and `azureml-model-deployment: blue` (same container, one more hop through nginx and the
stack's bridge network). {lat['wall']:.1f} s for the {2 * lat['n']:,} timed requests. Milliseconds:

| path | p50 | p90 | p99 | mean | max |
|---|---:|---:|---:|---:|---:|
{rows}

Target: p99 overhead < {TARGET_OVERHEAD_MS:g} ms — {verdict(latency_ok)}: {lat['overhead'][99]:+.3f} ms
(gateway p99 {stats['gateway'][99]:.3f} ms vs direct p99 {stats['direct'][99]:.3f} ms).

{concurrent_section(info["concurrent"])}
### Zero-downtime rollout

{THREADS} client threads (tests/integration/gateway_client.py `GatewayClient`, keep-alive, no
deployment header, so the endpoint's split applies) sent requests through the gateway for
{roll['seconds']:.1f} s while three applies ran one after the other, 1.5 s of load after each:
replace blue (environment variable changed: create-then-delete, gateway reloaded onto the new
container, old one removed), traffic 90/10 -> 0/100 and 0/100 -> 100/0 (in place: a graceful reload).
The gateway container was {'the same one (same id, not restarted)' if roll['gateway_kept'] else '**not** the same one (replaced or restarted)'} throughout.
"during" = requests started while the apply command ran; "stale after" = 200 answers to requests
started after the apply had returned that still came from where traffic no longer goes (blue's old
container, or a deployment at 0%).

| apply | apply s | requests during | non-200 | conn. errors | retried on new conn. | p99 ms | max ms | requests after | stale after |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{phase_rows}

Whole run: **{overall['total']:,} requests, {overall['non200']} non-200, {overall['errors']} connection errors,
{overall['bad_body']} wrong bodies** ({overall['retried']} keep-alive connections closed by the gateway
between requests and retried on a fresh one, not counted as failures; how the old connection failed:
{retry_kinds}); 200s routed {dict(sorted(overall['routed'].items()))},
answered by containers {dict(sorted(overall['answered_by'].items()))}; {stale} stale answers after an apply returned.
{failures}
Target: failed requests = 0 — {verdict(rollout_ok)}: {overall['failed']} failed of {overall['total']:,}.
"""


def leftovers(client: docker.DockerClient, stack: str) -> list:
    return client.containers.list(all=True, filters={"label": f"{LABEL_STACK}={stack}"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", "-n", type=int, default=3000, help="timed requests per path")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = parser.parse_args()

    client = docker.from_env()
    client.ping()
    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(client),
            "loadavg": " / ".join(f"{v:.2f}" for v in os.getloadavg())}
    workdir = Path(tempfile.mkdtemp(prefix="reconciler-bench-gw-"))
    stack = Stack(workdir)
    print(f"stack {stack.name} in {workdir}", flush=True)
    error = None
    try:
        _, info["apply_s"] = stack.apply()
        records = stack.records()
        endpoint = records[f"endpoint.{ENDPOINT}"]["outputs"]
        port, key = endpoint["port"], endpoint["keys"]["primary"]
        direct_port = records[f"deployment.{ENDPOINT}/blue"]["outputs"]["instances"][0]["ports"]["8501"]
        print(f"applied in {info['apply_s']:.1f} s: gateway 127.0.0.1:{port}, blue 127.0.0.1:{direct_port}", flush=True)

        info["latency"] = measure_latency(port, key, direct_port, args.requests)
        info["concurrent"] = [measure_concurrent(port, key, direct_port, c, args.requests) for c in CONCURRENCY]
        for result in info["concurrent"]:
            print(f"hey -c {result['concurrency']}: overhead " + "  ".join(
                f"p{p} {v:+.3f} ms" for p, v in result["overhead"].items()), flush=True)
        for name, stats in info["latency"]["stats"].items():
            print(f"{name:8} " + "  ".join(f"p{p} {stats[p]:.3f} ms" for p in PERCENTILES), flush=True)
        print("overhead " + "  ".join(f"p{p} {v:+.3f} ms" for p, v in info["latency"]["overhead"].items()), flush=True)

        info["rollout"] = run_rollout(stack, client, port, key)
        o = info["rollout"]["overall"]
        print(f"rollout: {o['total']} requests, {o['non200']} non-200, {o['errors']} connection errors, "
              f"{o['bad_body']} wrong bodies, {o['retried']} retried on a fresh connection", flush=True)
    except Exception as exc:  # noqa: BLE001 - reported after the cleanup below
        error = exc
    finally:
        output, destroy_s = stack.destroy()
        left = leftovers(client, stack.name)
        info["cleanup"] = {"destroy_s": destroy_s, "left": len(left)}
        if left:
            print(f"LEFT BEHIND after destroy: {[c.name for c in left]}\n{output}", file=sys.stderr)
            for container in left:  # ours by label; do not leak them into the machine
                container.remove(force=True)
        for network in client.networks.list(filters={"label": f"{LABEL_STACK}={stack.name}"}):
            print(f"network left behind after destroy: {network.name}", file=sys.stderr)
            remove_released_network(network)
        shutil.rmtree(workdir, ignore_errors=True)
    if error is not None:
        raise error

    publish(SECTION, section(info), not args.no_write)
    return 1 if info["cleanup"]["left"] else 0


if __name__ == "__main__":
    sys.exit(main())
