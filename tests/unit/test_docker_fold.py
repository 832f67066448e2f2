"""The docker driver's refresh fold, as tables: what Docker shows -> drift, refreshed state, and
the plan that follows (through the shared core, reconciler/refresh.py, as refresh_state does).

No Docker here: `Observed` items and inspect results are built by hand in the shapes the
driver produces (reconciler/drivers/docker/observe.py).
"""
from __future__ import annotations

import dataclasses

import pytest

from reconciler.addresses import Address
from reconciler.config.graph import DesiredGraph, DesiredResource, spec_hash
from reconciler.drivers.common.fold import normalise_image
from reconciler.drivers.docker import fold as docker_fold
from reconciler.drivers.docker.fold import DockerObservation, Observed, model_view, needed_inspections
from reconciler.planning.planner import PlanOptions, make_plan
from reconciler.refresh import settle
from reconciler.render.drift import drift_report, render_drift_markdown, render_drift_report
from reconciler.state.model import StateFile, StateRecord

STORE = "/state/models"
MODEL = "model.m:1"
DEPLOYMENT = "deployment.ep/blue"
ENDPOINT = "endpoint.ep"
IMAGE = "reconciler/demo-tfserving:latest"
MODEL_SPEC = {"address": MODEL, "content_digest": "sha256:aaa", "mount_path": "/models/m/1"}
DEPLOYMENT_SPEC = {"endpoint": "ep", "name": "blue", "image": IMAGE, "model": MODEL_SPEC,
                   "environment_variables": {"MODEL_NAME": "half_plus_two", "API_KEY": "s3cret"},
                   "routes": {"scoring": {"port": 8501, "path": "/score"}}, "instance_count": 2,
                   "restart_policy": "unless-stopped"}
ENDPOINT_SPEC = {"name": "ep", "auth_mode": "key", "traffic": {"blue": 100}, "mirror_traffic": {}}
GATEWAY_CONFIG = {"dir": "/state/gateways/s/ep", "dir_exists": True, "digest": "sha256:conf",
                  "container_port": "8080", "mount_destination": "/etc/reconciler"}
IMAGE_ENV = {"PATH": "/usr/bin:/bin", "MODEL_NAME": "model", "REST_API_PORT": "8501"}


def instance(n: int) -> dict:
    return {"id": f"c{n}" + "0" * 62, "name": f"rc-s-ep-blue-g1-{n}", "instance": n, "ports": {"8501": 40000 + n}}


def base_state() -> StateFile:
    state = StateFile(stack="s", lineage="l", serial=3)
    state = state.with_record(StateRecord(MODEL, "docker", {"name": "m", "version": "1", "content_digest": "sha256:aaa"},
                                          "h", outputs={"store_path": f"{STORE}/aaa"}))
    instances = [instance(0), instance(1)]
    state = state.with_record(StateRecord(
        DEPLOYMENT, "docker", DEPLOYMENT_SPEC, spec_hash(DEPLOYMENT_SPEC), (MODEL,),
        driver_ids={"generation": "g1", "containers": [i["id"] for i in instances]},
        outputs={"instances": instances, "scoring_uri": "http://127.0.0.1:40000/score"}))
    return state.with_record(StateRecord(
        ENDPOINT, "docker", ENDPOINT_SPEC, spec_hash(ENDPOINT_SPEC), (DEPLOYMENT,),
        outputs={"gateway": {"id": "gw" + "0" * 62, "name": "rc-s-ep-gw-g9", "image": "reconciler/gateway:latest"},
                 "port": 45000, "keys": {"primary": "k1", "secondary": "k2"}, "config_digest": "sha256:conf"}))


def container(n: int, **changes) -> Observed:
    attributes = {"image": IMAGE, "image_id": "sha256:img", "role": "deployment", "generation": "g1",
                  "instance": str(n), "spec_hash": "h",
                  "ports": {"8501": [f"127.0.0.1:{40000 + n}"]},
                  "mounts": [{"source": f"{STORE}/aaa", "destination": "/models/m/1", "read_only": True}]}
    attributes.update(changes.pop("attributes", {}))
    labels = {"org.reconciler.role": attributes["role"]}
    fields = dict(address=DEPLOYMENT, driver_id=instance(n)["id"], name=instance(n)["name"], running=True,
                  status="running", labels=labels, attributes=attributes)
    fields.update(changes)
    return Observed(**fields)


def gateway(**changes) -> Observed:
    fields = dict(address=ENDPOINT, driver_id="gw" + "0" * 62, name="rc-s-ep-gw-g9", running=True, status="running",
                  labels={"org.reconciler.role": "gateway"},
                  attributes={"image": "reconciler/gateway:latest", "role": "gateway", "ports": {"8080": ["127.0.0.1:45000"]},
                              "mounts": [{"source": GATEWAY_CONFIG["dir"], "destination": "/etc/reconciler",
                                          "read_only": True}]})
    fields.update(changes)
    return Observed(**fields)


def healthy() -> list[Observed]:
    return [container(0), container(1), gateway()]


def inspected(env: dict | None = None, image: str = IMAGE) -> dict:
    return {"image": image, "image_id": "sha256:img", "env": {**IMAGE_ENV, **(env or DEPLOYMENT_SPEC["environment_variables"])},
            "image_env": IMAGE_ENV}


def fold(observed, inspections=None, digests=None, configs=None, state=None):
    state = state or base_state()
    observation = DockerObservation(observed, digests or {MODEL: "sha256:aaa"}, inspections or {},
                                    configs if configs is not None else {ENDPOINT: GATEWAY_CONFIG})
    return settle("docker", state, docker_fold.fold(state, observation))


def desired(state: StateFile) -> DesiredGraph:
    """The configuration that produced base_state()."""
    resources = {}
    for address, record in base_state().records.items():
        parsed = Address.parse(address)
        resources[parsed] = DesiredResource(parsed, record.spec, record.spec_hash,
                                            tuple(Address.parse(d) for d in record.depends_on), "x.yml:1")
    return DesiredGraph("s", dict(sorted(resources.items())))


def plan_after(observed, **kwargs) -> str:
    state, drift = fold(observed, **kwargs)
    return str(make_plan(desired(state), state, PlanOptions(), drift))


# -- the table --------------------------------------------------------------------------------
ID = instance(1)["id"]
OTHER = "d" + "1" * 63

CASES = [
    ("nothing changed", healthy(), {}, [], "Plan: 0 to add, 0 to change, 0 to destroy.|No changes."),
    ("one instance removed", [container(0), gateway()], {},
     [("missing", DEPLOYMENT)],
     "~ deployment.ep/blue (instance_count) [drifted]\n~ endpoint.ep [dependency-replaced]"),
    ("one instance stopped", [container(0), container(1, running=False, status="exited"), gateway()], {},
     [("stopped", DEPLOYMENT), ("orphan", f"{DEPLOYMENT}~orphan-{ID[:12]}")],
     f"- {DEPLOYMENT}~orphan-{ID[:12]}\n~ deployment.ep/blue (instance_count) [drifted]"),
    # issue 12: a crash-looping instance is its deployment's failing instance (not an orphan), replaced.
    ("restarting is crash-looping", [container(0), container(1, running=False, status="restarting"), gateway()],
     {}, [("crashlooping", DEPLOYMENT)], "-/+ deployment.ep/blue [drifted]"),
    ("running again after its restart policy brought it back",
     [container(0), container(1, attributes={"recently_restarted": True, "up": "4s ago"}), gateway()],
     {ID: {**inspected(), "restart_count": 7}}, [("crashlooping", DEPLOYMENT)], "-/+ deployment.ep/blue [drifted]"),
    ("restarted by hand or by the daemon is no drift",
     [container(0), container(1, attributes={"recently_restarted": True}), gateway()],
     {ID: {**inspected(), "restart_count": 0}}, [], "No changes."),
    ("image re-tagged under the container", [container(0), container(1, attributes={"image": "sha256:old"}), gateway()],
     {ID: inspected()}, [("changed", DEPLOYMENT)], "-/+ deployment.ep/blue (image!) [drifted]"),
    ("recreated with another environment", [container(0), container(1, driver_id=OTHER, name="hand-made"), gateway()],
     {OTHER: inspected({"MODEL_NAME": "half_plus_two", "API_KEY": "s3cret", "DEBUG": "1"})},
     [("recreated", DEPLOYMENT)], "-/+ deployment.ep/blue (environment_variables.DEBUG!) [drifted]"),
    ("recreated identically is still replaced", [container(0), container(1, driver_id=OTHER, name="hand-made"),
                                                  gateway()],
     {OTHER: inspected()}, [("recreated", DEPLOYMENT)], "-/+ deployment.ep/blue [drifted]"),
    ("published on all interfaces", [container(0), container(1, attributes={"ports": {"8501": ["0.0.0.0:40001"]}}),
                                     gateway()],
     {ID: inspected()}, [("changed", DEPLOYMENT)], "-/+ deployment.ep/blue [drifted]"),
    ("model mounted from elsewhere", [container(0), container(1, attributes={"mounts": [
        {"source": "/tmp/other", "destination": "/models/m/1", "read_only": True}]}), gateway()],
     {ID: inspected()}, [("changed", DEPLOYMENT)], "-/+ deployment.ep/blue (model.content_digest!) [drifted]"),
    ("model mounted writable", [container(0), container(1, attributes={"mounts": [
        {"source": f"{STORE}/aaa", "destination": "/models/m/1", "read_only": False}]}), gateway()],
     {ID: inspected()}, [("changed", DEPLOYMENT)], "-/+ deployment.ep/blue [drifted]"),
    ("model store content changed", healthy(), {}, [("model-content", MODEL)],
     "-/+ model.m:1 (content_digest!) [drifted]\n-/+ deployment.ep/blue [dependency-replaced]"),
    ("orphan deployment container", [*healthy(), container(5, driver_id=OTHER, name="stray")], {},
     [("orphan", f"{DEPLOYMENT}~orphan-{OTHER[:12]}")], f"- {DEPLOYMENT}~orphan-{OTHER[:12]}"),
    ("orphan gateway container", [*healthy(), gateway(driver_id=OTHER, name="stray-gw")], {},
     [("orphan", f"{ENDPOINT}~orphan-{OTHER[:12]}")], f"- {ENDPOINT}~orphan-{OTHER[:12]}"),
    ("gateway removed", [container(0), container(1)], {}, [("missing", ENDPOINT)], "-/+ endpoint.ep [drifted]"),
    ("gateway stopped", [container(0), container(1), gateway(running=False, status="exited")], {},
     [("stopped", ENDPOINT)], "-/+ endpoint.ep [drifted]"),
    ("gateway recreated by hand", [container(0), container(1), gateway(driver_id=OTHER, name="my-gw")], {},
     [("recreated", ENDPOINT)], "-/+ endpoint.ep [drifted]"),
    ("gateway published elsewhere", [container(0), container(1),
                                     gateway(attributes={**gateway().attributes, "ports": {"8080": ["0.0.0.0:45000"]}})],
     {}, [("changed", ENDPOINT)], "-/+ endpoint.ep [drifted]"),
]


@pytest.mark.parametrize("name,observed,inspections,expected_drift,expected_plan", CASES, ids=[c[0] for c in CASES])
def test_fold_table(name, observed, inspections, expected_drift, expected_plan):
    digests = {MODEL: "sha256:bbb"} if "content changed" in name else None
    state, drift = fold(observed, inspections, digests)
    assert [(d.kind, d.address) for d in drift] == expected_drift
    plan = str(make_plan(desired(state), state, PlanOptions(), drift))
    assert any(part in plan for part in expected_plan.split("|")), plan


def unpublished_state() -> StateFile:
    """base_state() as apply writes it now: deployment ports not published (issue 12)."""
    state = base_state()
    record = state.records[DEPLOYMENT]
    instances = [{**i, "ports": {}} for i in record.outputs["instances"]]
    return state.with_record(dataclasses.replace(record, outputs={
        "instances": instances, "scoring_uri": "http://rc-s-ep-blue-g1-0:8501/score"}))


@pytest.mark.parametrize("name,ports,expected", [
    ("nothing published is no drift", {}, []),
    ("published by hand on all interfaces", {"8501": ["0.0.0.0:40001"]}, [("changed", DEPLOYMENT)]),
    ("published by hand on loopback", {"8501": ["127.0.0.1:40001"]}, [("changed", DEPLOYMENT)]),
])
def test_unpublished_ports(name, ports, expected):
    observed = [container(0, attributes={"ports": {}}), container(1, attributes={"ports": ports}), gateway()]
    state, drift = fold(observed, {ID: inspected()}, state=unpublished_state())
    assert [(d.kind, d.address) for d in drift] == expected
    if expected:
        assert [f.path for f in drift[0].fields] == ["ports"]
        assert "-/+ deployment.ep/blue [drifted]" in str(make_plan(desired(state), state, PlanOptions(), drift))


def test_a_restart_is_seen_in_list_data_only_when_recent_and_well_after_creation():
    from reconciler.drivers.docker.observe import restarted_recently, uptime_seconds
    assert [uptime_seconds(s) for s in ("Up Less than a second", "Up 1 second", "Up 42 seconds (healthy)",
                                        "Up About a minute", "Up 4 minutes", "Up About an hour", "Up 3 days",
                                        "Restarting (1) 2 seconds ago", "Exited (0) 1 second ago")] == \
        [0, 1, 42, 60, 240, None, None, None, None]
    now = 10_000.0
    assert restarted_recently(3, now - 600, now)          # created 10 min ago, up 3 s: restarted
    assert not restarted_recently(3, now - 5, now)        # its first start
    assert not restarted_recently(None, now - 6000, now)  # up for an hour or more
    assert not restarted_recently(3, None, now)


def test_gateway_config_edited_by_hand_asks_for_a_reload():
    state, drift = fold(healthy(), configs={ENDPOINT: {**GATEWAY_CONFIG, "digest": "sha256:edited"}})
    assert [(d.kind, d.repair) for d in drift] == [("gateway-config", "update")]
    assert state.records[ENDPOINT].outputs["config_digest"] == "sha256:edited"  # what refresh-only accepts
    plan = make_plan(desired(state), state, PlanOptions(), drift)
    assert str(plan).splitlines()[-2:] == ["~ endpoint.ep [drifted]", "Plan: 0 to add, 1 to change, 0 to destroy."]


def test_gateway_config_directory_gone_replaces_the_gateway():
    config = {**GATEWAY_CONFIG, "dir_exists": False, "digest": None}
    assert "-/+ endpoint.ep [drifted]" in plan_after(healthy(), configs={ENDPOINT: config})


def test_a_missing_instance_lowers_the_count_so_apply_scales_back():
    state, drift = fold([container(0), gateway()])
    record = state.records[DEPLOYMENT]
    assert record.spec["instance_count"] == 1
    assert [i["instance"] for i in record.outputs["instances"]] == [0]
    assert record.driver_ids["containers"] == [instance(0)["id"]]
    (item,) = drift
    assert [(f.path, f.before, f.after) for f in item.fields] == [("instance_count", 2, 1)]


def test_recreated_container_is_recorded_with_what_it_runs():
    env = {"MODEL_NAME": "half_plus_two", "API_KEY": "s3cret", "DEBUG": "1"}
    observed = [container(0), container(1, driver_id=OTHER, name="hand-made",
                                         attributes={"image": "reconciler/demo-tfserving:v2",
                                                     "ports": {"8501": ["127.0.0.1:41234"]}}), gateway()]
    state, (item,) = fold(observed, {OTHER: inspected(env, image="reconciler/demo-tfserving:v2")})
    record = state.records[DEPLOYMENT]
    assert record.outputs["instances"][1] == {"id": OTHER, "name": "hand-made", "instance": 1,
                                              "ports": {"8501": 41234}}
    assert record.spec["image"] == "reconciler/demo-tfserving:v2"
    assert record.spec["environment_variables"] == dict(sorted(env.items()))
    assert item.repair == "replace"
    assert {f.path for f in item.fields} == {"image", "environment_variables.DEBUG", "ports"}


def test_image_defaults_are_not_drift_but_a_changed_default_is():
    # MODEL_NAME is both an image default and a spec key; PATH only an image default.
    assert fold([container(0), container(1, driver_id=OTHER, name="x"), gateway()],
                {OTHER: inspected()})[1][0].fields == ()
    env = {**DEPLOYMENT_SPEC["environment_variables"], "PATH": "/evil"}
    (item,) = fold([container(0), container(1, driver_id=OTHER, name="x"), gateway()], {OTHER: inspected(env)})[1]
    assert [(f.path, f.before, f.after) for f in item.fields] == [("environment_variables.PATH", None, "/evil")]


def test_a_claimant_of_another_generation_is_an_orphan_and_the_instance_missing():
    stray = container(1, driver_id=OTHER, name="old", attributes={"generation": "g0"})
    state, drift = fold([container(0), stray, gateway()])
    assert [d.kind for d in drift] == ["missing", "orphan"]


def test_a_stopped_claimant_is_not_adopted():
    stray = container(1, driver_id=OTHER, name="dead", running=False, status="exited")
    assert [d.kind for d in fold([container(0), stray, gateway()])[1]] == ["missing", "orphan"]


def test_only_what_list_data_cannot_answer_is_inspected():
    state = base_state()
    assert needed_inspections(state, healthy()) == set()
    assert needed_inspections(state, [container(0), gateway()]) == set()  # missing: nothing to inspect
    assert needed_inspections(state, [container(0), container(1, driver_id=OTHER, name="x"), gateway()]) == {OTHER}
    assert needed_inspections(state, [container(0), container(1, attributes={"image": "sha256:x"}), gateway()]) == {ID}


def test_orphan_record_already_in_state_is_not_reported_twice_and_goes_when_its_container_does():
    state, _ = fold([*healthy(), container(5, driver_id=OTHER, name="stray")])
    again, drift = fold([*healthy(), container(5, driver_id=OTHER, name="stray")], state=state)
    assert drift == () and again.records == state.records
    gone, drift = fold(healthy(), state=state)
    assert drift == () and f"{DEPLOYMENT}~orphan-{OTHER[:12]}" not in gone.records


def test_deposed_records_keep_their_containers():
    state = base_state()
    old = dataclasses.replace(state.records[DEPLOYMENT], address=f"{DEPLOYMENT}~deposed-2",
                              outputs={"instances": [{"id": OTHER, "name": "old", "instance": 0, "ports": {}}]},
                              driver_ids={"generation": "g0", "containers": [OTHER]})
    state = state.with_record(old)
    assert fold([*healthy(), container(0, driver_id=OTHER, name="old", attributes={"generation": "g0"})],
                state=state)[1] == ()


def test_adopted_container_is_tracked_by_id_and_its_bindings_are_not_drift():
    state = base_state()
    adopted = {"id": OTHER, "name": "byhand", "instance": 0, "ports": {"8501": 8501}, "adopted": True,
               "bindings": {"8501": ["0.0.0.0:8501"]}}
    record = dataclasses.replace(state.records[DEPLOYMENT], outputs={"instances": [adopted]},
                                 spec={**DEPLOYMENT_SPEC, "instance_count": 1,
                                       "model": {**MODEL_SPEC, "content_digest": "external:/srv/model"}},
                                 driver_ids={"generation": "g1", "containers": [OTHER]})
    state = state.with_record(record)
    byhand = Observed("", OTHER, "byhand", True, "running", {},
                      {"image": IMAGE, "ports": {"8501": ["0.0.0.0:8501"]},
                       "mounts": [{"source": "/srv/model", "destination": "/models/m/1", "read_only": True}]})
    assert fold([byhand, gateway()], state=state)[1] == ()
    stopped = dataclasses.replace(byhand, running=False, status="exited")
    refreshed, drift = fold([stopped, gateway()], state=state)
    assert [d.kind for d in drift] == ["stopped", "orphan"]
    orphan = refreshed.records[f"{DEPLOYMENT}~orphan-{OTHER[:12]}"]
    assert orphan.outputs["instances"][0]["adopted"] is True  # so apply may remove it


@pytest.mark.parametrize("a,b", [("nginx", "docker.io/library/nginx:latest"), ("x/y:1", "docker.io/x/y:1"),
                                 ("reg:5000/x", "reg:5000/x:latest")])
def test_image_references_are_normalised(a, b):
    assert normalise_image(a) == normalise_image(b)


def test_model_view_reads_the_digest_from_the_store_path():
    mounts = [{"source": f"{STORE}/abc", "destination": "/models/m/1", "read_only": True}]
    assert model_view(MODEL_SPEC, mounts, STORE)["content_digest"] == "sha256:abc"
    assert model_view(MODEL_SPEC, mounts, None)["content_digest"] == f"external:{STORE}/abc"
    assert model_view(MODEL_SPEC, [], STORE) is None


def test_refresh_only_plan_has_no_changes_and_says_what_it_accepts():
    state, drift = fold([container(0), gateway()])
    plan = make_plan(desired(state), state, PlanOptions(mode="refresh-only"), drift)
    assert not plan.has_changes()
    assert plan.summary_line().startswith("Refresh only: 1 change(s) made outside reconciler would be accepted")


def test_reports_mask_secrets_and_render_in_every_form():
    env = {"MODEL_NAME": "half_plus_two", "API_KEY": "changed-secret"}
    _, drift = fold([container(0), container(1, driver_id=OTHER, name="x"), gateway()], {OTHER: inspected(env)})
    report = drift_report("s", "stacks/s", "state/s.json", 3, drift, 3, "2026-01-01T00:00:00+00:00")
    assert report["summary"] == {"changes": 1, "resources": 1, "by_kind": {"recreated": 1}}
    for text in (str(report), render_drift_report(report), render_drift_markdown(report)):
        assert "s3cret" not in text and "changed-secret" not in text
    markdown = render_drift_markdown(report)
    assert "| `deployment.ep/blue` | recreated |" in markdown
    assert "apply --refresh-only stacks/s" in markdown
    clean = drift_report("s", "stacks/s", "state/s.json", 3, (), 3, "now")
    assert "No drift" in render_drift_markdown(clean) and "No drift" in render_drift_report(clean)


def test_plan_json_masks_secrets_in_drift_fields():
    from reconciler.render.masking import masked_plan_dict
    env = {"MODEL_NAME": "half_plus_two", "API_KEY": "changed-secret"}
    state, drift = fold([container(0), container(1, driver_id=OTHER, name="x"), gateway()], {OTHER: inspected(env)})
    data = masked_plan_dict(make_plan(desired(state), state, PlanOptions(), drift).to_dict())
    assert "changed-secret" not in str(data) and "s3cret" not in str(data)
    assert data["drift"][0]["repair"] == "replace"


def test_refresh_only_markdown_plan_does_not_claim_no_changes():
    from reconciler.render.markdown import render_plan_markdown
    state, drift = fold([container(0), gateway()])
    text = render_plan_markdown(make_plan(desired(state), state, PlanOptions(mode="refresh-only"), drift))
    assert "**Refresh only: 1 change(s) made outside reconciler would be accepted" in text
    assert "No changes" not in text and "| `deployment.ep/blue` |" in text


# -- issue 12: what the gateway really routes to --------------------------------------------------
SERVING = {"blue": [f"{instance(0)['name']}:8501", f"{instance(1)['name']}:8501"]}
NEW = [{**instance(n), "id": f"e{n}" + "0" * 62, "name": f"rc-s-ep-blue-g2-{n}"} for n in (0, 1)]


def with_routes(state: StateFile, routes: dict | None) -> StateFile:
    endpoint = state.records[Address.parse(ENDPOINT)]
    outputs = {k: v for k, v in endpoint.outputs.items() if k != "routes"}
    return state.with_record(dataclasses.replace(endpoint, outputs={**outputs, **({"routes": routes} if routes is not
                                                                                     None else {})}))


def interrupted_rollout(status: str = "ready") -> StateFile:
    """blue replaced (create-before-destroy): the new record saved, the old one deposed, the
    gateway never re-pointed: it still routes to the g1 containers."""
    state = with_routes(base_state(), SERVING)
    old = state.records[Address.parse(DEPLOYMENT)]
    state = state.with_record(dataclasses.replace(old, address=Address.parse(f"{DEPLOYMENT}~deposed-g1")))
    return state.with_record(dataclasses.replace(
        old, status=status, driver_ids={"generation": "g2", "containers": [i["id"] for i in NEW]},
        outputs={**old.outputs, "instances": NEW}))


def new_containers() -> list[Observed]:
    return [container(n, driver_id=NEW[n]["id"], name=NEW[n]["name"], attributes={"generation": "g2"})
            for n in (0, 1)]


ROUTE_CASES = [
    ("routes as recorded", lambda: with_routes(base_state(), SERVING), healthy, [], "No changes."),
    ("written before routes were recorded", base_state, healthy, [], "No changes."),
    ("the gateway still routes to containers of the deposed record",
     interrupted_rollout, lambda: healthy() + new_containers(), [("gateway-stale", "update")],
     "! endpoint.ep (gateway-stale)|~ endpoint.ep [drifted]"),
    ("the deposed containers are gone too",
     interrupted_rollout, lambda: new_containers() + [gateway()], [("gateway-stale", "update")],
     "! endpoint.ep (gateway-stale)|~ endpoint.ep [drifted]"),
    ("the replacement is tainted: the deposed record serves, as routed",
     lambda: interrupted_rollout("tainted"), lambda: healthy() + new_containers(), [], "-/+ deployment.ep/blue"),
    ("routes recorded to a deployment since deleted are no drift",
     lambda: with_routes(base_state(), {**SERVING, "green": ["rc-s-ep-green-g1-0:8501"]}), healthy, [],
     "No changes."),
    ("a serving deployment the gateway does not route to",
     lambda: with_routes(base_state(), {}), healthy, [("gateway-stale", "update")], "! endpoint.ep (gateway-stale)|~ endpoint.ep [drifted]"),
]


@pytest.mark.parametrize("name,state,observed,expected_drift,expected_plan", ROUTE_CASES, ids=[c[0] for c in ROUTE_CASES])
def test_gateway_routes_against_records_and_containers(name, state, observed, expected_drift, expected_plan):
    start = state()
    refreshed, drift = fold(observed(), state=start)
    assert [(d.kind, d.repair) for d in drift if d.kind == "gateway-stale" or d.address.kind == "endpoint"] \
        == expected_drift
    plan = str(make_plan(desired(refreshed), refreshed, PlanOptions(), drift))
    assert all(line in plan for line in expected_plan.split("|")), plan


def test_gateway_stale_says_what_it_routes_to_and_that_apply_reloads():
    _, drift = fold(new_containers() + [gateway()], state=interrupted_rollout())
    [stale] = [d for d in drift if d.kind == "gateway-stale"]
    assert stale.detail == ("the gateway routes blue to rc-s-ep-blue-g1-0, rc-s-ep-blue-g1-1, which state no longer "
                            "considers serving (rc-s-ep-blue-g1-0, rc-s-ep-blue-g1-1 not running); "
                            "apply re-renders and reloads it")


def _remote_state() -> StateFile:
    """base_state() as applied on a remote engine: the model in a content volume, the gateway's
    config in its own volume, its port published on every address of the engine's host."""
    state = base_state()
    model = state.records[MODEL]
    state = state.with_record(dataclasses.replace(model, outputs={**model.outputs, "volume": "rc-s-content-aaa"}))
    endpoint = state.records[ENDPOINT]
    gateway_outputs = {**endpoint.outputs["gateway"], "config_volume": "rc-s-ep-gw-g9-conf", "listen": "0.0.0.0"}
    return state.with_record(dataclasses.replace(endpoint, outputs={**endpoint.outputs, "gateway": gateway_outputs}))


def _remote_observed(model_source: str, config_source: str, listen: str) -> list[Observed]:
    model_mount = [{"source": model_source, "destination": "/models/m/1", "read_only": True}]
    return [container(0, attributes={"mounts": model_mount}), container(1, attributes={"mounts": model_mount}),
            gateway(attributes={"image": "reconciler/gateway:latest", "role": "gateway",
                                "ports": {"8080": [f"{listen}:45000"]},
                                "mounts": [{"source": config_source, "destination": "/etc/reconciler",
                                            "read_only": True}]})]


def test_a_remote_engines_volumes_and_listen_address_are_what_state_expects():
    cases = {"as applied": ("rc-s-content-aaa", "rc-s-ep-gw-g9-conf", "0.0.0.0"),
             "model volume swapped": ("rc-s-content-bbb", "rc-s-ep-gw-g9-conf", "0.0.0.0"),
             "config bind-mounted": ("rc-s-content-aaa", GATEWAY_CONFIG["dir"], "0.0.0.0"),
             "gateway on loopback": ("rc-s-content-aaa", "rc-s-ep-gw-g9-conf", "127.0.0.1")}
    found = {}
    for name, sources in cases.items():
        _, drift = fold(_remote_observed(*sources), inspections={i["id"]: inspected() for i in (instance(0), instance(1))},
                        state=_remote_state())
        found[name] = sorted({f"{d.address} {d.kind} {','.join(f.path for f in d.fields)}" for d in drift})
    assert found == {
        "as applied": [],
        "model volume swapped": ["deployment.ep/blue changed mounts"],
        "config bind-mounted": ["endpoint.ep changed mounts"],
        "gateway on loopback": ["endpoint.ep changed ports"],
    }
