"""One descriptor per deployment field: its default, how each driver creates, updates and reads
it, and its Kubernetes mapping. Pure.

What updates in place is not a table someone keeps in step with the drivers by hand: a field
updates in place on a driver exactly when that driver has an updater for it, and
field_policy.py derives the deployment rows of each driver's ChangePolicy from here.

An updater is named by what carries the change out:
  STATE    nothing in the engine holds the value; the driver records the new spec.
  GATEWAY  only the endpoint's gateway uses it (planning/gateway_view.py); the planner updates
           the endpoint whenever a view it depends on changes.
  SCALE    the driver adds or removes instances (the gateway follows on docker).
  ENGINE   the driver's updaters module changes the running objects (docker: `docker update`);
           reconciler/drivers/docker/updaters.py implements exactly these fields.
  ROLL     swarm replaces the service's tasks start-first under the same service.
  None     cannot: a change replaces the deployment (new objects beside the old ones).

Absent equals default: a record written before a field existed does not hold it, and
`with_defaults` gives such a record the descriptor's default, so adding a field never forces
replacement of deployments that were applied before it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from reconciler.config.graph import DEPLOYMENT_DEFAULTS

STATE, GATEWAY, SCALE, ENGINE, ROLL = "state", "gateway", "scale", "engine", "roll"
UPDATER_KINDS = (STATE, GATEWAY, SCALE, ENGINE, ROLL)


class _Required:
    """The default of a field every deployment spec states (its names, its image)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True)
class DriverField:
    """How one driver handles one field. `read` is None when refresh does not read it back
    (a change made outside reconciler goes unnoticed there). `update_cannot_unset`: the
    updater can set or change the value but not take it away (`docker update` has no way to
    lift a memory limit), so a change to None replaces."""
    create: str
    update: str | None
    read: str | None = None
    update_cannot_unset: bool = False


@dataclass(frozen=True)
class FieldDescriptor:
    name: str
    docker: DriverField
    swarm: DriverField
    # Where `reconciler render kubernetes` puts it; None: nothing in Kubernetes holds it.
    # "container.KEY" alone: copied as it is; "annotation KEY": the value as that annotation;
    # anything after a space says how it is converted.
    kubernetes: str | None
    # Settings objects whose keys may be added later: a record's value is merged over the default.
    merge_default: bool = False

    @property
    def default(self) -> Any:
        return DEPLOYMENT_DEFAULTS.get(self.name, REQUIRED)

    def for_driver(self, driver: str) -> DriverField:
        return getattr(self, driver)


_KEEP = DriverField("part of the address", None)
DEPLOYMENT_FIELDS: tuple[FieldDescriptor, ...] = (
    FieldDescriptor("endpoint", _KEEP, _KEEP, "label reconciler.local/endpoint"),
    FieldDescriptor("name", _KEEP, _KEEP, "label reconciler.local/deployment"),
    FieldDescriptor("description", DriverField("state", STATE), DriverField("state", STATE),
                    "annotation reconciler.local/description"),
    FieldDescriptor("tags", DriverField("state", STATE), DriverField("state", STATE), None),
    FieldDescriptor("image", DriverField("container image", None, "container Image"),
                    DriverField("task template image", ROLL, "service ContainerSpec.Image"), "container.image"),
    FieldDescriptor("model", DriverField("read-only bind mount of the model store", None, "container Mounts"),
                    DriverField("docker configs at mount_path", ROLL, "service labels"),
                    "volume from the model's PersistentVolumeClaim"),
    FieldDescriptor("environment_variables", DriverField("container environment", None, "container Config.Env"),
                    DriverField("task template env", ROLL, "service ContainerSpec.Env"),
                    "container.env (sensitive names as secretKeyRefs)"),
    FieldDescriptor("routes", DriverField("container ports on the stack network", None, "container ports"),
                    # A rolling update would run old and new tasks on different ports behind
                    # one upstream; a new service beside the old one lets the gateway move at once.
                    DriverField("gateway upstream port and path", None), "container.ports and the Service"),
    # docker: CPUs and memory of each container (config/instance_types.py); Azure ML cannot
    # change a deployment's instance type in place either.
    FieldDescriptor("instance_type", DriverField("container nano_cpus and mem_limit", None),
                    DriverField("state", STATE),
                    "annotation reconciler.local/azureml-instance-type"),
    FieldDescriptor("instance_count", DriverField("one container per instance", SCALE, "containers listed"),
                    DriverField("service replicas", SCALE, "service tasks"), "Deployment.spec.replicas"),
    FieldDescriptor("request_settings", DriverField("gateway proxy_read_timeout", GATEWAY),
                    DriverField("gateway proxy_read_timeout", GATEWAY),
                    "HTTPRoute rule timeouts.request (request_timeout_ms)", merge_default=True),
    FieldDescriptor("liveness_probe", DriverField("endpoint health supervisor", GATEWAY),
                    DriverField("task healthcheck", ROLL), "container.livenessProbe (on the liveness route)",
                    merge_default=True),
    FieldDescriptor("readiness_probe", DriverField("readiness wait after start; endpoint health supervisor", GATEWAY),
                    DriverField("task healthcheck", ROLL), "container.readinessProbe (on the readiness route)",
                    merge_default=True),
    FieldDescriptor("app_insights_enabled", DriverField("state", STATE), DriverField("state", STATE), None),
    FieldDescriptor("command", DriverField("container entrypoint", None),
                    DriverField("task template command", ROLL), "container.command"),
    FieldDescriptor("args", DriverField("container command", None),
                    DriverField("task template args", ROLL), "container.args"),
    FieldDescriptor("memory", DriverField("container mem_limit", ENGINE, update_cannot_unset=True),
                    DriverField("task resources mem_limit", ROLL),
                    "container.resources.limits.memory (as a quantity: 512m -> 512Mi)"),
    FieldDescriptor("restart_policy", DriverField("container restart policy", ENGINE),
                    DriverField("task restart condition", ROLL), None),
    # Which variables' values output may show (render/masking.py); nothing in the engine has it.
    FieldDescriptor("plain_environment_variables", DriverField("state", STATE), DriverField("state", STATE), None),
    # Debugging only: routes' ports published on 127.0.0.1 (read back: a published port is drift otherwise).
    FieldDescriptor("publish_ports", DriverField("ports published on 127.0.0.1", None, "container ports"),
                    DriverField("state", STATE), None),
    FieldDescriptor("read_only_root_filesystem", DriverField("container read_only + tmpfs /tmp", None),
                    DriverField("state", STATE), None),
)
DEPLOYMENT = {d.name: d for d in DEPLOYMENT_FIELDS}


def updates_in_place(driver: str, field: str) -> bool:
    descriptor = DEPLOYMENT.get(field)
    return descriptor is not None and descriptor.for_driver(driver).update is not None


def replaces_despite_updater(driver: str, field: str, before: Any, after: Any) -> bool:
    """Whether this particular change is one the driver's updater for `field` cannot make."""
    descriptor = DEPLOYMENT.get(field)
    return (descriptor is not None and descriptor.for_driver(driver).update_cannot_unset
            and before is not None and after is None)


def fields_updated_by(driver: str, updater: str) -> frozenset[str]:
    return frozenset(d.name for d in DEPLOYMENT_FIELDS if d.for_driver(driver).update == updater)


def kubernetes_container_fields() -> tuple[tuple[str, str], ...]:
    """(container key, field) for the fields Kubernetes takes as they are, in descriptor order."""
    return tuple((d.kubernetes.removeprefix("container."), d.name) for d in DEPLOYMENT_FIELDS
                 if d.kubernetes and re.fullmatch(r"container\.[A-Za-z]+", d.kubernetes))


def kubernetes_annotations() -> tuple[tuple[str, str], ...]:
    """(annotation key, field) for the fields that become an annotation, in descriptor order."""
    return tuple((d.kubernetes.removeprefix("annotation "), d.name) for d in DEPLOYMENT_FIELDS
                 if d.kubernetes and re.fullmatch(r"annotation \S+", d.kubernetes))


def with_defaults(kind: str, record_spec: dict, desired_spec: dict | None) -> dict:
    """A record's spec as the current code would have written it: every field the desired spec
    has and the record lacks takes its default, and so does every key of a settings object.
    What the desired spec does not have is left alone (there is nothing to compare it with)."""
    if kind != "deployment" or desired_spec is None:
        return record_spec
    upgraded = None
    for name, wanted in desired_spec.items():
        descriptor = DEPLOYMENT.get(name)
        if descriptor is None or descriptor.default is REQUIRED:
            continue
        if name not in record_spec:
            value = descriptor.default
        elif descriptor.merge_default and isinstance(record_spec[name], dict) and isinstance(wanted, dict):
            missing = {k: descriptor.default[k] for k in wanted.keys() - record_spec[name].keys()
                       if k in descriptor.default}
            if not missing:
                continue
            value = {**record_spec[name], **missing}
        else:
            continue
        upgraded = upgraded if upgraded is not None else dict(record_spec)
        upgraded[name] = _copy(value)
    return record_spec if upgraded is None else upgraded


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
