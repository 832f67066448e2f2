"""Issue 15, runtime health and the reachable endpoint, without Docker: the probe's counting,
the rotation files, who the restarter may restart, drift for instances out of rotation and a
stopped supervisor, `reconciler status` (golden file and CLI), and the listen/TLS settings.
Integration: tests/integration/test_runtime_health.py."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.config.stack import load_stack
from reconciler.drivers.common.gateway import render_gateway_config
from reconciler.drivers.common.rotation import rotation_maps
from reconciler.drivers.docker.gateway_config import deployment_routes, health_config
from reconciler.drivers.docker.health_agent import ProbeTrack, may_restart, status_view as agent_status
from reconciler.planning.planner import PlanOptions, make_plan
from reconciler.render.status import render_status, status_view
from reconciler.state.model import StateFile
from reconciler.state.store import StateStore
from tests.unit import test_docker_fold as fold_case

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SETTINGS = {"initial_delay": 1, "period": 1, "timeout": 1, "failure_threshold": 3, "success_threshold": 2}


# -- the probe's counting ---------------------------------------------------------------------
@pytest.mark.parametrize("results, expected", [
    ("ok ok ok", "in in in"),
    ("fail fail", "in in"),                          # under failure_threshold: stays in
    ("fail fail fail", "in in out"),                 # the third failure in a row takes it out
    ("fail fail ok fail fail", "in in in in in"),    # a success resets the count
    ("fail fail fail ok", "in in out out"),          # back only after success_threshold (2) successes
    ("fail fail fail ok ok", "in in out out in"),
    ("fail fail fail ok fail ok ok", "in in out out out out in"),
])
def test_readiness_leaves_and_rejoins_rotation_as_a_kubelet_counts(results, expected):
    track, seen = ProbeTrack(SETTINGS), []
    for step, result in enumerate(results.split()):
        track.record(result == "ok", "" if result == "ok" else "HTTP 503", float(step))
        seen.append("in" if track.passing else "out")
    assert " ".join(seen) == expected


def test_failing_since_is_the_first_failure_of_the_streak():
    track = ProbeTrack(SETTINGS)
    for now, ok in ((0, True), (1, False), (2, False), (3, False)):
        track.record(ok, "" if ok else "HTTP 503", now)
    assert (track.passing, track.failing_since, track.last_error) == (False, 1, "HTTP 503")


# -- rotation files ---------------------------------------------------------------------------
def test_rotation_maps_pick_among_the_servers_in_rotation_only():
    two = rotation_maps("abc", ["a:1", "b:1"], 3)
    assert 'split_clients "${request_id}servers" $d_abc_first {\n    50.00% 0;\n    * 1;\n}' in two
    assert 'map $d_abc_first $d_abc_try1 {\n    0 "a:1";\n    1 "b:1";\n}' in two
    assert 'map $d_abc_first $d_abc_try2 {\n    0 "b:1";\n    1 "a:1";\n}' in two
    assert 'map $request_method $d_abc_try3 {\n    default "";\n}' in two
    one = rotation_maps("abc", ["b:1"], 3)
    assert "split_clients" not in one and one.count('default "b:1";') == 2   # a lone server is tried twice
    none = rotation_maps("abc", [], 3)
    assert none.count('default "";') == 3                                   # the gateway answers 503


@pytest.mark.parametrize("server", ['a:1"; } server {', "a b:1", "a:1;", "$host:1"])
def test_rotation_maps_refuse_what_could_change_the_config(server):
    with pytest.raises(ValueError):
        rotation_maps("abc", [server], 3)


def records_with(instances: int = 2):
    state = fold_case.base_state()
    return state.records


def test_docker_gateway_includes_the_rotation_file_and_answers_503_with_none_ready():
    records = records_with()
    routes = deployment_routes("ep", records)
    config = render_gateway_config(fold_case.ENDPOINT_SPEC, routes, {"primary": "a" * 43, "secondary": "b" * 43},
                                   rotation_dir="/etc/reconciler/health")
    route_id = routes["blue"]["id"]
    assert f'include "/etc/reconciler/health/d_{route_id}.conf";' in config
    assert "split_clients \"${request_id}servers\"" not in config              # the included file has it
    assert f"d_{route_id} $d_{route_id}_try1;" in config
    assert 'if ($target_server = "") {' in config and "return 503" in config


def test_health_config_names_each_instance_with_its_probe_routes_and_settings():
    records = records_with()
    spec = dict(fold_case.DEPLOYMENT_SPEC, routes={"scoring": {"port": 8501, "path": "/score"},
                                                   "readiness": {"port": 8501, "path": "/-/ready"},
                                                   "liveness": {"port": 8501, "path": "/-/live"}},
                readiness_probe=SETTINGS, liveness_probe=SETTINGS)
    address = next(a for a in records if a.kind == "deployment")
    records = {**records, address: dataclasses.replace(records[address], spec=spec)}
    config = health_config("ep", records, "lineage-1", 3)
    assert [(d["name"], d["scoring_port"], [i["name"] for i in d["instances"]]) for d in config["deployments"]] == \
        [("blue", 8501, ["rc-s-ep-blue-g1-0", "rc-s-ep-blue-g1-1"])]
    assert config["deployments"][0]["instances"][0]["readiness"] == {"port": 8501, "path": "/-/ready"}
    assert config["identity"] == "lineage-1"


@pytest.mark.parametrize("container_id, labels, allowed", [
    ("c1", {"org.reconciler.identity": "L", "org.reconciler.role": "deployment"}, True),
    ("c9", {"org.reconciler.identity": "L", "org.reconciler.role": "deployment"}, False),   # not in config
    ("c1", {"org.reconciler.identity": "X", "org.reconciler.role": "deployment"}, False),   # another state's
    ("c1", {"org.reconciler.identity": "L", "org.reconciler.role": "gateway"}, False),
    ("c1", {}, False),
])
def test_the_restarter_restarts_only_this_endpoints_instances(container_id, labels, allowed):
    config = {"identity": "L", "deployments": [{"instances": [{"id": "c1", "name": "n1"}]}]}
    assert may_restart(config, container_id, labels) is allowed


# -- drift ------------------------------------------------------------------------------------
def health_files(in_rotation: bool, container: str | None = None) -> dict:
    name = fold_case.instance(1)["name"]
    item = {"container": container or fold_case.instance(1)["id"], "deployment": "blue", "in_rotation": in_rotation,
            "readiness_failing_since": None if in_rotation else 1796124960.0,
            "readiness_error": "" if in_rotation else "GET /-/ready answered HTTP 503"}
    return {"instances": {name: item}, "restarts": {}}


@pytest.mark.parametrize("name, health, expected_drift", [
    ("all in rotation", health_files(True), []),
    ("one out of rotation", health_files(False),
     ["unhealthy deployment.ep/blue: instance rc-s-ep-blue-g1-1 is out of rotation: readiness failing since "
      "2026-12-01T11:36:00Z (GET /-/ready answered HTTP 503)"]),
    ("an old container's report is not this one's", health_files(False, container="old"), []),
])
def test_an_instance_out_of_rotation_is_reported_not_repaired(name, health, expected_drift):
    configs = {fold_case.ENDPOINT: {**fold_case.GATEWAY_CONFIG, "health": health}}
    state, drift = fold_case.fold(fold_case.healthy() + [supervisor("probe"), supervisor("restarter")],
                                  configs=configs, state=supervised_state())
    assert [f"{d.kind} {d.address}: {d.detail.split('; it rejoins')[0]}" for d in drift] == expected_drift
    plan = str(make_plan(fold_case.desired(state), state, PlanOptions(), drift))
    assert plan.endswith("No changes. Your infrastructure matches the configuration.")
    assert ("! deployment.ep/blue (unhealthy)" in plan) is bool(expected_drift)


def supervised_state(probe_id="hp" + "0" * 62) -> StateFile:
    state = fold_case.base_state()
    endpoint = state.records[next(a for a in state.records if a.kind == "endpoint")]
    health = {"probe": {"id": probe_id, "name": "rc-s-ep-hp-g9"}, "restarter": {"id": "hr" + "0" * 62, "name": "rc-s-ep-hr-g9"}}
    return state.with_record(dataclasses.replace(endpoint, outputs={**endpoint.outputs, "health": health}))


def supervisor(role: str, running: bool = True) -> fold_case.Observed:
    return fold_case.Observed(address=fold_case.ENDPOINT, driver_id=("hp" if role == "probe" else "hr") + "0" * 62,
                              name=f"rc-s-ep-{role}", running=running, status="running" if running else "exited",
                              labels={"org.reconciler.role": f"health-{role}"}, attributes={"role": f"health-{role}"})


def test_the_supervisor_is_owned_by_its_endpoint_and_restarted_when_stopped():
    state = supervised_state()
    _, drift = fold_case.fold(fold_case.healthy() + [supervisor("probe"), supervisor("restarter")], state=state)
    assert list(drift) == []                                            # owned: no orphans
    state, drift = fold_case.fold(fold_case.healthy() + [supervisor("probe", running=False), supervisor("restarter")],
                                  state=state)
    assert [(d.kind, d.repair) for d in drift] == [("health-supervisor", "update")]
    assert "health probe rc-s-ep-hp-g9 is exited" in drift[0].detail
    plan = str(make_plan(fold_case.desired(state), state, PlanOptions(), tuple(drift)))
    assert "~ endpoint.ep [drifted]" in plan and "Plan: 0 to add, 1 to change, 0 to destroy." in plan


# -- reconciler status ------------------------------------------------------------------------
OBSERVED = {
    "containers": {fold_case.instance(0)["id"]: {"state": "running", "restarts": 0},
                   fold_case.instance(1)["id"]: {"state": "running", "restarts": 1},
                   "gw" + "0" * 62: {"state": "running"}, "hp" + "0" * 62: {"state": "running"},
                   "hr" + "0" * 62: {"state": "exited"}},
    "health": {"ep": {"updated": 1796124990.0, **health_files(False),
                      "restarts": {fold_case.instance(1)["id"]: 2}}},
}


def test_status_rendering_matches_golden_file():
    state = supervised_state()
    endpoint = next(a for a in state.records if a.kind == "endpoint")
    record = state.records[endpoint]
    state = state.with_record(dataclasses.replace(record, outputs={**record.outputs,
                                                                   "scoring_uri": "https://10.0.0.1:8443/score"}))
    name = fold_case.instance(0)["name"]
    observed = {**OBSERVED, "health": {"ep": {**OBSERVED["health"]["ep"], "instances": {
        **OBSERVED["health"]["ep"]["instances"],
        name: {"container": fold_case.instance(0)["id"], "in_rotation": True}}}}}
    text = render_status(status_view("s", "docker", state.records, observed))
    golden = GOLDEN / "status.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


class StatusDriver:
    name = "docker"

    def runtime_status(self, state, state_dir):
        return OBSERVED


def test_status_command_prints_the_view(tmp_path, monkeypatch):
    from reconciler.cli.main import cli
    from reconciler.drivers import base, registry
    stack_dir = tmp_path / "s"
    stack_dir.mkdir()
    store = StateStore(tmp_path / "state.json", "s")
    store.lock("test")
    store.write(supervised_state())
    store.unlock()
    monkeypatch.setattr(base, "SupportsStatus", StatusDriver)
    monkeypatch.setattr(registry, "driver_named", lambda name: StatusDriver())
    result = CliRunner().invoke(cli, ["status", str(stack_dir), "--state", str(tmp_path / "state.json")])
    assert result.exit_code == 0, result.output
    assert "endpoint ep" in result.output and "deployment blue (traffic 100%)" in result.output
    assert "rc-s-ep-blue-g1-1  running  out of rotation: readiness failing since 2026-12-01T11:36:00Z" in result.output
    assert "restarts 3" in result.output                   # 2 by the supervisor + 1 by the restart policy
    assert "restarter exited" in result.output


def test_status_without_state_is_a_clear_error(tmp_path):
    from reconciler.cli.main import cli
    (tmp_path / "s").mkdir()
    result = CliRunner().invoke(cli, ["status", str(tmp_path / "s"), "--state", str(tmp_path / "none.json")])
    assert result.exit_code == 1 and "no state for stack s" in result.output


# -- listen address, port and TLS ---------------------------------------------------------------
def stack_with(tmp_path: Path, settings: str) -> Path:
    source = Path(__file__).resolve().parents[2] / "stacks" / "half-plus-two"
    import shutil
    target = tmp_path / "hp"
    shutil.copytree(source, target)
    (target / "reconciler.yml").write_text(settings)
    return target


def endpoint_spec(stack: Path):
    from reconciler.errors import StackInvalid
    try:
        return load_stack(stack), []
    except StackInvalid as error:
        return None, error.problems


def test_listen_and_tls_files_join_the_endpoint_spec_with_fingerprints_not_keys(tmp_path):
    stack = stack_with(tmp_path, "endpoints:\n  half-plus-two:\n    listen: {address: 10.9.0.1, port: 8443}\n"
                                 "    tls: {certificate: ep.crt, key: ep.key}\n")
    (stack / "ep.crt").write_text("CERT")
    (stack / "ep.key").write_text("PRIVATE KEY MATERIAL")
    graph, problems = endpoint_spec(stack)
    assert problems == []
    spec = next(r.spec for a, r in graph.resources.items() if a.kind == "endpoint")
    assert spec["listen"] == {"address": "10.9.0.1", "port": 8443}
    assert spec["tls"]["source"] == "files" and spec["tls"]["key"] == str(stack / "ep.key")
    assert spec["tls"]["key_sha256"].startswith("sha256:") and "PRIVATE KEY MATERIAL" not in repr(spec)


@pytest.mark.parametrize("settings, message", [
    ("endpoints:\n  half-plus-two:\n    tls: {certificate: missing.crt, key: missing.key}\n",
     "reconciler.yml:3: endpoints.half-plus-two.tls.certificate: cannot read certificate file"),
    ("endpoints:\n  half-plus-two:\n    tls: {certificate: a.crt}\n",
     "reconciler.yml:3: endpoints.half-plus-two.tls: tls needs both `certificate` and `key`"),
    ("endpoints:\n  half-plus-two:\n    listen: {address: 10.0.0.300}\n",
     "reconciler.yml:3: endpoints.half-plus-two.listen.address: '10.0.0.300' is not an IPv4 address"),
    ("endpoints:\n  nope:\n    tls: {generate: true}\n",
     "reconciler.yml:2: endpoints.nope: settings name endpoint 'nope', which is not defined"),
])
def test_bad_listen_or_tls_settings_are_located_errors(tmp_path, settings, message):
    _, problems = endpoint_spec(stack_with(tmp_path, settings))
    assert any(str(p).replace(str(tmp_path / "hp") + "/", "").startswith(message) for p in problems), \
        [str(p) for p in problems]


def test_a_new_listen_port_replaces_the_gateway_and_tls_updates_it_in_place():
    from reconciler.planning.diff import field_changes
    before = {"name": "ep", "traffic": {}, "mirror_traffic": {}}
    port = field_changes("endpoint", before, {**before, "listen": {"address": "127.0.0.1", "port": 9000}})
    tls = field_changes("endpoint", before, {**before, "tls": {"source": "generated"}})
    assert [f.forces_replacement for f in port] == [True] and [f.forces_replacement for f in tls] == [False]


def test_tls_gateway_listens_with_ssl_and_plain_one_does_not():
    routes = deployment_routes("ep", records_with())
    keys = {"primary": "a" * 43, "secondary": "b" * 43}
    plain = render_gateway_config(fold_case.ENDPOINT_SPEC, routes, keys)
    secure = render_gateway_config(fold_case.ENDPOINT_SPEC, routes, keys,
                                   tls={"certificate": "/etc/reconciler/tls/endpoint.crt",
                                        "key": "/etc/reconciler/tls/endpoint.key"})
    assert "listen 8080 default_server;" in plain and "ssl" not in plain
    assert "listen 8080 ssl default_server;" in secure
    assert 'ssl_certificate_key "/etc/reconciler/tls/endpoint.key";' in secure


def test_generated_certificates_name_the_listen_address():
    from reconciler.drivers.common.tls import names_for
    assert names_for("10.9.0.1") == ["IP:10.9.0.1", "IP:127.0.0.1", "DNS:localhost"]
    assert names_for("0.0.0.0") == ["IP:127.0.0.1", "DNS:localhost"]


def test_the_agent_status_says_since_when_in_wall_clock():
    config = {"deployments": [{"name": "blue", "instances": [{"name": "n1", "id": "c1"}]}]}
    ready, live = ProbeTrack(SETTINGS), ProbeTrack(SETTINGS)
    for now in (100.0, 101.0, 102.0):
        ready.record(False, "HTTP 503", now)
    view = agent_status(config, {"n1": ready}, {"n1": live}, {"c1": 1}, now_wall=5000.0, now_mono=110.0)
    assert view["instances"]["n1"] == {"deployment": "blue", "container": "c1", "in_rotation": False,
                                       "readiness_failing_since": 4990.0, "readiness_error": "HTTP 503",
                                       "liveness_failing_since": None, "liveness_error": "", "restarts_requested": 1}


# -- swarm: liveness in the task's health check ---------------------------------------------------
def probe(period, failure_threshold, initial_delay=0, timeout=2):
    return {"initial_delay": initial_delay, "period": period, "timeout": timeout,
            "failure_threshold": failure_threshold, "success_threshold": 1}


@pytest.mark.parametrize("liveness, readiness, routes_differ, expected", [
    # Liveness slower than readiness (Azure's defaults): exactly the readiness check of before.
    (probe(10, 30, 10), probe(1, 30), False, (1e9, 2e9, 30, 0)),
    # Liveness faster: unhealthy (replaced) after its window, 2 s x 3 = 6 checks 1 s apart.
    (probe(2, 3, 5), probe(1, 30, 1), False, (1e9, 2e9, 6, 1e9)),
    # Another liveness route: both are checked, in one command.
    (probe(1, 3), probe(1, 30), True, (1e9, 4e9, 3, 0)),
])
def test_swarm_task_health_check_covers_liveness(liveness, readiness, routes_differ, expected):
    from reconciler.drivers.swarm.engine import task_healthcheck
    routes = {"readiness": {"port": 8501, "path": "/-/ready"},
              "liveness": {"port": 8501, "path": "/-/live" if routes_differ else "/-/ready"}}
    check = task_healthcheck({"routes": routes, "liveness_probe": liveness, "readiness_probe": readiness})
    assert (check["Interval"], check["Timeout"], check["Retries"], check["StartPeriod"]) == expected
    assert ("/-/live" in check["Test"][1]) is routes_differ and "/-/ready" in check["Test"][1]


def test_a_probe_change_updates_the_deployment_in_place_and_re_points_its_endpoint():
    """The endpoint's health supervisor watches with the deployment's probe settings (docker)."""
    state = fold_case.base_state()
    graph = fold_case.desired(state)
    address = next(a for a in graph.resources if a.kind == "deployment")
    resource = graph.resources[address]
    changed = dataclasses.replace(resource, spec={**resource.spec, "liveness_probe": {**SETTINGS, "period": 3}})
    graph = dataclasses.replace(graph, resources={**graph.resources, address: changed})
    plan = str(make_plan(graph, state, PlanOptions()))
    assert "~ deployment.ep/blue (liveness_probe" in plan and "~ endpoint.ep" in plan, plan


def test_an_endpoint_without_a_supervisor_gets_one_once_refresh_read_the_health_files():
    """Applied before runtime health existed, or rebuilt by `state recover`."""
    configs = {fold_case.ENDPOINT: {**fold_case.GATEWAY_CONFIG, "health": {}}}
    _, drift = fold_case.fold(fold_case.healthy(), configs=configs)
    assert [(d.kind, d.repair) for d in drift] == [("health-supervisor", "update")]


def test_swarm_service_spec_carries_the_task_health_check():
    from reconciler.drivers.base import StepContext
    from reconciler.drivers.swarm.driver import SwarmDriver
    spec = {**fold_case.DEPLOYMENT_SPEC, "model": None, "command": [], "args": [], "memory": None,
            "routes": {"scoring": {"port": 8501, "path": "/score"}, "readiness": {"port": 8501, "path": "/-/ready"},
                       "liveness": {"port": 8501, "path": "/-/live"}},
            "readiness_probe": probe(1, 10), "liveness_probe": probe(1, 3)}
    ctx = StepContext("s", Path("/s"), Path("/state"), dict, identity="lineage-1")
    service = SwarmDriver(client=None)._service_spec(ctx, "deployment.ep/blue", spec, "h", "g1", "net")
    check = service["task_template"]["ContainerSpec"]["Healthcheck"]
    assert check["Retries"] == 3 and "/-/live" in check["Test"][1] and "/-/ready" in check["Test"][1]


def test_the_probe_reloads_the_routing_nginx_never_the_gateways_edge():
    from reconciler.drivers.docker.health_agent import is_routing_master
    assert is_routing_master(b"nginx: master process nginx -c /etc/reconciler/nginx.conf -g daemon off;")
    assert not is_routing_master(b"nginx: master process nginx -c /etc/reconciler/edge.conf -g daemon off;")
    assert not is_routing_master(b"nginx: worker process")


# -- the probe follows config.json (no restart at a re-point) ---------------------------------
def agent_config(*instances: tuple[str, str], readiness: dict = SETTINGS) -> dict:
    return {"identity": "L", "max_tries": 3, "deployments": [{
        "name": "blue", "route_id": "e1", "scoring_port": 8501, "readiness_probe": readiness,
        "liveness_probe": SETTINGS,
        "instances": [{"name": name, "id": cid, "readiness": {"port": 8501, "path": "/-/ready"},
                       "liveness": {"port": 8501, "path": "/-/live"}} for name, cid in instances]}]}


@pytest.mark.parametrize("new, carried", [
    (agent_config(("a", "c1"), ("b", "c2")), "a b"),                       # same config
    (agent_config(("a", "c1"), ("x", "c9")), "a"),                         # b replaced by x
    (agent_config(("a", "c7"), ("b", "c2")), "b"),                         # a's container recreated
    (agent_config(("a", "c1"), ("b", "c2"), readiness=dict(SETTINGS, period=5)), ""),   # probes changed
])
def test_probe_counts_carry_over_only_for_the_same_container_with_the_same_probes(new, carried):
    from reconciler.drivers.docker.health_agent import carried_tracks
    assert " ".join(sorted(carried_tracks(agent_config(("a", "c1"), ("b", "c2")), new))) == carried


def test_the_probe_follows_a_new_config_under_the_lock_and_keeps_an_instance_out_of_rotation(tmp_path, monkeypatch):
    import json
    from reconciler.drivers.docker import health_agent
    # Never signal a real nginx of this machine.
    monkeypatch.setattr(health_agent, "nginx_master", lambda: None)
    old = agent_config(("a", "c1"), ("b", "c2"))
    (tmp_path / "config.json").write_text(json.dumps(old))
    prober = health_agent.Prober(old, directory=tmp_path, config_text=(tmp_path / "config.json").read_text())
    monkeypatch.setattr(prober, "start_watches", lambda: None)
    prober.readiness["a"].passing = False
    retired = prober.retired
    # Apply replaced b by x and rewrote config.json (under the lock, as apply does).
    with health_agent.exclusive(tmp_path):
        (tmp_path / "config.json").write_text(json.dumps(agent_config(("a", "c1"), ("x", "c9"))))
    assert prober.config_moved()
    prober.publish()
    assert retired.is_set() and not prober.retired.is_set()   # b's watches end; new ones run
    assert not prober.config_moved()
    status = json.loads((tmp_path / "status.json").read_text())["instances"]
    assert {name: item["in_rotation"] for name, item in status.items()} == {"a": False, "x": True}
    assert (tmp_path / "d_e1.conf").read_text() == rotation_maps("e1", ["x:8501"], 3)


def test_the_lock_is_exclusive_and_bounded(tmp_path):
    from reconciler.drivers.docker.health_agent import exclusive
    with exclusive(tmp_path):
        with pytest.raises(TimeoutError, match="stayed locked"):
            with exclusive(tmp_path, timeout=0.05):
                pass
    with exclusive(tmp_path, timeout=0.05):
        pass


@pytest.mark.parametrize("health, follows", [
    ({"probe": {"id": "p", "follows_config": True}, "restarter": {"id": "r", "follows_config": True}}, True),
    ({"probe": {"id": "p", "follows_config": True}, "restarter": None}, True),     # a TCP engine: no restarter
    ({"probe": {"id": "p"}, "restarter": {"id": "r"}}, False),                     # started before: paused, renewed
    ({}, True),
])
def test_only_supervisors_started_before_they_followed_config_are_paused_and_renewed(health, follows):
    from reconciler.drivers.docker.supervisor import follows_config
    assert follows_config(health) is follows
