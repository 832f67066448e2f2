"""code_configuration (issue 14): the code folder is fingerprinted like a model and mounted where
Azure ML puts it, the inference server's variables are set as Azure ML's local endpoints set
them, a change of the code replaces the deployment, and a missing folder or script is refused."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.config.stack import load_stack
from reconciler.errors import StackInvalid
from reconciler.planning.planner import PlanOptions, make_plan
from reconciler.state.model import StateFile, StateRecord

SCORE = "def init():\n    pass\n\n\ndef run(raw_data):\n    return raw_data\n"
ENDPOINT = "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json\n" \
           "name: sample\nauth_mode: key\n"


def scoring_stack(tmp_path, code="../onlinescoring/", script="score.py", extra=""):
    """The quickstart's layout: the stack beside shared model and code folders (root above it)."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "sklearn_regression_model.pkl").write_bytes(b"pickle")
    (tmp_path / "onlinescoring" / "sub").mkdir(parents=True)
    (tmp_path / "onlinescoring" / "score.py").write_text(SCORE)
    (tmp_path / "onlinescoring" / "sub" / "score.py").write_text(SCORE)
    stack = tmp_path / "sample"
    stack.mkdir()
    (stack / "reconciler.yml").write_text("root: ..\n")
    (stack / "endpoint.yml").write_text(ENDPOINT)
    (stack / "blue-deployment.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n"
        "name: blue\nendpoint_name: sample\nmodel:\n  path: ../model/\n"
        f"code_configuration:\n  code: {code}\n  scoring_script: {script}\n"
        f"environment:\n  image: reconciler/azureml-inference-base:latest\n{extra}"
        "instance_type: Standard_DS3_v2\ninstance_count: 1\n")
    return stack


def deployment_spec(stack):
    return load_stack(stack).by_kind("deployment")[0].spec


def test_the_code_folder_is_fingerprinted_and_mounted_where_azure_ml_puts_it(tmp_path):
    spec = deployment_spec(scoring_stack(tmp_path))
    assert {k: v for k, v in spec["code"].items() if k != "content_digest"} == {
        "path": "onlinescoring", "mount_path": "/var/azureml-app/onlinescoring", "scoring_script": "score.py"}
    assert spec["code"]["content_digest"].startswith("sha256:")
    # azure-ai-ml's AzureMlImageContext: the script's folder (trailing slash) and its file name;
    # the model's parent folder, which holds the model folder (score.py joins "model/...").
    assert {k: v for k, v in spec["environment_variables"].items()} == {
        "AML_APP_ROOT": "/var/azureml-app/onlinescoring/", "AZUREML_ENTRY_SCRIPT": "score.py",
        "AZUREML_MODEL_DIR": "/var/azureml-app/azureml-models/blue-model/1"}
    # Azure ML's inference server: port 5001, GET / for probes, POST /score.
    assert spec["routes"] == {"liveness": {"port": 5001, "path": "/"}, "readiness": {"port": 5001, "path": "/"},
                              "scoring": {"port": 5001, "path": "/score"}}


def test_a_script_in_a_subfolder_sets_the_app_root_to_that_folder(tmp_path):
    variables = deployment_spec(scoring_stack(tmp_path, script="sub/score.py"))["environment_variables"]
    assert (variables["AML_APP_ROOT"], variables["AZUREML_ENTRY_SCRIPT"]) == \
        ("/var/azureml-app/onlinescoring/sub", "score.py")


def test_the_users_environment_variables_win(tmp_path):
    stack = scoring_stack(tmp_path, extra="environment_variables:\n  AZUREML_ENTRY_SCRIPT: other.py\n  WORKERS: 2\n")
    variables = deployment_spec(stack)["environment_variables"]
    assert variables["AZUREML_ENTRY_SCRIPT"] == "other.py" and variables["WORKERS"] == "2"
    assert variables["AML_APP_ROOT"] == "/var/azureml-app/onlinescoring/"


def test_the_code_configuration_is_served_not_refused(tmp_path):
    graph = load_stack(scoring_stack(tmp_path))
    assert graph.unsupported == ()


REFUSALS = [
    # (code, scoring_script) -> the located message validate prints
    ("../onlinescoring/", "nope.py",
     "blue-deployment.yml:8: code_configuration.scoring_script: scoring script 'nope.py' is not in the code "
     "folder '../onlinescoring/'"),
    ("../onlinescoring/", "../model/sklearn_regression_model.pkl",
     "blue-deployment.yml:8: code_configuration.scoring_script: scoring script "
     "'../model/sklearn_regression_model.pkl' leads out of the code folder '../onlinescoring/'"),
    ("../missing/", "score.py",
     "blue-deployment.yml:7: code_configuration.code: code folder '../missing/' not found"),
    ("../onlinescoring/score.py", "score.py",
     "blue-deployment.yml:7: code_configuration.code: code '../onlinescoring/score.py' is a file, not a folder"),
    ("../../", "score.py",
     "blue-deployment.yml:7: code_configuration.code: code folder '../../' leads out of the stack directory"),
]


@pytest.mark.parametrize("code, script, message", REFUSALS, ids=[r[2].split(": ", 2)[2][:40] for r in REFUSALS])
def test_a_missing_code_folder_or_scoring_script_is_refused_at_validate(tmp_path, code, script, message):
    stack = scoring_stack(tmp_path, code=code, script=script)
    with pytest.raises(StackInvalid) as caught:
        load_stack(stack)
    assert [str(p).split("\n")[0] for p in caught.value.problems] == [f"{stack}/{message}"] or \
        str(caught.value.problems[0]).startswith(f"{stack}/{message}")
    result = CliRunner().invoke(cli, ["validate", str(stack)])
    assert result.exit_code == 1 and f"{stack}/{message}" in result.stderr


def test_a_code_configuration_without_its_scoring_script_is_refused(tmp_path):
    stack = scoring_stack(tmp_path)
    path = stack / "blue-deployment.yml"
    path.write_text(path.read_text().replace("  scoring_script: score.py\n", ""))
    with pytest.raises(StackInvalid) as caught:
        load_stack(stack)
    assert "code_configuration has no scoring_script" in str(caught.value.problems[0])


def applied(graph) -> StateFile:
    state = StateFile(stack=graph.stack, lineage="lineage-1", serial=1)
    for resource in graph.resources.values():
        state = state.with_record(StateRecord(resource.address, "docker", resource.spec, resource.spec_hash,
                                              resource.depends_on, "ready"))
    return state


@pytest.mark.parametrize("edit, expect", [
    (lambda root: (root / "onlinescoring" / "score.py").write_text(SCORE + "# changed\n"), "replace"),
    (lambda root: (root / "onlinescoring" / "helper.py").write_text("X = 1\n"), "replace"),
    (lambda root: None, "no changes"),
], ids=["script edited", "file added", "unchanged"])
def test_a_change_of_the_code_folders_content_replaces_the_deployment(tmp_path, edit, expect):
    stack = scoring_stack(tmp_path)
    before = applied(load_stack(stack))
    edit(tmp_path)
    plan = make_plan(load_stack(stack), before, PlanOptions(driver="docker"))
    deployment = next(c for c in plan.changes if str(c.address) == "deployment.sample/blue")
    if expect == "no changes":
        assert deployment.action.value == "no-op"
    else:
        # Create-before-destroy, as any replacement: the old deployment serves until the new one is ready.
        assert deployment.action.value == "create-then-delete", str(plan)
        assert "code" in str(plan)


class _Configs:
    """The two calls of the swarm config API that storing a folder's files makes."""

    def __init__(self) -> None:
        self.created: dict[str, bytes] = {}
        self.configs = self
        self.api = self

    def list(self, filters=None):
        return []

    def create_config(self, name, data, labels=None):
        self.created[name] = data
        return {"ID": f"id-{len(self.created)}"}


def test_on_swarm_the_code_folder_is_configs_laid_out_as_the_docker_mount(tmp_path):
    from reconciler.addresses import Address
    from reconciler.drivers.base import StepContext
    from reconciler.drivers.swarm.driver import SwarmDriver
    stack = scoring_stack(tmp_path)
    graph = load_stack(stack)
    [deployment] = graph.by_kind("deployment")
    engine = _Configs()
    ctx = StepContext("sample", tmp_path, tmp_path / "state", records=lambda: {}, identity="identity-1")
    references = SwarmDriver(engine)._code_configs(ctx, Address.parse("deployment.sample/blue"), deployment.spec,
                                                   deployment.spec_hash)
    assert sorted(r["File"]["Name"] for r in references) == [
        "/var/azureml-app/onlinescoring/score.py", "/var/azureml-app/onlinescoring/sub/score.py"]
    assert all(r["File"]["Mode"] == 0o444 for r in references)
    assert sorted(engine.created.values()) == [SCORE.encode()] * 2


def test_the_kubernetes_rendering_refuses_a_scoring_script_it_cannot_carry(tmp_path):
    from reconciler.errors import ReconcilerError
    from reconciler.render.kubernetes import render_kubernetes
    stack = scoring_stack(tmp_path)
    with pytest.raises(ReconcilerError, match="runs a scoring script") as refused:
        render_kubernetes(load_stack(stack))
    assert str(refused.value).startswith(f"{stack / 'blue-deployment.yml'}:6: deployment sample/blue"), refused.value
