"""Kubernetes manifests for a stack: `render_kubernetes(DesiredGraph) -> list of manifest dicts`. Pure.

Owns the mapping from the normalised Azure ML specs of reconciler.config.graph to Kubernetes
objects, the Kubernetes names and labels they get, and the YAML text of the result:

    model       -> v1 PersistentVolumeClaim (ReadOnlyMany), which the user loads with the model files
    deployment  -> apps/v1 Deployment (replicas = instance_count) + v1 Service for its scoring port
    endpoint    -> gateway.networking.k8s.io/v1 HTTPRoute: the traffic split as backend weights,
                   `azureml-model-deployment: NAME` pinned to one deployment, mirror_traffic as
                   RequestMirror filters

Nothing here reads files, talks to a cluster or imports docker; reconciler.cli.render writes the
output. Nothing secret is rendered: endpoint keys do not exist in the desired graph (the docker
driver makes them at apply time) and sensitive environment variables become secretKeyRefs.
Key authentication is not part of the Gateway API: docs/scaling.md says how to add it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import yaml

from reconciler.config.graph import DesiredGraph, DesiredResource
from reconciler.errors import ReconcilerError
from reconciler.planning.fields import kubernetes_annotations, kubernetes_container_fields
from reconciler.render.masking import is_sensitive_name

DEFAULT_GATEWAY = "reconciler-gateway"
# Azure ML clients POST to <endpoint URI>/score; the docker driver's gateway answers there too.
SCORING_PATH = "/score"
DEPLOYMENT_HEADER = "azureml-model-deployment"
CONTAINER_NAME = "inference-server"
MODEL_VOLUME = "model"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "reconciler"
# reconciler's own keys. `reconciler.local` is the project's placeholder domain (the JSON Schemas'
# $id uses it too); Kubernetes only needs the prefix to be a DNS subdomain that no one else uses.
PREFIX = "reconciler.local/"
STACK_LABEL = PREFIX + "stack"
ENDPOINT_LABEL = PREFIX + "endpoint"
DEPLOYMENT_LABEL = PREFIX + "deployment"
MODEL_LABEL = PREFIX + "model"
MODEL_VERSION_LABEL = PREFIX + "model-version"
ADDRESS_ANNOTATION = PREFIX + "address"
SPEC_HASH_ANNOTATION = PREFIX + "spec-hash"
DESCRIPTION_ANNOTATION = PREFIX + "description"
MODEL_DIGEST_ANNOTATION = PREFIX + "model-digest"
LOAD_MODEL_ANNOTATION = PREFIX + "load-model"
MODEL_SOURCE_ANNOTATION = PREFIX + "model-source"
INSTANCE_TYPE_ANNOTATION = PREFIX + "azureml-instance-type"

MAX_LABEL = 63
# An HTTPRoute holds at most 16 rules (Gateway API v1): one for the split, one per deployment.
MAX_DEPLOYMENTS_PER_ENDPOINT = 15
GIB = 1024 ** 3
# Docker's memory units are binary (512m = 512 MiB); Kubernetes spells those Mi, Gi, ...
DOCKER_MEMORY = re.compile(r"^([0-9]+)([bkmg]?)$")
KUBERNETES_MEMORY_UNITS = {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi"}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class KubernetesOptions:
    """What the stack files cannot say: which Gateway the routes attach to, and their host names."""
    gateway: str = DEFAULT_GATEWAY
    gateway_namespace: str | None = None
    # With a domain, endpoint E answers at E.DOMAIN, as Azure ML's <endpoint>.<region>.inference.ml.azure.com.
    domain: str | None = None

    @classmethod
    def parse(cls, gateway: str = DEFAULT_GATEWAY, domain: str | None = None) -> "KubernetesOptions":
        """Options from CLI text: gateway as NAME or NAMESPACE/NAME; both checked, domain lowercased."""
        namespace, slash, name = gateway.rpartition("/")
        if not DNS_SUBDOMAIN.match(name) or len(name) > 253 or (slash and not DNS_LABEL.match(namespace)):
            raise ReconcilerError(f"--gateway {gateway!r} is not a Gateway name",
                                  "give NAME or NAMESPACE/NAME in lowercase letters, digits and '-'")
        if domain is not None:
            domain = domain.lower().strip(".")
            if not DNS_SUBDOMAIN.match(domain) or len(domain) > 200:
                raise ReconcilerError(f"--domain {domain!r} is not a DNS domain", "give a name such as ml.example.com")
        return cls(name, namespace or None, domain)


# -- names ---------------------------------------------------------------------------------
def dns_label(text: str) -> str:
    """`text` as an RFC 1123 label: lowercase, [a-z0-9-], at most 63 characters.

    Azure ML names allow uppercase and model names '_' and '.'; they are lowercased and the
    other characters become '-'. Two names that end up equal are refused by the caller (see
    _Names), never silently merged. Too long a name keeps its start plus a hash of the whole,
    so distinct long names stay distinct.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if len(name) > MAX_LABEL:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_LABEL - 9].rstrip('-')}-{digest}"
    if not name:
        raise ReconcilerError(f"{text!r} has no letters or digits to name a Kubernetes object after",
                              "rename it")
    return name


def label_value(text: str) -> str:
    """`text` as a Kubernetes label value: [A-Za-z0-9_.-], alphanumeric at both ends, <= 63."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)
    value = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)
    if len(value) > MAX_LABEL:
        digest = hashlib.sha256(value.encode()).hexdigest()[:8]
        value = re.sub(r"[^A-Za-z0-9]+$", "", value[:MAX_LABEL - 9]) + "-" + digest
    return value


class _Names:
    """Kubernetes names handed out so far, to refuse two resources that would share one."""

    def __init__(self) -> None:
        self.owners: dict[tuple[str, str], str] = {}

    def claim(self, kind: str, name: str, owner: str) -> str:
        other = self.owners.setdefault((kind, name), owner)
        if other != owner:
            raise ReconcilerError(
                f"{other} and {owner} would both be the Kubernetes {kind} {name!r}",
                "Kubernetes names are lowercase letters, digits and '-' (ENDPOINT-DEPLOYMENT for deployments): "
                "rename one of them so that the two names differ after lowercasing")
        return name


def deployment_object_name(spec: dict) -> str:
    # Azure ML scopes deployment names by endpoint; a Kubernetes namespace does not.
    return dns_label(f"{spec['endpoint']}-{spec['name']}")


def model_claim_name(model_spec: dict) -> str:
    return dns_label(f"{model_spec['name']}-{model_spec['version']}")


def secret_name(spec: dict) -> str:
    return dns_label(f"{spec['endpoint']}-{spec['name']}-env")


# -- conversions ---------------------------------------------------------------------------
def memory_quantity(memory: str) -> str:
    """Docker's `512m` / `2g` / `1024` as a Kubernetes quantity: `512Mi` / `2Gi` / `1024`."""
    match = DOCKER_MEMORY.match(memory.lower())
    if not match:
        raise ReconcilerError(f"memory {memory!r} is not a size", "use a size such as 512m or 2g")
    return match.group(1) + KUBERNETES_MEMORY_UNITS[match.group(2)]


def duration(milliseconds: int) -> str:
    """A Gateway API duration (GEP-2257: at most 5 digits per unit), e.g. 5000 -> 5s, 1500 -> 1s500ms."""
    seconds, rest = divmod(milliseconds, 1000)
    if not rest:
        return f"{seconds}s"
    return f"{seconds}s{rest}ms" if seconds else f"{rest}ms"


def storage_request(size_bytes: int) -> str:
    # Rounded up to whole GiB: storage classes round up anyway, and a bound claim cannot shrink.
    return f"{max(1, -(-size_bytes // GIB))}Gi"


# -- manifests -----------------------------------------------------------------------------
def _labels(stack: str, **extra: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, STACK_LABEL: label_value(stack),
            **{key: label_value(value) for key, value in extra.items()}}


def _annotations(resource: DesiredResource, description: str = "") -> dict[str, str]:
    annotations = {ADDRESS_ANNOTATION: str(resource.address), SPEC_HASH_ANNOTATION: resource.spec_hash}
    if description:
        annotations[DESCRIPTION_ANNOTATION] = description
    return annotations


def _claim(stack: str, resource: DesiredResource, name: str) -> dict:
    spec = resource.spec
    source = spec["path"].rsplit("/", 1)[-1]
    annotations = _annotations(resource, spec.get("description", ""))
    annotations.update({
        # reconciler cannot copy files into a cluster volume: this says what the claim must hold.
        LOAD_MODEL_ANNOTATION: (
            f"reconciler does not copy model files: copy the stack's {spec['path']} into this claim, so that "
            f"its root holds {source} ({spec['files']} file(s), {spec['bytes']} bytes), before the Deployments "
            "that mount it start; see docs/scaling.md"),
        MODEL_SOURCE_ANNOTATION: spec["path"],
        MODEL_DIGEST_ANNOTATION: spec["content_digest"],
    })
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "labels": _labels(stack, **{MODEL_LABEL: spec["name"], MODEL_VERSION_LABEL: spec["version"]}),
            "annotations": annotations,
        },
        "spec": {
            # Every instance of every deployment of this model mounts the same files read-only.
            "accessModes": ["ReadOnlyMany"],
            "resources": {"requests": {"storage": storage_request(spec["bytes"])}},
        },
    }


def _container_ports(spec: dict) -> list[dict]:
    roles: dict[int, str] = {}
    for role in ("scoring", "readiness", "liveness"):
        roles.setdefault(spec["routes"][role]["port"], role)
    return [{"name": role, "containerPort": port, "protocol": "TCP"} for port, role in roles.items()]


def _probe(route: dict, settings: dict) -> dict:
    return {
        "httpGet": {"path": route["path"], "port": route["port"]},
        "initialDelaySeconds": settings["initial_delay"],
        "periodSeconds": settings["period"],
        "timeoutSeconds": settings["timeout"],
        "failureThreshold": settings["failure_threshold"],
        "successThreshold": settings["success_threshold"],
    }


def _environment(spec: dict, secret: str) -> list[dict]:
    env = []
    for name, value in spec["environment_variables"].items():
        if is_sensitive_name(name):
            # The value stays out of the manifest (which tends to end up in git); the user creates
            # the Secret: `reconciler render` prints the command.
            env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}})
        else:
            env.append({"name": name, "value": value})
    return env


def _deployment(stack: str, resource: DesiredResource, name: str, claims: dict[str, str], secret: str) -> dict:
    spec = resource.spec
    if spec["liveness_probe"]["success_threshold"] != 1:
        raise ReconcilerError(
            f"{resource.address}: liveness_probe.success_threshold is {spec['liveness_probe']['success_threshold']}; "
            "Kubernetes requires 1 for liveness probes",
            f"set liveness_probe.success_threshold: 1 in {resource.source.rsplit(':', 1)[0]}")
    selector = {STACK_LABEL: label_value(stack), ENDPOINT_LABEL: label_value(spec["endpoint"]),
                DEPLOYMENT_LABEL: label_value(spec["name"])}
    labels = {MANAGED_BY_LABEL: MANAGED_BY, **selector}
    container: dict = {"name": CONTAINER_NAME}
    # The fields whose descriptor says Kubernetes takes them as they are (planning/fields.py).
    for key, field in kubernetes_container_fields():
        value = spec.get(field)
        if value:
            container[key] = value if isinstance(value, str) else list(value)
    container["ports"] = _container_ports(spec)
    env = _environment(spec, secret)
    if env:
        container["env"] = env
    if spec.get("memory"):
        container["resources"] = {"limits": {"memory": memory_quantity(spec["memory"])}}
    container["readinessProbe"] = _probe(spec["routes"]["readiness"], spec["readiness_probe"])
    container["livenessProbe"] = _probe(spec["routes"]["liveness"], spec["liveness_probe"])
    # As the docker driver's no-new-privileges and Docker's default seccomp profile.
    container["securityContext"] = {"allowPrivilegeEscalation": False, "seccompProfile": {"type": "RuntimeDefault"}}
    pod_spec: dict = {
        # A model server needs no Kubernetes API credentials and no service-link variables (the
        # docker driver gives it exactly the deployment's environment_variables).
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
    }
    template_metadata: dict = {"labels": dict(labels)}
    model = spec.get("model")
    if model:
        container["volumeMounts"] = [{"name": MODEL_VOLUME, "mountPath": model["mount_path"], "readOnly": True}]
        pod_spec["volumes"] = [{"name": MODEL_VOLUME, "persistentVolumeClaim": {
            "claimName": claims[model["address"]], "readOnly": True}}]
        # New model files under the same name:version roll the pods, as a replace does on docker.
        template_metadata["annotations"] = {MODEL_DIGEST_ANNOTATION: model["content_digest"]}
    annotations = _annotations(resource)
    for key, field in kubernetes_annotations():
        if spec.get(field):
            annotations[key] = spec[field]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": spec["instance_count"],
            "selector": {"matchLabels": selector},
            # Start new pods before stopping old ones: capacity never drops below instance_count.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {"metadata": template_metadata, "spec": pod_spec},
        },
    }


def _service(deployment: dict, resource: DesiredResource) -> dict:
    port = resource.spec["routes"]["scoring"]["port"]
    metadata = deployment["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": metadata["name"], "labels": dict(metadata["labels"]),
                     "annotations": _annotations(resource)},
        "spec": {
            "type": "ClusterIP",
            "selector": dict(deployment["spec"]["selector"]["matchLabels"]),
            # Same number as the container port, so the route's backendRef port reads like the stack's route.
            "ports": [{"name": "scoring", "port": port, "targetPort": "scoring", "protocol": "TCP",
                       "appProtocol": "http"}],
        },
    }


def _rewrite(path: str) -> dict:
    return {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": path}}}


def _backend(name: str, spec: dict, weight: int | None = None) -> dict:
    backend = {"name": name, "port": spec["routes"]["scoring"]["port"]}
    if weight is not None:
        backend["weight"] = weight
    return backend


def _score_match(headers: list[dict] | None = None) -> dict:
    match: dict = {"path": {"type": "Exact", "value": SCORING_PATH}}
    if headers:
        match["headers"] = headers
    return match


def _route(stack: str, resource: DesiredResource, name: str, deployments: dict[str, tuple[str, dict]],
           options: KubernetesOptions) -> dict:
    """deployments: Azure deployment name -> (Service name, deployment spec), this endpoint's only."""
    spec = resource.spec
    if len(deployments) > MAX_DEPLOYMENTS_PER_ENDPOINT:
        raise ReconcilerError(
            f"{resource.address} has {len(deployments)} deployments; its HTTPRoute can route at most "
            f"{MAX_DEPLOYMENTS_PER_ENDPOINT} (Gateway API allows 16 rules: the split plus one per deployment)",
            "move some deployments to another endpoint")
    rules = []
    live = [(deployment, weight) for deployment, weight in spec["traffic"].items() if weight]
    if live:
        # No rule when no deployment takes live traffic: then only header-pinned requests match
        # (the gateway answers others 404; the docker driver's answers 503).
        backends = [(deployments[d], weight) for d, weight in live]
        paths = {dspec["routes"]["scoring"]["path"] for (_, dspec), _ in backends}
        filters: list[dict] = []
        backend_refs = []
        for (service, dspec), weight in backends:
            backend = _backend(service, dspec, weight)
            if len(paths) > 1:
                # Deployments with different scoring routes need a rewrite per backend; Gateway API
                # support for backendRef filters is implementation-specific (docs/scaling.md).
                backend["filters"] = [_rewrite(dspec["routes"]["scoring"]["path"])]
            backend_refs.append(backend)
        if len(paths) == 1:
            filters.append(_rewrite(paths.pop()))
        for deployment, percent in spec["mirror_traffic"].items():
            service, dspec = deployments[deployment]
            # Like Azure ML, a share of live (split) traffic only; header-pinned requests are not copied.
            filters.append({"type": "RequestMirror", "requestMirror": {
                "backendRef": _backend(service, dspec), "percent": percent}})
        rule = {"matches": [_score_match()], "filters": filters, "backendRefs": backend_refs}
        timeout = max(dspec["request_settings"]["request_timeout_ms"] for (_, dspec), _ in backends)
        rule["timeouts"] = {"request": duration(timeout)}
        rules.append(rule)
    for deployment, (service, dspec) in deployments.items():
        rules.append({
            "matches": [_score_match([{"type": "Exact", "name": DEPLOYMENT_HEADER, "value": deployment}])],
            "filters": [_rewrite(dspec["routes"]["scoring"]["path"])],
            "backendRefs": [_backend(service, dspec)],
            "timeouts": {"request": duration(dspec["request_settings"]["request_timeout_ms"])},
        })
    parent = {"name": options.gateway}
    if options.gateway_namespace:
        parent["namespace"] = options.gateway_namespace
    route_spec: dict = {"parentRefs": [parent]}
    if options.domain:
        route_spec["hostnames"] = [f"{name}.{options.domain}"]
    route_spec["rules"] = rules
    annotations = _annotations(resource, spec.get("description", ""))
    # Says what the gateway must enforce; the keys themselves are never rendered.
    annotations[PREFIX + "auth-mode"] = spec["auth_mode"]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "labels": _labels(stack, **{ENDPOINT_LABEL: spec["name"]}),
                     "annotations": annotations},
        "spec": route_spec,
    }


def render_kubernetes(graph: DesiredGraph, options: KubernetesOptions = KubernetesOptions()) -> list[dict]:
    """The stack as Kubernetes manifests, in dependency order: claims, deployments + services, routes."""
    names = _Names()
    endpoints = graph.by_kind("endpoint")
    if len(endpoints) > 1 and not options.domain:
        raise ReconcilerError(
            f"stack {graph.stack} has {len(endpoints)} endpoints; on one Gateway their HTTPRoutes would "
            f"match the same requests ({', '.join(r.spec['name'] for r in endpoints)})",
            "pass --domain DOMAIN so that endpoint E answers at E.DOMAIN, as on Azure ML")
    manifests: list[dict] = []
    claims: dict[str, str] = {}
    for resource in graph.by_kind("model"):
        name = names.claim("PersistentVolumeClaim", model_claim_name(resource.spec), str(resource.address))
        claims[str(resource.address)] = name
        manifests.append(_claim(graph.stack, resource, name))
    by_endpoint: dict[str, dict[str, tuple[str, dict]]] = {}
    for resource in graph.by_kind("deployment"):
        spec = resource.spec
        if spec.get("code"):
            # Without its code folder the rendered pod would start a server with no script.
            raise ReconcilerError(
                f"{resource.code_source}: deployment {spec['endpoint']}/{spec['name']} "
                "runs a scoring script (code_configuration), "
                "which the Kubernetes rendering does not carry yet",
                "bake the code folder into the image (COPY it to /var/azureml-app/<folder>/) and drop "
                "code_configuration for the rendering")
        built = [a for a in resource.depends_on if a.kind == "environment"]
        if built:
            # The tag exists on the engine that built it: every node of a cluster pulls for itself.
            raise ReconcilerError(
                f"{resource.image_source}: deployment {spec['endpoint']}/{spec['name']} runs {spec['image']}, "
                f"an image reconciler builds ({built[0]}), which a cluster cannot pull",
                "build and push it to a registry the cluster pulls from, and name it there "
                "(the environment's `image: REGISTRY/NAME:TAG` instead of `build:` or `conda_file:`)")
        name = names.claim("Deployment", deployment_object_name(spec), str(resource.address))
        names.claim("Secret", secret_name(spec), str(resource.address))
        deployment = _deployment(graph.stack, resource, name, claims, secret_name(spec))
        manifests += [deployment, _service(deployment, resource)]
        by_endpoint.setdefault(spec["endpoint"], {})[spec["name"]] = (name, spec)
    for resource in endpoints:
        name = names.claim("HTTPRoute", dns_label(resource.spec["name"]), str(resource.address))
        manifests.append(_route(graph.stack, resource, name, by_endpoint.get(resource.spec["name"], {}), options))
    return manifests


# -- output --------------------------------------------------------------------------------
def header_marker(stack: str) -> str:
    """First line of every rendered file; `--output-dir` removes stale files that start with it."""
    return f"# Rendered by reconciler from stack {stack}; change the stack and render again instead of editing."


def required_secrets(manifests: list[dict]) -> dict[str, list[str]]:
    """Secret name -> keys that rendered Deployments read, for the user to create."""
    secrets: dict[str, list[str]] = {}
    for manifest in manifests:
        if manifest["kind"] != "Deployment":
            continue
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            for variable in container.get("env", ()):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    secrets.setdefault(reference["name"], []).append(reference["key"])
    return secrets


def header(stack: str, manifests: list[dict]) -> list[str]:
    lines = [header_marker(stack)]
    if any(m["kind"] == "PersistentVolumeClaim" for m in manifests):
        lines.append("# Model PersistentVolumeClaims start empty: load each one with its model files (annotation "
                     f"{LOAD_MODEL_ANNOTATION}).")
    for secret, keys in required_secrets(manifests).items():
        lines.append(f"# Needs Secret {secret} with keys {', '.join(keys)} (values are not rendered).")
    return lines


class _Dumper(yaml.SafeDumper):
    # Shared dicts would come out as &id001 anchors: valid YAML, but unreadable in a review.
    def ignore_aliases(self, data) -> bool:
        return True


def dump_manifests(manifests: list[dict], stack: str) -> str:
    """A multi-document YAML stream, for `kubectl apply -f -`."""
    body = yaml.dump_all(manifests, Dumper=_Dumper, sort_keys=False, explicit_start=True, width=120)
    return "\n".join(header(stack, manifests)) + "\n" + body


def manifest_filename(manifest: dict) -> str:
    return f"{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
