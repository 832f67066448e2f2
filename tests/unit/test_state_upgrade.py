"""Absent equals default: a state written by an older reconciler never forces replacement.

The fixture is a state file written by main at f1eb538 with a real apply of stacks/blue-green.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.planning.plan import Action
from reconciler.config.graph import DEPLOYMENT_DEFAULTS
from reconciler.config.stack import load_stack
from reconciler.planning.planner import PlanOptions, make_plan
from reconciler.state.model import StateFile

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "state-main-f1eb538-blue-green.json"
BLUE = "deployment.blue-green/blue"


def fixture_state() -> dict:
    return json.loads(FIXTURE.read_text())


def plan_against(raw_state: dict, driver: str = "docker"):
    return make_plan(load_stack(ROOT / "stacks" / "blue-green"), StateFile.from_dict(raw_state),
                     PlanOptions(driver=driver))


def blue_record(raw_state: dict) -> dict:
    records = raw_state["records"]
    return records[BLUE] if isinstance(records, dict) else next(r for r in records if r["address"] == BLUE)


def test_state_written_by_main_plans_no_changes():
    assert str(plan_against(fixture_state())) == "No changes. Your infrastructure matches the configuration."


# The fields the fixture's blue deployment holds at their default: an older writer that did not
# know one of them wrote a record without it.
AT_DEFAULT = sorted(name for name, value in blue_record(fixture_state())["spec"].items()
                    if name in DEPLOYMENT_DEFAULTS and value == DEPLOYMENT_DEFAULTS[name])


def test_the_fixture_has_fields_at_their_default():
    assert {"restart_policy", "memory", "command", "args", "app_insights_enabled"} <= set(AT_DEFAULT)


@pytest.mark.parametrize("field", AT_DEFAULT)
def test_a_field_an_older_writer_did_not_know_plans_no_change(field):
    raw = fixture_state()
    del blue_record(raw)["spec"][field]
    assert str(plan_against(raw)) == "No changes. Your infrastructure matches the configuration."


@pytest.mark.parametrize("setting", ["max_queue_wait_ms", "max_concurrent_requests_per_instance",
                                     "request_timeout_ms"])
def test_a_request_setting_added_later_plans_no_change(setting):
    raw = fixture_state()
    del blue_record(raw)["spec"]["request_settings"][setting]
    assert str(plan_against(raw)) == "No changes. Your infrastructure matches the configuration."


def test_an_older_record_with_another_change_plans_that_change_only():
    """The default stands in for the missing field, and a real difference still shows."""
    raw = fixture_state()
    del blue_record(raw)["spec"]["restart_policy"]
    blue_record(raw)["spec"]["tags"] = {"rollout": "old"}
    assert str(plan_against(raw)).splitlines() == ["~ deployment.blue-green/blue (tags.rollout)",
                                                   "Plan: 0 to add, 1 to change, 0 to destroy."]


@pytest.mark.parametrize("driver", ["docker", "swarm"])
def test_no_replacement_on_either_driver(driver):
    raw = fixture_state()
    for name in AT_DEFAULT:
        del blue_record(raw)["spec"][name]
    assert not [c for c in plan_against(raw, driver).changes if c.action is not Action.NO_OP]
