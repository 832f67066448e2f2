"""Schema and cross-document checks: each bad stack gives one precise file:line: path error."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.config.stack import load_stack
from reconciler.errors import StackInvalid

# The TF Serving how-to's example; the conformance suite (tests/conformance) covers the rest.
# (beside the repository or a worktree's parent, as tests/conformance finds it).
CORPUS = next((parent / "shared/corpus/azureml-examples/cli/endpoints/online/custom-container/tfserving/half-plus-two"
               for parent in Path(__file__).resolve().parents[2].parents
               if (parent / "shared/corpus/azureml-examples").is_dir()), Path("../shared/corpus/azureml-examples"))


def edit(stack: Path, file: str, old: str, new: str) -> None:
    path = stack / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1))


def problems_of(stack: Path, **variables) -> list[str]:
    with pytest.raises(StackInvalid) as caught:
        load_stack(stack, variables)
    return [str(p) for p in caught.value.problems]


# (case id, file, old text, new text, expected "file:line: path: message" fragment)
BAD_STACKS = [
    ("unknown-key", "deployment.yml", "instance_count: 1", "instance_count: 1\ninstance_cuont: 2",
     "deployment.yml:24: instance_cuont: unknown key 'instance_cuont' (did you mean 'instance_count'?)"),
    ("wrong-type", "deployment.yml", "instance_count: 1", "instance_count: one",
     "deployment.yml:23: instance_count: expected integer, got string 'one'"),
    ("zero-instances", "deployment.yml", "instance_count: 1", "instance_count: 0",
     "deployment.yml:23: instance_count: 0 is less than the minimum of 1"),
    ("bad-endpoint-name", "endpoint.yml", "name: half-plus-two", "name: 1st-endpoint",
     "endpoint.yml:2: name: '1st-endpoint' is not allowed here (endpoint names are 3-32 characters"),
    ("long-endpoint-name", "endpoint.yml", "name: half-plus-two", "name: " + "e" * 33,
     "endpoint.yml:2: name: '" + "e" * 33 + "' is not allowed here"),
    ("bad-auth-mode", "endpoint.yml", "auth_mode: key", "auth_mode: password",
     "endpoint.yml:4: auth_mode: 'password' is not one of: key, aml_token, aad_token"),
    ("traffic-sum", "endpoint.yml", "tfserving: 100", "tfserving: 90",
     "endpoint.yml:5: traffic: traffic adds up to 90%, not 100%"),
    ("traffic-unknown-deployment", "endpoint.yml", "tfserving: 100", "tfserving: 100\n  green: 0",
     "endpoint.yml:7: traffic.green: traffic names deployment 'green', which is not defined"),
    ("traffic-over-100", "endpoint.yml", "tfserving: 100", "tfserving: 101",
     "endpoint.yml:6: traffic.tfserving: 101 is greater than the maximum of 100"),
    ("missing-endpoint", "deployment.yml", "endpoint_name: half-plus-two", "endpoint_name: other-endpoint",
     "deployment.yml:3: endpoint_name: endpoint 'other-endpoint' is not defined in this stack"),
    ("missing-model", "deployment.yml", "azureml:tfserving-mounted:1", "azureml:tfserving-mounted:2",
     "deployment.yml:4: model: model 'azureml:tfserving-mounted:2' is not defined in this stack "
     "(models in this stack: azureml:tfserving-mounted:1)"),
    ("bad-model-reference", "deployment.yml", "azureml:tfserving-mounted:1", "tfserving-mounted",
     "deployment.yml:4: model: 'tfserving-mounted' is not allowed here (refer to a model"),
    ("model-path-missing", "model.yml", "path: ./half_plus_two", "path: ./no_such_dir",
     "model.yml:4: path: model path './no_such_dir' not found"),
    ("model-path-escape", "model.yml", "path: ./half_plus_two", "path: ../../etc",
     "model.yml:4: path: model path '../../etc' leads out of the stack directory"),
    ("relative-mount-path", "deployment.yml", "instance_type:", "model_mount_path: models\ninstance_type:",
     "deployment.yml:22: model_mount_path: 'models' is not allowed here (an absolute Linux path"),
    ("missing-image", "deployment.yml", "  image: reconciler/demo-tfserving:latest", "  name: tfserving",
     "deployment.yml:8: environment: missing required key 'image'"),
    ("port-out-of-range", "deployment.yml", "      port: 8501\n      path: /v1/models/half_plus_two:predict",
     "      port: 70000\n      path: /v1/models/half_plus_two:predict",
     "deployment.yml:20: environment.inference_config.scoring_route.port: 70000 is greater than the maximum"),
    ("route-without-slash", "deployment.yml", "path: /v1/models/half_plus_two:predict",
     "path: v1/models/half_plus_two:predict",
     "deployment.yml:21: environment.inference_config.scoring_route.path: 'v1/models/half_plus_two:predict' "
     "is not allowed here"),
    ("probe-unknown-key", "deployment.yml", "  period: 1\n", "  period: 1\n  delay: 3\n",
     "deployment.yml:27: readiness_probe.delay: unknown key 'delay'"),
    ("env-var-list", "deployment.yml", "  MODEL_NAME: half_plus_two", "  MODEL_NAME: [a, b]",
     "deployment.yml:7: environment_variables.MODEL_NAME: expected string or number or boolean, got list"),
    ("duplicate-key", "endpoint.yml", "auth_mode: key", "auth_mode: key\nauth_mode: key",
     "endpoint.yml:5: auth_mode: duplicate key 'auth_mode'"),
    ("yaml-syntax", "model.yml", "version: 1", "version: [1",
     "model.yml:4: YAML syntax error"),
    ("missing-placeholder", "model.yml", "version: 1", "version: {{MODEL_VERSION}}",
     "model.yml:3: placeholder {{MODEL_VERSION}} has no value (pass --var MODEL_VERSION=VALUE"),
    ("bad-model-version", "model.yml", "version: 1", "version: 1 beta",
     "model.yml:3: version: '1 beta' is not allowed here (versions are short names"),
    ("mirror-and-live", "endpoint.yml", "tfserving: 100", "tfserving: 100\nmirror_traffic:\n  tfserving: 10",
     "endpoint.yml:8: mirror_traffic.tfserving: deployment 'tfserving' gets both live and mirrored traffic"),
    ("tags-nested", "deployment.yml", "  team: demo", "  team: {a: 1}",
     "deployment.yml:32: tags.team: expected string or number or boolean, got dict"),
]


@pytest.mark.parametrize("case, file, old, new, expected", BAD_STACKS, ids=[c[0] for c in BAD_STACKS])
def test_bad_stack_gives_precise_error(demo_stack, case, file, old, new, expected):
    edit(demo_stack, file, old, new)
    problems = problems_of(demo_stack)
    matching = [p for p in problems if expected in p]
    assert matching, f"expected {expected!r} in {problems}"
    assert all(p.startswith(str(demo_stack)) for p in problems)


def test_twenty_distinct_kinds_of_bad_stack():
    assert len({case[0] for case in BAD_STACKS}) >= 20


def test_document_of_unknown_kind_is_ignored_and_listed(demo_stack):
    # Only Azure ML documents are stack documents; other YAML beside them is not an error (#13).
    (demo_stack / "notes.yml").write_text("# about this stack\nowner: ml-team\n")
    assert [str(i) for i in load_stack(demo_stack).ignored] == [
        f"{demo_stack}/notes.yml:2: neither an Azure ML endpoint, deployment, model or environment document nor "
        "stack settings (add `$schema:` if it is one)"]
    result = CliRunner().invoke(cli, ["validate", str(demo_stack)])
    assert result.exit_code == 0 and "Ignored: " in result.stderr and "notes.yml:2" in result.stderr


def test_duplicate_deployment_names_point_at_both(demo_stack):
    shutil.copy(demo_stack / "deployment.yml", demo_stack / "deployment-copy.yml")
    problems = problems_of(demo_stack)
    assert any(":2: name: deployment 'tfserving' of endpoint 'half-plus-two' is defined twice" in p
               and "deployment.yml" in p and "deployment-copy.yml" in p for p in problems), problems


def test_duplicate_endpoint(demo_stack):
    (demo_stack / "nested").mkdir()
    shutil.copy(demo_stack / "endpoint.yml", demo_stack / "nested" / "again.yaml")
    problems = problems_of(demo_stack)
    assert any("nested/again.yaml:2: name: endpoint 'half-plus-two' is defined twice" in p for p in problems)


def test_symlinked_yaml_out_of_stack_is_refused(demo_stack, tmp_path):
    outside = tmp_path / "outside.yml"
    outside.write_text("name: x\nauth_mode: key\n")
    os.symlink(outside, demo_stack / "linked.yml")
    assert any("linked.yml:1: file is a symlink that leads out of the stack directory" in p
               for p in problems_of(demo_stack))


def test_symlink_inside_model_out_of_stack_is_refused(demo_stack, tmp_path):
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", demo_stack / "half_plus_two" / "00000123" / "leak")
    assert any("model.yml:4: path: model path './half_plus_two' contains 00000123/leak, a link out" in p
               for p in problems_of(demo_stack))


def test_hidden_directories_are_skipped(demo_stack):
    (demo_stack / ".git").mkdir()
    (demo_stack / ".git" / "broken.yml").write_text("{{{")
    assert load_stack(demo_stack).stack == "half-plus-two"


def test_multi_document_file_and_line_numbers(demo_stack):
    combined = "\n---\n".join((demo_stack / f).read_text() for f in ("endpoint.yml", "model.yml"))
    (demo_stack / "endpoint.yml").unlink()
    (demo_stack / "model.yml").write_text(combined.replace("version: 1", "version: 1\nflavour: x"))
    problems = problems_of(demo_stack)
    assert any("model.yml:12: flavour: unknown key 'flavour'" in p for p in problems), problems


def test_placeholders_filled_from_vars(demo_stack):
    edit(demo_stack, "model.yml", "version: 1", "version: {{ MODEL_VERSION }}")
    edit(demo_stack, "deployment.yml", "azureml:tfserving-mounted:1", "azureml:tfserving-mounted@latest")
    graph = load_stack(demo_stack, {"MODEL_VERSION": "7"})
    assert [str(a) for a in graph.resources] == [
        "deployment.half-plus-two/tfserving", "endpoint.half-plus-two", "model.tfserving-mounted:7"]


def test_latest_picks_highest_numeric_version(demo_stack):
    for version in (2, 10):
        (demo_stack / f"model-{version}.yml").write_text(
            (demo_stack / "model.yml").read_text().replace("version: 1", f"version: {version}"))
    edit(demo_stack, "deployment.yml", "azureml:tfserving-mounted:1", "azureml:tfserving-mounted@latest")
    graph = load_stack(demo_stack)
    deployment = graph.resources[next(a for a in graph.resources if a.kind == "deployment")]
    assert deployment.spec["model"]["address"] == "model.tfserving-mounted:10"


def test_defaults_and_model_mount(demo_stack):
    graph = load_stack(demo_stack)
    spec = graph.by_kind("deployment")[0].spec
    assert spec["model"]["mount_path"] == "/var/azureml-app/azureml-models/tfserving-mounted/1"
    assert spec["environment_variables"]["AZUREML_MODEL_DIR"] == spec["model"]["mount_path"]
    assert spec["liveness_probe"] == {"initial_delay": 5, "period": 5, "timeout": 2,
                                      "failure_threshold": 30, "success_threshold": 1}
    assert spec["request_settings"]["request_timeout_ms"] == 5000


def test_model_content_changes_the_digest(demo_stack):
    before = load_stack(demo_stack).by_kind("model")[0].spec["content_digest"]
    (demo_stack / "half_plus_two" / "00000123" / "assets" / "foo.txt").write_text("changed")
    after = load_stack(demo_stack).by_kind("model")[0].spec["content_digest"]
    assert before != after


def test_cli_validate_ok_and_json(demo_stack):
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(demo_stack)])
    assert result.exit_code == 0, result.output
    assert "is valid: 1 endpoint(s), 1 deployment(s), 1 model(s)." in result.output
    result = runner.invoke(cli, ["validate", "--json", str(demo_stack)])
    assert json.loads(result.output)["valid"] is True


def test_cli_validate_error_exit_1_with_location(demo_stack):
    edit(demo_stack, "endpoint.yml", "auth_mode: key", "auth_mode: nope")
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(demo_stack)])
    assert result.exit_code == 1
    assert f"{demo_stack}/endpoint.yml:4: auth_mode: 'nope' is not one of" in result.output
    result = runner.invoke(cli, ["validate", "--json", str(demo_stack)])
    assert result.exit_code == 1
    problem = json.loads(result.output)["problems"][0]
    assert (problem["line"], problem["path"]) == (4, "auth_mode")


def test_cli_bad_var_argument(demo_stack):
    result = CliRunner().invoke(cli, ["validate", str(demo_stack), "--var", "novalue"])
    assert result.exit_code == 1 and "--var expects NAME=VALUE" in result.output


def test_public_examples_without_models_say_model_path_not_found():
    # The how-to's script downloads the model; the example as committed has none.
    assert CORPUS.is_dir(), f"the shared corpus is missing: {CORPUS} (see ../shared/corpus/README.md)"
    problems = problems_of(CORPUS, MODEL_VERSION="1")
    assert any("tfserving-deployment.yml:7: model.path: model path './half_plus_two' not found" in p
               for p in problems)


def test_mirrored_traffic_goes_to_one_deployment_only(tmp_path):
    """Issue 15: Azure ML mirrors to one deployment (how-to-safely-rollout-online-endpoints)."""
    stack = tmp_path / "blue-green"
    shutil.copytree(Path(__file__).resolve().parents[2] / "stacks" / "blue-green", stack)
    (stack / "canary.yml").write_text((stack / "green.yml").read_text().replace("name: green", "name: canary", 1))
    edit(stack, "endpoint.yml", "  blue: 90\n  green: 10", "  blue: 100\nmirror_traffic:\n  green: 10\n  canary: 10")
    assert problems_of(stack) == [
        f"{stack / 'endpoint.yml'}:7: mirror_traffic: mirror_traffic names 2 deployments (canary, green): "
        "Azure ML mirrors to one deployment only (keep one of them)"]
    edit(stack, "endpoint.yml", "  canary: 10", "  canary: 0")
    load_stack(stack, {})  # a 0% entry mirrors nothing
