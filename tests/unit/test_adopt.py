"""Records for `reconciler import` and `reconciler state recover`, built from observations. No Docker."""
from __future__ import annotations

import subprocess
import sys

import pytest

from reconciler.addresses import Address
from reconciler.adopt import check_importable, import_outcome, imported_record, rebuild
from reconciler.config.graph import DesiredGraph, DesiredResource, spec_hash
from reconciler.drivers.docker.fold import Observed
from reconciler.errors import ReconcilerError
from reconciler.state.model import StateFile, StateRecord

from test_docker_fold import DEPLOYMENT, DEPLOYMENT_SPEC, ENDPOINT, ENDPOINT_SPEC, IMAGE, IMAGE_ENV, MODEL, STORE

MODEL_SPEC = {"name": "m", "version": "1", "content_digest": "sha256:aaa"}
LABELS = {"org.reconciler.managed-by": "reconciler", "org.reconciler.stack": "s"}


def graph() -> DesiredGraph:
    specs = {MODEL: (MODEL_SPEC, ()), DEPLOYMENT: (DEPLOYMENT_SPEC, (MODEL,)), ENDPOINT: (ENDPOINT_SPEC, (DEPLOYMENT,))}
    return DesiredGraph("s", {Address.parse(a): DesiredResource(Address.parse(a), s, spec_hash(s),
                                                                tuple(map(Address.parse, d)), "x.yml:1")
                              for a, (s, d) in sorted(specs.items())})


def info(**changes) -> dict:
    data = {"id": "e" * 64, "name": "byhand", "image": IMAGE, "image_id": "sha256:img", "running": True,
            "status": "running", "labels": {}, "env": {**IMAGE_ENV, **DEPLOYMENT_SPEC["environment_variables"]},
            "image_env": IMAGE_ENV, "ports": {"8501": ["0.0.0.0:8501"]}, "security_opt": [],
            "mounts": [{"source": f"{STORE}/aaa", "destination": "/models/m/1", "read_only": True}]}
    data.update(changes)
    return data


def applied_model_state() -> StateFile:
    return StateFile("s", "l").with_record(StateRecord(MODEL, "docker", MODEL_SPEC, spec_hash(MODEL_SPEC),
                                                       outputs={"store_path": f"{STORE}/aaa"}))


def resource(address=DEPLOYMENT) -> DesiredResource:
    return {str(a): r for a, r in graph().resources.items()}[address]


@pytest.mark.parametrize("address,state,container,message", [
    (MODEL, StateFile("s", "l"), info(), "only deployments can be imported"),
    ("deployment.ep/nope", StateFile("s", "l"), info(), "not in the configuration"),
    (DEPLOYMENT, StateFile("s", "l").with_record(StateRecord(DEPLOYMENT, "docker", {}, "")), info(), "already in state"),
    (DEPLOYMENT, StateFile("s", "l"), None, "no container 'x'"),
    (DEPLOYMENT, StateFile("s", "l"), info(labels={**LABELS, "org.reconciler.stack": "other"}),
     "managed by stack 'other'"),
])
def test_import_refusals(address, state, container, message):
    with pytest.raises(ReconcilerError, match=message):
        check_importable(address, graph(), state, container, "x")


def test_unlabelled_container_matching_the_configuration_is_kept_and_says_what_a_plan_cannot_show():
    record, notes = imported_record(resource(), info(), applied_model_state(), "s", "g7")
    (instance,) = record.outputs["instances"]
    assert instance == {"id": "e" * 64, "name": "byhand", "instance": 0, "ports": {"8501": 8501}, "adopted": True,
                        "bindings": {"8501": ["0.0.0.0:8501"]}}
    assert record.spec == {**DEPLOYMENT_SPEC, "instance_count": 1}
    assert record.driver_ids == {"generation": "g7", "containers": ["e" * 64]}
    assert any("no reconciler labels" in n for n in notes) and any("0.0.0.0:8501" in n for n in notes)
    assert any("no-new-privileges" in n for n in notes)
    outcome = import_outcome(record, resource())
    assert "apply keeps it running" in outcome and "instance_count" in outcome


def test_imported_container_that_differs_records_what_it_runs():
    env = {**IMAGE_ENV, "MODEL_NAME": "other", "API_KEY": "s3cret"}
    mounts = [{"source": "/srv/model", "destination": "/models/m/1", "read_only": True}]
    record, _ = imported_record(resource(), info(env=env, image="x/y:2", mounts=mounts), applied_model_state(), "s", "g")
    assert record.spec["image"] == "x/y:2"
    assert record.spec["environment_variables"] == {"API_KEY": "s3cret", "MODEL_NAME": "other"}
    assert record.spec["model"]["content_digest"] == "external:/srv/model"
    outcome = import_outcome(record, resource())
    assert outcome.startswith("It differs from the configuration in environment_variables.MODEL_NAME, image, model")


def test_a_labelled_container_of_this_stack_keeps_its_generation_and_is_not_adopted():
    labels = {**LABELS, "org.reconciler.generation": "abc123"}
    record, notes = imported_record(resource(), info(labels=labels, ports={"8501": ["127.0.0.1:40000"]},
                                                     security_opt=["no-new-privileges:true"]),
                                    applied_model_state(), "s", "g")
    assert record.driver_ids["generation"] == "abc123"
    assert "adopted" not in record.outputs["instances"][0] and notes == []


def container(cid: str, generation: str, instance: int, running=True, spec_hash_label=None, role="deployment",
              address=DEPLOYMENT, ports=None) -> Observed:
    labels = {**LABELS, "org.reconciler.role": role, "org.reconciler.address": address,
              "org.reconciler.generation": generation, "org.reconciler.instance": str(instance),
              "org.reconciler.spec-hash": spec_hash_label or resource().spec_hash}
    return Observed(address, cid, f"rc-{generation}-{instance}", running, "running" if running else "exited", labels,
                    {"image": IMAGE, "ports": ports if ports is not None else {"8501": [f"127.0.0.1:{40000 + instance}"]},
                     "mounts": [{"source": f"{STORE}/aaa", "destination": "/models/m/1", "read_only": True}]})


def test_recover_groups_by_generation_and_keeps_the_serving_one():
    observed = [container("a0", "new", 0), container("a1", "new", 1),
                container("b0", "old", 0, running=False),
                container("gw", "g", 0, role="gateway", address=ENDPOINT, ports={"8080": ["127.0.0.1:45000"]})]
    result = rebuild(graph(), observed, {"sha256:aaa": f"{STORE}/aaa"})
    assert sorted(result.records) == [DEPLOYMENT, ENDPOINT, MODEL] and result.inspect == {}
    deployment = result.records[DEPLOYMENT]
    assert deployment.driver_ids == {"generation": "new", "containers": ["a0", "a1"]}
    assert deployment.spec == {**DEPLOYMENT_SPEC, "instance_count": 2} and deployment.status == "ready"
    assert deployment.outputs["scoring_uri"] == "http://127.0.0.1:40000/score"
    endpoint = result.records[ENDPOINT]
    assert endpoint.outputs["port"] == 45000 and endpoint.outputs["keys"] == {}  # the command makes new ones
    assert any("generation old" in n and "orphan" in n for n in result.notes)


def test_recover_inspects_when_labels_do_not_match_the_configuration():
    observed = [container("a0", "g", 0, spec_hash_label="sha256:other")]
    first = rebuild(graph(), observed, {"sha256:aaa": f"{STORE}/aaa"})
    assert first.inspect == {DEPLOYMENT: "a0"}
    env = {**IMAGE_ENV, **DEPLOYMENT_SPEC["environment_variables"], "DEBUG": "1"}
    second = rebuild(graph(), observed, {"sha256:aaa": f"{STORE}/aaa"}, {"a0": info(env=env)})
    assert second.records[DEPLOYMENT].spec["environment_variables"]["DEBUG"] == "1"


def test_recover_taints_what_a_lost_store_or_config_leaves_broken():
    observed = [container("a0", "g", 0)]
    result = rebuild(graph(), observed, {"sha256:aaa": None})
    assert MODEL not in result.records and result.records[DEPLOYMENT].status == "tainted"
    assert any("model copy it mounts is gone" in n for n in result.notes)


def test_recover_leaves_unknown_addresses_to_the_orphan_sweep():
    observed = [container("z0", "g", 0, address="deployment.ep/gone")]
    result = rebuild(graph(), observed, {})
    assert "deployment.ep/gone" not in result.records
    assert any("deployment.ep/gone" in n and "orphans" in n for n in result.notes)


def test_refresh_import_and_reports_never_import_docker():
    code = ("import sys, reconciler.refresh, reconciler.adopt, reconciler.render.drift; "
            "sys.exit(1 if 'docker' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
