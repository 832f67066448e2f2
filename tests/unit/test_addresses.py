"""Typed addresses and actions: strings only when serialised. Pure."""
from __future__ import annotations

import json

import pytest

from reconciler.addresses import Address, deployment_address, endpoint_address, model_address
from reconciler.errors import ReconcilerError
from reconciler.planning.plan import Action, Change

ROUND_TRIP = [
    # text, kind, name, deposed, orphan
    ("deployment.ep/blue", "deployment", "ep/blue", "", ""),
    ("deployment.ep/blue~deposed-3", "deployment", "ep/blue", "3", ""),
    ("deployment.ep/blue~orphan-0123456789ab", "deployment", "ep/blue", "", "0123456789ab"),
    ("deployment.e/b~orphan-1.abc", "deployment", "e/b", "", "1.abc"),
    ("endpoint.ep", "endpoint", "ep", "", ""),
    ("endpoint.ep~orphan-abc", "endpoint", "ep", "", "abc"),
    ("model.m:1", "model", "m:1", "", ""),
    ("model.hp2.v1:3", "model", "hp2.v1:3", "", ""),
]


@pytest.mark.parametrize("text, kind, name, deposed, orphan", ROUND_TRIP)
def test_parse_and_str_are_inverse(text, kind, name, deposed, orphan):
    address = Address.parse(text)
    assert (address.kind, address.name, address.deposed, address.orphan) == (kind, name, deposed, orphan)
    assert str(address) == text
    assert Address.parse(str(address)) == address
    assert address.is_deposed == bool(deposed) and address.is_orphan == bool(orphan)
    assert address.is_derived == bool(deposed or orphan)
    assert str(address.base) == f"{kind}.{name}"


def test_constructors_and_helpers():
    blue = deployment_address("ep", "blue")
    assert str(blue) == "deployment.ep/blue" and (blue.endpoint, blue.short_name) == ("ep", "blue")
    assert str(blue.deposed_as("3")) == "deployment.ep/blue~deposed-3"
    assert str(blue.orphan_as("0123456789ab")) == "deployment.ep/blue~orphan-0123456789ab"
    assert blue.deposed_as("3").base == blue and blue.orphan_as("x").deposed_as("4").orphan == ""
    assert str(endpoint_address("ep")) == "endpoint.ep" and endpoint_address("ep").endpoint == "ep"
    assert str(model_address("m", "1")) == "model.m:1"
    assert deployment_address("ep", "blue").deposed_as("3").name_with_suffix == "ep/blue~deposed-3"


def test_ordered_as_the_strings_they_serialise_to():
    """State files and plans list records in string order; typed addresses keep that order,
    even where (kind, name, deposed) tuples would not: `~` sorts after every name character."""
    texts = ["model.m:1", "deployment.ep/blue2", "deployment.ep/blue~deposed-3", "endpoint.ep",
             "deployment.ep/blue", "deployment.ep-x/blue", "deployment.ep/blue~orphan-ab"]
    assert [str(a) for a in sorted(map(Address.parse, texts))] == sorted(texts)


def test_a_string_finds_its_address_in_a_dict():
    """Labels and JSON outputs are strings: they look records up by the same text."""
    records = {Address.parse("deployment.ep/blue~deposed-3"): 1}
    assert records["deployment.ep/blue~deposed-3"] == 1 and "deployment.ep/blue" not in records


@pytest.mark.parametrize("text", ["", "ep", "deploy.ep/blue", "deployment.", "endpoint.ep~", "endpoint.ep~x",
                                  "deployment.ep/blue~deposed-", "deployment.ep/blue~orphan-",
                                  "deployment.ep/blue~deposed-3~orphan-a"])
def test_bad_text_is_a_clear_error(text):
    with pytest.raises(ReconcilerError) as caught:
        Address.parse(text)
    assert f"not a resource address: {text!r}" in str(caught.value)


WIRE = {Action.NO_OP: ("no-op", None), Action.CREATE: ("create", None), Action.UPDATE: ("update", None),
        Action.CREATE_THEN_DELETE: ("replace", "create-then-delete"),
        Action.DELETE_THEN_CREATE: ("replace", "delete-then-create"), Action.DELETE: ("delete", None)}


@pytest.mark.parametrize("action", list(Action))
def test_every_action_round_trips_through_plan_json(action):
    change = Change(Address.parse("deployment.ep/blue"), action, "changed", {}, {},
                    depends_on=(Address.parse("model.m:1"),))
    data = json.loads(json.dumps(change.to_dict()))
    assert (data["action"], data["replace_mode"]) == WIRE[action]
    assert data["address"] == "deployment.ep/blue" and data["depends_on"] == ["model.m:1"]
    back = Change.from_dict(data)
    assert back == change and back.action is action


def test_the_two_replacements_are_distinct_actions():
    assert Action.CREATE_THEN_DELETE != Action.DELETE_THEN_CREATE
    assert [a for a in Action if a.is_replace] == [Action.CREATE_THEN_DELETE, Action.DELETE_THEN_CREATE]
    assert {a.symbol for a in Action if a.is_replace} == {"-/+"}
    assert [a for a in Action if a.creates] == [Action.CREATE, Action.CREATE_THEN_DELETE, Action.DELETE_THEN_CREATE]
    assert [a for a in Action if a.destroys] == [Action.CREATE_THEN_DELETE, Action.DELETE_THEN_CREATE, Action.DELETE]


def test_unknown_wire_actions_are_errors():
    for action, mode in (("replace", "sideways"), ("create-then-delete", None), ("rename", None)):
        with pytest.raises(ValueError):
            Action.from_wire(action, mode)
