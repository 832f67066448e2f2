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
    # #12: keys are matched by a case-sensitive regex, no longer by a (case-insensitive) string.
    assert '"~^Bearer ' + "k" * 43 + '\\\\z" 1;' in config and '"~^Bearer ' + "s" * 43 + '\\\\z" 1;' in config
    assert "90% d_" in config and "10% d_" in config
    # #12: containers are resolved per request (a stopped one no longer keeps nginx from starting).
    # (#15: a lone server is the value of its deployment's per-try maps, no longer inlined.)
    assert f'$d_{deployment_routes("ep", records)["blue"]["id"]}_try1 {{\n        default "blue-0:8501";' in config
    assert '"green" d_' in config
    assert "proxy_read_timeout 7000ms;" in config


def test_traffic_to_a_deployment_without_containers_is_dropped_not_misrouted():
    records = {"deployment.ep/blue": deployment("deployment.ep/blue", "blue", "blue-0")}
    config = render_gateway_config(ENDPOINT, deployment_routes("ep", records), KEYS)
    assert "90% d_" in config and "10% d_" not in config


def test_auth_off_when_not_key():
    config = render_gateway_config({**ENDPOINT, "auth_mode": "none"}, {}, KEYS)
    assert "Bearer " + "k" * 43 not in config and "default 1;" in config


def test_one_template_for_containers_and_services_both_resolved_per_request():
    """The docker gateway names containers, the swarm one service names; both are resolved
    through the engine's DNS per request (#12: no more upstream blocks resolved at start).
    Everything else in the two configs is the same text."""
    from reconciler.drivers.common.gateway import render_gateway_config as render_shared
    records = {"deployment.ep/blue": deployment("deployment.ep/blue", "blue", "blue-0")}
    containers = deployment_routes("ep", records)
    services = {name: {key: value for key, value in route.items() if key != "servers"} | {"server": "svc-blue:8501"}
                for name, route in containers.items()}
    docker, swarm = render_shared(ENDPOINT, containers, KEYS), render_shared(ENDPOINT, services, KEYS, driver="swarm")
    assert docker == render_gateway_config(ENDPOINT, containers, KEYS)
    for config in (docker, swarm):
        assert "upstream d_" not in config and "resolver 127.0.0.11 valid=1s ipv6=off;" in config
        # Resolved in Lua per try (kept-alive connections need an upstream block, issue 15).
        assert 'reconciler_models.choose("target_server")' in config and 'socket:setpeername("127.0.0.11", 53)' in config
        assert "proxy_pass http://reconciler_models$target_path;" in config and "$target_server$target_path" not in config
    only_docker = set(docker.splitlines()) - set(swarm.splitlines())
    assert {line.strip() for line in only_docker} == {
        '# Rendered by reconciler for endpoint "ep" (docker driver); do not edit (changes show up as drift).',
        'default "blue-0:8501";'}


# -- #12: one escaping function, keys compared exactly, names resolved per request -------------
def test_one_escaping_function_quotes_or_refuses():
    import pytest
    from reconciler.drivers.common.gateway import UnsafeGatewayValue, nginx_string
    assert nginx_string('a"b\\c; } server {') == '"a\\"b\\\\c; } server {"'
    assert nginx_string(8501) == '"8501"'
    for value in ("/v1/$http_x", "a\nb", "a\rb", "a\x00b", "é", True, None, 1.5):
        with pytest.raises(UnsafeGatewayValue):
            nginx_string(value)


def test_the_template_cannot_print_a_value_without_an_escaping_filter():
    import jinja2
    import pytest
    from reconciler.drivers.common.gateway import template
    environment = template("reconciler.drivers.common", "gateway.conf.j2").environment
    with pytest.raises(TypeError, match="without an escaping filter"):
        environment.from_string("x {{ value }};").render(value="a")
    assert environment.from_string("x {{ value | q }};").render(value="a") == 'x "a";'
    assert isinstance(environment, jinja2.Environment)


def test_keys_are_exact_case_sensitive_regexes():
    import re
    from reconciler.drivers.common.gateway import bearer_pattern
    pattern = bearer_pattern("a-B_c")
    assert pattern == "~^Bearer a-B_c\\z"
    regex = re.compile(pattern[1:].replace("\\z", r"\Z"))
    assert regex.match("Bearer a-B_c")
    for wrong in ("Bearer A-B_C", "BEARER a-B_c", "bearer a-B_c", "Bearer a-B_cx", "Bearer a-B_", " Bearer a-B_c"):
        assert not regex.match(wrong), wrong


def test_every_instance_is_a_first_choice_and_the_next_ones_are_tried_in_turn():
    record = deployment("deployment.ep/blue", "blue", "blue-0")
    record.outputs["instances"] = [{"id": f"blue-{i}", "name": f"blue-{i}", "instance": i, "ports": {}}
                                   for i in range(4)]
    routes = deployment_routes("ep", {"deployment.ep/blue": record})
    config = render_gateway_config(ENDPOINT, routes, KEYS)
    route_id = routes["blue"]["id"]
    assert f'split_clients "${{request_id}}servers" $d_{route_id}_first {{' in config
    assert "25.00% 0;\n        25.00% 1;\n        25.00% 2;\n        * 3;" in config
    for attempt, first in ((1, 0), (2, 1), (3, 2)):
        assert f'map $d_{route_id}_first $d_{route_id}_try{attempt} {{\n        0 "blue-{first}:8501";' in config
    assert f"map $d_{route_id}_first $d_{route_id}_try4" not in config  # at most 3 tries, as before
    assert "upstream d_" not in config and "error_page 502 504 = @try2;" in config


def test_an_upstream_name_that_could_change_the_request_is_refused():
    import pytest
    from reconciler.drivers.common.gateway import UnsafeGatewayValue
    for name in ("evil@host", "host/path", "a b", "x" * 64, "host?q"):
        record = deployment("deployment.ep/blue", "blue", name)
        with pytest.raises(UnsafeGatewayValue):
            render_gateway_config(ENDPOINT, deployment_routes("ep", {"deployment.ep/blue": record}), KEYS)


# -- issue 15: Azure ML's request semantics per deployment ----------------------------------------
def test_each_deployment_has_its_timeout_its_limit_and_a_hop_that_outlives_the_client():
    from reconciler.planning.gateway_view import max_requests_in_flight
    records = {f"deployment.ep/{n}": deployment(f"deployment.ep/{n}", n, f"{n}-0") for n in ("blue", "green")}
    records["deployment.ep/green"].spec["request_settings"] = {"request_timeout_ms": 1500,
                                                                "max_concurrent_requests_per_instance": 3}
    records["deployment.ep/green"].spec["instance_count"] = 2
    routes = deployment_routes("ep", records)
    config = render_gateway_config(ENDPOINT, routes, KEYS)
    assert max_requests_in_flight(3, 2) == 12 and max_requests_in_flight(1, 0) == 1
    for name, timeout, limit in (("blue", 7000, 2), ("green", 1500, 12)):
        route_id = routes[name]["id"]
        client_hop = config.split(f"location = /-/deployment/d_{route_id} {{", 1)[1].split("\n        }", 1)[0]
        assert f"proxy_read_timeout {timeout}ms;" in client_hop and "error_page 504 = @timed_out;" in client_hop
        assert f"proxy_pass http://hop_d_{route_id};" in client_hop
        hop = config.split(f"listen unix:/run/reconciler-d_{route_id}.sock;", 1)[1].split("\n    }\n", 1)[0]
        assert f"limit_conn in_flight {limit};" in hop and "limit_conn_status 429;" in hop
        assert "proxy_ignore_client_abort on;" in hop and "error_page 429 = @too_many;" in hop
    assert "return 408 " in config and "proxy_read_timeout 1500ms;" in config


def test_no_live_traffic_is_404_and_pinned_requests_are_never_mirrored():
    config = render_gateway_config({**ENDPOINT, "traffic": {}}, {}, KEYS)
    assert "sends no traffic to any deployment" not in config  # the 503 it was
    assert 'return 404 "{\\"error\\": \\"endpoint ep sends no live traffic to any deployment\\"}";' in config
    assert 'map $http_azureml_model_deployment $mirror_to {\n        "" $mirror_target;\n        default "";' in config


def test_every_answer_carries_the_request_id_and_the_clients_id_when_plain():
    records = {"deployment.ep/blue": deployment("deployment.ep/blue", "blue", "blue-0")}
    config = render_gateway_config(ENDPOINT, deployment_routes("ep", records), KEYS)
    returns = config.count("return 4") - config.count("return 429")  # the hop's 429 goes through the client hop
    assert config.count("add_header x-request-id $request_id always;") >= returns
    assert '"~^[A-Za-z0-9-]{1,100}\\\\z" $http_x_ms_client_request_id;' in config


def test_a_hop_waits_long_enough_for_a_model_and_connects_within_the_request_timeout():
    from reconciler.drivers.common.gateway import connect_timeout_ms
    assert [connect_timeout_ms({"timeout_ms": t}) for t in (100, 1000, 5000, 180000)] == [100, 250, 1250, 2000]
    records = {"deployment.ep/blue": deployment("deployment.ep/blue", "blue", "blue-0")}
    config = render_gateway_config(ENDPOINT, deployment_routes("ep", records), KEYS)
    assert "proxy_read_timeout 300000ms;" in config and "proxy_connect_timeout 1750ms;" in config


def test_the_second_hop_keeps_its_connections_and_retries_only_a_closed_idle_one():
    records = {"deployment.ep/blue": deployment("deployment.ep/blue", "blue", "blue-0")}
    routes = deployment_routes("ep", records)
    config = render_gateway_config(ENDPOINT, routes, KEYS)
    route_id = routes["blue"]["id"]
    upstream = config.split(f"upstream hop_d_{route_id} {{", 1)[1].split("}", 1)[0]
    assert "keepalive 32;" in upstream
    hop = config.split(f"listen unix:/run/reconciler-d_{route_id}.sock;", 1)[1].split("\n    }\n", 1)[0]
    assert "keepalive_timeout 60s;" in hop  # the http level's 0 would close each one after a request
    client_hop = config.split(f"location = /-/deployment/d_{route_id} {{", 1)[1].split("\n        }", 1)[0]
    assert "proxy_next_upstream error non_idempotent;" in client_hop and "proxy_next_upstream_tries 2;" in client_hop
    assert 'proxy_set_header Connection "";' in client_hop  # its own proxy_set_header drop the http level's


def test_the_docker_gateway_listens_through_an_edge_that_keeps_client_connections():
    """Issue 15: the edge (its own nginx, never reloaded for a route change) has the port, the
    TLS and client keep-alive; the routing config listens on a unix socket behind it."""
    from reconciler.drivers.common.gateway import render_edge_config
    from reconciler.drivers.docker import gateway as docker_gateway
    tls = {"certificate": "/etc/reconciler/tls/endpoint.crt", "key": "/etc/reconciler/tls/endpoint.key"}
    records = {"deployment.ep/blue": deployment("deployment.ep/blue", "blue", "blue-0")}
    routing = render_gateway_config(ENDPOINT, deployment_routes("ep", records), KEYS, routing_socket="/run/r.sock")
    assert "listen unix:/run/r.sock default_server;" in routing and "listen 8080" not in routing
    assert "ssl_certificate" not in routing and "keepalive_timeout 60s;" in routing.split("listen unix:/run/r.sock", 1)[1]
    for certificate in (None, tls):
        edge = render_edge_config("ep", "/run/r.sock", certificate)
        assert "server unix:/run/r.sock;" in edge and "keepalive_timeout 75s;" in edge
        assert "proxy_next_upstream error non_idempotent;" in edge and "pid /run/reconciler-edge.pid;" in edge
        assert ("listen 8080 ssl default_server;" in edge) == bool(certificate)
        assert ('ssl_certificate "/etc/reconciler/tls/endpoint.crt";' in edge) == bool(certificate)
    assert docker_gateway.CONFIG_FILE in docker_gateway.START_SCRIPT
    assert docker_gateway.EDGE_CONFIG_FILE in docker_gateway.START_SCRIPT


def test_an_edge_socket_path_is_escaped_like_every_value():
    import pytest
    from reconciler.drivers.common.gateway import UnsafeGatewayValue, render_edge_config
    with pytest.raises(UnsafeGatewayValue):
        render_edge_config("ep", "/run/$x.sock")


def test_only_an_endpoint_that_mirrors_makes_a_mirror_subrequest_per_request():
    records = {"deployment.ep/blue": deployment("deployment.ep/blue", "blue", "blue-0"),
               "deployment.ep/green": deployment("deployment.ep/green", "green", "green-0")}
    routes = deployment_routes("ep", records)
    plain = render_gateway_config(ENDPOINT, routes, KEYS)
    mirrored = render_gateway_config({**ENDPOINT, "traffic": {"blue": 100}, "mirror_traffic": {"green": 10}},
                                     routes, KEYS)
    assert "mirror /-/mirror;" not in plain and "mirror_request_body" not in plain
    assert mirrored.count("mirror /-/mirror;") == 2 and "10% d_" in mirrored


def test_compiled_gateway_templates_are_cached_in_a_private_directory_or_not_at_all(tmp_path, monkeypatch):
    import stat
    import jinja2
    from reconciler.drivers.common.gateway import _bytecode_cache
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path / "cache"))
    cache = _bytecode_cache()
    assert isinstance(cache, jinja2.FileSystemBytecodeCache)
    assert stat.S_IMODE((tmp_path / "cache" / "jinja-drivers").stat().st_mode) == 0o700
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path / "file"))
    assert _bytecode_cache() is None   # no cache, templates compiled each time
