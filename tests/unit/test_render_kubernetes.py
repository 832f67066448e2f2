"""`reconciler render --target kubernetes`: the manifests, their schemas, names, golden file and CLI.

Every rendered manifest is validated offline, no cluster:
- Deployment, Service, PersistentVolumeClaim against the Kubernetes OpenAPI schemas shipped by the
  PyPI package kubernetes-validate (strict: unknown fields fail), for the oldest and newest
  Kubernetes versions tested here;
- HTTPRoute against tests/schemas/gateway-api-v1.3.0-httproute-v1.schema.json, a subset derived
  from the Gateway API v1.3.0 standard-channel CRD (its $comment says what and why), because no
  PyPI package ships Gateway API schemas;
- plus what neither schema says but the API server checks: DNS-1123 names, label syntax, port
  names, selectors that match their pod labels, references between the objects.

Run with UPDATE_GOLDEN=1 to rewrite tests/golden/kubernetes-blue-green.yaml after an intended change.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.cli.main import cli
from reconciler.config.stack import load_stack
from reconciler.errors import ReconcilerError, StackInvalid
from reconciler.render.kubernetes import (KubernetesOptions, dns_label, dump_manifests, duration, label_value,
                                          memory_quantity, render_kubernetes)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "kubernetes-blue-green.yaml"
HTTPROUTE_SCHEMA = json.loads((ROOT / "tests" / "schemas" / "gateway-api-v1.3.0-httproute-v1.schema.json").read_text())
# Oldest Kubernetes still in common use with Gateway API v1, and the newest the package knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
SECRET = "s3cr3t-do-not-render"

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?!-))*$")

ENDPOINT_SCHEMA = "https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json"
DEPLOYMENT_SCHEMA = "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json"
MODEL_SCHEMA = "https://azuremlschemas.azureedge.net/latest/model.schema.json"
MODEL_REF = "azureml:Fraud_Model.v2:2024.01"


# -- stacks --------------------------------------------------------------------------------
def routes(port: int, score: str, health_port: int | None = None) -> dict:
    health = health_port or port
    return {"liveness_route": {"port": health, "path": "/live"},
            "readiness_route": {"port": health, "path": "/ready"},
            "scoring_route": {"port": port, "path": score}}


def deployment_doc(name: str, endpoint: str = "Fraud-Scoring", **extra) -> dict:
    return {"$schema": DEPLOYMENT_SCHEMA, "name": name, "endpoint_name": endpoint, "model": MODEL_REF,
            "environment": {"image": "registry.example/fraud:1", "inference_config": routes(8080, "/score")},
            "instance_count": 1, **extra}


def rich_documents() -> dict[str, dict]:
    """Uppercase names, a model name with '_' and '.', secrets, command/args/memory, a mirror,
    two scoring paths in one split and a deployment on Azure ML's default routes."""
    return {
        "model.yml": {"$schema": MODEL_SCHEMA, "name": "Fraud_Model.v2", "version": "2024.01", "path": "./fraud"},
        "endpoint.yml": {"$schema": ENDPOINT_SCHEMA, "name": "Fraud-Scoring", "auth_mode": "key",
                         "description": "fraud model", "traffic": {"Blue": 80, "canary": 20},
                         "mirror_traffic": {"shadow": 20}},
        "blue.yml": deployment_doc(
            "Blue", instance_count=3,
            environment={"image": "registry.example/fraud:1", "inference_config": routes(8080, "/score", 8081)},
            environment_variables={"API_KEY": SECRET, "MODEL_NAME": "fraud", "WORKERS": 4, "DEBUG": False},
            request_settings={"request_timeout_ms": 1500},
            readiness_probe={"initial_delay": 2, "period": 3, "timeout": 4, "failure_threshold": 5,
                             "success_threshold": 6},
            liveness_probe={"initial_delay": 7, "period": 8, "timeout": 9, "failure_threshold": 10},
            local={"command": ["/bin/serve"], "args": ["--port", "8080"], "memory": "512m"}),
        "canary.yml": deployment_doc(
            "canary", environment={"image": "registry.example/fraud:2", "inference_config": routes(8080, "/v2/score")},
            request_settings={"request_timeout_ms": 90000}),
        "shadow.yml": {"$schema": DEPLOYMENT_SCHEMA, "name": "shadow", "endpoint_name": "Fraud-Scoring",
                       "model": MODEL_REF, "environment": "registry.example/fraud:3"},
    }


def make_stack(root: Path, documents: dict[str, dict]) -> Path:
    (root / "fraud").mkdir(parents=True)
    (root / "fraud" / "weights.bin").write_bytes(b"\x00" * 64)
    for file, data in documents.items():
        (root / file).write_text(yaml.safe_dump(data, sort_keys=False))
    return root


@pytest.fixture
def rich_stack(tmp_path) -> Path:
    return make_stack(tmp_path / "fraud-stack", rich_documents())


@pytest.fixture
def rich(rich_stack) -> dict[tuple[str, str], dict]:
    return by_kind_and_name(render_kubernetes(load_stack(rich_stack)))


def by_kind_and_name(manifests: list[dict]) -> dict[tuple[str, str], dict]:
    return {(m["kind"], m["metadata"]["name"]): m for m in manifests}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def render_dir(path, **options) -> list[dict]:
    return render_kubernetes(load_stack(path), KubernetesOptions.parse(**options))


# -- validation ----------------------------------------------------------------------------
def validate_schema(manifest: dict) -> None:
    if manifest["kind"] == "HTTPRoute":
        jsonschema.Draft202012Validator(HTTPROUTE_SCHEMA).validate(manifest)
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def check_label_map(labels: dict) -> None:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        assert not prefix or (DNS_SUBDOMAIN.match(prefix) and len(prefix) <= 253), key
        assert LABEL_NAME.match(name) and len(name) <= 63, key
        assert isinstance(value, str) and LABEL_VALUE.match(value) and len(value) <= 63, (key, value)


def check_api_server_rules(manifests: list[dict]) -> None:
    """What the API server rejects although the OpenAPI schemas allow it."""
    objects = by_kind_and_name(manifests)
    assert len(objects) == len(manifests), "two objects of one kind share a name"
    for manifest in manifests:
        metadata = manifest["metadata"]
        assert DNS_LABEL.match(metadata["name"]) and len(metadata["name"]) <= 63, metadata["name"]
        check_label_map(metadata["labels"])
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "reconciler"
        for key in metadata.get("annotations", {}):
            prefix, _, name = key.rpartition("/")
            assert DNS_SUBDOMAIN.match(prefix) and LABEL_NAME.match(name), key
        kind = manifest["kind"]
        if kind == "Service":
            assert DNS_1035.match(metadata["name"]), "Service names must start with a letter"
            pods = objects[("Deployment", metadata["name"])]["spec"]["template"]["metadata"]["labels"]
            assert manifest["spec"]["selector"].items() <= pods.items()
            container_ports = {p["name"] for p in container(objects[("Deployment", metadata["name"])])["ports"]}
            assert {p["targetPort"] for p in manifest["spec"]["ports"]} <= container_ports
        if kind == "Deployment":
            template = manifest["spec"]["template"]
            check_label_map(template["metadata"]["labels"])
            assert manifest["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
            pod = template["spec"]
            for c in pod["containers"]:
                assert DNS_LABEL.match(c["name"])
                for port in c["ports"]:
                    assert IANA_SVC_NAME.match(port["name"]) and len(port["name"]) <= 15
                numbers = {p["containerPort"] for p in c["ports"]}
                assert c["readinessProbe"]["httpGet"]["port"] in numbers
                assert c["livenessProbe"]["httpGet"]["port"] in numbers
                assert c["livenessProbe"]["successThreshold"] == 1
                mounts = {m["name"] for m in c.get("volumeMounts", ())}
                assert mounts <= {v["name"] for v in pod.get("volumes", ())}
            for volume in pod.get("volumes", ()):
                assert DNS_LABEL.match(volume["name"])
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in objects
        if kind == "HTTPRoute":
            for hostname in manifest["spec"].get("hostnames", ()):
                assert DNS_SUBDOMAIN.match(hostname)
            for rule in manifest["spec"]["rules"]:
                refs = list(rule["backendRefs"]) + [f["requestMirror"]["backendRef"]
                                                    for f in rule["filters"] if f["type"] == "RequestMirror"]
                for ref in refs:
                    service = objects[("Service", ref["name"])]
                    assert ref["port"] in {p["port"] for p in service["spec"]["ports"]}


def validate_all(manifests: list[dict]) -> None:
    for manifest in manifests:
        validate_schema(manifest)
    check_api_server_rules(manifests)


@pytest.mark.parametrize("stack", ["blue-green", "half-plus-two"])
def test_example_stacks_render_valid_manifests(stack):
    manifests = render_kubernetes(load_stack(ROOT / "stacks" / stack))
    pairs = (len(manifests) - 2) // 2
    assert [m["kind"] for m in manifests] == ["PersistentVolumeClaim", *["Deployment", "Service"] * pairs, "HTTPRoute"]
    validate_all(manifests)


def test_rich_stack_renders_valid_manifests(rich_stack):
    validate_all(render_dir(rich_stack, gateway="infra/shared-gw", domain="ml.example.com"))


def test_the_validators_are_not_vacuous(rich):
    """The same validators reject manifests with the mistakes they are here to catch."""
    deployment = rich[("Deployment", "fraud-scoring-blue")]
    for bad in ({**deployment, "spec": {**deployment["spec"], "replica": 3}},
                {**deployment, "spec": {**deployment["spec"], "replicas": "three"}}):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate_schema(bad)
    route = rich[("HTTPRoute", "fraud-scoring")]
    split = route["spec"]["rules"][0]
    mirror = next(f for f in split["filters"] if f["type"] == "RequestMirror")
    mistakes = [
        {**mirror["requestMirror"], "percent": 101},
        {**mirror["requestMirror"], "fraction": {"numerator": 1}},
        {**mirror["requestMirror"], "backendRef": {"name": "x"}},          # a Service needs a port
    ]
    for request_mirror in mistakes:
        bad_rule = {**split, "filters": [{"type": "RequestMirror", "requestMirror": request_mirror}]}
        with pytest.raises(jsonschema.ValidationError):
            validate_schema({**route, "spec": {**route["spec"], "rules": [bad_rule]}})
    for bad_rule in ({**split, "backendRefs": [{"name": "a", "port": 1, "weights": 1}]},
                     {**split, "filters": [{"type": "RequestMirror"}]},
                     {**split, "matches": [{"headers": [{"name": "bad header", "value": "x"}]}]},
                     {**split, "timeouts": {"request": "180000ms"}}):
        with pytest.raises(jsonschema.ValidationError):
            validate_schema({**route, "spec": {**route["spec"], "rules": [bad_rule]}})


# -- golden --------------------------------------------------------------------------------
def test_blue_green_matches_golden_file():
    graph = load_stack(ROOT / "stacks" / "blue-green")
    text = dump_manifests(render_kubernetes(graph), graph.stack)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "run with UPDATE_GOLDEN=1 after an intended change, then review the diff"


# -- mapping -------------------------------------------------------------------------------
def test_deployment_maps_every_setting(rich):
    deployment = rich[("Deployment", "fraud-scoring-blue")]
    assert deployment["spec"]["replicas"] == 3
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels == {"app.kubernetes.io/managed-by": "reconciler", "reconciler.local/stack": "fraud-stack",
                      "reconciler.local/endpoint": "Fraud-Scoring", "reconciler.local/deployment": "Blue"}
    c = container(deployment)
    assert c["image"] == "registry.example/fraud:1"
    assert (c["command"], c["args"]) == (["/bin/serve"], ["--port", "8080"])
    assert c["ports"] == [{"name": "scoring", "containerPort": 8080, "protocol": "TCP"},
                          {"name": "readiness", "containerPort": 8081, "protocol": "TCP"}]
    assert c["resources"] == {"limits": {"memory": "512Mi"}}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in c["env"]}
    assert env["WORKERS"] == {"name": "WORKERS", "value": "4"}
    assert env["DEBUG"] == {"name": "DEBUG", "value": "false"}
    mount = "/var/azureml-app/azureml-models/Fraud_Model.v2/2024.01"
    assert env["AZUREML_MODEL_DIR"]["value"] == mount
    assert c["readinessProbe"] == {"httpGet": {"path": "/ready", "port": 8081}, "initialDelaySeconds": 2,
                                   "periodSeconds": 3, "timeoutSeconds": 4, "failureThreshold": 5,
                                   "successThreshold": 6}
    assert c["livenessProbe"] == {"httpGet": {"path": "/live", "port": 8081}, "initialDelaySeconds": 7,
                                  "periodSeconds": 8, "timeoutSeconds": 9, "failureThreshold": 10,
                                  "successThreshold": 1}
    assert c["volumeMounts"] == [{"name": "model", "mountPath": mount, "readOnly": True}]
    assert deployment["spec"]["template"]["spec"]["volumes"] == [
        {"name": "model", "persistentVolumeClaim": {"claimName": "fraud-model-v2-2024-01", "readOnly": True}}]
    shadow = container(rich[("Deployment", "fraud-scoring-shadow")])
    # Azure ML's default routes when the environment gives no inference_config.
    assert shadow["ports"] == [{"name": "scoring", "containerPort": 5001, "protocol": "TCP"}]
    assert "command" not in shadow and "resources" not in shadow


def test_secrets_stay_out_of_the_manifests(rich_stack):
    manifests = render_dir(rich_stack)
    text = dump_manifests(manifests, "fraud-stack")
    assert SECRET not in text
    assert "Secret" not in {m["kind"] for m in manifests}
    env = {e["name"]: e for e in container(by_kind_and_name(manifests)[("Deployment", "fraud-scoring-blue")])["env"]}
    assert env["API_KEY"] == {"name": "API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "fraud-scoring-blue-env", "key": "API_KEY"}}}
    assert "# Needs Secret fraud-scoring-blue-env with keys API_KEY" in text
    # Endpoint keys exist only in state (made at apply time); nothing key-like reaches the route.
    route = by_kind_and_name(manifests)[("HTTPRoute", "fraud-scoring")]
    assert "key" not in json.dumps(route["spec"]).lower()


def test_one_read_only_claim_per_model(rich):
    claims = [m for (kind, _), m in rich.items() if kind == "PersistentVolumeClaim"]
    assert len(claims) == 1
    (claim,) = claims
    assert claim["metadata"]["name"] == "fraud-model-v2-2024-01"
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    annotations = claim["metadata"]["annotations"]
    assert "reconciler does not copy model files" in annotations["reconciler.local/load-model"]
    assert "its root holds fraud (1 file(s), 64 bytes)" in annotations["reconciler.local/load-model"]
    assert annotations["reconciler.local/model-source"] == "fraud"
    assert claim["metadata"]["labels"]["reconciler.local/model"] == "Fraud_Model.v2"


def test_route_splits_pins_and_mirrors(rich):
    route = rich[("HTTPRoute", "fraud-scoring")]
    spec = route["spec"]
    assert spec["parentRefs"] == [{"name": "reconciler-gateway"}]
    assert "hostnames" not in spec
    split, *pinned = spec["rules"]
    assert split["matches"] == [{"path": {"type": "Exact", "value": "/score"}}]
    # Weights are the traffic split; the scoring paths differ, so each backend rewrites its own.
    assert split["backendRefs"] == [
        {"name": "fraud-scoring-blue", "port": 8080, "weight": 80, "filters": [
            {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/score"}}}]},
        {"name": "fraud-scoring-canary", "port": 8080, "weight": 20, "filters": [
            {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath",
                                                           "replaceFullPath": "/v2/score"}}}]},
    ]
    assert split["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "fraud-scoring-shadow", "port": 5001}, "percent": 20}}]
    assert split["timeouts"] == {"request": "90s"}
    # One rule per deployment, matched on the Azure ML header with the name as written.
    assert [(r["matches"][0]["headers"], r["backendRefs"]) for r in pinned] == [
        ([{"type": "Exact", "name": "azureml-model-deployment", "value": name}], [{"name": service, "port": port}])
        for name, service, port in [("Blue", "fraud-scoring-blue", 8080), ("canary", "fraud-scoring-canary", 8080),
                                    ("shadow", "fraud-scoring-shadow", 5001)]]
    assert [r["filters"][0]["urlRewrite"]["path"]["replaceFullPath"] for r in pinned] == [
        "/score", "/v2/score", "/score"]
    assert [r["timeouts"]["request"] for r in pinned] == ["1s500ms", "90s", "5s"]
    assert route["metadata"]["annotations"]["reconciler.local/auth-mode"] == "key"


def test_blue_green_route_shares_one_rewrite():
    route = by_kind_and_name(render_kubernetes(load_stack(ROOT / "stacks" / "blue-green")))[
        ("HTTPRoute", "blue-green")]
    split = route["spec"]["rules"][0]
    assert [(b["name"], b["weight"]) for b in split["backendRefs"]] == [("blue-green-blue", 90),
                                                                        ("blue-green-green", 10)]
    assert split["filters"] == [{"type": "URLRewrite", "urlRewrite": {"path": {
        "type": "ReplaceFullPath", "replaceFullPath": "/v1/models/half_plus_two:predict"}}}]


def test_gateway_and_domain_options(rich_stack):
    route = by_kind_and_name(render_dir(rich_stack, gateway="infra/shared-gw", domain="ML.Example.com."))[
        ("HTTPRoute", "fraud-scoring")]
    assert route["spec"]["parentRefs"] == [{"name": "shared-gw", "namespace": "infra"}]
    assert route["spec"]["hostnames"] == ["fraud-scoring.ml.example.com"]
    for gateway in ("Bad_Gateway", "a/b/c", "/gw"):
        with pytest.raises(ReconcilerError, match="not a Gateway name"):
            KubernetesOptions.parse(gateway)
    with pytest.raises(ReconcilerError, match="not a DNS domain"):
        KubernetesOptions.parse(domain="ml example")


def test_no_live_traffic_leaves_only_pinned_rules(tmp_path):
    documents = rich_documents()
    documents["endpoint.yml"] = {**documents["endpoint.yml"], "traffic": {}, "mirror_traffic": {}}
    route = by_kind_and_name(render_dir(make_stack(tmp_path / "s", documents)))[("HTTPRoute", "fraud-scoring")]
    assert all("headers" in rule["matches"][0] for rule in route["spec"]["rules"])
    assert len(route["spec"]["rules"]) == 3


# -- names ---------------------------------------------------------------------------------
def test_names_that_collide_after_lowercasing_are_refused(tmp_path):
    # Azure ML names ignore case, so the stack itself is refused now, before any renderer
    # could make one Kubernetes object of the two (#12).
    documents = rich_documents()
    documents["blue2.yml"] = deployment_doc("blue")
    with pytest.raises(StackInvalid) as caught:
        render_dir(make_stack(tmp_path / "s", documents))
    assert any("deployment 'blue' of endpoint 'Fraud-Scoring' differs from 'Blue' only in case" in str(p)
               for p in caught.value.problems)


def test_endpoint_and_deployment_names_that_join_alike_are_refused(tmp_path):
    documents = {
        "model.yml": rich_documents()["model.yml"],
        "e1.yml": {"$schema": ENDPOINT_SCHEMA, "name": "aaa-bbb", "traffic": {"ccc": 100}},
        "e2.yml": {"$schema": ENDPOINT_SCHEMA, "name": "aaa", "traffic": {"bbb-ccc": 100}},
        "d1.yml": deployment_doc("ccc", endpoint="aaa-bbb"),
        "d2.yml": deployment_doc("bbb-ccc", endpoint="aaa"),
    }
    with pytest.raises(ReconcilerError, match="Deployment 'aaa-bbb-ccc'"):
        render_dir(make_stack(tmp_path / "s", documents), domain="example.com")


def test_several_endpoints_need_a_domain(tmp_path):
    documents = {
        "model.yml": rich_documents()["model.yml"],
        "e1.yml": {"$schema": ENDPOINT_SCHEMA, "name": "first"},
        "e2.yml": {"$schema": ENDPOINT_SCHEMA, "name": "second"},
        "d1.yml": deployment_doc("blue", endpoint="first"),
    }
    stack = make_stack(tmp_path / "s", documents)
    with pytest.raises(ReconcilerError, match="2 endpoints") as caught:
        render_dir(stack)
    assert "--domain" in caught.value.hint
    manifests = render_dir(stack, domain="example.com")
    validate_all(manifests)
    hosts = [m["spec"]["hostnames"] for m in manifests if m["kind"] == "HTTPRoute"]
    assert hosts == [["first.example.com"], ["second.example.com"]]


def test_longest_azure_names_fit(tmp_path):
    endpoint, deployment = "E" + "x" * 30 + "1", "D" + "y" * 30 + "2"
    documents = {"model.yml": {**rich_documents()["model.yml"], "name": "M" + "_" * 100 + "z" * 150},
                 "e.yml": {"$schema": ENDPOINT_SCHEMA, "name": endpoint},
                 "d.yml": {**deployment_doc(deployment, endpoint=endpoint),
                           "model": "azureml:M" + "_" * 100 + "z" * 150 + ":2024.01"}}
    manifests = render_dir(make_stack(tmp_path / "s", documents))
    validate_all(manifests)
    names = {m["kind"]: m["metadata"]["name"] for m in manifests}
    assert len(names["Deployment"]) <= 63 and names["Deployment"].startswith("exxx")
    assert len(names["PersistentVolumeClaim"]) <= 63


def test_liveness_success_threshold_must_be_one(tmp_path):
    documents = rich_documents()
    documents["canary.yml"]["liveness_probe"] = {"success_threshold": 2}
    with pytest.raises(ReconcilerError, match="Kubernetes requires 1 for liveness probes") as caught:
        render_dir(make_stack(tmp_path / "s", documents))
    assert "canary.yml" in caught.value.hint


def test_too_many_deployments_for_one_route(tmp_path):
    documents = {"model.yml": rich_documents()["model.yml"],
                 "e.yml": {"$schema": ENDPOINT_SCHEMA, "name": "busy"}}
    for index in range(16):
        documents[f"d{index}.yml"] = deployment_doc(f"dep{index:02d}", endpoint="busy")
    with pytest.raises(ReconcilerError, match="16 deployments"):
        render_dir(make_stack(tmp_path / "s", documents))


AZURE_NAME = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]\Z")
MODEL_NAME = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,254}\Z")


@settings(max_examples=200, deadline=None)
@given(endpoint=AZURE_NAME, deployment=AZURE_NAME, model=MODEL_NAME, version=MODEL_NAME)
def test_every_azure_name_becomes_a_valid_kubernetes_name(endpoint, deployment, model, version):
    for name in (dns_label(endpoint), dns_label(f"{endpoint}-{deployment}"), dns_label(f"{model}-{version}")):
        assert DNS_LABEL.match(name) and len(name) <= 63, name
    assert DNS_1035.match(dns_label(f"{endpoint}-{deployment}"))
    for value in (label_value(endpoint), label_value(model)):
        assert LABEL_VALUE.match(value) and len(value) <= 63, value


def test_long_names_keep_distinct_hashes():
    assert dns_label("a" * 70 + "x") != dns_label("a" * 70 + "y")
    assert dns_label("Blue") == dns_label("blue") == "blue"


@pytest.mark.parametrize("docker, kubernetes", [("512m", "512Mi"), ("2g", "2Gi"), ("2G", "2Gi"), ("64k", "64Ki"),
                                                ("1024", "1024"), ("1024b", "1024")])
def test_memory_quantity(docker, kubernetes):
    assert memory_quantity(docker) == kubernetes


@pytest.mark.parametrize("milliseconds, text", [(5000, "5s"), (180000, "180s"), (1500, "1s500ms"), (250, "250ms"),
                                                (123456, "123s456ms")])
def test_gateway_durations(milliseconds, text):
    assert duration(milliseconds) == text
    assert re.fullmatch(HTTPROUTE_SCHEMA["$defs"]["duration"]["pattern"], text)


def test_renderer_is_pure():
    code = ("import sys, reconciler.render.kubernetes; "
            "sys.exit(1 if {'docker', 'kubernetes', 'kubernetes_validate'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- CLI -----------------------------------------------------------------------------------
def run(*args):
    return CliRunner().invoke(cli, ["render", "--target", "kubernetes", *map(str, args)], catch_exceptions=False)


def test_cli_writes_the_stream_to_stdout():
    result = run(ROOT / "stacks" / "blue-green")
    assert result.exit_code == 0, result.output
    assert result.stdout == GOLDEN.read_text()
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in documents] == ["PersistentVolumeClaim", "Deployment", "Service", "Deployment",
                                              "Service", "HTTPRoute"]


def test_cli_output_file_and_secret_note(rich_stack, tmp_path):
    out = tmp_path / "out.yaml"
    result = run(rich_stack, "-o", out, "--gateway", "gw")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "Wrote 8 manifest(s)" in result.stderr
    assert ("kubectl create secret generic fraud-scoring-blue-env --from-literal=API_KEY=..."
            in result.stderr)
    documents = list(yaml.safe_load_all(out.read_text()))
    assert documents == render_dir(rich_stack, gateway="gw")
    validate_all(documents)


def test_cli_output_dir_replaces_stale_files_only(rich_stack, tmp_path):
    out = tmp_path / "manifests"
    assert run(rich_stack, "--output-dir", out).exit_code == 0
    files = sorted(p.name for p in out.iterdir())
    assert "deployment-fraud-scoring-canary.yaml" in files and "httproute-fraud-scoring.yaml" in files
    assert len(files) == 8
    for path in out.iterdir():
        (document,) = list(yaml.safe_load_all(path.read_text()))
        validate_schema(document)
    (out / "kustomization.yaml").write_text("resources: []\n")   # not ours: kept
    (rich_stack / "canary.yml").unlink()
    endpoint = yaml.safe_load((rich_stack / "endpoint.yml").read_text())
    endpoint["traffic"] = {"Blue": 100}
    (rich_stack / "endpoint.yml").write_text(yaml.safe_dump(endpoint))
    result = run(rich_stack, "--output-dir", out)
    assert result.exit_code == 0, result.output
    assert "Removed" in result.stderr and "deployment-fraud-scoring-canary.yaml" in result.stderr
    names = {p.name for p in out.iterdir()}
    assert "deployment-fraud-scoring-canary.yaml" not in names and "service-fraud-scoring-canary.yaml" not in names
    assert "kustomization.yaml" in names


@pytest.mark.parametrize("args, message", [
    (("-o", "x.yaml", "--output-dir", "d"), "both given"),
    (("--gateway", "Not_A_Name"), "not a Gateway name"),
])
def test_cli_refuses_bad_options(args, message):
    result = run(ROOT / "stacks" / "blue-green", *args)
    assert result.exit_code == 1
    assert message in result.stderr


def test_cli_reports_an_invalid_stack(rich_stack):
    (rich_stack / "canary.yml").write_text("name: canary\nendpoint_name: Fraud-Scoring\n")
    result = run(rich_stack)
    assert result.exit_code == 1
    assert "canary.yml" in result.stderr and result.stdout == ""


def test_cli_refuses_settings_kubernetes_cannot_honour(rich_stack):
    endpoint = yaml.safe_load((rich_stack / "endpoint.yml").read_text())
    (rich_stack / "endpoint.yml").write_text(yaml.safe_dump({**endpoint, "auth_mode": "aad_token"}))
    result = run(rich_stack)
    assert result.exit_code == 1
    assert "auth_mode" in result.stderr


def test_cli_refuses_an_image_reconciler_builds_at_its_line(demo_stack):
    """A built environment's tag is on the engine that built it; no node of a cluster has it."""
    deployment = demo_stack / "deployment.yml"
    deployment.write_text(deployment.read_text().replace(
        "  image: reconciler/demo-tfserving:latest\n", "  image: reconciler/demo-tfserving:latest\n  conda_file: conda.yaml\n", 1))
    (demo_stack / "conda.yaml").write_text("name: e\ndependencies:\n  - python=3.11\n  - pip:\n    - tomli==2.0.1\n")
    result = run(demo_stack)
    assert result.exit_code == 1 and result.stdout == ""
    assert f"{deployment}:11: deployment half-plus-two/tfserving runs reconciler/env-" in result.stderr, result.stderr
    assert "which a cluster cannot pull" in result.stderr and "REGISTRY/NAME:TAG" in result.stderr
