"""Issue 12 findings 2, 4 and 8 without Docker: object names, who owns an object, where the
default state lives, one model store per identity, and the refusal to rebuild a lost state."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.drivers.common.labels import (LABEL_IDENTITY, LABEL_MANAGED_BY, LABEL_STACK, LABEL_STACK_DIR,
                                              LABEL_STATE, OtherOwner, is_own, managed_labels, other_owners)
from reconciler.drivers.common.names import object_name
from reconciler.drivers.docker import model_store
from reconciler.drivers.docker.gateway import keys_in_config, read_keys, write_keys
from reconciler.errors import ReconcilerError
from reconciler.operations.adopt import lost_identity
from reconciler.operations.plan import open_store, other_state_warnings, refuse_if_lost
from reconciler.state.model import StateFile, StateRecord
from reconciler.state.store import default_state_path


# -- names -------------------------------------------------------------------------------------
NAME_CASES = [
    # (parts, identity) -> every name is a DNS label of at most 63 characters
    (("rc", "fraud", "ep", "blue", "a1b2c3", "0"), "id-1"),
    (("rc", "s" * 60, "e" * 32, "d" * 32, "a1b2c3", "0"), "id-1"),
    (("rc", "fr aud;ü", "ep", "gw", "a1b2c3"), "id-1"),
    (("rc", ";;;", "üüü"), "id-1"),
]


@pytest.mark.parametrize("parts,identity", NAME_CASES)
def test_names_are_dns_labels_within_63_characters(parts, identity):
    name = object_name(*parts, identity=identity)
    assert len(name) <= 63 and name == name.lower() and name.isascii()
    assert name[0].isalnum() and name[-1].isalnum() and name.replace("-", "").isalnum()


def test_names_keep_a_readable_start_and_differ_wherever_the_inputs_do():
    assert object_name("rc", "fraud", "ep", "blue", "g1", "0", identity="a").startswith("rc-fraud-ep-blue-g1-0-")
    long = ("rc", "s" * 40, "e" * 32, "d" * 32, "g1")
    table = {
        "two identities": (object_name("rc", "fraud", identity="a"), object_name("rc", "fraud", identity="b")),
        "green/GREEN": (object_name("rc", "s", "ep", "green", identity="a"),
                        object_name("rc", "s", "ep", "GREEN", identity="a")),
        "cut alike": (object_name(*long, "0", identity="a"), object_name(*long, "1", identity="a")),
        "sanitised alike": (object_name("rc", "a;b", identity="a"), object_name("rc", "a b", identity="a")),
    }
    assert [case for case, (one, other) in table.items() if one == other] == []


# -- ownership -----------------------------------------------------------------------------------
def labels(identity=None, stack_dir="/s/prod/fraud", state="/st/prod.json") -> dict:
    found = {LABEL_MANAGED_BY: "reconciler", LABEL_STACK: "fraud", LABEL_STACK_DIR: stack_dir, LABEL_STATE: state}
    return {**found, LABEL_IDENTITY: identity} if identity is not None else found


def test_an_object_is_ours_by_identity_and_an_old_unlabelled_one_only_when_state_names_it():
    cases = {
        "same identity": is_own(labels("A"), "A", "c1", set()),
        "other identity": is_own(labels("B"), "A", "c1", {"c1"}),
        "no identity, named by state": is_own(labels(), "A", "c1", {"c1"}),
        "no identity, not named": is_own(labels(), "A", "c1", set()),
        "empty state owns nothing labelled": is_own(labels("A"), "", "c1", set()),
    }
    assert cases == {"same identity": True, "other identity": False, "no identity, named by state": True,
                     "no identity, not named": False, "empty state owns nothing labelled": False}


def test_other_owners_are_grouped_per_state_and_named():
    objects = [("c1", labels("A")), ("c2", labels("B")), ("c3", labels("B")), ("c4", labels())]
    found = other_owners(objects, "A", set())
    assert found == [OtherOwner("", "/s/prod/fraud", "/st/prod.json", 1),
                     OtherOwner("B", "/s/prod/fraud", "/st/prod.json", 2)]
    [warning] = other_state_warnings(found[1:])
    assert warning.startswith("2 object(s) of state /st/prod.json, stack directory /s/prod/fraud (identity B) "
                              "carry this stack's name but belong to another state")


def test_objects_are_never_labelled_without_an_identity():
    @dataclass
    class Owner:
        stack: str = "fraud"
        identity: str = ""
        stack_dir: str = "/s"
        state_path: str = "/st.json"

    with pytest.raises(RuntimeError):
        managed_labels(Owner(), "endpoint.ep", "h")
    assert managed_labels(Owner(identity="A"), "endpoint.ep", "h")[LABEL_IDENTITY] == "A"


# -- default state location ------------------------------------------------------------------------
def test_default_state_is_keyed_by_the_absolute_stack_path_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "states"))
    staging, prod = tmp_path / "envs/staging/fraud", tmp_path / "envs/prod/fraud"
    for directory in (staging, prod, tmp_path / "a", tmp_path / "b"):
        directory.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    from_a = default_state_path(staging)
    monkeypatch.chdir(tmp_path / "b")
    assert default_state_path(Path(os.path.relpath(staging))) == from_a
    assert default_state_path(prod) != from_a
    assert from_a.parent.parent == tmp_path / "states" and from_a.name == "state.json"


def test_a_state_at_the_old_cwd_relative_default_is_not_guessed_at(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "states"))
    stack_dir = tmp_path / "fraud"
    stack_dir.mkdir()
    monkeypatch.chdir(tmp_path)
    assert open_store("fraud", None, stack_dir).path == default_state_path(stack_dir)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "fraud.json").write_text("{}")
    with pytest.raises(ReconcilerError, match="old default state location") as error:
        open_store("fraud", None, stack_dir)
    assert "--state state/fraud.json" in error.value.hint
    assert open_store("fraud", Path("state/fraud.json"), stack_dir).path == Path("state/fraud.json")


# -- model store -------------------------------------------------------------------------------------
def test_one_model_store_per_identity_so_destroying_one_keeps_the_others_copy(tmp_path):
    source = tmp_path / "stack" / "model"
    source.mkdir(parents=True)
    (source / "weights.bin").write_bytes(b"w" * 100)
    from reconciler.config.model_content import fingerprint
    digest = fingerprint(source, tmp_path / "stack").digest
    state_dir = tmp_path / "shared-state-folder"
    mine = model_store.materialise(state_dir, "A", source, tmp_path / "stack", digest)
    theirs = model_store.materialise(state_dir, "B", source, tmp_path / "stack", digest)
    assert mine != theirs
    model_store.release(state_dir, "A", mine)
    assert not mine.exists() and model_store.stored_digest(theirs) == digest
    model_store.release(state_dir, "A", theirs)  # not A's: never deleted
    assert model_store.stored_digest(theirs) == digest


# -- lost state ------------------------------------------------------------------------------------
def owner(identity="A", state="/st/lost.json", stack_dir="/s/fraud") -> OtherOwner:
    return OtherOwner(identity, stack_dir, state, 2)


def test_an_empty_state_beside_live_objects_of_this_stack_is_refused_with_a_recover_hint(tmp_path):
    empty, lost_path = StateFile.empty("fraud"), str(tmp_path / "lost.json")
    with pytest.raises(ReconcilerError, match="the state was lost") as error:
        refuse_if_lost(empty, [owner(state=lost_path)], Path(lost_path), Path("/s/fraud"))
    assert "reconciler state recover /s/fraud --state" in error.value.hint
    with pytest.raises(ReconcilerError, match="the state was lost"):  # found by its stack directory
        refuse_if_lost(empty, [owner(state="/old/place.json")], tmp_path / "new.json", Path("/s/fraud"))

    alive = tmp_path / "prod.json"
    alive.write_text(json.dumps({"lineage": "A"}))
    allowed = {
        "another stack of the name": [owner(state="/st/other.json", stack_dir="/s/prod/fraud")],
        "their state file still exists": [owner(state=str(alive))],
        "made before identities": [owner(identity="", state="")],
    }
    for case, others in allowed.items():
        refuse_if_lost(empty, others, Path(lost_path), Path("/s/fraud"))  # no error: a notice only
    record = StateRecord("model.m:1", "docker", {}, "h")
    refuse_if_lost(StateFile("fraud", "B", 3, {record.address: record}), [owner(state=lost_path)],
                   Path(lost_path), Path("/s/fraud"))


@dataclass
class Seen:
    driver_id: str
    labels: dict


def test_recover_takes_the_identity_of_the_lost_states_objects(tmp_path):
    lost, here = tmp_path / "lost.json", tmp_path / "fraud"
    mine = Seen("c1", labels("A", str(here), str(lost)))
    other = Seen("c2", labels("B", "/s/prod/fraud", "/st/prod.json"))
    taken, identity, left = lost_identity([mine, other], lost, here)
    assert (taken, identity, [o.identity for o in left]) == ([mine], "A", ["B"])
    moved = Seen("c3", labels("C", str(here), "/old/state.json"))  # same directory, state elsewhere
    assert lost_identity([moved, other], lost, here)[1] == "C"
    with pytest.raises(ReconcilerError, match="objects of 2 states"):
        lost_identity([moved, Seen("c4", labels("D", str(here), "/x.json"))], lost, here)
    old = Seen("c5", {LABEL_MANAGED_BY: "reconciler", LABEL_STACK: "fraud"})
    taken, identity, _ = lost_identity([old], lost, here)
    assert taken == [old] and identity


def test_keys_are_read_back_from_the_gateway_config_directory(tmp_path):
    keys = {"primary": "p-Key_1", "secondary": "s-Key_2"}
    write_keys(tmp_path, keys)
    assert read_keys(tmp_path) == keys
    (tmp_path / "keys.json").unlink()
    assert read_keys(tmp_path) is None
    (tmp_path / "nginx.conf").write_text('map $http_authorization $ok {\n  "Bearer p-Key_1" 1;\n'
                                         '  "Bearer s-Key_2" 1;\n}\n')
    assert read_keys(tmp_path) == keys
    assert keys_in_config("no keys here") is None
