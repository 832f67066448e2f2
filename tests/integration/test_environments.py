"""Environments built on the real engine (#14): a conda file on the Azure ML inference base stand-in
is built through the machine's route to PyPI, reused when unchanged, rebuilt (its deployment replaced
create-before-destroy) when it changes, and its image removed by destroy; a Dockerfile build with its
FROM mapped; conda in a Dockerfile on a base without conda fails with the conda message; no route to
PyPI names the package. Tiny pure-Python packages keep the builds to seconds."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness import StackRun, invoke_sample

INFERENCE_BASE = "reconciler/azureml-inference-base:latest"
LABEL_IDENTITY = "org.reconciler.identity"
SETTINGS = """$schema: https://reconciler.local/schemas/reconcilerStack.schema.json
images:
  - name: mcr.microsoft.com/azureml/*
    newName: reconciler/azureml-inference-base
    newTag: latest
  - name: docker.io/tensorflow/serving
    newName: reconciler/demo-tfserving
    newTag: latest
"""
CONDA = """name: tiny
channels: [conda-forge]
dependencies:
  - python=3.12
  - pip=25.1.1
  - six=1.16.0
  - pip:
    - tomli==2.0.1
"""
# Answers POST /score with the versions of the packages the build installed.
SERVER = ("import json, six, tomli, http.server as h\n"
          "class H(h.BaseHTTPRequestHandler):\n"
          "    def do_GET(self): self.answer({})\n"
          "    def do_POST(self): self.answer({'six': six.__version__})\n"
          "    def answer(self, body):\n"
          "        data = json.dumps(body).encode(); self.send_response(200)\n"
          "        self.send_header('Content-Length', str(len(data))); self.end_headers(); self.wfile.write(data)\n"
          "h.ThreadingHTTPServer(('0.0.0.0', 8000), H).serve_forever()\n")
DEPLOYMENT = """$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: tiny
endpoint_name: half-plus-two
environment:
  conda_file: conda.yaml
  image: mcr.microsoft.com/azureml/minimal-py312-inference:latest
  inference_config:
    liveness_route: {port: 8000, path: /}
    readiness_route: {port: 8000, path: /}
    scoring_route: {port: 8000, path: /score}
local:
  command: ["python", "-c", %s]
instance_type: Standard_DS3_v2
instance_count: 1
readiness_probe: {initial_delay: 0, period: 1, failure_threshold: 60}
""" % json.dumps(SERVER)


@pytest.fixture
def built(tmp_path, docker_client):
    try:
        docker_client.images.get(INFERENCE_BASE)
    except Exception:  # noqa: BLE001
        pytest.skip(f"image {INFERENCE_BASE} missing: run images/build.sh")
    run = StackRun(tmp_path, docker_client)
    (run.dir / "reconciler.yml").write_text(SETTINGS)
    yield run
    run.cleanup()
    for image in docker_client.images.list(filters={"label": f"org.reconciler.stack={run.name}"}):
        docker_client.images.remove(image.id, force=True)


def conda_stack(run: StackRun, conda: str = CONDA) -> None:
    (run.dir / "conda.yaml").write_text(conda)
    (run.dir / "deployment.yml").write_text(DEPLOYMENT)
    run.edit("endpoint.yml", "tfserving: 100", "tiny: 100")


def environment(run: StackRun) -> dict:
    [record] = [r for a, r in run.records().items() if a.startswith("environment.")]
    return record


def answer(run: StackRun, tmp_path: Path) -> dict:
    return invoke_sample(run, tmp_path)


def test_a_conda_environment_is_built_reused_rebuilt_and_removed(built, docker_client, tmp_path):
    conda_stack(built)
    first = built.apply()
    assert "environment.half-plus-two-tiny:1: build step 1/" in first.output
    assert "conda file asks python=3.12, image has 3.11.2; packages are installed for 3.11" in first.output
    tag = environment(built)["spec"]["image"]
    image = docker_client.images.get(tag)
    assert image.labels[LABEL_IDENTITY] == json.loads(built.state.read_text())["lineage"]
    assert answer(built, tmp_path) == {"six": "1.16.0"}
    assert "/tmp/reconciler-build" not in " ".join(image.attrs["Config"].get("Env") or [])
    assert "PIP_CERT=/tmp" not in json.dumps(image.attrs["Config"])

    again = built.plan()
    assert again.exit_code == 0 and "No changes." in again.output and "will be built" not in again.output
    logs = built.run("logs", "environment.half-plus-two-tiny:1", "--state", str(built.state))
    assert logs.exit_code == 0 and "Successfully installed" in logs.output and "Step 1/" in logs.output

    built.edit("conda.yaml", "six=1.16.0", "six=1.17.0")
    planned = built.plan()
    assert "environment.half-plus-two-tiny:1 will be rebuilt" in planned.output
    assert "deployment.half-plus-two/tiny must be replaced (new one created before the old one is destroyed)" \
        in planned.output
    rebuilt = built.apply()
    lines = rebuilt.output.splitlines()
    order = [lines.index(text) for text in ("deployment.half-plus-two/tiny: Creating...",
                                            "endpoint.half-plus-two: Modifying...",
                                            "deployment.half-plus-two/tiny: Destroying old...",
                                            "environment.half-plus-two-tiny:1: Destroying old...")]
    assert order == sorted(order), rebuilt.output
    # Only the pip layer ran again: the base and the CA bundle layers came from Docker's cache.
    assert "Using cache" in built.run("logs", "environment.half-plus-two-tiny:1", "--state",
                                      str(built.state)).output
    assert answer(built, tmp_path) == {"six": "1.17.0"}
    new_tag = environment(built)["spec"]["image"]
    assert new_tag != tag and not docker_client.images.list(filters={"reference": tag})

    destroyed = built.run("destroy", str(built.dir), "--state", str(built.state), "--auto-approve")
    assert destroyed.exit_code == 0, destroyed.output
    assert not docker_client.images.list(filters={"reference": new_tag})


def test_no_route_to_an_index_fails_the_build_naming_the_package(built, docker_client, tmp_path):
    # An index nothing answers on, as a build without a route to PyPI sees it (conda files may
    # name an index in their pip section, as pip requirement files do).
    # The pip section's options apply to its own packages, as conda applies them.
    conda_stack(built, CONDA.replace("  - pip:\n", "  - pip:\n    - --index-url https://127.0.0.1:9/simple\n"))
    failed = built.apply(expect=1)
    assert re.search(r"pip found no route to a package index for tomli==2\.0\.1 \(Failed to establish a new "
                     r"connection", failed.output), failed.output
    assert "RECONCILER_BUILD_CA" in failed.output
    assert environment(built)["status"] == "tainted"


DOCKERFILE = """FROM docker.io/tensorflow/serving:latest
ENV MODEL_NAME=half_plus_two
COPY half_plus_two /models/half_plus_two
"""


def test_a_dockerfile_build_maps_its_from_and_serves(built, docker_client, tmp_path):
    (built.dir / "serving.Dockerfile").write_text(DOCKERFILE)
    built.edit("deployment.yml", "  image: reconciler/demo-tfserving:latest",
               "  build:\n    path: .\n    dockerfile_path: serving.Dockerfile")
    planned = built.plan()
    assert "FROM docker.io/tensorflow/serving:latest -> reconciler/demo-tfserving:latest" in planned.output
    built.apply()
    tag = environment(built)["spec"]["image"]
    assert invoke_sample(built, tmp_path) == {"predictions": [2.5, 3.0, 4.5]}
    assert docker_client.images.get(tag).labels["org.reconciler.address"] == "environment.half-plus-two-tfserving:1"
    # Removed by hand (the running container keeps its image): refresh sees it, apply builds it again.
    docker_client.images.remove(tag, force=True)
    drifted = built.plan()
    assert "image reconciler/env-half-plus-two-tfserving:1-" in drifted.output and "no longer exists" in drifted.output
    assert "environment.half-plus-two-tfserving:1 changed outside reconciler, so will be repaired" in drifted.output
    built.apply()
    assert docker_client.images.get(tag) and invoke_sample(built, tmp_path) == {"predictions": [2.5, 3.0, 4.5]}
    built.run("destroy", str(built.dir), "--state", str(built.state), "--auto-approve")
    assert not docker_client.images.list(filters={"reference": tag})


CONDA_DOCKERFILE = """FROM mcr.microsoft.com/azureml/minimal-py312-inference:latest
COPY conda.yaml /tmp/conda.yaml
RUN conda env create -n userenv -f /tmp/conda.yaml
"""


def test_conda_in_a_dockerfile_fails_with_the_conda_message(built, docker_client, tmp_path):
    (built.dir / "conda.yaml").write_text(CONDA)
    (built.dir / "conda.Dockerfile").write_text(CONDA_DOCKERFILE)
    built.edit("deployment.yml", "  image: reconciler/demo-tfserving:latest",
               "  build:\n    path: .\n    dockerfile_path: conda.Dockerfile")
    failed = built.apply(expect=1)
    assert "the base image has no conda, and the Dockerfile runs conda" in failed.output
    assert "conda: not found" in failed.output  # the build's last lines
    assert "Not attempted because a dependency failed: deployment.half-plus-two/tfserving:create" in failed.output
    logs = built.run("logs", "environment.half-plus-two-tfserving:1", "--state", str(built.state))
    assert "conda: not found" in logs.output


def test_a_rebuilt_base_image_rebuilds_the_environment(built, docker_client, tmp_path):
    import io
    base = f"reconciler/env-test-base:{built.name}"
    labels = {"org.reconciler.stack": built.name}

    def build_base(version: str) -> str:
        dockerfile = f"FROM reconciler/demo-tfserving:latest\nLABEL test.version={version}\n".encode()
        image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=base, labels=labels, rm=True)
        return image.id

    build_base("1")
    (built.dir / "serving.Dockerfile").write_text(f"FROM {base}\n")
    built.edit("deployment.yml", "  image: reconciler/demo-tfserving:latest",
               "  build:\n    path: .\n    dockerfile_path: serving.Dockerfile")
    built.apply()
    first = environment(built)["driver_ids"]["image"]
    assert "No changes." in built.plan().output
    build_base("2")  # the same tag, another image: as images/build.sh rebuilds a base
    drifted = built.plan()
    assert "was built from a base image that has been rebuilt since" in drifted.output, drifted.output
    assert "deployment.half-plus-two/tfserving must be replaced" in drifted.output
    rebuilt = built.apply()
    assert "its base image was rebuilt since" in rebuilt.output
    assert environment(built)["driver_ids"]["image"] != first
    assert invoke_sample(built, tmp_path) == {"predictions": [2.5, 3.0, 4.5]}
    assert not docker_client.images.list(filters={"reference": first}) and first not in \
        {i.id for i in docker_client.images.list(all=True)}
