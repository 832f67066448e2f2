"""The public Azure ML online-endpoint examples, one entry per stack, assembled as their scripts
deploy them (#13). Pure data, plus `assemble`, which writes files under a directory it is given.

The corpus (`../shared/corpus/azureml-examples`, see its README) holds `cli/endpoints/online/` and
the `cli/deploy-*.sh` scripts that drive it. Each `Example` says which documents its script uses,
what it fills in (the script's `sed`, `change_vars` or `--set`; `--name`/`--endpoint-name` are
written as the field they set, exactly as the CLI overrides it), the endpoint the script creates
without YAML (`az ml online-endpoint create --name X` makes `auth_mode: key`), files the script
downloads or the corpus left out (stand-ins), and the outcome the suite asserts. `assemble`
never changes the corpus: it works on a copy of the online/ tree, and builds each stack in a
directory of its own at the depth of the folder its documents come from, so that their
`../../model-1/...` paths lead where they lead in the corpus, into the `root:` it names.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_IMAGE = os.environ.get("RECONCILER_DEMO_IMAGE", "reconciler/demo-tfserving:latest")
TORCHSERVE_IMAGE = os.environ.get("RECONCILER_TORCHSERVE_IMAGE", "reconciler/torchserve:latest-cpu")
ACR = "myacr"  # what `az ml workspace show --query container_registry` would give the scripts


def corpus_dir() -> Path | None:
    """The corpus beside the repository (or its worktree's parent), or where $RECONCILER_CORPUS says."""
    candidates = [Path(os.environ["RECONCILER_CORPUS"])] if os.environ.get("RECONCILER_CORPUS") else []
    candidates += [parent / "shared" / "corpus" / "azureml-examples" for parent in REPO.parents]
    return next((c for c in candidates if (c / "cli" / "endpoints" / "online").is_dir()), None)


@dataclass(frozen=True)
class Doc:
    """One document the script uses: its corpus path (under online/), its name in the stack, and
    what the script fills in: `sed` placeholder -> value, `set` dotted field -> value."""
    source: str
    target: str = ""
    sed: dict = field(default_factory=dict)
    set: dict = field(default_factory=dict)
    # Whole text -> text: what the script does outside the document that reconciler does from it
    # (its `az acr build` becomes the environment's `build:`).
    replace: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Plans:
    pass


@dataclass(frozen=True)
class Answers:
    """Applies, then `reconciler invoke ENDPOINT --request-file REQUEST` answers EXPECTED."""
    endpoint: str
    request: str          # under the stack directory
    expected: dict
    deployment: str = ""  # sent with azureml-model-deployment (the endpoint sends no live traffic)
    also: tuple = ()      # further (deployment, request, expected) the same stack answers
    torchserve_archive: str = ""  # a stand-in under the stack the test replaces by a tiny real TorchServe archive
    # Not JSON but files, as the script's `curl -F FIELD=@FILE` sends them (`invoke` sends JSON
    # only, as `az ml online-endpoint invoke` does): (FIELD, FILE under the stack, ...).
    upload: tuple = ()


@dataclass(frozen=True)
class ApplyFails:
    """Plans, then `reconciler apply` fails (exit 1) with FRAGMENT in what it says: an image the
    stack builds cannot be built here."""
    fragment: str


@dataclass(frozen=True)
class Refused:
    """Refused by validate and plan alike: one problem at FILE (under the stack) whose `file:line:`
    line contains FRAGMENT, and COUNT problems in all (one per unsupported feature and document)."""
    file: str
    fragment: str
    count: int = 1


@dataclass(frozen=True)
class Example:
    id: str
    title: str            # the example's folder under online/
    script: str           # the deploy-*.sh that drives it ("" when none in the corpus)
    kind: str             # custom container / scoring script / no-code / model package
    stack: str            # the stack directory to build, under online/
    documents: tuple[Doc, ...]
    expect: object
    assets: str = ""      # folder (under online/) whose non-document files the stack copies
    copies: tuple[tuple[str, str], ...] = ()      # (under online/, under the stack) the script copies
    created_endpoint: str = ""                    # endpoint the script creates without YAML
    vars: dict = field(default_factory=dict)      # placeholders left in the copies, filled by --var
    images: dict = field(default_factory=dict)    # image map: repository -> stand-in reference
    stand_ins: dict = field(default_factory=dict)  # file under the stack -> bytes or "copy:<under online/>"
    note: str = ""        # why the stack is assembled the way it is, for the report

    def reason(self) -> str:
        return self.note


def _doc_set(text: str, dotted: str, value: str) -> str:
    """`--set a.b=value` on a YAML text, line-preserving: the scalar line is replaced in place."""
    parts = dotted.split(".")
    lines = text.split("\n")
    start, indent = 0, ""
    for depth, key in enumerate(parts):
        pattern = re.compile(rf"^{re.escape(indent)}{re.escape(key)}:(.*)$") if depth == 0 else \
            re.compile(rf"^(\s+){re.escape(key)}:(.*)$")
        for index in range(start, len(lines)):
            match = pattern.match(lines[index])
            if match:
                if depth == len(parts) - 1:
                    lead = lines[index][:len(lines[index]) - len(lines[index].lstrip())]
                    lines[index] = f"{lead}{key}: {value}"
                    return "\n".join(lines)
                start = index + 1
                break
        else:
            if depth == 0:
                return text.rstrip("\n") + f"\n{key}: {value}\n"
            raise ValueError(f"--set {dotted}: no {key} under {'.'.join(parts[:depth])}")
    return text


def _is_azureml_document(path: Path) -> bool:
    return path.suffix.lower() in (".yml", ".yaml") and "azuremlschemas" in path.read_text(errors="replace") \
        or path.suffix.lower() in (".yml", ".yaml") and "azuremlsdk2" in path.read_text(errors="replace")


def assemble(example: Example, online: Path) -> Path:
    """Build the example's stack under `online` (a copy of the corpus's online/ tree); its directory."""
    stack = online / example.stack
    if stack.exists():
        shutil.rmtree(stack)
    stack.mkdir(parents=True)
    if example.assets:
        for item in sorted((online / example.assets).iterdir()):
            if item.is_dir():
                shutil.copytree(item, stack / item.name)
            elif not _is_azureml_document(item):
                shutil.copy2(item, stack / item.name)
    for source, target in example.copies:
        origin = online / source
        (shutil.copytree if origin.is_dir() else shutil.copy2)(origin, stack / target)
    for name, content in example.stand_ins.items():
        path = stack / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str) and content.startswith("copy:"):
            shutil.copytree(online / content[5:], path)
        else:
            path.write_bytes(content)
    for doc in example.documents:
        text = (online / doc.source).read_text()
        for placeholder, value in doc.sed.items():
            text = text.replace("{{" + placeholder + "}}", value)
        for dotted, value in doc.set.items():
            text = _doc_set(text, dotted, value)
        for old, new in doc.replace.items():
            assert old in text, f"{doc.source} has no {old!r}"
            text = text.replace(old, new)
        (stack / (doc.target or Path(doc.source).name)).write_text(text)
    if example.created_endpoint:
        (stack / "endpoint.yml").write_text(
            "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json\n"
            f"name: {example.created_endpoint}\nauth_mode: key\n")
    settings = [f"root: {os.path.relpath(online, stack)}"]
    if example.images:
        settings.append("images:")
        for name, target in example.images.items():
            new_name, _, new_tag = target.rpartition(":")
            settings += [f"  - name: {name}", f"    newName: {new_name}", f"    newTag: '{new_tag}'"]
    (stack / "reconciler.yml").write_text("\n".join(settings) + "\n")
    return stack


CC = "custom container"
SCRIPT = "scoring script"
NO_CODE = "no-code"
TFS_STANDIN = DEMO_IMAGE
INFERENCE_BASE = os.environ.get("RECONCILER_INFERENCE_BASE_IMAGE", "reconciler/azureml-inference-base:latest")
# Azure ML's base images (the examples' environments and Dockerfiles name them) -> the local one.
INFERENCE_MAP = {"mcr.microsoft.com/azureml/*": INFERENCE_BASE}
MODEL_1_ANSWER = [11055.977245525679, 4503.079536107787]   # model-1's scikit-learn LinearRegression
MODEL_2_ANSWER = [0.5, 0.5]                                   # model-2's score.py answers a constant
IRIS_ANSWER = {"Category": ["Virginica", "Setosa"]}           # inference-schema's iris.pkl on its samples
HPT_ANSWER = {"predictions": [2.5, 3.0, 4.5]}
HPT_INTEGRATED_ANSWER = {"outputs": [[[2.5, 3.0, 3.5, 4.0]], [[2.0, 2.5, 2.5, 2.5]]]}
SAMPLE = "managed/sample"

EXAMPLES: tuple[Example, ...] = (
    Example(
        id="tfserving-half-plus-two", title="custom-container/tfserving/half-plus-two",
        script="deploy-custom-container-tfserving-half-plus-two.sh", kind=CC,
        stack="custom-container/tfserving/cf-hpt", assets="custom-container/tfserving/half-plus-two",
        documents=(Doc("custom-container/tfserving/half-plus-two/tfserving-endpoint.yml",
                       set={"name": "endpt-tfserving-1"}),
                   Doc("custom-container/tfserving/half-plus-two/tfserving-deployment.yml",
                       set={"name": "tfserving-deployment", "endpoint_name": "endpt-tfserving-1"})),
        vars={"MODEL_VERSION": "1"}, images={"docker.io/tensorflow/serving": TFS_STANDIN},
        # The script downloads https://aka.ms/half_plus_two-model; the same SavedModel ships with
        # the integrated example (corpus README), laid out as the tarball is.
        stand_ins={"half_plus_two/00000123": "copy:custom-container/tfserving/half-plus-two-integrated/models/hpt/1"},
        expect=Answers("endpt-tfserving-1", "sample_request.json", HPT_ANSWER),
        note="as written: auth_mode aml_token (invoke signs a token as `az ml online-endpoint invoke` gets one)"),
    Example(
        id="tfserving-half-plus-two-integrated", title="custom-container/tfserving/half-plus-two-integrated",
        script="deploy-custom-container-tfserving-half-plus-two-integrated.sh", kind=CC,
        stack="custom-container/tfserving/cf-hpti",
        assets="custom-container/tfserving/half-plus-two-integrated",
        documents=(Doc("custom-container/tfserving/half-plus-two-integrated/half-plus-two-integrated-deployment.yml",
                       replace={"  image: {{ACR_NAME}}.azurecr.io/azureml-examples/tfsintegrated:1\n":
                                "  build:\n    path: .\n    dockerfile_path: half-plus-two-integrated.Dockerfile\n"}),),
        created_endpoint="tfsintegrated-1", vars={"ENDPOINT_NAME": "tfsintegrated-1", "ACR_NAME": ACR},
        images={"docker.io/tensorflow/serving": TFS_STANDIN},
        expect=Answers("tfsintegrated-1", "sample-data.json", HPT_INTEGRATED_ANSWER),
        note="the script's `az acr build` of its Dockerfile written as the environment's `build:`, which "
             "reconciler builds with FROM mapped to the stand-in (ENV MODEL_NAME=hpt and COPY models /models "
             "give the stand-in its model as they give TF Serving)"),
    Example(
        id="torchserve-densenet", title="custom-container/torchserve/densenet",
        script="deploy-custom-container-torchserve-densenet.sh", kind=CC,
        stack="custom-container/torchserve/cf-densenet", assets="custom-container/torchserve/densenet",
        documents=(Doc("custom-container/torchserve/densenet/torchserve-endpoint.yml", set={"name": "endpt-torchserve-1"}),
                   Doc("custom-container/torchserve/densenet/torchserve-deployment.yml",
                       set={"endpoint_name": "endpt-torchserve-1"},
                       replace={"  image: {{ACR_NAME}}.azurecr.io/torchserve:1 \n":
                                "  build:\n    path: .\n    dockerfile_path: torchserve.dockerfile\n"})),
        images={"pytorch/torchserve": TORCHSERVE_IMAGE},
        # The script downloads densenet161.mar (https://aka.ms/torchserve-densenet161) and scores a
        # kitten photo; the answer test makes a tiny real archive of that name and model name
        # (tests/integration/torchserve) and scores its JSON sample. Plans keep this placeholder.
        stand_ins={"torchserve/densenet161.mar": b"stand-in for https://aka.ms/torchserve-densenet161\n",
                   "sample-request.json": b'{"data": [1.0, 2.0, 3.0]}\n'},
        expect=Answers("endpt-torchserve-1", "sample-request.json",
                       {"model": "densenet161", "predictions": [[14.5, -1.5]]},
                       torchserve_archive="torchserve/densenet161.mar"),
        note="as written (auth_mode aml_token; readiness on /ping is the example's own choice, and TorchServe "
             "answers /ping while the model still loads); the script's `az acr build` of torchserve.dockerfile "
             "written as the environment's `build:`, FROM mapped to reconciler/torchserve:latest-cpu; a tiny real "
             "archive in place of densenet161.mar"),
    Example(
        id="triton-single-model-cc", title="custom-container/triton/single-model",
        script="deploy-custom-container-triton-single-model.sh", kind=CC,
        stack="custom-container/triton/single-model/triton_context",
        documents=(Doc("custom-container/triton/single-model/triton-cc-deployment.yml", target="deployment.yaml",
                       sed={"acr_name": ACR, "ENDPOINT_NAME": "endpt-moe-1"}),
                   Doc("custom-container/triton/single-model/triton-cc-endpoint.yml", target="endpoint.yaml",
                       sed={"ENDPOINT_NAME": "endpt-moe-1"})),
        images={f"{ACR}.azurecr.io/azureml-examples/triton-cc": TFS_STANDIN},
        # The corpus left out models/ (model.onnx is too large); the script copies it in.
        stand_ins={"models/model_1/config.pbtxt": b'name: "model_1"\nplatform: "onnxruntime_onnx"\n',
                   "models/model_1/1/model.onnx": b"stand-in\n"},
        expect=Plans(), note="image (built by `az acr build`) mapped to a stand-in"),
    Example(
        id="minimal-multimodel", title="custom-container/minimal/multimodel",
        script="deploy-custom-container-minimal-multimodel.sh", kind=CC + " + " + SCRIPT,
        stack="custom-container/minimal/cf-multimodel", assets="custom-container/minimal/multimodel",
        documents=(Doc("custom-container/minimal/multimodel/minimal-multimodel-endpoint.yml"),
                   Doc("custom-container/minimal/multimodel/minimal-multimodel-deployment.yml",
                       replace={"  image: {{ACR_NAME}}.azurecr.io/azureml-examples/minimal-multimodel:1":
                                "  build:\n    path: .\n    dockerfile_path: minimal-multimodel.dockerfile"})),
        vars={"ENDPOINT_NAME": "endpt-moe-1", "ACR_NAME": ACR}, images=INFERENCE_MAP,
        expect=Answers("endpt-moe-1", "test-data/iris-test-data.json",
                       '{"0":{"0":1.5512323491,"1":1.4693082208,"2":1.7150806058,"3":1.8789288624,"4":-0.005326089}}',
                       also=(("", "test-data/diabetes-test-data.json",
                              '{"0":{"0":131.5927991331,"1":259.2596849937,"2":112.9544071863,"3":209.0073877014,'
                              '"4":112.5489260873}}'),)),
        note="the script's `az acr build` of its Dockerfile written as the environment's `build:` (FROM mapped "
             "to the local inference base); the Azure ML inference server runs its scoring script on both models"),
    Example(
        id="minimal-single-model-pip", title="custom-container/minimal/single-model/pip-in-dockerfile",
        script="deploy-custom-container-minimal-single-model.sh", kind=CC + " + " + SCRIPT,
        stack="custom-container/minimal/single-model/cf-pip-in-dockerfile",
        assets="custom-container/minimal/single-model/pip-in-dockerfile",
        documents=(Doc("custom-container/minimal/single-model/minimal-single-model-endpoint.yml"),
                   Doc("custom-container/minimal/single-model/pip-in-dockerfile/"
                       "minimal-single-model-pip-in-dockerfile-deployment.yml",
                       replace={"  image: {{ACR_NAME}}.azurecr.io/azureml-examples/"
                                "minimal-single-model-pip-in-dockerfile:1\n":
                                "  build:\n    path: .\n    dockerfile_path: "
                                "minimal-single-model-pip-in-dockerfile.dockerfile\n"})),
        vars={"ENDPOINT_NAME": "endpt-moe-1", "ACR_NAME": ACR}, images=INFERENCE_MAP,
        copies=(("model-1/sample-request.json", "sample-request.json"),),
        expect=Answers("endpt-moe-1", "sample-request.json", MODEL_1_ANSWER),
        note="the script's `az acr build` of its Dockerfile written as the environment's `build:` (FROM mapped "
             "to the local inference base); model-1 and its scoring script mounted"),
    Example(
        id="minimal-single-model-conda", title="custom-container/minimal/single-model/conda-in-dockerfile",
        script="deploy-custom-container-minimal-single-model.sh", kind=CC + " + " + SCRIPT,
        stack="custom-container/minimal/single-model/cf-conda-in-dockerfile",
        assets="custom-container/minimal/single-model/conda-in-dockerfile",
        documents=(Doc("custom-container/minimal/single-model/minimal-single-model-endpoint.yml"),
                   Doc("custom-container/minimal/single-model/conda-in-dockerfile/"
                       "minimal-single-model-conda-in-dockerfile-deployment.yml",
                       replace={"  image: {{ACR_NAME}}.azurecr.io/azureml-examples/"
                                "minimal-single-model-conda-in-dockerfile:1\n":
                                "  build:\n    path: .\n    dockerfile_path: "
                                "minimal-single-model-conda-in-dockerfile.dockerfile\n"})),
        vars={"ENDPOINT_NAME": "endpt-moe-1", "ACR_NAME": ACR}, images=INFERENCE_MAP,
        # The script's build context is model-1, whose environment/conda.yaml the Dockerfile copies.
        copies=(("model-1/environment", "environment"),),
        expect=ApplyFails("the base image has no conda, and the Dockerfile runs conda"),
        note="its Dockerfile runs `conda env create`; the local inference base has no conda"),
    Example(
        id="mlflow-multideployment-scikit", title="custom-container/mlflow/multideployment-scikit",
        script="deploy-custom-container-mlflow-multideployment-scikit.sh", kind=CC,
        stack="custom-container/mlflow/multideployment-scikit/mlflow_context",
        copies=(("ncd/lightgbm-iris", "lightgbm-iris"), ("ncd/sklearn-diabetes", "sklearn-diabetes"),
                ("ncd/sample-request-lightgbm.json", "sample-request-lightgbm.json"),
                ("ncd/sample-request-sklearn.json", "sample-request-sklearn.json"),
                ("custom-container/mlflow/multideployment-scikit/mlflow.dockerfile", "Dockerfile")),
        documents=(Doc("custom-container/mlflow/multideployment-scikit/mlflow-endpoint.yml", target="endpoint.yaml",
                       sed={"ENDPOINT_NAME": "endpt-moe-1"}),) + tuple(
            Doc("custom-container/mlflow/multideployment-scikit/mlflow-deployment.yml",
                target=f"mlflow-deployment-{model}.yaml",
                sed={"acr_name": ACR, "ENDPOINT_NAME": "endpt-moe-1", "environment_name": f"mlflow-cc-{model}-env",
                     "model_name": model, "deployment_name": model})
            for model in ("sklearn-diabetes", "lightgbm-iris")),
        images={f"{ACR}.azurecr.io/azureml-examples/mlflow-cc-sklearn-diabetes": TFS_STANDIN,
                f"{ACR}.azurecr.io/azureml-examples/mlflow-cc-lightgbm-iris": TFS_STANDIN},
        expect=Plans(), note="images (built by `az acr build`) mapped to a stand-in; no traffic (as the "
                             "script creates them), so plan warns that the endpoint has no live traffic"),
    Example(
        id="r-multimodel-plumber", title="custom-container/r/multimodel-plumber",
        script="deploy-custom-container-r-multimodel-plumber.sh", kind=CC + " + " + SCRIPT,
        stack="custom-container/r/cf-multimodel-plumber", assets="custom-container/r/multimodel-plumber",
        documents=(Doc("custom-container/r/multimodel-plumber/r-endpoint.yml", set={"name": "endpt-r-1"}),
                   Doc("custom-container/r/multimodel-plumber/r-deployment.yml", sed={"ACR_NAME": ACR},
                       set={"name": "r-deployment", "endpoint_name": "endpt-r-1"})),
        images={f"{ACR}.azurecr.io/r_server": TFS_STANDIN},
        expect=Plans(),
        note="its scripts (plumber.R) mounted as code beside its custom container, whose image (built by "
             "`az acr build`) is mapped to a stand-in; auth_mode aml_token is served"),
    Example(
        id="managed-online-endpoint", title="managed/sample (blue)", script="deploy-managed-online-endpoint.sh",
        kind=SCRIPT, stack="managed/cf-managed-online-endpoint", assets=SAMPLE,
        documents=(Doc(f"{SAMPLE}/endpoint.yml", set={"name": "endpt-moe-1"}),
                   Doc(f"{SAMPLE}/blue-deployment.yml", set={"name": "blue", "endpoint_name": "endpt-moe-1"})),
        images=INFERENCE_MAP, expect=Answers("endpt-moe-1", "sample-request.json", MODEL_1_ANSWER),
        note="its environment (conda file on an Azure ML base image) built with pip on the local inference base"),
    Example(
        id="local-endpoint", title="managed/sample (blue, --local)", script="deploy-local-endpoint.sh",
        kind=SCRIPT, stack="managed/cf-local-endpoint", assets=SAMPLE,
        documents=(Doc(f"{SAMPLE}/endpoint.yml", set={"name": "endpt-1"}),
                   Doc(f"{SAMPLE}/blue-deployment.yml", set={"name": "blue", "endpoint_name": "endpt-1"})),
        images=INFERENCE_MAP, expect=Answers("endpt-1", "sample-request.json", MODEL_1_ANSWER),
        note="its environment (conda file on an Azure ML base image) built with pip on the local inference base"),
    Example(
        id="safe-rollout", title="managed/sample (blue + green)", script="deploy-safe-rollout-online-endpoints.sh",
        kind=SCRIPT, stack="managed/cf-safe-rollout", assets=SAMPLE,
        documents=(Doc(f"{SAMPLE}/endpoint.yml", set={"name": "endpt-moe-1", "traffic": "{blue: 90, green: 10}"}),
                   Doc(f"{SAMPLE}/blue-deployment.yml",
                       set={"name": "blue", "endpoint_name": "endpt-moe-1", "instance_count": "2"}),
                   Doc(f"{SAMPLE}/green-deployment.yml", set={"name": "green", "endpoint_name": "endpt-moe-1"})),
        images=INFERENCE_MAP,
        expect=Answers("endpt-moe-1", "sample-request.json", MODEL_1_ANSWER, deployment="blue",
                       also=(("green", "sample-request.json", MODEL_2_ANSWER),)),
        note="at the script's `--traffic \"blue=90 green=10\"` step; each deployment asked by name"),
    Example(
        id="moe-binary-payloads", title="managed/binary-payloads", script="deploy-moe-binary-payloads.sh",
        kind=SCRIPT, stack="managed/cf-binary-payloads", assets="managed/binary-payloads",
        documents=(Doc("managed/binary-payloads/binary-payloads-deployment.yml",
                       set={"endpoint_name": "endpt-moe-1",
                            "code_configuration.scoring_script": "multi-file-to-json-score.py"}),),
        created_endpoint="endpt-moe-1", images=INFERENCE_MAP,
        expect=Answers("endpt-moe-1", "input.jpg", {"response": [{"filename": "input.jpg", "size": [512, 340]},
                                                                 {"filename": "input.jpg", "size": [512, 340]}]},
                       upload=("file[]", "input.jpg", "input.jpg")),
        note="at the script's second step (`--set code_configuration.scoring_script=multi-file-to-json-score.py`), "
             "files sent as its `curl -F file[]=@...` sends them; its first step (a resized JPEG back) is "
             "tests/integration/test_scoring_examples.py's"),
    Example(
        id="moe-inference-schema", title="managed/inference-schema", script="deploy-moe-inference-schema.sh",
        kind=SCRIPT, stack="managed/cf-inference-schema", assets="managed/inference-schema",
        documents=(Doc("managed/inference-schema/model.yml", set={"version": "1234"}),) + tuple(
            Doc(f"managed/inference-schema/deployment-{flavour}.yml",
                set={"model": "azureml:azureml-infschema:1234", "endpoint_name": "endpt-moe-1234"})
            for flavour in ("standard", "numpy", "pandas")),
        created_endpoint="endpt-moe-1234",
        images=INFERENCE_MAP,
        expect=Answers("endpt-moe-1234", "sample-inputs/standard.json", IRIS_ANSWER, deployment="infsrv-standard",
                       also=(("infsrv-numpy", "sample-inputs/numpy.json", IRIS_ANSWER),
                             ("infsrv-pandas", "sample-inputs/pandas.json", IRIS_ANSWER))),
        note="all three deployments the script creates in turn, by header; the conda file pins scikit-learn=1.2.2 "
             "and leaves numpy open: pip is given numpy<2, as conda-forge's scikit-learn 1.2.2 requires "
             "(its wheel on PyPI does not say so)"),
    Example(
        id="moe-minimal-single-model-registered", title="managed/minimal/single-model-registered",
        script="deploy-moe-minimal-single-model-registered.sh", kind=SCRIPT,
        stack="managed/minimal/cf-single-model-registered", assets="managed/minimal/single-model-registered",
        documents=(Doc("managed/minimal/single-model-registered/model.yml"),
                   Doc("managed/minimal/single-model-registered/deployment.yml")),
        created_endpoint="endpt-moe-1234", vars={"ENDPOINT_NAME": "endpt-moe-1234", "MODEL_VERSION": "1234"},
        images=INFERENCE_MAP, expect=Plans()),
    Example(
        id="moe-openapi", title="managed/openapi", script="deploy-moe-openapi.sh", kind=SCRIPT,
        stack="managed/cf-openapi", assets="managed/openapi",
        documents=(Doc("managed/openapi/deployment.yml",
                       set={"endpoint_name": "endpt-moe-1", "code_configuration.code": "code-decorated"}),),
        created_endpoint="endpt-moe-1", images=INFERENCE_MAP, expect=Plans()),
    Example(
        id="triton-managed", title="triton/single-model", script="deploy-triton-managed-online-endpoint.sh",
        kind=NO_CODE + " (triton_model)", stack="triton/cf-single-model", assets="triton/single-model",
        documents=(Doc("triton/single-model/create-managed-endpoint.yaml", set={"name": "endpt-1"}),
                   Doc("triton/single-model/create-managed-deployment.yaml",
                       set={"name": "blue", "endpoint_name": "endpt-1"})),
        stand_ins={"models/model_1/config.pbtxt": b'name: "model_1"\n', "models/model_1/1/model.onnx": b"stand-in\n"},
        expect=Refused("create-managed-deployment.yaml", "model.type: no-code deployments (model type triton_model "
                                                         "without an environment) are not supported"),
        note="its endpoint says auth_mode aml_token, which is served; the no-code deployment is not"),
    # Example folders no script of the corpus drives, assembled as their README or how-to does.
    Example(
        id="sample-curated-environment", title="managed/sample (curated environment)", script="", kind=SCRIPT,
        stack="managed/cf-sample-curated", assets=SAMPLE,
        documents=(Doc(f"{SAMPLE}/endpoint.yml"), Doc(f"{SAMPLE}/blue-deployment-with-curated-env.yml")),
        expect=Refused("blue-deployment-with-curated-env.yml", "environment: environment 'azureml://registries/azureml/environments/sklearn-1.5/labels/latest' is in an Azure ML registry, which a local engine cannot reach")),
    Example(
        id="sample-registered-assets", title="managed/sample (registered assets)", script="", kind=SCRIPT,
        stack="managed/cf-sample-registered", assets=SAMPLE,
        documents=(Doc(f"{SAMPLE}/endpoint.yml"), Doc(f"{SAMPLE}/blue-deployment-with-registered-assets.yml")),
        expect=Refused("blue-deployment-with-registered-assets.yml", "model: model 'azureml:my-model:1' is not defined in this stack (add a model YAML")),
    Example(
        id="kubernetes", title="kubernetes (blue + green)", script="", kind="Kubernetes + " + SCRIPT, stack="cf-kubernetes",
        assets="kubernetes",
        documents=(Doc("kubernetes/kubernetes-endpoint.yml"), Doc("kubernetes/kubernetes-blue-deployment.yml"),
                   Doc("kubernetes/kubernetes-green-deployment.yml")),
        expect=Refused("kubernetes-blue-deployment.yml", "resources: resources (Kubernetes requests and limits of a "
                                                          "kubernetesOnlineDeployment) is not supported", count=2)),
    Example(
        id="ncd-mlflow", title="ncd (sklearn + lightgbm MLflow models)", script="", kind=NO_CODE + " (mlflow_model)",
        stack="cf-ncd", assets="ncd",
        documents=(Doc("ncd/create-endpoint.yaml"), Doc("ncd/sklearn-deployment.yaml"),
                   Doc("ncd/lightgbm-deployment.yaml")),
        expect=Refused("lightgbm-deployment.yaml", "model.type: no-code deployments (model type mlflow_model without an environment) are not supported", count=2)),
    Example(
        id="managed-identities-sai", title="managed/managed-identities (system-assigned)", script="", kind=SCRIPT,
        stack="managed/cf-managed-identities-sai", assets="managed/managed-identities",
        documents=(Doc("managed/managed-identities/1-sai-create-endpoint.yml"),
                   Doc("managed/managed-identities/2-sai-deployment.yml", set={"endpoint_name": "my-sai-endpoint"})),
        images=INFERENCE_MAP, expect=Plans()),
    Example(
        id="managed-identities-uai", title="managed/managed-identities (user-assigned)", script="", kind=SCRIPT,
        stack="managed/cf-managed-identities-uai", assets="managed/managed-identities",
        documents=(Doc("managed/managed-identities/1-uai-create-endpoint.yml"),
                   Doc("managed/managed-identities/2-uai-deployment.yml", set={"endpoint_name": "my-uai-endpoint"})),
        images=INFERENCE_MAP, expect=Plans()),
)
