"""The three plan renderings (text, Markdown, JSON) against golden files in tests/golden/.

One fixed plan covers create, update in place, replace with "# forces replacement", delete and
a secret environment variable. Run with UPDATE_GOLDEN=1 to rewrite the golden files after an
intended change to the output, then review the diff.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from reconciler.addresses import Address
from reconciler.cli import common
from reconciler.config.graph import DesiredGraph, DesiredResource, spec_hash
from reconciler.render.masking import masked_plan_dict
from reconciler.planning.plan import Plan
from reconciler.planning.planner import PlanOptions, make_plan
from reconciler.render.markdown import MAX_CHANGES_SHOWN, render_plan_markdown
from reconciler.render.masking import MASK
from reconciler.render.text import render_plan
from reconciler.state.model import StateFile, StateRecord

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
ANSI = re.compile(r"\x1b\[")
SECRET = "s3cr3t-do-not-print"
OLD_SECRET = "0ld-s3cr3t-do-not-print"
CREATED_AT = "2024-01-02T03:04:05+00:00"


def deployment(name: str, image: str, api_key: str, description: str = "", count: int = 1) -> dict:
    return {
        "endpoint": "ep", "name": name, "description": description, "tags": {"team": "ml"},
        "image": image, "model": {"address": "model.m:1", "content_digest": "sha256:aaa",
                                  "mount_path": "/var/azureml-app/azureml-models/m/1"},
        "environment_variables": {"API_KEY": api_key, "MODEL_NAME": "half_plus_two"},
        "routes": {"scoring": {"port": 8501, "path": "/v1/models/half_plus_two:predict"}},
        "instance_count": count,
    }


MODEL = {"name": "m", "version": "1", "type": "custom_model", "content_digest": "sha256:aaa"}
DESIRED = {
    # create: not in state (and carries a secret, shown masked)
    "model.m:1": (MODEL, ()),
    "deployment.ep/green": (deployment("green", "tfs:2", SECRET), ("model.m:1",)),
    # replace: the image forces it; the description alone would be in place
    "deployment.ep/blue": (deployment("blue", "tfs:2", SECRET, description="new"), ("model.m:1",)),
    # update in place: the traffic split
    "endpoint.ep": ({"name": "ep", "auth_mode": "key", "traffic": {"blue": 50, "green": 50}},
                    ("deployment.ep/blue", "deployment.ep/green")),
    # in place: scaling only
    "deployment.ep/red": (deployment("red", "tfs:1", SECRET, count=3), ()),
}
PRIOR = {
    "deployment.ep/blue": (deployment("blue", "tfs:1", OLD_SECRET, description="old"), ("model.m:1",)),
    "endpoint.ep": ({"name": "ep", "auth_mode": "key", "traffic": {"blue": 100}},
                    ("deployment.ep/blue", "deployment.ep/old")),
    "deployment.ep/red": (deployment("red", "tfs:1", SECRET, count=1), ()),
    # delete: no longer in the configuration
    "deployment.ep/old": (deployment("old", "tfs:0", OLD_SECRET), ()),
}


def golden_plan() -> Plan:
    resources = {}
    for address, (spec, depends_on) in DESIRED.items():
        parsed = Address.parse(address)
        resources[parsed] = DesiredResource(parsed, spec, spec_hash(spec),
                                            tuple(Address.parse(d) for d in depends_on), "stack.yml:1")
    state = StateFile(stack="golden", lineage="11111111-2222-3333-4444-555555555555", serial=7)
    for address, (spec, depends_on) in PRIOR.items():
        state = state.with_record(StateRecord(address, "docker", spec, spec_hash(spec), depends_on))
    return make_plan(DesiredGraph("golden", dict(sorted(resources.items()))), state,
                     PlanOptions(created_at=CREATED_AT))


def rendered(kind: str, plan: Plan) -> str:
    """What `reconciler plan` prints (click.echo adds the final newline)."""
    if kind == "txt":
        return render_plan(plan, color=False) + "\n"
    if kind == "md":
        return render_plan_markdown(plan) + "\n"
    return json.dumps(masked_plan_dict(plan.to_dict()), indent=2) + "\n"


@pytest.mark.parametrize("kind", ["txt", "md", "json"])
def test_rendering_matches_golden_file(kind):
    path = GOLDEN / f"plan.{kind}"
    actual = rendered(kind, golden_plan())
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path} is missing; run with UPDATE_GOLDEN=1 to create it"
    assert actual == path.read_text(encoding="utf-8"), f"{path} differs; UPDATE_GOLDEN=1 rewrites it"


def test_golden_plan_covers_every_action():
    plan = golden_plan()
    assert str(plan).splitlines() == [
        "+ model.m:1",
        "~ deployment.ep/red (instance_count)",
        "-/+ deployment.ep/blue (description, environment_variables.API_KEY!, image!)",
        "+ deployment.ep/green",
        "~ endpoint.ep (traffic.blue, traffic.green)",
        "- deployment.ep/old",
        "Plan: 3 to add, 2 to change, 2 to destroy.",
    ]


@pytest.mark.parametrize("kind", ["txt", "md"])
def test_human_renderings_mask_secrets(kind):
    text = rendered(kind, golden_plan())
    assert SECRET not in text and OLD_SECRET not in text
    assert f'API_KEY": "{MASK}"' in text  # in created and deleted resources' env maps
    assert "# forces replacement" in text


def test_text_marks_only_replacing_fields():
    text = rendered("txt", golden_plan())
    assert '~ image = "tfs:1" -> "tfs:2"  # forces replacement' in text
    assert '~ description = "old" -> "new"\n' in text


def test_markdown_keeps_the_replace_symbol_in_the_diff():
    markdown = rendered("md", golden_plan())
    assert '\n-/+ deployment "ep/blue" {\n' in markdown
    assert '\n+ deployment "ep/blue" {' not in markdown


def test_json_golden_is_a_loadable_plan_with_secrets_masked():
    loaded = Plan.from_dict(json.loads((GOLDEN / "plan.json").read_text()))
    assert [c.address for c in loaded.changes] == [c.address for c in golden_plan().changes]
    assert "(sensitive value)" in (GOLDEN / "plan.json").read_text()
    assert "s3cr3t" not in (GOLDEN / "plan.json").read_text()


def test_color_only_when_asked():
    plan = golden_plan()
    assert ANSI.search(render_plan(plan, color=True))
    assert not ANSI.search(render_plan(plan, color=False))


@pytest.mark.parametrize("no_color, tty, expected", [
    (None, True, True),
    ("1", True, False),
    ("", True, True),   # no-color.org: an empty NO_COLOR does not count
    (None, False, False),
])
def test_use_color_follows_no_color_and_tty(monkeypatch, no_color, tty, expected):
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.setattr(common.sys.stdout, "isatty", lambda: tty, raising=False)
    assert common.use_color() is expected


def test_markdown_truncates_long_plans_with_a_note():
    plan = golden_plan()
    markdown = render_plan_markdown(plan, max_changes=2)
    assert "_4 more change(s) not shown: this comment is truncated." in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ") and "`" in line]
    assert len(table_rows) == 2
    assert markdown.count("<details>") == 2
    assert "**Plan: 3 to add, 2 to change, 2 to destroy.**" in markdown  # the summary counts everything


def test_markdown_has_no_note_when_everything_fits():
    plan = golden_plan()
    assert len(plan.actionable) < MAX_CHANGES_SHOWN
    assert "not shown" not in render_plan_markdown(plan)
    assert "not shown" not in render_plan_markdown(plan, max_changes=len(plan.actionable))
