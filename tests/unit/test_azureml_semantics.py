"""Where reconciler agrees with the Azure ML SDK and service on what a document means (#13)."""
from __future__ import annotations

import pytest

from reconciler.config.stack import load_stack
from reconciler.errors import StackInvalid


def edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("written, read", [("key", "key"), ("Key", "key"), ("KEY", "key")])
def test_auth_mode_is_read_as_the_sdk_reads_it(demo_stack, written, read):
    edit(demo_stack / "endpoint.yml", "auth_mode: key", f"auth_mode: {written}")
    assert load_stack(demo_stack).by_kind("endpoint")[0].spec["auth_mode"] == read


@pytest.mark.parametrize("written", ["AMLToken", "aml_token"])
def test_aml_token_is_served(demo_stack, written):
    edit(demo_stack / "endpoint.yml", "auth_mode: key", f"auth_mode: {written}")
    graph = load_stack(demo_stack)
    assert graph.unsupported == () and graph.by_kind("endpoint")[0].spec["auth_mode"] == "aml_token"


@pytest.mark.parametrize("written", ["AADToken", "aad_token"])
def test_aad_token_is_a_precise_refusal(demo_stack, written):
    edit(demo_stack / "endpoint.yml", "auth_mode: key", f"auth_mode: {written}")
    [problem] = load_stack(demo_stack).unsupported
    assert problem.message == f"auth_mode {written} (Microsoft Entra ID tokens) is not supported on a local engine"
    assert "aml_token" in problem.hint


def test_an_unknown_auth_mode_is_a_located_error(demo_stack):
    edit(demo_stack / "endpoint.yml", "auth_mode: key", "auth_mode: password")
    with pytest.raises(StackInvalid) as caught:
        load_stack(demo_stack)
    assert str(caught.value.problems[0]).startswith(
        f"{demo_stack}/endpoint.yml:4: auth_mode: 'password' is not one of: key, aml_token, aad_token")


def test_model_mount_path_is_the_directory_the_model_folder_appears_in(demo_stack):
    """As Azure ML mounts it, and as the public Triton example needs (model ./models/model_1,
    model_mount_path /models, tritonserver --model-repository=/models)."""
    deployment = demo_stack / "deployment.yml"
    default = load_stack(demo_stack).by_kind("deployment")[0].spec
    assert default["model"]["mount_path"] == "/var/azureml-app/azureml-models/tfserving-mounted/1"
    assert default["environment_variables"]["AZUREML_MODEL_DIR"] == default["model"]["mount_path"]
    edit(deployment, "instance_type:", "model_mount_path: /models\ninstance_type:")
    spec = load_stack(demo_stack).by_kind("deployment")[0].spec
    assert spec["model"]["mount_path"] == "/models"
    assert spec["environment_variables"]["AZUREML_MODEL_DIR"] == "/models"


IMAGE_TABLE = [
    # reference -> None (valid) or the start of the reason
    ("tensorflow/serving:latest", None),
    ("docker.io/tensorflow/serving:latest", None),
    ("mcr.microsoft.com/azureml/minimal-py312-inference:latest", None),
    ("localhost:5000/team/model:1", None),
    ("Registry.Example.com/team/model@sha256:" + "a" * 64, None),
    ("TensorFlow/serving:latest", "has an invalid repository name part 'TensorFlow' (upper case"),
    ("tensorflow//serving", "has an invalid repository name part ''"),
    ("tensorflow/serving:", "has an invalid tag ''"),
    ("tensorflow/serving:-1", "has an invalid tag '-1'"),
    ("tensorflow/serving@md5:00", "has an invalid digest 'md5:00'"),
    ("a" * 256, "has a name of 256 characters"),
]


def test_image_reference_grammar_table():
    from reconciler.config.image_reference import image_reference_problem
    got = [(ref, image_reference_problem(ref)) for ref, _ in IMAGE_TABLE]
    for (ref, expected), (_, problem) in zip(IMAGE_TABLE, got):
        assert (problem is None) if expected is None else (problem or "").startswith(expected), (ref, problem)


def test_an_upper_case_image_repository_is_a_located_error_at_validate(demo_stack):
    edit(demo_stack / "deployment.yml", "image: reconciler/demo-tfserving:latest",
         "image: Reconciler/demo-tfserving:latest")
    with pytest.raises(StackInvalid) as caught:
        load_stack(demo_stack)
    assert [str(p) for p in caught.value.problems] == [
        f"{demo_stack}/deployment.yml:11: environment.image: image 'Reconciler/demo-tfserving:latest' has an "
        "invalid repository name part 'Reconciler' (upper case is not allowed in repository names) (write an image "
        "reference Docker accepts, e.g. docker.io/tensorflow/serving:latest or myregistry.azurecr.io/team/model:1)"]


# -- only Azure ML documents are stack documents -------------------------------------------------
CONDA = "name: model-env\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.10\n  - pip:\n    - numpy\n"


def test_conda_files_and_tool_configs_beside_the_documents_are_ignored(demo_stack):
    (demo_stack / "environment").mkdir()
    (demo_stack / "environment" / "conda.yaml").write_text(CONDA)
    (demo_stack / "tool.yml").write_text("model_repository: ./model_repository\ncheckpoint: {{NOT_SET}}\n")
    (demo_stack / "package.yml").write_text("$schema: http://azureml/sdk-2-0/ModelVersionPackage.json\n"
                                            "target_environment: x\n")
    graph = load_stack(demo_stack)
    assert sorted(i.file.rsplit("/", 1)[1] for i in graph.ignored) == ["conda.yaml", "package.yml", "tool.yml"]
    assert "is no kind reconciler applies" in next(str(i) for i in graph.ignored if "package" in i.file)


def test_a_placeholder_in_a_stack_document_still_needs_a_value(demo_stack):
    edit(demo_stack / "deployment.yml", "instance_count: 1", "instance_count: {{COUNT}}")
    with pytest.raises(StackInvalid, match="1 problem"):
        load_stack(demo_stack)


# -- registered assets -------------------------------------------------------------------------------
ENVIRONMENT = ("$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json\n"
               "name: tfs\nversion: {version}\nimage: reconciler/demo-tfserving:{tag}\n"
               "inference_config:\n"
               "  liveness_route: {{port: 8501, path: /v1/models/half_plus_two}}\n"
               "  readiness_route: {{port: 8501, path: /v1/models/half_plus_two}}\n"
               "  scoring_route: {{port: 8501, path: /v1/models/half_plus_two:predict}}\n")


def use_environment(stack, reference):
    text = (stack / "deployment.yml").read_text()
    start, end = text.index("environment:\n"), text.index("instance_type:")
    (stack / "deployment.yml").write_text(text[:start] + f"environment: {reference}\n" + text[end:])


@pytest.mark.parametrize("reference, tag", [("azureml:tfs:1", "v1"), ("azureml:tfs:2", "v2"),
                                            ("azureml:tfs@latest", "v2")])
def test_an_environment_reference_resolves_to_the_stacks_environment_document(demo_stack, reference, tag):
    (demo_stack / "env-1.yml").write_text(ENVIRONMENT.format(version=1, tag="v1"))
    (demo_stack / "env-2.yml").write_text(ENVIRONMENT.format(version=2, tag="v2"))
    use_environment(demo_stack, reference)
    spec = load_stack(demo_stack).by_kind("deployment")[0].spec
    assert spec["image"] == f"reconciler/demo-tfserving:{tag}"
    assert spec["routes"]["scoring"] == {"port": 8501, "path": "/v1/models/half_plus_two:predict"}


@pytest.mark.parametrize("reference, message, hint", [
    ("azureml:tfs:9", "environment 'azureml:tfs:9' is not defined in this stack",
     "environments in this stack: azureml:tfs:1"),
    ("azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest",
     "is a curated Azure ML environment, not defined in this stack", "define one in the stack instead"),
    ("azureml://registries/azureml/environments/sklearn-1.5/labels/latest",
     "is in an Azure ML registry, which a local engine cannot reach", "define it in the stack"),
])
def test_environments_the_stack_does_not_have_are_located_errors(demo_stack, reference, message, hint):
    (demo_stack / "env-1.yml").write_text(ENVIRONMENT.format(version=1, tag="v1"))
    use_environment(demo_stack, reference)
    with pytest.raises(StackInvalid) as caught:
        load_stack(demo_stack)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.path) == (f"{demo_stack}/deployment.yml", 8, "environment")
    assert message in problem.message and hint in problem.hint


def test_a_registry_model_is_a_located_error(demo_stack):
    edit(demo_stack / "deployment.yml", "model: azureml:tfserving-mounted:1",
         "model: azureml://registries/azureml/models/half-plus-two/versions/1")
    with pytest.raises(StackInvalid) as caught:
        load_stack(demo_stack)
    assert any(p.line == 4 and "in an Azure ML registry or workspace" in p.message for p in caught.value.problems)


def test_a_model_without_version_is_version_1(demo_stack):
    edit(demo_stack / "model.yml", "version: 1\n", "")
    assert [str(r.address) for r in load_stack(demo_stack).by_kind("model")] == ["model.tfserving-mounted:1"]


def test_a_conda_file_makes_an_environment_the_deployment_runs(demo_stack):
    # Issue 14 changes this: a conda file was refused ("not supported on a local engine yet").
    edit(demo_stack / "deployment.yml", "  image: reconciler/demo-tfserving:latest",
         "  image: reconciler/demo-tfserving:latest\n  conda_file: conda.yaml")
    (demo_stack / "conda.yaml").write_text(CONDA)
    graph = load_stack(demo_stack)
    assert not graph.unsupported
    [environment] = graph.by_kind("environment")
    [deployment] = graph.by_kind("deployment")
    assert environment.spec["pip_requirements"] == ["numpy"] and environment.spec["python"] == "3.10"
    assert deployment.spec["image"] == environment.spec["image"]
    assert environment.spec["image"].startswith(f"reconciler/env-{deployment.spec['endpoint']}-")
    assert environment.address in deployment.depends_on


def test_the_environment_schema_has_the_deployment_schemas_route_grammar():
    import json
    from reconciler.config.validation import SCHEMA_DIR
    deployment = json.loads((SCHEMA_DIR / "managedOnlineDeployment.schema.json").read_text())
    environment = json.loads((SCHEMA_DIR / "environment.schema.json").read_text())
    assert environment["$defs"]["route"] == deployment["$defs"]["route"]


# -- scalars as the SDK reads them ---------------------------------------------------------------
def test_quoted_numbers_and_booleans_are_read_as_the_sdk_reads_them(demo_stack):
    edit(demo_stack / "deployment.yml", "instance_count: 1", 'instance_count: "2"\napp_insights_enabled: "true"')
    edit(demo_stack / "deployment.yml", "  period: 1\n", '  period: "3"\n')
    spec = load_stack(demo_stack).by_kind("deployment")[0].spec
    assert (spec["instance_count"], spec["app_insights_enabled"], spec["readiness_probe"]["period"]) == (2, True, 3)


def test_a_string_field_keeps_its_string_and_a_non_number_is_still_refused(demo_stack):
    from reconciler.config.validation import coerce_scalars, schema_for
    schema = schema_for("model")
    assert coerce_scalars({"name": "m", "version": "007"}, schema, schema) == {"name": "m", "version": "007"}
    edit(demo_stack / "deployment.yml", "instance_count: 1", 'instance_count: "two"')
    with pytest.raises(StackInvalid, match="instance_count: expected integer, got string 'two'"):
        load_stack(demo_stack)


@pytest.mark.parametrize("content, message", [
    (None, "is not there"),
    ("name: x\nchannels: [conda-forge]\n", "has no `dependencies:` list"),
    ("dependencies: [python=3.10\n", "is not valid YAML"),
])
def test_a_referenced_conda_file_is_checked_for_what_it_is(demo_stack, content, message):
    edit(demo_stack / "deployment.yml", "  image: reconciler/demo-tfserving:latest",
         "  image: reconciler/demo-tfserving:latest\n  conda_file: env/conda.yaml")
    if content is not None:
        (demo_stack / "env").mkdir()
        (demo_stack / "env" / "conda.yaml").write_text(content)
    with pytest.raises(StackInvalid) as caught:
        load_stack(demo_stack)
    # (A file that is no YAML at all is reported by the loader too: it cannot tell it is no stack document.)
    [problem] = [p for p in caught.value.problems if p.path == "environment.conda_file"]
    assert problem.line == 12
    assert problem.message.startswith("conda file 'env/conda.yaml' " + message)
