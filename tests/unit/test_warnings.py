"""validate and plan agree, and what is valid but probably unintended is a warning (#13)."""
from __future__ import annotations

import json

from click.testing import CliRunner

from reconciler.cli.main import cli

NO_TRAFFIC = "sends no live traffic to any of its deployments"


def two_deployments_without_traffic(stack):
    endpoint = stack / "endpoint.yml"
    endpoint.write_text("\n".join(l for l in endpoint.read_text().splitlines()
                                  if not l.strip().startswith(("traffic", "tfserving:"))) + "\n")
    second = (stack / "deployment.yml").read_text().replace("name: tfserving", "name: second")
    (stack / "second.yml").write_text(second)


def test_no_live_traffic_is_a_located_warning_in_validate_and_plan(demo_stack, tmp_path):
    two_deployments_without_traffic(demo_stack)
    runner = CliRunner()
    validated = runner.invoke(cli, ["validate", str(demo_stack)])
    assert validated.exit_code == 0, validated.output
    assert f"Warning: {demo_stack}/endpoint.yml:" in validated.stderr and NO_TRAFFIC in validated.stderr
    assert "(second, tfserving)" in validated.stderr
    as_json = json.loads(runner.invoke(cli, ["validate", str(demo_stack), "--json"]).stdout)
    assert NO_TRAFFIC in as_json["warnings"][0]["message"]
    for form in ([], ["--json"], ["--markdown"]):
        planned = runner.invoke(cli, ["plan", str(demo_stack), "--no-refresh", "--state", str(tmp_path / "s.json"),
                                      *form])
        assert planned.exit_code == 0, planned.output
        assert NO_TRAFFIC in planned.stdout, form


def test_one_deployment_without_traffic_gets_all_of_it_and_no_warning(demo_stack):
    endpoint = demo_stack / "endpoint.yml"
    endpoint.write_text("\n".join(l for l in endpoint.read_text().splitlines()
                                  if not l.strip().startswith(("traffic", "tfserving:"))) + "\n")
    validated = CliRunner().invoke(cli, ["validate", str(demo_stack)])
    assert validated.exit_code == 0 and "Warning" not in validated.stderr


def test_validate_refuses_what_plan_refuses_with_the_same_message(demo_stack, tmp_path):
    path = demo_stack / "deployment.yml"
    path.write_text(path.read_text() + "code_configuration:\n  code: ./src\n  scoring_script: score.py\n")
    runner = CliRunner()
    validated = runner.invoke(cli, ["validate", str(demo_stack)])
    planned = runner.invoke(cli, ["plan", str(demo_stack), "--no-refresh", "--state", str(tmp_path / "s.json")])
    assert validated.exit_code == planned.exit_code == 1
    located = [line for line in validated.stderr.splitlines() if "code_configuration" in line]
    assert located and located == [line for line in planned.stderr.splitlines() if "code_configuration" in line]
