"""Secrets are masked by where they come from, not only by name (#12 finding 6): every value a
deployment's environment_variables hold is hidden in plan text, --json and --markdown, unless
reconciler set it or the stack settings list it under `plain_environment_variables`."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.render.masking import is_sensitive, mask_value

LEAKY = {
    "DB_PASS": "hunter2-db",
    "HF_AUTH": "hf_abcdefghijklmnop",
    "DATABASE_URL": "postgres://app:s3cr3t@db.internal:5432/app",
    "AZURE_STORAGE_SAS": "sv=2022-11-02&sig=AbCdEf0123456789",
}


def with_environment(stack, plain: list[str] | None = None):
    path = stack / "deployment.yml"
    extra = "".join(f"  {name}: {value!r}\n".replace("'", '"') for name, value in LEAKY.items())
    path.write_text(path.read_text().replace("  MODEL_NAME: half_plus_two\n", "  MODEL_NAME: half_plus_two\n" + extra))
    if plain is not None:
        (stack / "reconciler.yml").write_text("plain_environment_variables: [" + ", ".join(plain) + "]\n")


@pytest.mark.parametrize("form", ["text", "--json", "--markdown"])
def test_no_environment_value_reaches_a_plan(demo_stack, tmp_path, form):
    with_environment(demo_stack)
    args = ["plan", str(demo_stack), "--no-refresh", "--state", str(tmp_path / "s.json")]
    result = CliRunner().invoke(cli, args + ([] if form == "text" else [form]))
    assert result.exit_code == 0, result.output
    for value in LEAKY.values():
        assert value not in result.output, (form, value)
    assert "s3cr3t" not in result.output and "(sensitive value)" in result.output
    assert '"MODEL_NAME": "half_plus_two"' not in result.output
    # Set by reconciler itself: a path, never a secret.
    assert "/var/azureml-app/azureml-models/tfserving-mounted/1" in result.output


def test_the_stack_can_mark_variables_plain(demo_stack, tmp_path):
    with_environment(demo_stack, plain=["MODEL_NAME", "MODEL_BASE_PATH"])
    result = CliRunner().invoke(cli, ["plan", str(demo_stack), "--no-refresh", "--state", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert '"MODEL_NAME": "half_plus_two"' in result.output
    assert '"DB_PASS": "(sensitive value)"' in result.output
    assert "hunter2" not in result.output


def test_rules():
    assert is_sensitive("environment_variables.ANYTHING")
    assert not is_sensitive("environment_variables.ANYTHING", frozenset({"ANYTHING"}))
    assert not is_sensitive("environment_variables.AZUREML_MODEL_DIR")
    assert is_sensitive("outputs.keys") and is_sensitive("spec.environment_variables.X")
    assert not is_sensitive("image") and not is_sensitive("routes.scoring.path")
    assert mask_value("", {"environment_variables": {"A": "1", "B": "2"}, "image": "i"}, plain=frozenset({"B"})) == \
        {"environment_variables": {"A": "(sensitive value)", "B": "2"}, "image": "i"}
