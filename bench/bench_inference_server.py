"""Benchmark: start-to-ready of an Azure ML inference-server deployment (issue 14) on the local
Docker Engine: the quickstart's blue deployment (model-1's scikit-learn model, its score.py).

  * server: `docker run -d` of the scoring image (the inference base plus the quickstart's
    packages) with model-1 and its code folder mounted read-only where Azure ML puts them and
    Azure ML's variables set, then GET / (the readiness route) at the container's IP every
    10 ms until it answers 200: the server's own start (Python, gunicorn, the script's
    imports, init() loading the model);
  * apply: `reconciler apply STACK --auto-approve` (a new interpreter: CLI start included) from
    empty of the quickstart stack with blue only (readiness initial_delay 0, period 1 s), then
    destroy; interleaved with the server rows, one of each per round.

Everything the bench makes is labelled or named after its own run and removed at the end.

    python bench/bench_inference_server.py [--rounds 5] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import docker

from bench_rollout import answers
from benchmarks_md import publish

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests" / "conformance")]
from conformance_examples import corpus_dir  # noqa: E402
from scoring import scoring_image  # noqa: E402

SECTION = "## Inference server start-to-ready (issue 14)"
POLL = 0.01
WAIT_LIMIT = 180.0
BENCH_LABEL = "org.reconciler.bench"
PROBE = "readiness_probe:\n  initial_delay: 0\n  period: 1\n  failure_threshold: 120\n"


def server_start(client: docker.DockerClient, image: str, online: Path, network: str, run_id: str) -> float:
    started = time.perf_counter()
    container = client.containers.run(
        image, detach=True, network=network, labels={BENCH_LABEL: run_id}, read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,size=64m"}, cap_drop=["ALL"],
        environment={"AML_APP_ROOT": "/var/azureml-app/onlinescoring/", "AZUREML_ENTRY_SCRIPT": "score.py",
                     "AZUREML_MODEL_DIR": "/var/azureml-app/azureml-models/blue-model/1"},
        mounts=[docker.types.Mount("/var/azureml-app/azureml-models/blue-model/1/model",
                                   str(online / "model-1" / "model"), type="bind", read_only=True),
                docker.types.Mount("/var/azureml-app/onlinescoring", str(online / "model-1" / "onlinescoring"),
                                   type="bind", read_only=True)])
    try:
        deadline = time.monotonic() + WAIT_LIMIT
        host = None
        while time.monotonic() < deadline:
            if host is None:
                networks = client.api.inspect_container(container.id)["NetworkSettings"]["Networks"] or {}
                host = (networks.get(network) or {}).get("IPAddress") or None
            if host and answers(host, 5001, "/"):  # the inference server's readiness route
                return time.perf_counter() - started
            time.sleep(POLL)
        raise RuntimeError(f"the inference server did not answer GET / within {WAIT_LIMIT} s:\n"
                           + container.logs(tail=30).decode(errors="replace"))
    finally:
        container.remove(force=True)


def quickstart_stack(online: Path, image: str) -> Path:
    stack = online / "managed" / f"bench-{secrets.token_hex(3)}"
    stack.mkdir()
    sample = online / "managed" / "sample"
    (stack / "endpoint.yml").write_text((sample / "endpoint.yml").read_text() + "traffic: {blue: 100}\n")
    text = (sample / "blue-deployment.yml").read_text()
    text = re.sub(r"environment:\s*\n(  \S.*\n)+", f"environment:\n  image: {image}\n", text) + PROBE
    (stack / "blue-deployment.yml").write_text(text)
    (stack / "reconciler.yml").write_text("root: ../..\n")
    return stack


def cli(*args: str, env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=ROOT, env=env, capture_output=True,
                            timeout=WAIT_LIMIT * 2)
    if result.returncode != 0:
        raise RuntimeError(f"reconciler {' '.join(args)} exited {result.returncode}: "
                           f"{(result.stdout + result.stderr).decode()[-1500:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args()
    client = docker.from_env()
    image = scoring_image(client)
    corpus = corpus_dir()
    if corpus is None:
        sys.exit("no Azure ML examples corpus (../shared/corpus/azureml-examples)")
    run_id = secrets.token_hex(4)
    work = Path(tempfile.mkdtemp(prefix="bench-infsrv-"))
    online = work / "online"
    shutil.copytree(corpus / "cli" / "endpoints" / "online", online)
    network = client.networks.create(f"bench-infsrv-{run_id}", labels={BENCH_LABEL: run_id})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RECONCILER_CACHE_DIR": str(work / "cache")}
    load = os.getloadavg()
    server, apply = [], []
    try:
        for round_number in range(options.rounds):
            server.append(server_start(client, image, online, network.name, run_id))
            stack = quickstart_stack(online, image)
            state = work / "state" / f"{stack.name}.json"
            apply.append(cli("apply", str(stack), "--state", str(state), "--auto-approve", env=env))
            cli("destroy", str(stack), "--state", str(state), "--auto-approve", env=env)
    finally:
        for container in client.containers.list(all=True, filters={"label": f"{BENCH_LABEL}={run_id}"}):
            container.remove(force=True)
        network.remove()
        shutil.rmtree(work, ignore_errors=True)

    def row(name: str, what: str, times: list[float]) -> str:
        return (f"| {name} | {what} | {len(times)} | {statistics.median(times):.2f} | "
                f"{min(times):.2f}-{max(times):.2f} |")

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        SECTION, "",
        f"Measured {now} by `python bench/bench_inference_server.py` on the local Docker Engine; nproc "
        f"{os.cpu_count()}, load average {', '.join(f'{x:.2f}' for x in load)} at the start (a shared machine: "
        "absolute times move between runs). The deployment is the quickstart's blue (managed/sample: model-1's "
        "scikit-learn LinearRegression, its score.py) in the scoring image: reconciler/azureml-inference-base "
        "plus the quickstart conda file's packages (numpy 2.3.1, scikit-learn 1.7.0, scipy 1.16.0, joblib).", "",
        "| row | what it measures | runs | median (s) | min-max (s) |", "|---|---|---:|---:|---:|",
        row("server", "`docker run -d` of the scoring image, model-1 and its code folder mounted read-only, until "
                      "GET / (the readiness route) answers 200 at the container's IP (10 ms poll): the Azure ML "
                      "inference server's start, the script's imports and init() loading the model", server),
        row("apply", "`reconciler apply --auto-approve` from empty of the quickstart stack with blue only (readiness "
                     "initial_delay 0, period 1 s): CLI start, model and code copies into the store, the container, "
                     "its readiness, the gateway", apply), "",
        f"The inference server answers its readiness route {statistics.median(server):.2f} s after its container "
        "is started (median). With Azure ML's default readiness probe (initial_delay 10 s, period 10 s), as the "
        "quickstart has it, a deployment is ready at the first probe after that: at 10 s or 20 s.",
    ])
    publish(SECTION, text, write=not options.no_write)


if __name__ == "__main__":
    main()
