"""Gateway config rendering and the choice of which containers serve a deployment. Pure."""
from __future__ import annotations

from reconciler.drivers.docker.gateway_config import deployment_routes, render_gateway_config
from reconciler.state.model import StateRecord

ENDPOINT = {"name": "ep", "auth_mode": "key", "traffic": {"blue": 90, "green": 10},
            "mirror_traffic": {}, "tags": {}, "description": ""}
KEYS = {"primary": "k" * 43, "secondary": "s" * 43}


def deployment(address: str, name: str, container: str, status: str = "ready") -> StateRecord:
    spec = {"endpoint": "ep", "name": name, "routes": {"scoring": {"port": 8501, "path": "/predict"}},
            "request_settings": {"request_timeout_ms": 7000}}
    return StateRecord(address, "docker", spec, "h", status=status,
                       outputs={"instances": [{"id": container, "name": container, "instance": 0, "ports": {}}]})


def test_routes_use_live_ready_records():
    records = {"deployment.ep/blue": deployment("deployment.ep/blue", "blue", "blue-new"),
               "deployment.ep/blue~deposed-3": deployment("deployment.ep/blue~deposed-3", "blue", "blue-old")}
    assert deployment_routes("ep", records)["blue"]["servers"] == ["blue-new:8501"]


def test_failed_rollout_keeps_the_old_containers_serving():
    records = {"deployment.ep/blue": deployment("deployment.ep/blue", "blue", "blue-new", "tainted"),
               "deployment.ep/blue~deposed-3": deployment("deployment.ep/blue~deposed-3", "blue", "blue-old")}
    assert deployment_routes("ep", records)["blue"]["servers"] == ["blue-old:8501"]


def test_orphans_and_other_endpoints_never_get_traffic():
    other = deployment("deployment.other/blue", "blue", "x")
    other.spec["endpoint"] = "other"
    records = {"deployment.ep/blue~orphan-abc": deployment("deployment.ep/blue~orphan-abc", "blue", "orphan"),
               "deployment.other/blue": other}
    assert deployment_routes("ep", records) == {}


def test_config_has_split_keys_and_header_routing():
    records = {f"deployment.ep/{n}": deployment(f"deployment.ep/{n}", n, f"{n}-0") for n in ("blue", "green")}
    config = render_gateway_config(ENDPOINT, deployment_routes("ep", records), KEYS)
    assert '"Bearer ' + "k" * 43 + '" 1;' in config and '"Bearer ' + "s" * 43 + '" 1;' in config
    assert "90% d_" in config and "10% d_" in config
    assert "server blue-0:8501 max_fails=0;" in config
    assert '"green" d_' in config
    assert "proxy_read_timeout 7000ms;" in config


def test_traffic_to_a_deployment_without_containers_is_dropped_not_misrouted():
    records = {"deployment.ep/blue": deployment("deployment.ep/blue", "blue", "blue-0")}
    config = render_gateway_config(ENDPOINT, deployment_routes("ep", records), KEYS)
    assert "90% d_" in config and "10% d_" not in config


def test_auth_off_when_not_key():
    config = render_gateway_config({**ENDPOINT, "auth_mode": "none"}, {}, KEYS)
    assert "Bearer " + "k" * 43 not in config and "default 1;" in config


def test_one_template_static_upstreams_or_names_resolved_per_request():
    """The docker gateway lists containers in upstream blocks; the swarm one resolves service
    names per request. Everything else in the two configs is the same text."""
    from reconciler.drivers.common.gateway import render_gateway_config as render_shared
    records = {"deployment.ep/blue": deployment("deployment.ep/blue", "blue", "blue-0")}
    static = deployment_routes("ep", records)
    dns = {name: {**route, "server": "svc-blue:8501"} for name, route in static.items()}
    fixed, resolved = render_shared(ENDPOINT, static, KEYS), render_shared(ENDPOINT, dns, KEYS, resolve_per_request=True)
    assert fixed == render_gateway_config(ENDPOINT, static, KEYS)
    assert "upstream d_" in fixed and "resolver " not in fixed and "$target_server" not in fixed
    assert "upstream d_" not in resolved and "resolver 127.0.0.11 valid=1s ipv6=off;" in resolved
    assert "proxy_pass http://$target_server$target_path;" in resolved
    only_fixed = set(fixed.splitlines()) - set(resolved.splitlines())
    assert {line.strip() for line in only_fixed} == {
        "# Rendered by reconciler for endpoint ep; do not edit (changes show up as drift).",
        f"upstream d_{static['blue']['id']} {{", "server blue-0:8501 max_fails=0;", "keepalive 32;",
        "proxy_pass http://$target$target_path;", "proxy_pass http://$mirror_target$mirror_path;"}
