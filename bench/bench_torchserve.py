"""Benchmark: the TorchServe stand-in (#14). Image size; cold build (no layer cache, base image
present, wheels resolved on the host), rebuild from the layer cache, and images/build.sh's
up-to-date check; start-to-ready of a TorchServe deployment shaped like Azure ML's densenet
example (tiny real archive), readiness on its model's route, over --repeat applies: from the
apply's start to "Apply complete", and to the first answer through the gateway.

    python bench/bench_torchserve.py [--repeat 3] [--no-write] [--skip-cold]
The cold build goes to a tag of its own (reconciler/torchserve:bench-cold), removed afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks_md import publish

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from torchserve_stack import (SAMPLE, TORCHSERVE_IMAGE, build_example_image, deployment_yaml,  # noqa: E402
                              make_archives, write_stack)

SECTION = "## TorchServe stand-in (issue 14)"
BUILD = ROOT / "images" / "torchserve" / "build.sh"


def timed_build(tag: str, **env: str) -> float:
    started = time.perf_counter()
    subprocess.run([str(BUILD), tag], check=True, capture_output=True, env={**os.environ, **env})
    return time.perf_counter() - started


def start_to_ready(root: Path, image: str) -> tuple[float, float]:
    """(apply start -> apply complete, apply start -> a 200 from /predictions through the gateway)."""
    name = f"bench-ts-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / name
        shutil.copytree(root / "fast", stack / "fast")
        write_stack(stack, name, {"blue": deployment_yaml("blue", name, image, "fast/torchserve", "tiny=tiny.mar",
                                                          "/predictions/tiny")}, {"blue": 100})
        state = Path(tmp) / "state.json"
        request = Path(tmp) / "request.json"
        request.write_text(json.dumps(SAMPLE))
        cli = [sys.executable, "-m", "reconciler"]
        started = time.perf_counter()
        try:
            subprocess.run([*cli, "apply", str(stack), "--state", str(state), "--auto-approve"], check=True,
                           capture_output=True, cwd=ROOT)
            applied = time.perf_counter() - started
            subprocess.run([*cli, "invoke", name, "--request-file", str(request), "--state", str(state)],
                           check=True, capture_output=True, cwd=ROOT)
            answered = time.perf_counter() - started
        finally:
            subprocess.run([*cli, "destroy", str(stack), "--state", str(state), "--auto-approve"],
                           capture_output=True, cwd=ROOT)
    return applied, answered


def main() -> None:
    import docker
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()
    client = docker.from_env()
    rows = []
    if not args.skip_cold:
        cold = timed_build("reconciler/torchserve:bench-cold", NO_CACHE="1")
        client.images.remove("reconciler/torchserve:bench-cold")
        rows.append(("cold build (no layer cache; base image present)", f"{cold:.0f} s"))
    layer_cached = timed_build("reconciler/torchserve:bench-cached")
    client.images.remove("reconciler/torchserve:bench-cached")
    up_to_date = timed_build(TORCHSERVE_IMAGE)
    rows.append(("rebuild from the layer cache (wheels resolved again, context sent)", f"{layer_cached:.1f} s"))
    rows.append(("`images/build.sh` when the image is up to date (recipe label matches)", f"{up_to_date:.1f} s"))
    size = client.images.get(TORCHSERVE_IMAGE).attrs["Size"]
    rows.insert(0, ("image size (`reconciler/torchserve:latest-cpu`)", f"{size / 1e9:.2f} GB"))
    with tempfile.TemporaryDirectory() as tmp:
        root = make_archives(client, Path(tmp) / "archives", ["fast/torchserve/tiny:0.5,-0.5:0"])
        image = build_example_image(client, f"reconciler/torchserve-example:bench-{secrets.token_hex(3)}")
        try:
            runs = [start_to_ready(root, image) for _ in range(args.repeat)]
        finally:
            client.images.remove(image, force=True)
    applied = statistics.median(r[0] for r in runs)
    answered = statistics.median(r[1] for r in runs)
    rows.append((f"apply start -> ready (readiness on /predictions/tiny), median of {len(runs)}", f"{applied:.1f} s"))
    rows.append(("apply start -> first answer through the gateway", f"{answered:.1f} s"))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    text = "\n".join([
        SECTION, "",
        f"`python bench/bench_torchserve.py` ({when}, 2 cores shared with other work). The image is Debian 12 + "
        "Debian's JRE 17 + a venv with torch 2.13 CPU, torchserve 0.12 and torch-model-archiver 0.12 "
        "(the venv is ~0.8 GB of it, torch nearly all). A start is a JVM and one Python worker importing torch.", "",
        "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""])
    publish(SECTION, text, not args.no_write)


if __name__ == "__main__":
    main()
