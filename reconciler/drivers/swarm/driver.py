"""SwarmDriver: carries out one step (create/update/delete) per resource kind on Docker Swarm.

Side effects only; decisions were made by the planner, with the swarm change policy.
Models are Docker configs (models.py), deployments are replicated services with start-first
rolling updates gated by a health check made from the readiness route, endpoints are a
gateway service behind an edge service (gateway.py). Everything is reached through the
stack's overlay network by service name (DNS round-robin; see engine.py for why not VIPs).

Records keep swarm's own shapes (read back by fold.py): a deployment lists one instance per
replica slot (`<slot>.<service id>`), an endpoint its gateway and edge services, port, keys
and config digest.
"""
from __future__ import annotations

import dataclasses
import posixpath

from docker.types import ContainerSpec, Resources, RestartPolicy, RollbackConfig, TaskTemplate, UpdateConfig
from docker.utils import parse_bytes

from reconciler.drivers.base import Driver, StepContext, SupportsKeyRotation
from reconciler.drivers.common import builds
from reconciler.drivers.common.engine import EngineClient, ensure_images, required_images
from reconciler.drivers.common.errors import StepFailed
from reconciler.drivers.common.fold import FoldResult
from reconciler.drivers.common.gateway import GATEWAY_IMAGE, kept_keys_and_port, rotated_keys
from reconciler.drivers.common.labels import LABEL_GENERATION, LABEL_ROLE, base_address, managed_labels, new_generation
from reconciler.drivers.swarm import engine, gateway, models, observe
from reconciler.drivers.swarm import fold as swarm_fold
from reconciler.drivers.swarm.engine import NANOS
from reconciler.drivers.swarm.fold import SwarmObservation, parse_slot_id, slot_id
from reconciler.errors import DriverError
from reconciler.state.model import StateFile, StateRecord

DRIVER_NAME = "swarm"
STOP_GRACE_SECONDS = 10
RESTART_CONDITIONS = {"no": "none", "on-failure": "on-failure", "always": "any", "unless-stopped": "any"}
# What updates in place on swarm is planning's business: see SWARM_FIELD_POLICY in
# reconciler/planning/field_policy.py.


class SwarmDriver(EngineClient, Driver, SupportsKeyRotation):
    """Import and recover are not offered: they adopt containers and read the local model store."""

    name = DRIVER_NAME

    # -- whole-plan checks ---------------------------------------------------------------------
    def preflight(self, specs: list[tuple[str, dict]]) -> None:
        """Fail before any change when this engine is no swarm manager or an image is missing.
        On a one-node swarm images are checked on this node; on several, every node pulls them,
        so each must be in its registry (asked through the manager) as well as here."""
        engine.require_manager(self.client)
        for address, spec in specs:
            if address.kind == "endpoint" and gateway.unpublishable(spec):
                raise DriverError(f"endpoint {spec['name']} asks to listen on {gateway.unpublishable(spec)}, but "
                                  "swarm publishes a port on every address of each node",
                                  "give listen.address 0.0.0.0 (or leave it out) in the stack settings on swarm")
        builds_here = sorted(str(a) for a, _ in specs if a.kind == "environment")
        nodes = len(self.client.nodes.list()) if specs else 1
        if builds_here:
            if nodes > 1:
                raise DriverError(
                    f"{', '.join(builds_here)} would be built on this manager only, and the swarm has {nodes} nodes",
                    "tasks on other nodes could not find the image: push built images to a registry the nodes "
                    "pull from (not supported yet), or run a one-node swarm")
        if nodes > 1:
            engine.require_pullable(self.client, specs, required_images(specs, GATEWAY_IMAGE), GATEWAY_IMAGE)
        ensure_images(self.client, specs, GATEWAY_IMAGE)

    # -- steps ---------------------------------------------------------------------------------
    def create(self, address: str, spec: dict, spec_hash: str, ctx: StepContext,
               prior: StateRecord | None = None) -> StateRecord:
        record = self.new_record(address, spec, spec_hash)
        if address.kind == "model":
            outputs = models.create_configs(self.client, ctx, ctx.stack_dir, address, spec, spec_hash)
            return dataclasses.replace(record, outputs=outputs, driver_ids=_config_ids(outputs))
        if address.kind == "deployment":
            return self._create_deployment(record, ctx)
        if address.kind == "environment":
            # On the manager's engine, where a one-node swarm's tasks find it.
            return builds.build(self.client, ctx, record)
        # A replaced endpoint keeps its port and keys, as on the docker driver.
        keys, port = kept_keys_and_port(prior)
        outputs = gateway.start(self.client, ctx, address, spec, spec_hash, keys, port, self.engine)
        return dataclasses.replace(record, outputs=outputs, driver_ids=_gateway_ids(outputs))

    def update(self, record: StateRecord, spec: dict, spec_hash: str, ctx: StepContext) -> StateRecord:
        updated = dataclasses.replace(record, spec=spec, spec_hash=spec_hash, status="ready")
        kind = record.address.kind
        if kind == "model":
            # Always through create_configs: it reuses what exists and remakes what is missing.
            outputs = models.create_configs(self.client, ctx, ctx.stack_dir, record.address, spec, spec_hash)
            old = {c["name"] for c in record.outputs.get("configs", [])} - {c["name"] for c in outputs["configs"]}
            # Deployments still mount the old configs until they rolled: swarm refuses to remove
            # those now, and the deployments release them after their update.
            models.release(self.client, {**ctx.records(), record.address: dataclasses.replace(
                record, outputs=outputs)}, old, owner="")
            return dataclasses.replace(updated, outputs=outputs, driver_ids=_config_ids(outputs))
        if kind == "deployment":
            return self._update_deployment(updated, ctx)
        if kind == "environment":
            return updated
        outputs = gateway.reload(self.client, ctx, record.address, spec, spec_hash, record.outputs)
        return dataclasses.replace(updated, outputs=outputs, driver_ids=_gateway_ids(outputs))

    def regenerate_keys(self, record: StateRecord, which: str, ctx: StepContext) -> StateRecord:
        """New keys roll the gateway start-first; the other key works throughout."""
        outputs = gateway.reload(self.client, ctx, record.address, record.spec, record.spec_hash,
                                 {**record.outputs, "keys": rotated_keys(record.outputs["keys"], which)})
        return dataclasses.replace(record, outputs=outputs, driver_ids=_gateway_ids(outputs))

    def delete(self, record: StateRecord, ctx: StepContext) -> None:
        kind = record.address.kind
        if record.address.is_orphan:
            self._delete_orphan(record, ctx)
        elif kind == "model":
            models.release(self.client, ctx.records(), {c["name"] for c in record.outputs.get("configs", [])},
                           owner=record.address)
        elif kind == "deployment":
            self._delete_deployment(record, ctx)
        elif kind == "environment":
            builds.remove(self.client, ctx, record)
        else:
            gateway.remove(self.client, ctx, base_address(record.address), record.outputs)

    def finish(self, ctx: StepContext) -> None:
        """After a successful apply: the stack's network goes once nothing of the stack is left
        (not per delete step, where a parallel create may be about to attach to it)."""
        if not ctx.records():
            engine.remove_network_if_unused(self.client, ctx)

    # -- deployments -----------------------------------------------------------------------------
    def _model_outputs(self, spec: dict, ctx: StepContext) -> dict | None:
        if not spec.get("model"):
            return None
        model = ctx.records().get(spec["model"]["address"])
        if model is None or "configs" not in model.outputs:
            raise DriverError(f"model {spec['model']['address']} is not in state",
                              "apply the model first (it is a dependency of this deployment)")
        if model.outputs.get("content_digest") != spec["model"]["content_digest"]:
            raise DriverError(f"model {spec['model']['address']} in state holds other content than this "
                              "deployment expects", "run `reconciler plan` again and apply the new plan")
        return model.outputs

    def _code_configs(self, ctx: StepContext, address: str, spec: dict, spec_hash: str) -> list[dict]:
        """The code folder of code_configuration as configs, made and mounted as a model's files
        are (a config per file, replicated to every node): the folder appears at its mount path.
        They are released with the service that mounts them (no model record lists them)."""
        code = spec.get("code")
        if not code:
            return []
        as_model = {"name": spec["name"], "version": "code", "path": code["path"],
                    "content_digest": code["content_digest"]}
        outputs = models.create_configs(self.client, ctx, ctx.stack_dir, base_address(address), as_model, spec_hash)
        return models.config_references(outputs, posixpath.dirname(code["mount_path"]))

    def _service_spec(self, ctx: StepContext, address: str, spec: dict, spec_hash: str, generation: str,
                      network_id: str) -> dict:
        model_outputs = self._model_outputs(spec, ctx)
        container = ContainerSpec(
            spec["image"], command=spec.get("command") or None, args=spec.get("args") or None,
            # Swarm fills in the slot: blue-1, blue-2, ... as the docker driver names hosts.
            hostname=f"{spec['name']}-{{{{.Task.Slot}}}}",
            env=[f"{k}={v}" for k, v in sorted(spec["environment_variables"].items())],
            configs=(models.config_references(model_outputs, spec["model"]["mount_path"]) if model_outputs else [])
            + self._code_configs(ctx, address, spec, spec_hash) or None,
            healthcheck=engine.task_healthcheck(spec),
            stop_grace_period=STOP_GRACE_SECONDS * NANOS)
        template = TaskTemplate(
            container, resources=Resources(mem_limit=parse_bytes(spec["memory"])) if spec.get("memory") else None,
            restart_policy=RestartPolicy(condition=RESTART_CONDITIONS.get(spec["restart_policy"], "any"), delay=NANOS),
            networks=[{"Target": network_id}])
        labels = managed_labels(ctx, base_address(address), spec_hash,
                                **{LABEL_ROLE: "deployment", LABEL_GENERATION: generation})
        if model_outputs:
            labels[observe.LABEL_MODEL_MOUNT] = spec["model"]["mount_path"]
            labels[observe.LABEL_MODEL_DIGEST] = model_outputs["content_digest"]
        monitor = monitor_seconds(spec["readiness_probe"]) * NANOS
        return {"task_template": engine.with_rollout(template), "labels": labels,
                "mode": {"Replicated": {"Replicas": spec["instance_count"]}},
                # DNS round-robin: the gateway resolves the service name to its healthy tasks.
                "endpoint_spec": {"Mode": "dnsrr"},
                # One task at a time, the new one healthy before the old one stops; a task that
                # fails its health check (or dies within `monitor`) rolls the whole update back.
                "update_config": UpdateConfig(parallelism=1, order="start-first", failure_action="rollback",
                                              monitor=monitor, max_failure_ratio=0.0),
                "rollback_config": RollbackConfig(parallelism=1, order="start-first", failure_action="pause",
                                                  monitor=monitor)}

    def _create_deployment(self, record: StateRecord, ctx: StepContext, generation: str | None = None) -> StateRecord:
        spec = record.spec
        generation = generation or new_generation()
        name = service_name(ctx, spec, generation)
        kwargs = self._service_spec(ctx, record.address, spec, record.spec_hash, generation,
                                    engine.ensure_network(self.client, ctx))
        service_id, since = engine.deploy_service(self.client, name, None, **kwargs)
        record = dataclasses.replace(record, driver_ids={"generation": generation, "service": service_id},
                                     outputs={"service": {"id": service_id, "name": name}, "instances": []})
        return self._converge(record, service_id, engine.rollout_of(kwargs), since, ctx.progress)

    def _update_deployment(self, record: StateRecord, ctx: StepContext) -> StateRecord:
        """One service update, whatever changed: swarm rolls the tasks when the task template
        changed, and only rescales or relabels otherwise."""
        service = engine.inspect_service(self.client, (record.outputs.get("service") or {}).get("id"))
        generation = record.driver_ids.get("generation") or new_generation()
        if service is None:
            # Removed by hand (refresh showed every instance missing): start it again.
            return self._create_deployment(record, ctx, generation)
        before = _config_names(service["Spec"]["TaskTemplate"])
        kwargs = self._service_spec(ctx, record.address, record.spec, record.spec_hash, generation,
                                    engine.ensure_network(self.client, ctx))
        service_id, since = engine.deploy_service(self.client, service["Spec"]["Name"], service, **kwargs)
        record = dataclasses.replace(record, driver_ids={"generation": generation, "service": service_id},
                                     outputs={**record.outputs, "service": {"id": service_id,
                                                                            "name": service["Spec"]["Name"]}})
        # RolledBack passes through without a record: the previous version runs again, which is
        # what state says, so the next plan proposes the same update.
        result = self._converge(record, service_id, engine.rollout_of(kwargs), since, ctx.progress)
        models.release(self.client, ctx.records(), before - _config_names(kwargs["task_template"]), owner="")
        return result

    def _converge(self, record: StateRecord, service_id: str, rollout: str, since: int,
                  progress=None) -> StateRecord:
        spec = record.spec
        what = f"deployment {spec['endpoint']}/{spec['name']}"
        timeout = engine.convergence_timeout(spec["readiness_probe"], spec["instance_count"],
                                             monitor_seconds(spec["readiness_probe"]))
        try:
            tasks = engine.wait_converged(self.client, service_id, rollout, since, timeout, what,
                                          spec["instance_count"], progress)
        except engine.RolledBack:
            raise
        except DriverError as error:
            live = [t for t in engine.service_tasks(self.client, service_id)
                    if t["DesiredState"] == "running" and t["Status"]["State"] in engine.LIVE_STATES]
            raise StepFailed(error, _with_tasks(record, live, "tainted", engine.node_names(self.client))) from error
        return _with_tasks(record, tasks, "ready", engine.node_names(self.client))

    def _delete_deployment(self, record: StateRecord, ctx: StepContext) -> None:
        ids = {(record.outputs.get("service") or {}).get("id")} - {None}
        generation = record.driver_ids.get("generation")
        if generation:
            # Also a service an interrupted apply started but never recorded.
            ids |= {s["ID"] for s in engine.owned_services(self.client, ctx, base_address(record.address),
                                                             **{LABEL_GENERATION: generation})}
        released: set[str] = set()
        for service_id in sorted(ids):
            service = engine.inspect_service(self.client, service_id)
            if service is not None:
                released |= _config_names(service["Spec"]["TaskTemplate"])
                engine.remove_service(self.client, service_id, STOP_GRACE_SECONDS + 30)
        models.release(self.client, ctx.records(), released, owner="")

    def _delete_orphan(self, record: StateRecord, ctx: StepContext) -> None:
        """Services (or replica slots) carrying this stack's labels that no record owns. A slot
        of a service a record does own was added by hand: scale back to what the record lists."""
        ids = {parse_slot_id(i["id"])[0] for i in record.outputs.get("instances", [])}
        ids |= {(record.outputs.get("gateway") or {}).get("id")} - {None}
        live = {a: r for a, r in ctx.records().items() if not a.is_orphan}
        for service_id in sorted(ids):
            owner = next((r for r in live.values() if (r.outputs.get("service") or {}).get("id") == service_id), None)
            service = engine.inspect_service(self.client, service_id)
            if service is None:
                continue
            if owner is not None:
                engine.scale_down(self.client, service_id, len(owner.outputs.get("instances", [])))
                continue
            if any((r.outputs.get("gateway") or {}).get("id") == service_id for r in live.values()):
                continue
            engine.remove_service(self.client, service_id)

    # -- reading (refresh: observe.py reads, fold.py folds) ----------------------------------
    def read(self, state: StateFile, state_dir=None) -> SwarmObservation:
        """Two list calls (the stack's services by label, the tasks meant to run) and each model's configs."""
        return observe.read(self.client, state)

    def stack_objects(self, stack: str) -> list[tuple[str, dict]]:
        from reconciler.drivers.common.labels import label_filter
        engine.require_manager(self.client)
        return [(s["ID"], s["Spec"].get("Labels") or {}) for s in self.client.api.services(filters=label_filter(stack))]

    def fold(self, state: StateFile, observation: SwarmObservation) -> FoldResult:
        return swarm_fold.fold(state, observation)

    def logs(self, record: StateRecord, lines: int) -> list[tuple[str, str]]:
        if record.address.kind == "environment":
            return [(f"build of {record.spec['image']}", builds.read_log(record))]
        services = [record.outputs.get("service")] if "service" in record.outputs else \
            [record.outputs.get("gateway"), record.outputs.get("edge")]
        result = []
        for service in filter(None, services):
            if engine.inspect_service(self.client, service["id"]) is None:
                text = "(service is gone; `reconciler plan` will show the drift)\n"
            else:
                text = engine.service_logs(self.client, service["id"], lines)
            result.append((service["name"], text))
        return result


def service_name(owner, spec: dict, generation: str) -> str:
    return engine.object_name("rc", owner.stack, spec["endpoint"], spec["name"], generation, identity=owner.identity)


def monitor_seconds(probe: dict) -> int:
    """How long swarm watches each new task after it became healthy: two probe periods."""
    return min(10, max(1, 2 * int(probe["period"])))


def _config_ids(outputs: dict) -> dict:
    return {"configs": [c["id"] for c in outputs.get("configs", [])]}


def _gateway_ids(outputs: dict) -> dict:
    return {"services": [outputs["gateway"]["id"], outputs["edge"]["id"]], "secret": outputs["secret"]["id"]}


def _config_names(task_template: dict) -> set[str]:
    return {c["ConfigName"] for c in (task_template.get("ContainerSpec") or {}).get("Configs") or []}


def _with_tasks(record: StateRecord, tasks: list[dict], status: str, nodes: dict[str, dict]) -> StateRecord:
    """The record with one instance per replica slot that runs (or, when tainted, is alive),
    each with the node it runs on (refresh reports a slot the swarm moved off a lost node)."""
    service = record.outputs["service"]
    on_node = {t["Slot"]: nodes.get(t.get("NodeID") or "", {}).get("name") for t in tasks if t.get("Slot") is not None}
    instances = [{"id": slot_id(service["id"], slot), "name": f"{service['name']}.{slot}",
                  "instance": slot, "ports": {}, **({"node": on_node[slot]} if on_node[slot] else {})}
                 for slot in sorted(on_node)]
    route = record.spec["routes"]["scoring"]
    # Reachable on the stack's network only; clients go through the endpoint.
    outputs = {**record.outputs, "instances": instances,
               "scoring_uri": f"http://{service['name']}:{route['port']}{route['path']}"}
    return dataclasses.replace(record, outputs=outputs, status=status)
