"""Config fixes found by the conformance suite (tests/conformance, #13)."""
from __future__ import annotations

import pytest

from reconciler.config.stack import load_stack
from reconciler.errors import StackInvalid


def test_a_tool_config_with_a_duplicate_key_is_ignored_not_an_error(demo_stack):
    # As triton/single-model/olive_model_analyzer/config_bert_olive_analyze.yml in Azure ML's examples.
    tools = demo_stack / "olive_model_analyzer"
    tools.mkdir()
    (tools / "config.yml").write_text("input_model:\n  type: PyTorchModel\ncheckpoint_directory: a\n"
                                      "checkpoint_directory: b\n")
    graph = load_stack(demo_stack)
    assert [str(ignored.file).endswith("olive_model_analyzer/config.yml") for ignored in graph.ignored] == [True]


def test_a_duplicate_key_in_a_stack_document_is_still_an_error(demo_stack):
    endpoint = demo_stack / "endpoint.yml"
    endpoint.write_text(endpoint.read_text() + "auth_mode: key\n")
    with pytest.raises(StackInvalid) as caught:
        load_stack(demo_stack)
    assert any("duplicate key 'auth_mode'" in str(problem) for problem in caught.value.problems)


@pytest.mark.parametrize("model_type", ["mlflow_model", "triton_model"])
def test_a_no_code_deployment_is_refused_as_such(demo_stack, model_type):
    (demo_stack / "ncd-deployment.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n"
        "name: ncd\nendpoint_name: half-plus-two\nmodel:\n  name: m\n  version: 1\n  path: ./half_plus_two\n"
        f"  type: {model_type}\ninstance_count: 1\n")
    with pytest.raises(StackInvalid) as caught:
        load_stack(demo_stack)
    [problem] = [p for p in caught.value.problems if "ncd-deployment.yml" in str(p)]
    assert str(problem).startswith(f"{demo_stack}/ncd-deployment.yml:8: model.type: no-code deployments "
                                   f"(model type {model_type} without an environment) are not supported")
    assert "environment.inference_config" in problem.hint


def test_kubernetes_resources_are_refused_as_such(demo_stack):
    # As kubernetes/kubernetes-blue-deployment.yml in Azure ML's examples.
    deployment = demo_stack / "deployment.yml"
    deployment.write_text(deployment.read_text() + "resources:\n  requests:\n    cpu: \"0.1\"\n")
    with pytest.raises(StackInvalid) as caught:
        load_stack(demo_stack)
    [problem] = caught.value.problems
    assert problem.path == "resources" and problem.message.startswith(
        "resources (Kubernetes requests and limits of a kubernetesOnlineDeployment) is not supported")
    assert "instance_type" in problem.hint


def test_a_scoring_script_with_a_conda_file_runs_in_the_image_built_from_it(demo_stack):
    # As managed/sample/blue-deployment.yml (issue 14): the environment is built, the script runs in it.
    (demo_stack / "conda.yaml").write_text("name: env\ndependencies:\n  - python=3.10\n")
    (demo_stack / "score.py").write_text("def run(data):\n    return data\n")
    deployment = demo_stack / "deployment.yml"
    deployment.write_text(deployment.read_text().replace(
        "  image: reconciler/demo-tfserving:latest", "  image: reconciler/demo-tfserving:latest\n  conda_file: conda.yaml")
        + "code_configuration:\n  code: .\n  scoring_script: score.py\n")
    graph = load_stack(demo_stack)
    assert graph.unsupported == ()
    [environment], [served] = graph.by_kind("environment"), graph.by_kind("deployment")
    assert environment.address in served.depends_on and served.spec["image"] == environment.spec["image"]
    assert served.spec["code"]["scoring_script"] == "score.py"
