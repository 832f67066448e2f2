"""Benchmark: building the quickstart environment (issue 14).

The Azure ML quickstart's environment (model-1/environment/conda.yaml: numpy, scikit-learn,
scipy and the Azure ML inference server, on mcr.microsoft.com/azureml/... mapped to the local
stand-in reconciler/azureml-inference-base:latest) built the way apply builds it
(drivers/common/builds.py), three times:

  * cold: no image of that digest, nothing of it in Docker's layer cache;
  * cached: the same environment again, as a second apply sees it (the tag exists: reused);
  * after a small change: one more package in the conda file's `pip:` section (new digest): the
    layer of the conda packages comes from Docker's layer cache, the pip section's runs again.

and the built image's size next to its base's. Builds only images labelled with a bench identity
and removes them at the end.

    python bench/bench_builds.py [--no-write]
"""
from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "conformance"))

from benchmarks_md import publish  # noqa: E402
from conformance_examples import corpus_dir  # noqa: E402

from reconciler.config.image_map import rule_from_option  # noqa: E402
from reconciler.config.settings import LoadOptions  # noqa: E402
from reconciler.config.stack import load_stack  # noqa: E402
from reconciler.drivers.base import StepContext  # noqa: E402
from reconciler.drivers.common import builds  # noqa: E402
from reconciler.state.model import StateRecord  # noqa: E402

SECTION = "## Environment builds (issue 14)"
BASE = "reconciler/azureml-inference-base:latest"
DEPLOYMENT = """$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: blue
endpoint_name: bench
environment:
  conda_file: conda.yaml
  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest
instance_type: Standard_DS3_v2
"""
ENDPOINT = "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json\nname: bench\n"


def environment_record(stack: Path) -> StateRecord:
    options = LoadOptions(images=(rule_from_option(f"mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04={BASE}"),))
    [environment] = load_stack(stack, options=options).by_kind("environment")
    return StateRecord(environment.address, "docker", environment.spec, environment.spec_hash)


def timed_build(client, ctx: StepContext, record: StateRecord) -> tuple[float, StateRecord]:
    started = time.perf_counter()
    built = builds.build(client, ctx, record)
    return time.perf_counter() - started, built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    corpus = corpus_dir()
    if corpus is None:
        sys.exit("no Azure ML corpus (../shared/corpus/azureml-examples)")
    client = docker.from_env(timeout=600)
    work = Path(tempfile.mkdtemp(prefix="bench-builds-"))
    stack = work / "bench"
    stack.mkdir()
    conda = (corpus / "cli/endpoints/online/model-1/environment/conda.yaml").read_text()
    (stack / "conda.yaml").write_text(conda)
    (stack / "deployment.yml").write_text(DEPLOYMENT)
    (stack / "endpoint.yml").write_text(ENDPOINT)
    lines: list[str] = []
    ctx = StepContext(stack="bench", stack_dir=stack, state_dir=work, records=lambda: {},
                      progress=lambda text: lines.append(text), identity=f"bench-{secrets.token_hex(4)}")
    made: list[StateRecord] = []
    try:
        record = environment_record(stack)
        assert builds.image_present(client, record.spec["image"]) is None, "a cold build needs the tag absent"
        cold, built = timed_build(client, ctx, record)
        made.append(built)
        cached, _ = timed_build(client, ctx, record)
        (stack / "conda.yaml").write_text(conda.replace("    - joblib\n", "    - joblib\n    - six\n"))
        changed_record = environment_record(stack)
        changed, changed_built = timed_build(client, ctx, changed_record)
        made.append(changed_built)
        size = built.outputs["size_bytes"]
        base_size = client.images.get(BASE).attrs["Size"]
        python = built.outputs.get("python", "?")
    finally:
        for record in made:
            builds.remove(client, ctx, record)
        shutil.rmtree(work, ignore_errors=True)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        SECTION, "",
        f"`python bench/bench_builds.py` ({when}, 2 cores, PyPI through the machine's TLS proxy): the quickstart "
        f"environment (model-1/environment/conda.yaml: numpy 2.3.1, scikit-learn 1.7.0, scipy 1.16.0, "
        f"azureml-inference-server-http 1.4.1, inference-schema, joblib) on `{BASE}` (Python {python}), "
        "built as apply builds it.", "",
        "| build | time |", "|---|---:|",
        f"| cold (nothing cached) | {cold:.1f} s |",
        f"| cached (second apply: the digest tag exists, reused) | {cached:.2f} s |",
        "| after a small change (one more package in the `pip:` section: the conda packages' layer from "
        f"Docker's cache) | {changed:.1f} s |",
        "", f"Built image: {size / 1e6:.0f} MB (its base: {base_size / 1e6:.0f} MB, so the packages add "
            f"{(size - base_size) / 1e6:.0f} MB). A changed layer downloads its packages again "
            "(pip runs with --no-cache-dir); a change to the conda packages reinstalls both layers.",
    ])
    publish(SECTION, text, not args.no_write)


if __name__ == "__main__":
    main()
