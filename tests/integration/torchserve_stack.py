"""TorchServe stacks for the integration tests, the conformance suite and the benchmark: tiny real
model archives made with torch-model-archiver inside reconciler/torchserve:latest-cpu (no
download), the serving image built from the Azure ML densenet example's Dockerfile with its FROM
mapped to that image, and stack folders shaped like custom-container/torchserve/densenet (model
folder `torchserve` mounted, TORCHSERVE_MODELS, port 8080 routes). Side effects: Docker and files."""
from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

TORCHSERVE_IMAGE = "reconciler/torchserve:latest-cpu"
HERE = Path(__file__).resolve().parent / "torchserve"
TEST_LABEL = {"org.reconciler.test": "torchserve"}
# custom-container/torchserve/densenet/torchserve.dockerfile, FROM mapped to the local image.
EXAMPLE_CMD = ('CMD ["torchserve","--start", "--disable-token-auth", "--model-store",'
               '"$AZUREML_MODEL_DIR/torchserve","--models","$TORCHSERVE_MODELS"]')
SAMPLE = {"data": [1.0, 2.0, 3.0]}


def answer(bias: tuple[float, float], model: str = "tiny") -> dict:
    """What the tiny model answers SAMPLE with: W = [[1, 2, 3], [0, 1, -1]], so [14 + b1, -1 + b2]."""
    return {"model": model, "predictions": [[14.0 + bias[0], -1.0 + bias[1]]]}


def make_archives(client, out: Path, specs: list[str]) -> Path:
    """One container run of make_archives.py: each spec DIR/NAME:B1,B2:LOAD_SECONDS -> out/DIR/NAME.mar."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".tools"
    work.mkdir(exist_ok=True)
    for name in ("make_archives.py", "tiny_handler.py"):
        shutil.copy2(HERE / name, work / name)
    # The image runs as model-server (uid 1000): the export folder must be writable by it.
    for path in [out, work, *work.iterdir()]:
        path.chmod(0o777 if path.is_dir() else 0o644)
    client.containers.run(TORCHSERVE_IMAGE, ["-W", "ignore", "/out/.tools/make_archives.py", "/out", *specs],
                          entrypoint="python", volumes={str(out): {"bind": "/out", "mode": "rw"}},
                          remove=True, labels=TEST_LABEL, network_mode="none")
    shutil.rmtree(work)
    return out


def build_example_image(client, tag: str, dockerfile: str | None = None) -> str:
    """Build `dockerfile` (default: the densenet example's) FROM the local TorchServe image; the tag."""
    text = dockerfile or f"FROM {TORCHSERVE_IMAGE}\n\n{EXAMPLE_CMD}\n"
    data = text.encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True,
                        labels=TEST_LABEL, timeout=300)
    return tag


def deployment_yaml(name: str, endpoint: str, image: str, model_folder: str, models: str,
                    readiness_path: str, failure_threshold: int = 180) -> str:
    """A deployment shaped like the densenet example's; readiness on `readiness_path` at 8080.
    The probe gives TorchServe (a JVM, then a Python worker that imports torch) up to
    `failure_threshold` seconds on a busy 2-core machine."""
    return f"""$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: {name}
endpoint_name: {endpoint}
model:
  path: {model_folder}
environment_variables:
  TORCHSERVE_MODELS: "{models}"
environment:
  image: {image}
  inference_config:
    liveness_route:
      port: 8080
      path: /ping
    readiness_route:
      port: 8080
      path: {readiness_path}
    scoring_route:
      port: 8080
      path: /predictions/tiny
instance_type: Standard_DS3_v2
instance_count: 1
readiness_probe:
  initial_delay: 1
  period: 1
  timeout: 1
  failure_threshold: {failure_threshold}
"""


def write_stack(folder: Path, endpoint: str, deployments: dict[str, str], traffic: dict[str, int]) -> Path:
    """endpoint.yml (auth_mode key) and one <name>.yml per deployment text."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["$schema: https://azuremlsdk2.blob.core.windows.net/latest/managedOnlineEndpoint.schema.json",
             f"name: {endpoint}", "auth_mode: key", "traffic:"] + [f"  {k}: {v}" for k, v in traffic.items()]
    (folder / "endpoint.yml").write_text("\n".join(lines) + "\n")
    for name, text in deployments.items():
        (folder / f"{name}.yml").write_text(text)
    return folder


def set_traffic(folder: Path, traffic: dict[str, int]) -> None:
    text = (folder / "endpoint.yml").read_text().split("traffic:")[0]
    (folder / "endpoint.yml").write_text(text + "traffic:\n" + "".join(f"  {k}: {v}\n" for k, v in traffic.items()))
