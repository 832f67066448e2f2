"""The swarm driver's refresh fold, as tables: what the services and tasks show -> drift,
refreshed state, and the plan that follows (through the shared core, as refresh_state does).

No engine here: `ServiceView`s are built by hand in the shape observe.py produces, and one
case goes from the API's own dicts through observe.service_view.
"""
from __future__ import annotations

import pytest

from reconciler.addresses import Address
from reconciler.config.graph import DesiredGraph, DesiredResource, spec_hash
from reconciler.drivers.registry import choose_driver
from reconciler.drivers.swarm import fold as swarm_fold
from reconciler.drivers.swarm.fold import ServiceView, SwarmObservation
from reconciler.planning.planner import PlanOptions, make_plan
from reconciler.refresh import settle
from reconciler.state.model import StateFile, StateRecord

MODEL = "model.m:1"
DEPLOYMENT = "deployment.ep/blue"
ENDPOINT = "endpoint.ep"
IMAGE = "reconciler/demo-tfserving:latest"
SERVICE, GATEWAY, EDGE = "svc" + "a" * 22, "gw" + "b" * 23, "edge" + "c" * 21
MODEL_SPEC = {"address": MODEL, "content_digest": "sha256:aaa", "mount_path": "/models/m/1"}
ENV = {"MODEL_NAME": "half_plus_two"}
DEPLOYMENT_SPEC = {"endpoint": "ep", "name": "blue", "image": IMAGE, "model": MODEL_SPEC,
                   "environment_variables": ENV, "routes": {"scoring": {"port": 8501, "path": "/score"}},
                   "instance_count": 3, "restart_policy": "always"}
ENDPOINT_SPEC = {"name": "ep", "auth_mode": "key", "traffic": {"blue": 100}, "mirror_traffic": {}}


def slot(n: int) -> dict:
    return {"id": f"{n}.{SERVICE}", "name": f"rc-s-ep-blue-g1.{n}", "instance": n, "ports": {}}


def base_state() -> StateFile:
    state = StateFile(stack="s", lineage="l", serial=3)
    model = {"name": "m", "version": "1", "content_digest": "sha256:aaa"}
    state = state.with_record(StateRecord(MODEL, "swarm", model, spec_hash(model),
                                          outputs={"configs": [], "content_digest": "sha256:aaa"}))
    state = state.with_record(StateRecord(
        DEPLOYMENT, "swarm", DEPLOYMENT_SPEC, spec_hash(DEPLOYMENT_SPEC), (MODEL,),
        driver_ids={"generation": "g1", "service": SERVICE},
        outputs={"service": {"id": SERVICE, "name": "rc-s-ep-blue-g1"}, "instances": [slot(1), slot(2), slot(3)],
                 "scoring_uri": "http://rc-s-ep-blue-g1:8501/score"}))
    return state.with_record(StateRecord(
        ENDPOINT, "swarm", ENDPOINT_SPEC, spec_hash(ENDPOINT_SPEC), (DEPLOYMENT,),
        outputs={"gateway": {"id": GATEWAY, "name": "rc-s-ep-gw", "image": "reconciler/gateway:latest"},
                 "edge": {"id": EDGE, "name": "rc-s-ep-edge"}, "port": 45000,
                 "keys": {"primary": "k1", "secondary": "k2"}, "config_digest": "sha256:conf"}))


def deployment(slots=(1, 2, 3), **changes) -> ServiceView:
    fields = dict(service_id=SERVICE, name="rc-s-ep-blue-g1", role="deployment", address=DEPLOYMENT, image=IMAGE,
                  env=dict(ENV), model_mount="/models/m/1", model_digest="sha256:aaa",
                  live_slots={n: "running" for n in slots}, live_tasks=len(slots))
    fields.update(changes)
    return ServiceView(**fields)


def gateway(**changes) -> ServiceView:
    fields = dict(service_id=GATEWAY, name="rc-s-ep-gw", role="gateway", address=ENDPOINT,
                  image="reconciler/gateway:latest", live_tasks=1, live_slots={1: "running"})
    fields.update(changes)
    return ServiceView(**fields)


def edge(**changes) -> ServiceView:
    fields = dict(service_id=EDGE, name="rc-s-ep-edge", role="edge", address=ENDPOINT,
                  image="reconciler/gateway:latest", live_tasks=1)
    fields.update(changes)
    return ServiceView(**fields)


def healthy() -> list[ServiceView]:
    return [deployment(), gateway(), edge()]


def fold(services, digests=None, state=None):
    state = state or base_state()
    return settle("swarm", state, swarm_fold.fold(state, SwarmObservation(services, digests or {MODEL: "sha256:aaa"})))


def desired() -> DesiredGraph:
    resources = {}
    for address, record in base_state().records.items():
        parsed = Address.parse(address)
        resources[parsed] = DesiredResource(parsed, record.spec, record.spec_hash,
                                            tuple(Address.parse(d) for d in record.depends_on), "x.yml:1")
    return DesiredGraph("s", dict(sorted(resources.items())))


def compact(services, digests=None) -> str:
    """drift as `kind address [repair]`, then the plan's change lines and summary."""
    state, drift = fold(services, digests)
    plan = make_plan(desired(), state, PlanOptions(driver="swarm"), drift)
    lines = [f"{d.kind} {d.address}" + (f" [{d.repair}]" if d.repair else "") for d in drift]
    return "\n".join(lines + [line for line in str(plan).splitlines() if line and not line.startswith("! ")])


STRAY = f"4.{SERVICE}"[:12]
CASES = [
    ("nothing changed", healthy(), None, "No changes. Your infrastructure matches the configuration."),
    ("scaled down by hand", [deployment(slots=(1,)), gateway(), edge()], None,
     f"missing {DEPLOYMENT}\nmissing {DEPLOYMENT}\n~ {DEPLOYMENT} (instance_count) [drifted]\n"
     # The limit in flight follows instance_count (issue 15): restoring the count re-renders.
     "~ endpoint.ep (gateway.blue.max_requests_in_flight) [gateway-view-changed]\n"
     "Plan: 0 to add, 2 to change, 0 to destroy."),
    ("scaled up by hand", [deployment(slots=(1, 2, 3, 4)), gateway(), edge()], None,
     f"orphan {DEPLOYMENT}~orphan-{STRAY}\n- {DEPLOYMENT}~orphan-{STRAY}\nPlan: 0 to add, 0 to change, 1 to destroy."),
    ("a slot's task on its way up is not drift", [deployment(live_slots={1: "running", 2: "starting",
                                                                        3: "preparing"}), gateway(), edge()], None,
     "No changes. Your infrastructure matches the configuration."),
    ("service removed by hand", [gateway(), edge()], None,
     f"missing {DEPLOYMENT}\nmissing {DEPLOYMENT}\nmissing {DEPLOYMENT}\n~ {DEPLOYMENT} (instance_count) [drifted]\n"
     "~ endpoint.ep (gateway.blue.max_requests_in_flight) [gateway-view-changed]\n"
     "Plan: 0 to add, 2 to change, 0 to destroy."),
    ("image changed by hand", [deployment(image="other:2"), gateway(), edge()], None,
     f"changed {DEPLOYMENT} [replace]\nchanged {DEPLOYMENT} [replace]\nchanged {DEPLOYMENT} [replace]\n"
     f"-/+ {DEPLOYMENT} (image) [drifted]\n~ endpoint.ep [dependency-replaced]\nPlan: 1 to add, 1 to change, 1 to destroy."),
    ("environment changed by hand", [deployment(env={**ENV, "DEBUG": "1"}), gateway(), edge()], None,
     f"changed {DEPLOYMENT} [replace]\nchanged {DEPLOYMENT} [replace]\nchanged {DEPLOYMENT} [replace]\n"
     f"-/+ {DEPLOYMENT} (environment_variables.DEBUG) [drifted]\n~ endpoint.ep [dependency-replaced]\n"
     "Plan: 1 to add, 1 to change, 1 to destroy."),
    ("model configs unmounted by hand", [deployment(model_mount=None, model_digest=None), gateway(), edge()], None,
     f"changed {DEPLOYMENT} [replace]\nchanged {DEPLOYMENT} [replace]\nchanged {DEPLOYMENT} [replace]\n"
     f"-/+ {DEPLOYMENT} (model) [drifted]\n~ endpoint.ep [dependency-replaced]\nPlan: 1 to add, 1 to change, 1 to destroy."),
    ("model configs gone", healthy(), {MODEL: None},
     # Configs are remade in place under the same names: the deployments mounting them stay.
     f"model-content {MODEL}\n~ {MODEL} (content_digest) [drifted]\nPlan: 0 to add, 1 to change, 0 to destroy."),
    ("edge removed by hand", [deployment(), gateway()], None,
     f"stopped {ENDPOINT} [replace]\n-/+ {ENDPOINT} [drifted]\nPlan: 1 to add, 0 to change, 1 to destroy."),
    ("gateway without a live task", [deployment(), gateway(live_tasks=0, live_slots={}), edge()], None,
     f"stopped {ENDPOINT} [replace]\n-/+ {ENDPOINT} [drifted]\nPlan: 1 to add, 0 to change, 1 to destroy."),
    ("gateway removed by hand", [deployment(), edge()], None,
     f"missing {ENDPOINT} [replace]\n-/+ {ENDPOINT} [drifted]\nPlan: 1 to add, 0 to change, 1 to destroy."),
    ("gateway recreated by hand with our labels", [deployment(), gateway(service_id="x" * 25, name="my-gw"), edge()],
     None, f"recreated {ENDPOINT} [replace]\n-/+ {ENDPOINT} [drifted]\nPlan: 1 to add, 0 to change, 1 to destroy."),
    # Issue 18: a node stopped; until the swarm starts its tasks elsewhere, they are lost.
    ("a slot lost with its node", [deployment(slots=(1, 3), lost_slots={2: "rc-node-2 (down)"}), gateway(), edge()],
     None, f"missing {DEPLOYMENT}\n~ {DEPLOYMENT} (instance_count) [drifted]\n"
     "~ endpoint.ep (gateway.blue.max_requests_in_flight) [gateway-view-changed]\n"
     "Plan: 0 to add, 2 to change, 0 to destroy."),
    ("a stray gateway service", [*healthy(), gateway(service_id="y" * 25, name="stray-gw")], None,
     f"orphan {ENDPOINT}~orphan-{'y' * 12}\n- {ENDPOINT}~orphan-{'y' * 12}\nPlan: 0 to add, 0 to change, 1 to destroy."),
]


@pytest.mark.parametrize("name,services,digests,expected", CASES, ids=[c[0] for c in CASES])
def test_fold_table(name, services, digests, expected):
    assert compact(services, digests) == expected


def test_orphans_are_stamped_with_the_swarm_driver_and_the_next_plan_keeps_swarm():
    """Bug 3: after `apply --refresh-only` with a service scaled by hand, the orphan records
    were stamped "docker", and choose_driver then refused the stack or picked docker."""
    refreshed, drift = fold([deployment(slots=(1, 2, 3, 4, 5)), gateway(), edge()])
    orphans = {a: r for a, r in refreshed.records.items() if a.is_orphan}
    assert sorted(d.kind for d in drift) == ["orphan", "orphan"]
    assert {r.driver for r in orphans.values()} == {"swarm"}
    assert choose_driver(None, "", refreshed) == "swarm"
    assert choose_driver(None, "swarm", refreshed) == "swarm"
    # The orphan names what the swarm driver's delete scales back: a slot of the owned service.
    (slot4,) = [r for a, r in orphans.items() if a.orphan == f"4.{SERVICE}"[:12]]
    assert slot4.outputs["instances"][0]["id"] == f"4.{SERVICE}"


def test_a_missing_slot_lowers_the_count_and_keeps_the_others():
    state, drift = fold([deployment(slots=(1, 3)), gateway(), edge()])
    record = state.records[DEPLOYMENT]
    assert record.spec["instance_count"] == 2
    assert [i["instance"] for i in record.outputs["instances"]] == [1, 3]
    assert "containers" not in record.driver_ids  # swarm's own shape: no container ids
    (item,) = drift
    assert item.detail == "container rc-s-ep-blue-g1.2 no longer exists; apply starts a new one"
    assert [(f.path, f.before, f.after) for f in item.fields] == [("instance_count", 3, 2)]


def test_a_changed_service_is_recorded_with_what_it_runs():
    state, drift = fold([deployment(image="other:2", env={"MODEL_NAME": "x"}), gateway(), edge()])
    record = state.records[DEPLOYMENT]
    assert record.spec["image"] == "other:2" and record.spec["environment_variables"] == {"MODEL_NAME": "x"}
    assert drift[0].detail == ("container rc-s-ep-blue-g1.1 no longer matches state "
                               "(image, environment_variables.MODEL_NAME); apply replaces the deployment")


def test_orphan_slot_record_goes_when_the_slot_does():
    state, _ = fold([deployment(slots=(1, 2, 3, 4)), gateway(), edge()])
    again, drift = fold([deployment(slots=(1, 2, 3, 4)), gateway(), edge()], state=state)
    assert drift == () and again.records == state.records
    gone, drift = fold(healthy(), state=state)
    assert drift == () and not any(a.is_orphan for a in gone.records)


def test_deposed_services_keep_their_slots():
    import dataclasses
    state = base_state()
    old_service = "old" + "d" * 22
    old = dataclasses.replace(state.records[DEPLOYMENT], address=f"{DEPLOYMENT}~deposed-2", outputs={
        "service": {"id": old_service, "name": "rc-s-ep-blue-g0"},
        "instances": [{"id": f"1.{old_service}", "name": "rc-s-ep-blue-g0.1", "instance": 1, "ports": {}}]})
    state = state.with_record(old)
    services = [*healthy(), deployment(service_id=old_service, name="rc-s-ep-blue-g0", slots=(1,))]
    assert fold(services, state=state)[1] == ()


def test_service_view_reads_the_api_shapes():
    from reconciler.drivers.swarm.observe import service_view
    service = {"ID": SERVICE, "Spec": {"Name": "rc-s-ep-blue-g1", "Labels": {
        "org.reconciler.role": "deployment", "org.reconciler.address": DEPLOYMENT,
        "org.reconciler.model-mount": "/models/m/1", "org.reconciler.model-digest": "sha256:aaa"},
        "TaskTemplate": {"ContainerSpec": {"Image": IMAGE, "Env": ["MODEL_NAME=half_plus_two"],
                                           "Configs": [{"ConfigName": "c1"}]}}}}
    tasks = [{"Slot": 1, "Status": {"State": "running"}}, {"Slot": 2, "Status": {"State": "failed"}},
             {"Slot": 2, "Status": {"State": "starting"}}, {"Slot": 3, "Status": {"State": "rejected"}}]
    view = service_view(service, tasks)
    assert view == deployment(live_slots={1: "running", 2: "starting"}, live_tasks=2)


def test_a_lost_slots_drift_names_its_node():
    _, drift = fold([deployment(slots=(1, 3), lost_slots={2: "rc-node-2 (down)"}), gateway(), edge()])
    assert [d.detail for d in drift] == [
        "container rc-s-ep-blue-g1.2 ran on node rc-node-2 (down), lost with it; the swarm starts it again on a "
        "ready node (apply waits for that)"]


def test_service_view_counts_a_task_on_a_down_node_as_lost_not_live():
    from reconciler.drivers.swarm.observe import service_view
    service = {"ID": SERVICE, "Spec": {"Name": "rc-s-ep-blue-g1", "Labels": {
        "org.reconciler.role": "deployment", "org.reconciler.address": DEPLOYMENT},
        "TaskTemplate": {"ContainerSpec": {"Image": IMAGE, "Env": ["MODEL_NAME=half_plus_two"]}}}}
    nodes = {"n1": {"name": "rc-node-1", "state": "ready"}, "n2": {"name": "rc-node-2", "state": "down"}}
    tasks = [{"ID": "t1", "Slot": 1, "NodeID": "n1", "Status": {"State": "running"}},
             {"ID": "t2", "Slot": 2, "NodeID": "n2", "Status": {"State": "running"}},
             {"ID": "t3", "Slot": 3, "NodeID": "n2", "Status": {"State": "running"}},
             {"ID": "t4", "Slot": 3, "NodeID": "n1", "Status": {"State": "starting"}}]
    view = service_view(service, tasks, nodes)
    # Slot 3 is already on its way up on a ready node: starting, not lost.
    assert (view.live_slots, view.live_tasks, view.lost_slots) == ({1: "running", 3: "starting"}, 2,
                                                                   {2: "rc-node-2 (down)"})


def test_a_slot_the_swarm_moved_off_a_down_or_drained_node_is_reported_and_the_record_names_the_new_node():
    state = base_state()
    record = state.records[DEPLOYMENT]
    on_nodes = [{**slot(n), "node": f"rc-node-{n}"} for n in (1, 2, 3)]
    state = state.with_record(StateRecord(DEPLOYMENT, "swarm", record.spec, record.spec_hash, record.depends_on,
                                          driver_ids=record.driver_ids,
                                          outputs={**record.outputs, "instances": on_nodes}))
    now = deployment(slot_nodes={1: "rc-node-1", 2: "rc-node-3", 3: "rc-node-3"})
    for unavailable, why in (({"rc-node-2": "down"}, "down"), ({"rc-node-2": "drain"}, "drain")):
        refreshed, drift = settle("swarm", state, swarm_fold.fold(state, SwarmObservation(
            [now, gateway(), edge()], {MODEL: "sha256:aaa"}, unavailable_nodes=unavailable)))
        assert [(d.kind, d.detail) for d in drift] == [("moved", f"container rc-s-ep-blue-g1.2 ran on node rc-node-2, "
                                                                 f"which is {why}; the swarm runs it on node rc-node-3 now")]
        assert [i["node"] for i in refreshed.records[DEPLOYMENT].outputs["instances"]] == [
            "rc-node-1", "rc-node-3", "rc-node-3"]
        plan = make_plan(desired(), refreshed, PlanOptions(driver="swarm"), drift)
        assert str(plan).splitlines()[-1] == "No changes. Your infrastructure matches the configuration."
    # A slot moved off a node that is still ready (a task replaced there) is no drift.
    assert settle("swarm", state, swarm_fold.fold(state, SwarmObservation(
        [now, gateway(), edge()], {MODEL: "sha256:aaa"})))[1] == ()
