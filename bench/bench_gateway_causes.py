"""Benchmark: what the gateway's added latency is made of (issue 15). Side effects: a stack on
the local Docker Engine, destroyed at the end; the section "## Gateway latency, cause by cause
(issue 15)" of BENCHMARKS.md.

Applies stacks/blue-green as bench_gateway.py does (blue published on 127.0.0.1 for the direct
path), then rewrites the running gateway's nginx.conf into variants, each one change away from
what reconciler renders, reloads it, and measures it with hey at concurrency 1 and 8: blocks that
alternate gateway and direct (blue's container), so each variant's overhead is against direct
measured in the same minutes. Variants that drop a behaviour (no second hop: no 429 limit; no
Lua: no metrics or 424) are measurements only, never configs reconciler writes. Then times the
gateway's re-point (`_reload_nginx`: check, reload, drain wait) against the former sequence of
separate engine calls.

    python bench/bench_gateway_causes.py [--requests 1000] [--blocks 2] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
import bench_gateway as bench  # noqa: E402
from benchmarks_md import publish  # noqa: E402

from reconciler.drivers.docker import gateway as docker_gateway  # noqa: E402

SECTION = "## Gateway latency, cause by cause (issue 15)"
ACCESS_LOG = re.compile(r"access_log /dev/stdout reconciler_json[^;]*;")
LUA_PHASES = re.compile(r"\n\s*(?:log|access|header_filter)_by_lua_block \{[^}]*\}")
HOP_KEEPALIVE = re.compile(r"(server unix:/run/reconciler-d_\w+\.sock;)\n\s*keepalive \d+;")
HOP_PASS = re.compile(r"proxy_pass http://hop_d_\w+;")
MODEL_TRY = re.compile(r'reconciler_models\.choose\("(target_server\d?)"\)\n(\s*)\}\n(\s*)proxy_pass http://reconciler_models\$target_path;')


def same(text: str) -> str:
    return text


def no_client_keepalive(edge: str) -> str:
    return edge.replace("keepalive_timeout 75s;", "keepalive_timeout 0;")


def no_hop_keepalive(text: str) -> str:
    return HOP_KEEPALIVE.sub(r"\1", text)


def no_model_keepalive(text: str) -> str:
    """Each try's proxy_pass to its server's name, resolved by nginx per request (before)."""
    return MODEL_TRY.sub(lambda m: f'reconciler_models.choose("{m[1]}")\n{m[2]}}}\n{m[3]}proxy_pass http://${m[1]}$target_path;', text)


def no_second_hop(text: str) -> str:
    """The client-facing location straight to the model through the hop's own balancer and
    keep-alive pool: what the second pass costs. No 429 limit, and a 408 frees the slot at
    once (measurement only)."""
    return HOP_PASS.sub('rewrite_by_lua_block { reconciler_models.choose("target_server") }\n'
                        "            proxy_pass http://reconciler_models$target_path;", text)


def no_lua(text: str) -> str:
    return ACCESS_LOG.sub("access_log off;", LUA_PHASES.sub("", text))


def no_access_log(text: str) -> str:
    return ACCESS_LOG.sub("access_log off;", text)


def two_workers(text: str) -> str:
    return text.replace("worker_processes 1;", "worker_processes 2;")


def variants() -> list[tuple[str, object, object, bool]]:
    """(what, routing config change, edge config change, over the bridge): (a)-(f) of issue 15's
    brief, each undoing one thing of what reconciler renders or removing one feature."""
    return [
        ("as rendered (client, hop and model connections kept alive)", same, same, False),
        ("(a) no client keep-alive (edge `keepalive_timeout 0`, as before)", same, no_client_keepalive, False),
        ("(b) both paths to container IPs (no docker-proxy)", same, same, True),
        ("(c) no keep-alive to the hop (as before)", no_hop_keepalive, same, False),
        ("(c) no second hop: the model's pool from the client-facing pass (no 429 limit: measurement only)", no_second_hop, same, False),
        ("(d) no Lua phases, no access log (measurement only)", no_lua, same, False),
        ("(d) no access log", no_access_log, same, False),
        ("(e) routing nginx with worker_processes 2", two_workers, same, False),
        ("(f) no keep-alive to the model (as before)", no_model_keepalive, same, False),
        ("(a)+(c)+(f): no connection kept alive (as before, plus the edge's pass)",
         lambda text: no_model_keepalive(no_hop_keepalive(text)), no_client_keepalive, False),
    ]


def address(container) -> str:
    return next(iter(container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]


class Gateway:
    """The stack's running gateway: its config file and a reload that waits for the drain."""

    def __init__(self, client: docker.DockerClient, stack: bench.Stack, outputs: dict) -> None:
        self.container = client.containers.get(outputs["gateway"]["id"])
        (self.config,) = stack.state.parent.glob(f"gateways/*/{bench.ENDPOINT}/nginx.conf")
        self.edge = self.config.parent / docker_gateway.EDGE_CONFIG
        self.rendered, self.rendered_edge = self.config.read_text(), self.edge.read_text()
        self.outputs = outputs

    def load(self, text: str, edge: str | None = None) -> None:
        edge = self.rendered_edge if edge is None else edge
        reload_edge = edge != self.edge.read_text()
        docker_gateway.write_config(self.config.parent, text)
        docker_gateway.write_config(self.config.parent, edge, docker_gateway.EDGE_CONFIG)
        docker_gateway._reload_nginx(self.container, self.config.parent, {"name": bench.ENDPOINT}, self.outputs,
                                     None, [], reload_edge)

    def former_reload(self) -> None:
        """The re-point before issue 16: `nginx -t`, `getent`, the worker pids, `nginx -s reload`
        as separate engine calls, then worker pids every 50 ms until the old ones are gone."""
        workers = ["sh", "-c", "m=$(cat /run/nginx.pid); for p in /proc/[0-9]*; do grep -qa 'nginx: worker[ ]process' "
                               "$p/cmdline 2>/dev/null && grep -q \"^PPid:[[:space:]]*$m\\$\" $p/status && "
                               "echo ${p#/proc/}; done; true"]
        run = self.container.exec_run
        run(["nginx", "-t", "-q", "-c", docker_gateway.CONFIG_FILE])
        old = set(run(workers).output.decode().split())
        run(["nginx", "-s", "reload", "-c", docker_gateway.CONFIG_FILE])
        deadline = time.monotonic() + docker_gateway.DRAIN_TIMEOUT_SECONDS
        while time.monotonic() < deadline and old & set(run(workers).output.decode().split()):
            time.sleep(0.05)


def cgroup_cpu_ns(container_id: str) -> int | None:
    """CPU time the container has used (cgroup v1 cpuacct or v2 cpu.stat), None when this
    machine does not show it (a remote engine, another cgroup layout)."""
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage")
    if v1.exists():
        return int(v1.read_text())
    for v2 in (Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat"),
               Path(f"/sys/fs/cgroup/docker/{container_id}/cpu.stat")):
        if v2.exists():
            usage = next(line for line in v2.read_text().splitlines() if line.startswith("usage_usec"))
            return int(usage.split()[1]) * 1000
    return None


def nginx_cpu_ns(container) -> dict[str, int]:
    """CPU time of the gateway's nginx workers, summed per nginx: "edge" (the master runs
    edge.conf) and "routing" (nginx.conf). From /proc, so the same machine as the engine."""
    rows = container.top(ps_args="-eo pid,ppid,args")["Processes"]
    masters = {pid: ("edge" if docker_gateway.EDGE_CONFIG in args else "routing")
               for pid, _, args in rows if "master process" in args}
    used = {"edge": 0, "routing": 0}
    for pid, ppid, args in rows:
        if "worker process" in args and ppid in masters:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue  # a worker that just exited (a reload)
            used[masters[ppid]] += (int(fields[11]) + int(fields[12])) * 10**9 // os.sysconf("SC_CLK_TCK")
    return used


def measure(urls: dict, concurrency: int, n: int, blocks: int, gateway=None, model=None) -> dict:
    """Latency of both paths, and (when the containers are given) the CPU the gateway path
    costs per request: the gateway's nginx workers and the model's container."""
    for url in urls.values():
        bench.hey_latencies(*url, concurrency, 100)
    samples: dict[str, list[int]] = {"direct": [], "gateway": []}
    cpu = {"edge": 0, "routing": 0, "model": 0}
    for block in range(blocks):
        for name in (("direct", "gateway") if block % 2 == 0 else ("gateway", "direct")):
            watched = name == "gateway" and gateway is not None
            before = (nginx_cpu_ns(gateway), cgroup_cpu_ns(model.id)) if watched else None
            samples[name] += bench.hey_latencies(*urls[name], concurrency, n // blocks)
            if watched:
                nginx, model_ns = nginx_cpu_ns(gateway), cgroup_cpu_ns(model.id)
                for which in ("edge", "routing"):
                    cpu[which] += nginx[which] - before[0].get(which, 0)
                cpu["model"] += (model_ns or 0) - (before[1] or 0)
    per_request = {k: v / 1000 / len(samples["gateway"]) for k, v in cpu.items()} if gateway is not None else {}
    return bench.with_latency_stats({"load": os.getloadavg()[0], "cpu_us": per_request}, samples)


def reload_times(gateway: Gateway, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"one exec (now)": [], "separate engine calls (before)": []}
    for _ in range(rounds):
        for name, reload in (("one exec (now)", lambda: gateway.load(gateway.rendered)),
                             ("separate engine calls (before)", gateway.former_reload)):
            started = time.monotonic()
            reload()
            times[name].append(time.monotonic() - started)
    return times


def section(info: dict) -> str:
    rows = []
    for what, by_concurrency in info["variants"].items():
        cells = []
        for concurrency in bench.CONCURRENCY:
            result = by_concurrency[concurrency]
            cells.append(f"{result['overhead'][50]:+.2f} | {result['overhead'][99]:+.2f} | "
                         f"{result['stats']['direct'][99]:.2f} | {result['load']:.1f}")
        cpu = by_concurrency[bench.CONCURRENCY[-1]]["cpu_us"]
        cells.append(f"{cpu['edge']:.0f} + {cpu['routing']:.0f} | {cpu['model']:.0f}" if cpu else " | ")
        rows.append(f"| {what} | " + " | ".join(cells) + " |")
    reloads = "\n".join(f"| {name} | {statistics.median(values) * 1e3:.0f} | {max(values) * 1e3:.0f} |"
                        for name, values in info["reloads"].items())
    table = "\n".join(rows)
    return f"""{SECTION}

`python bench/bench_gateway_causes.py` — measured {info['date']} on {info['machine']}; load average
{info['loadavg']} at the start (a shared machine: compare rows with each other,
not with other runs). Each row is the running gateway's config one change away from what reconciler
renders (routing nginx.conf or the edge's edge.conf), reloaded, then {info['n']:,} hey requests per path and concurrency in {info['blocks']} blocks alternating
gateway and direct (blue's container through its published port, i.e. through docker-proxy like the
gateway's own port, unless the row says otherwise). Overhead = gateway - direct, milliseconds;
"load" = 1-minute load average after the row. CPU = microseconds of CPU per request on the gateway
path at c=8 (the edge's and the routing nginx's workers, from /proc; the model's container, from
its cgroup). It moves less between runs than the percentiles do (about +-15 % against +-100 %),
and at c=8 on 2 cores, where hey, docker-proxy, nginx and the model share the CPU, what the
gateway adds to the latency follows it.

| variant | c=1 +p50 | c=1 +p99 | c=1 direct p99 | load | c=8 +p50 | c=8 +p99 | c=8 direct p99 | load | CPU edge + routing (us) | CPU model (us) |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{table}

The gateway's re-point after a change (`reload` in drivers/docker/gateway.py: `nginx -t`, the name
wait, the graceful reload and the wait until the old workers are gone), {info['rounds']} rounds, milliseconds:

| re-point | median | max |
|---|---:|---:|
{reloads}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", "-n", type=int, default=1000, help="timed requests per path, variant, concurrency")
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="re-points timed per way")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    client = docker.from_env()
    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": bench.machine(client),
            "loadavg": " / ".join(f"{v:.2f}" for v in os.getloadavg()), "n": args.requests,
            "blocks": args.blocks, "rounds": args.rounds, "variants": {}}
    workdir = Path(tempfile.mkdtemp(prefix="reconciler-bench-gwc-"))
    stack = bench.Stack(workdir)
    try:
        stack.apply()
        records = stack.records()
        outputs = records[f"endpoint.{bench.ENDPOINT}"]["outputs"]
        blue = records[f"deployment.{bench.ENDPOINT}/blue"]["outputs"]["instances"][0]
        gateway = Gateway(client, stack, outputs)
        blue_container = client.containers.get(blue["id"])
        headers = {"Authorization": f"Bearer {outputs['keys']['primary']}", "azureml-model-deployment": "blue"}
        try:
            for what, change, change_edge, bridge in variants():
                gateway.load(change(gateway.rendered), change_edge(gateway.rendered_edge))
                urls = {"direct": (f"http://{address(blue_container)}:8501{bench.DIRECT_PATH}" if bridge else
                                   f"http://127.0.0.1:{blue['ports']['8501']}{bench.DIRECT_PATH}", {}),
                        "gateway": (f"http://{address(gateway.container)}:8080/score" if bridge else
                                    f"http://127.0.0.1:{outputs['port']}/score", headers)}
                info["variants"][what] = {c: measure(urls, c, args.requests, args.blocks, gateway.container,
                                                     blue_container) for c in bench.CONCURRENCY}
                print(what, {c: {p: round(v, 2) for p, v in r["overhead"].items()}
                             for c, r in info["variants"][what].items()}, flush=True)
        finally:
            gateway.load(gateway.rendered)
        info["reloads"] = reload_times(gateway, args.rounds)
    finally:
        stack.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    publish(SECTION, section(info), not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
