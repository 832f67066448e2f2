"""Endpoint gateways on the real Docker Engine: key auth, traffic split, header routing, mirroring."""
from __future__ import annotations

import http.client
import math
import threading
import time
from collections import Counter

import pytest

from gateway_client import SAMPLE, GatewayClient

pytestmark = pytest.mark.integration


def client_for(stack, endpoint="blue-green") -> GatewayClient:
    outputs = stack.endpoint(endpoint)
    return GatewayClient(outputs["port"], outputs["keys"]["primary"])


def served_by(client: GatewayClient, count: int, **kwargs) -> Counter:
    seen = Counter()
    for _ in range(count):
        status, headers, _ = client.score(**kwargs)
        assert status == 200
        seen[headers["azureml-model-deployment"]] += 1
    return seen


def within_binomial_bounds(count: int, total: int, share: float, sigmas: float = 4.5) -> bool:
    mean = total * share
    return abs(count - mean) <= sigmas * math.sqrt(total * share * (1 - share))


def test_key_auth_accepts_both_keys_and_refuses_others(blue_green):
    blue_green.apply()
    outputs = blue_green.endpoint("blue-green")
    client = GatewayClient(outputs["port"])
    assert client.score(key="")[0] == 401
    assert client.score(key="not-a-key")[0] == 401
    assert client.score(key=outputs["keys"]["primary"])[0] == 200
    assert client.score(key=outputs["keys"]["secondary"])[0] == 200
    result = blue_green.run("endpoint", "keys", "blue-green", "--state", str(blue_green.state),
                            "--regenerate-keys", "primary")
    assert result.exit_code == 0, result.output
    fresh = blue_green.endpoint("blue-green")["keys"]
    assert fresh["secondary"] == outputs["keys"]["secondary"] and fresh["primary"] != outputs["keys"]["primary"]
    assert client.score(key=outputs["keys"]["primary"])[0] == 401
    assert client.score(key=fresh["primary"])[0] == 200
    assert client.score(key=fresh["secondary"])[0] == 200


def test_keys_are_compared_exactly_and_case_sensitively(blue_green):
    """#12: nginx compares string map sources ignoring case, so `BEARER` and an upper-cased key
    were accepted."""
    blue_green.apply()
    key = blue_green.endpoint("blue-green")["keys"]["primary"]
    client = client_for(blue_green)
    assert key.upper() != key and key.lower() != key

    def status(authorization: str) -> int:
        return client.score(key="", headers={"Authorization": authorization})[0]

    assert status(f"Bearer {key}") == 200
    assert status(f"Bearer {key.upper()}") == 401
    assert status(f"Bearer {key.lower()}") == 401
    assert status(f"BEARER {key}") == 401
    assert status(f"bearer {key}") == 401
    assert status(f"Bearer {key}x") == 401 and status(f"xBearer {key}") == 401
    assert status(f"Bearer {key[:-1]}") == 401


def test_the_deployment_header_is_never_echoed_unescaped(blue_green):
    """#12: the azureml-model-deployment header was pasted into the 404 body as it came."""
    import json
    blue_green.apply()
    client = client_for(blue_green)
    status, _, body = client.score(deployment='x", "injected": "1')
    assert status == 404 and json.loads(body) == {
        "error": "no deployment named (not a deployment name) in endpoint blue-green"}
    status, _, body = client.score(deployment="purple")
    assert status == 404 and json.loads(body) == {"error": "no deployment named purple in endpoint blue-green"}


def test_keys_never_appear_in_plan_or_state_output(blue_green):
    blue_green.apply()
    key = blue_green.endpoint("blue-green")["keys"]["primary"]
    for args in (["show", str(blue_green.dir), "--state", str(blue_green.state)],
                 ["state", "show", "endpoint.blue-green", "--state", str(blue_green.state)],
                 ["plan", str(blue_green.dir), "--state", str(blue_green.state), "--json"]):
        output = blue_green.run(*args).output
        assert key not in output, args


def test_traffic_split_over_1000_requests(blue_green):
    blue_green.apply()
    seen = served_by(client_for(blue_green), 1000)
    assert set(seen) == {"blue", "green"}
    assert within_binomial_bounds(seen["green"], 1000, 0.10), seen


def test_header_routes_to_one_deployment(blue_green):
    blue_green.apply()
    client = client_for(blue_green)
    assert served_by(client, 50, deployment="green") == Counter({"green": 50})
    status, _, body = client.score(deployment="purple")
    assert status == 404 and b"purple" in body


def test_mirror_receives_copies_without_answering(blue_green, docker_client):
    blue_green.edit("endpoint.yml", "  blue: 90\n  green: 10", "  blue: 100\nmirror_traffic:\n  green: 20")
    blue_green.apply()
    seen = served_by(client_for(blue_green), 500)
    assert seen == Counter({"blue": 500})
    time.sleep(0.5)
    (green,) = blue_green.containers(**{"org.reconciler.address": "deployment.blue-green/green"})
    mirrored = green.logs().decode().count('"POST /v1/models/half_plus_two:predict')
    assert within_binomial_bounds(mirrored, 500, 0.20), mirrored


def test_traffic_change_reloads_without_restart(blue_green, docker_client):
    blue_green.apply()
    (gateway,) = blue_green.containers(**{"org.reconciler.role": "gateway"})
    started = gateway.attrs["State"]["StartedAt"]
    blue_green.edit("endpoint.yml", "  blue: 90\n  green: 10", "  blue: 0\n  green: 100")
    result = blue_green.apply()
    assert "Resources: 0 added, 1 changed, 0 destroyed." in result.output
    (after,) = blue_green.containers(**{"org.reconciler.role": "gateway"})
    assert after.id == gateway.id and after.attrs["State"]["StartedAt"] == started
    assert served_by(client_for(blue_green), 100) == Counter({"green": 100})


def test_replace_under_load_drops_no_request(blue_green):
    blue_green.apply()
    client = client_for(blue_green)
    failures, successes = [], [0]
    stop = threading.Event()

    def load():
        while not stop.is_set():
            try:
                status, _, body = client.score()
                if status == 200:
                    successes[0] += 1
                else:
                    failures.append((status, body))
            except OSError as error:
                failures.append(("error", str(error)))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        blue_green.edit("blue.yml", "  DEPLOYMENT_NAME: blue", "  DEPLOYMENT_NAME: blue-v2")
        result = blue_green.apply()
        assert "deployment.blue-green/blue: Destruction of old complete" in result.output
        time.sleep(1)  # and keep sending once the old containers are gone
    finally:
        stop.set()
        worker.join()
    assert failures == [] and successes[0] > 100


def test_destroy_removes_gateway(blue_green):
    blue_green.apply()
    result = blue_green.run("destroy", str(blue_green.dir), "--state", str(blue_green.state), "--auto-approve")
    assert result.exit_code == 0, result.output
    assert blue_green.containers() == []


def test_scale_down_under_load_drops_no_request(blue_green):
    blue_green.edit("blue.yml", "instance_count: 1", "instance_count: 3")
    blue_green.apply()
    client = client_for(blue_green)
    failures, successes = [], [0]
    stop = threading.Event()

    def load():
        while not stop.is_set():
            status, _, body = client.score(deployment="blue")
            if status == 200:
                successes[0] += 1
            else:
                failures.append((status, body))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.5)
        blue_green.edit("blue.yml", "instance_count: 3", "instance_count: 1")
        blue_green.apply()
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert failures == [] and successes[0] > 100
    assert len(blue_green.containers(**{"org.reconciler.address": "deployment.blue-green/blue"})) == 1


def exec_creations(docker_client, container_id: str, since: float, until: float) -> list[str]:
    """The commands the engine ran inside `container_id` between `since` and `until`."""
    events = docker_client.events(since=int(since), until=int(until) + 1, decode=True,
                                  filters={"container": container_id, "event": "exec_create"})
    return [event["Actor"]["Attributes"].get("execID", "") for event in events
            if since <= event["timeNano"] / 1e9 <= until]


def test_a_gateway_re_point_is_one_engine_exec(blue_green, docker_client):
    """Issue 16: the reload (check, name wait, graceful reload, drain wait) is one exec into the
    gateway, not one per step plus a poll every 50 ms."""
    blue_green.apply()
    (gateway,) = blue_green.containers(**{"org.reconciler.role": "gateway"})
    blue_green.edit("endpoint.yml", "  blue: 90\n  green: 10", "  blue: 0\n  green: 100")
    began = time.time()
    result = blue_green.apply()
    ended = time.time()
    assert "Resources: 0 added, 1 changed, 0 destroyed." in result.output
    assert len(exec_creations(docker_client, gateway.id, began, ended)) == 1
    assert served_by(client_for(blue_green), 50) == Counter({"green": 50})


# Connected unix sockets of a master's workers (the pid file names the master): a worker's end
# of its master's channel, plus its ends of connections. The routing worker holds its end of
# each connection from the edge and both ends of each connection to a deployment's hop; the
# edge's worker (when there is one) its end of each connection to the routing nginx.
WORKER_SOCKETS = """
import os, re, sys
connected = {line.split()[6] for line in open("/proc/net/unix").readlines()[1:] if line.split()[5] == "03"}
for pid_file in sys.argv[1:]:
    try:
        master = open(pid_file).read().strip()
    except OSError:
        print(0)
        continue
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = open(f"/proc/{pid}/status").read()
            if b"worker process" not in open(f"/proc/{pid}/cmdline", "rb").read() or f"PPid:\\t{master}\\n" not in status:
                continue
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        count += sum(1 for link in links if re.fullmatch(r"socket:\\[(\\d+)\\]", link) and link[8:-1] in connected)
    print(count - 1 if count else 0)
"""


def hop_connection_ends(gateway) -> int:
    """Ends of connections to the deployments' hops: the routing worker's connection ends less
    those that are the edge's connections."""
    output = gateway.exec_run(["python3", "-c", WORKER_SOCKETS, "/run/nginx.pid", "/run/reconciler-edge.pid"])
    routing, edge = (int(line) for line in output.output.decode().split())
    return routing - edge


def test_the_hop_keeps_its_connections_between_requests(blue_green):
    """Issue 15: a request's second hop (to its deployment's unix socket, the 429 limit) reuses
    a kept-alive connection instead of connecting and accepting again each time."""
    blue_green.apply()
    (gateway,) = blue_green.containers(**{"org.reconciler.role": "gateway"})
    assert served_by(client_for(blue_green), 30, deployment="blue") == Counter({"blue": 30})
    assert hop_connection_ends(gateway) >= 2  # both ends of an idle kept-alive connection


def open_connections_to(gateway, port: int) -> int:
    """The gateway's established TCP connections to `port` (/proc/net/tcp: state 01)."""
    table = gateway.exec_run(["cat", "/proc/net/tcp"]).output.decode().splitlines()[1:]
    return sum(1 for line in table if line.split()[2].endswith(f":{port:04X}") and line.split()[3] == "01")


def test_the_gateway_keeps_its_connections_to_a_model_between_requests(blue_green):
    """Issue 15: the hop's requests to a model reuse kept-alive connections (names still
    resolved per request) instead of a new connection, and a new server thread, per request."""
    blue_green.apply()
    (gateway,) = blue_green.containers(**{"org.reconciler.role": "gateway"})
    client = client_for(blue_green)
    assert served_by(client, 30, deployment="blue") == Counter({"blue": 30})
    assert open_connections_to(gateway, 8501) >= 1  # idle for less than the upstream's 1 s keepalive_timeout


def test_a_traffic_move_keeps_the_clients_connection_open(blue_green):
    """Issue 15: the gateway keeps client connections alive (its edge never reloads for a
    route change), and the next request on the same connection after a traffic move is routed
    by the new split."""
    blue_green.apply()
    outputs = blue_green.endpoint("blue-green")
    connection = http.client.HTTPConnection("127.0.0.1", outputs["port"], timeout=10)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {outputs['keys']['primary']}"}
    try:
        connection.request("POST", "/score", body=SAMPLE, headers={**headers, "azureml-model-deployment": "blue"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200 and not response.will_close
        socket_before = connection.sock
        blue_green.edit("endpoint.yml", "  blue: 90\n  green: 10", "  blue: 0\n  green: 100")
        assert "Resources: 0 added, 1 changed, 0 destroyed." in blue_green.apply().output
        for _ in range(20):
            connection.request("POST", "/score", body=SAMPLE, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200 and response.getheader("azureml-model-deployment") == "green"
        assert connection.sock is socket_before
    finally:
        connection.close()
