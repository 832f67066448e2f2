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


@pytest.mark.parametrize("written", ["AMLToken", "aml_token", "AADToken"])
def test_token_auth_modes_are_known_but_not_yet_served(demo_stack, written):
    edit(demo_stack / "endpoint.yml", "auth_mode: key", f"auth_mode: {written}")
    assert load_stack(demo_stack).unsupported[0].message == f"auth_mode {written} is not supported on a local engine"


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
