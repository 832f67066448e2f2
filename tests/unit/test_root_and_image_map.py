"""Shared paths into a root the user names, and the image map (#13)."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.config.settings import LoadOptions
from reconciler.config.image_map import rule_from_option
from reconciler.config.stack import load_stack
from reconciler.errors import StackInvalid


@pytest.fixture
def shared(demo_stack):
    """examples/model-1 beside examples/half-plus-two, whose model.yml points at ../model-1."""
    examples = demo_stack.parent / "examples"
    examples.mkdir()
    stack = examples / "half-plus-two"
    shutil.move(str(demo_stack), stack)
    (examples / "model-1").mkdir()
    shutil.move(str(stack / "half_plus_two"), examples / "model-1" / "half_plus_two")
    model = stack / "model.yml"
    model.write_text(model.read_text().replace("path: ./half_plus_two", "path: ../model-1/half_plus_two"))
    return stack


def test_a_path_out_of_the_stack_is_refused_without_a_root(shared):
    with pytest.raises(StackInvalid) as caught:
        load_stack(shared)
    [problem] = caught.value.problems
    assert "leads out of the stack directory" in problem.message and "--root DIR" in problem.hint


def test_a_root_above_the_stack_lets_paths_lead_into_it(shared):
    graph = load_stack(shared, options=LoadOptions(root=shared.parent))
    [model] = graph.by_kind("model")
    assert model.spec["path"] == "model-1/half_plus_two" and graph.root == str(shared.parent.resolve())


def test_the_root_can_be_a_stack_setting_relative_to_its_file(shared):
    (shared / "reconciler.yml").write_text("root: ..\n")
    assert load_stack(shared).by_kind("model")[0].spec["path"] == "model-1/half_plus_two"


def test_a_root_that_does_not_contain_the_stack_is_a_located_error(shared, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (shared / "reconciler.yml").write_text(f"root: {elsewhere}\n")
    with pytest.raises(StackInvalid) as caught:
        load_stack(shared)
    assert any(str(p).startswith(f"{shared}/reconciler.yml:1: root: root {elsewhere} does not contain")
               for p in caught.value.problems)


def test_symlinks_never_lead_out_of_the_root(shared, tmp_path):
    (tmp_path / "secret").write_text("s")
    (shared.parent / "model-1" / "half_plus_two" / "00000123" / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(StackInvalid, match="a link out of the stack directory"):
        load_stack(shared, options=LoadOptions(root=shared.parent))


def test_cli_root_option_plans_the_shared_model(shared, tmp_path):
    result = CliRunner().invoke(cli, ["plan", str(shared), "--root", str(shared.parent), "--no-refresh",
                                      "--state", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert '+ path = "model-1/half_plus_two"' in result.output


# -- the image map ------------------------------------------------------------------------------------
def aml_image(stack, image="docker.io/tensorflow/serving:latest"):
    path = stack / "deployment.yml"
    path.write_text(path.read_text().replace("image: reconciler/demo-tfserving:latest", f"image: {image}"))


def test_settings_map_an_image_and_the_plan_shows_it(demo_stack, tmp_path):
    aml_image(demo_stack)
    (demo_stack / "reconciler.yml").write_text(
        "images:\n  - name: docker.io/tensorflow/serving\n    newName: reconciler/demo-tfserving\n    newTag: latest\n")
    graph = load_stack(demo_stack)
    assert graph.by_kind("deployment")[0].spec["image"] == "reconciler/demo-tfserving:latest"
    result = CliRunner().invoke(cli, ["plan", str(demo_stack), "--no-refresh", "--state", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "Image map: deployment.half-plus-two/tfserving: docker.io/tensorflow/serving:latest -> "
        f"reconciler/demo-tfserving:latest ({demo_stack}/reconciler.yml:2)\n")


def test_the_command_line_wins_over_the_settings(demo_stack):
    aml_image(demo_stack, "tensorflow/serving")
    (demo_stack / "reconciler.yml").write_text("images:\n  - {name: tensorflow/serving, newName: a/b, newTag: '1'}\n")
    options = LoadOptions(images=(rule_from_option("docker.io/library/tensorflow/serving=reconciler/x:2"),))
    # docker.io/library/x, docker.io/x and x are one repository.
    assert load_stack(demo_stack, options=options).by_kind("deployment")[0].spec["image"] == "reconciler/x:2"


def test_a_malformed_image_option_is_a_clear_error(demo_stack):
    result = CliRunner().invoke(cli, ["validate", str(demo_stack), "--image", "no-equals-sign"])
    assert result.exit_code == 1 and "--image expects FROM=TO" in result.stderr


@pytest.mark.parametrize("rule, image, expected", [
    ("mcr.microsoft.com/azureml/*", "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest", "base:1"),
    ("mcr.microsoft.com/azureml/*", "mcr.microsoft.com/azureml/minimal-py312-inference", "base:1"),
    ("mcr.microsoft.com/azureml/*", "mcr.microsoft.com/azureml-other/x:1", None),
    ("mcr.microsoft.com/azureml/*", "mcr.microsoft.com/azureml:1", None),
    ("tensorflow/*", "docker.io/tensorflow/serving:2", "base:1"),
])
def test_a_rule_ending_in_slash_star_names_every_repository_under_it(rule, image, expected):
    from reconciler.config.image_map import ImageRule, substitute
    mapped, used = substitute(image, (ImageRule(rule, None, "base", "1"),))
    assert (mapped if used else None) == expected


def machine_map(tmp_path, text: str):
    path = tmp_path / "stand-ins.yaml"
    path.write_text(text)
    return {"RECONCILER_IMAGE_MAP": str(path)}


def test_the_machine_image_map_applies_last(demo_stack, tmp_path):
    aml_image(demo_stack)
    env = machine_map(tmp_path, "images:\n  - {name: 'docker.io/tensorflow/*', newName: reconciler/machine, newTag: '1'}\n")
    state = ["--state", str(tmp_path / "s.json")]
    result = CliRunner(env=env).invoke(cli, ["plan", str(demo_stack), "--no-refresh", *state])
    assert result.exit_code == 0, result.output
    assert "-> reconciler/machine:1 (" + str(tmp_path / "stand-ins.yaml") + ":2)" in result.output
    (demo_stack / "reconciler.yml").write_text("images:\n  - {name: tensorflow/serving, newName: a/b, newTag: '2'}\n")
    result = CliRunner(env=env).invoke(cli, ["plan", str(demo_stack), "--no-refresh", *state])
    assert "-> a/b:2 (" in result.output and "reconciler/machine" not in result.output


@pytest.mark.parametrize("text, message", [
    ("images: [{newName: x}]\n", "stand-ins.yaml:1: images[0]: missing required key 'name'"),
    ("driver: swarm\nimages: []\n", "stand-ins.yaml:1: driver: `driver` is a stack setting"),
    ("- not a mapping\n", "stand-ins.yaml:1: no `images:` list"),
])
def test_a_bad_machine_image_map_is_a_located_error(demo_stack, tmp_path, text, message):
    result = CliRunner(env=machine_map(tmp_path, text)).invoke(cli, ["validate", str(demo_stack)])
    assert result.exit_code == 1 and message in result.stderr, result.stderr


def test_the_repository_stand_ins_map_azure_ml_base_images_to_the_offline_inference_base():
    from pathlib import Path
    from reconciler.config.image_map import substitute
    from reconciler.config.settings import machine_image_rules
    rules = machine_image_rules(Path(__file__).parents[2] / "images" / "stand-ins.yaml")
    assert substitute("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest", rules)[0] == \
        "reconciler/azureml-inference-base:latest"
