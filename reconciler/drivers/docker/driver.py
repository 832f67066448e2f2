"""DockerDriver: carries out one step (create/update/delete) per resource kind on Docker.

Side effects only; decisions were made by the planner. Models live in the content store
(and, on a remote engine, in a content volume filled from it through the API), deployments
are containers, endpoints are nginx gateways in front of them.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

from reconciler.addresses import endpoint_address
from reconciler.drivers.base import (Driver, StepContext, SupportsImport, SupportsKeyRotation, SupportsRecover,
                                     SupportsStatus)
from reconciler.drivers.common import builds
from reconciler.drivers.common.engine import EngineClient, ensure_images
from reconciler.drivers.common.errors import StepFailed
from reconciler.drivers.common.fold import FoldResult
from reconciler.drivers.common.gateway import GATEWAY_IMAGE, kept_keys_and_port, rotated_keys
from reconciler.drivers.common.labels import LABEL_GENERATION, base_address, new_generation, owned_filter
from reconciler.drivers.docker import adoption, containers, content_volumes, gateway, model_store, observe, updaters
from reconciler.drivers.docker import fold as docker_fold
from reconciler.drivers.docker.engine import remove_container
from reconciler.drivers.docker.fold import DockerObservation, Observed
from reconciler.errors import DriverError
from reconciler.state.model import StateFile, StateRecord

DRIVER_NAME = "docker"
ORPHAN_STOP_TIMEOUT = 2
# Instances of one deployment started and awaited at once, at most this many (each is one
# thread that mostly sleeps between probes; the engine serialises most of the starting anyway).
INSTANCE_PARALLELISM = 8


class DockerDriver(EngineClient, Driver, SupportsImport, SupportsRecover, SupportsKeyRotation, SupportsStatus):
    name = DRIVER_NAME
    # A re-point is one exec in the gateway (gateway.reload), local and remote engine alike.
    routes_endpoint_after_create = True

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        super().__init__(client)
        self._inspector_instance: observe.Inspector | None = None  # per driver: caches image ENV
        self._engine_cpus: int | None = None
        # Deployment steps run in parallel: one `info` call for all of them, not one each.
        self._engine_cpus_lock = threading.Lock()

    def engine_cpus(self) -> int:
        """The engine's CPU count (Docker refuses a container more CPUs than it has); 0: unknown."""
        with self._engine_cpus_lock:
            if self._engine_cpus is None:
                try:
                    self._engine_cpus = int(self.client.info().get("NCPU") or 0)
                except (docker.errors.APIError, ValueError, TypeError):
                    self._engine_cpus = 0
            return self._engine_cpus

    # -- whole-plan checks ---------------------------------------------------------------
    def preflight(self, specs: list[tuple[str, dict]]) -> None:
        """Fail before any change when an image is missing and cannot be pulled."""
        ensure_images(self.client, specs, GATEWAY_IMAGE, content_volumes=self.engine.remote)

    # -- steps ---------------------------------------------------------------------------
    def create(self, address: str, spec: dict, spec_hash: str, ctx: StepContext,
               prior: StateRecord | None = None) -> StateRecord:
        record = self.new_record(address, spec, spec_hash)
        if address.kind == "model":
            outputs = self.store_folder(address, ctx.stack_dir / spec["path"], spec["content_digest"], ctx)
            return dataclasses.replace(record, outputs=outputs)
        if address.kind == "deployment":
            return self._create_deployment(record, ctx)
        if address.kind == "environment":
            return builds.build(self.client, ctx, record)
        keys, port = kept_keys_and_port(prior)
        return dataclasses.replace(record, outputs=gateway.start(self.client, ctx, address, spec, spec_hash,
                                                                 keys, port, self.engine))

    def update(self, record: StateRecord, spec: dict, spec_hash: str, ctx: StepContext) -> StateRecord:
        updated = dataclasses.replace(record, spec=spec, spec_hash=spec_hash, status="ready")
        if record.address.kind == "deployment":
            updaters.apply_in_place(self.client, record, spec)
        if record.address.kind == "deployment" and spec["instance_count"] != len(record.outputs["instances"]):
            return self._scale_deployment(updated, ctx)
        if record.address.kind == "endpoint":
            return dataclasses.replace(updated, outputs=gateway.reloaded_outputs(self.client, ctx, spec, record.outputs))
        return updated

    def finish(self, ctx: StepContext) -> None:
        """After an apply: volumes no record lists go (remote engines), and the stack's network
        once nothing of the stack is left. Not per delete step, where a parallel create may be
        about to attach to it."""
        if self.engine.remote:
            listed = {name for r in ctx.records().values()
                      for name in (r.outputs.get("volume"), (r.outputs.get("gateway") or {}).get("config_volume"))
                      if name}
            content_volumes.release_unlisted(self.client, ctx, listed)
        if not ctx.records() and not self.client.containers.list(all=True, sparse=True,
                                                                 filters=owned_filter(ctx)):
            for kept in containers.remove_network(self.client, ctx):
                ctx.progress(f"network {kept} was left: the engine still counts an endpoint on it (a container "
                             f"attached outside reconciler, or one it did not release); "
                             f"`docker network inspect {kept}` shows it, `docker network rm {kept}` removes it")

    def regenerate_keys(self, record: StateRecord, which: str, ctx: StepContext) -> StateRecord:
        updated = dataclasses.replace(record, outputs={**record.outputs,
                                                       "keys": rotated_keys(record.outputs["keys"], which)})
        return dataclasses.replace(updated, outputs=gateway.reloaded_outputs(self.client, ctx, record.spec,
                                                                             updated.outputs))

    def delete(self, record: StateRecord, ctx: StepContext) -> None:
        kind = record.address.kind
        if record.address.is_orphan:
            # Only the stray containers: the config directory and model copies belong to the
            # resource of the same address, which may well be alive.
            adopted = {i["id"] for i in record.outputs.get("instances", []) if i.get("adopted")}
            for container_id in record.driver_ids.get("containers", []):
                # No traffic is routed to a container no record owns: no need to wait long.
                remove_container(self.client, container_id, ORPHAN_STOP_TIMEOUT, adopted=container_id in adopted)
        elif kind == "model":
            others = [r.outputs for a, r in ctx.records().items() if a != record.address and a.kind == "model"]
            stored, volume = record.outputs.get("store_path"), record.outputs.get("volume")
            if stored and not any(o.get("store_path") == stored for o in others):
                model_store.release(ctx.state_dir, ctx.identity, Path(stored))
            if volume and not any(o.get("volume") == volume for o in others):
                content_volumes.remove_volume(self.client, volume)
        elif kind == "deployment":
            self._delete_deployment(record, ctx)
        elif kind == "environment":
            builds.remove(self.client, ctx, record)
        else:
            gateway.remove(self.client, record.outputs, ctx, record.spec["name"])

    # -- a folder's content, read-only in containers (models; any folder of the stack) -------
    def store_folder(self, address, source: Path, digest: str, ctx: StepContext) -> dict:
        """Make `source` (a file or folder of the stack whose fingerprint is `digest`) mountable
        read-only: a copy in the content store, and on a remote engine its content volume (made
        once per content). Returns the outputs to keep in the record; `content_volumes.mount_of`
        turns them into the mount, and `delete` of a record with them releases both."""
        stored = model_store.materialise(ctx.state_dir, ctx.identity, source, ctx.stack_dir, digest)
        outputs = {"store_path": str(stored)}
        if self.engine.remote:
            name = content_volumes.content_volume_name(ctx, digest)
            listed = any(r.outputs.get("volume") == name for r in ctx.records().values())
            outputs["volume"] = content_volumes.ensure_folder_volume(self.client, ctx, str(address), stored, digest,
                                                                     GATEWAY_IMAGE, listed_by_records=listed)
        return outputs

    # -- deployments ---------------------------------------------------------------------
    def _model_mount(self, spec: dict, ctx: StepContext):
        if not spec.get("model"):
            return None
        model = ctx.records().get(spec["model"]["address"])
        if model is None or "store_path" not in model.outputs:
            raise DriverError(f"model {spec['model']['address']} is not in state",
                              "apply the model first (it is a dependency of this deployment)")
        if self.engine.remote and not model.outputs.get("volume"):
            raise DriverError(f"model {spec['model']['address']} was stored for a local engine, not for "
                              f"{self.engine.url}", "destroy the stack on the engine it was applied to first")
        return content_volumes.mount_of(model.outputs, spec["model"]["mount_path"])

    @staticmethod
    def _code_mount(spec: dict, outputs: dict):
        """The code folder inside its store copy, at /var/azureml-app/<folder>/."""
        if not spec.get("code") or not outputs.get("code_store_path"):
            return None
        folder = Path(outputs["code_store_path"]) / Path(spec["code"]["path"]).name
        return content_volumes.mount_of({"store_path": str(folder)}, spec["code"]["mount_path"])

    def _create_deployment(self, record: StateRecord, ctx: StepContext) -> StateRecord:
        spec = record.spec
        generation = new_generation()
        outputs: dict = {"instances": []}
        if spec.get("code"):
            # The scoring code reaches the container the way a model does (store_folder): a
            # read-only copy, so an edit after the plan is refused and a running container never
            # sees a half-edited script.
            if self.engine.remote:
                raise DriverError(f"deployment {spec['endpoint']}/{spec['name']} has scoring code "
                                  "(code_configuration), which reconciler does not ship to a remote engine yet",
                                  "bake the code folder into the image, or apply to a local engine")
            code = spec["code"]
            outputs["code_store_path"] = self.store_folder(record.address, ctx.stack_dir / code["path"],
                                                           code["content_digest"], ctx)["store_path"]
        record = dataclasses.replace(record, driver_ids={"generation": generation}, outputs=outputs)
        return self._add_instances(record, ctx, range(spec["instance_count"]))

    def _add_instances(self, record: StateRecord, ctx: StepContext, indexes) -> StateRecord:
        """Start the instances all at once, then await their readiness all at once (each on its
        own probe schedule from its own start) inside ctx.waiting(), so that the apply engine
        starts other steps' containers meanwhile; the step fails with the first instance that
        fails, and the others stop waiting then. Every instance started is in the record."""
        spec = record.spec
        generation = record.driver_ids["generation"]
        model_mount = self._model_mount(spec, ctx)
        code_mount = self._code_mount(spec, record.outputs)
        engine_cpus = self.engine_cpus()
        indexes = list(indexes)
        instances = list(record.outputs["instances"])
        started: list[tuple[dict, float]] = []
        failures: list[BaseException] = []
        failed = threading.Event()
        lock = threading.Lock()

        def fail(error: BaseException) -> None:
            with lock:
                if not failed.is_set():
                    failures.append(error)
                    failed.set()

        def start(index: int) -> None:
            if failed.is_set():
                return  # the step fails anyway: start nothing more
            try:
                instance = containers.run_instance(self.client, ctx, record.address, spec, record.spec_hash,
                                                   generation, index, model_mount, engine_cpus=engine_cpus,
                                                   code_mount=code_mount)
                with lock:
                    started.append((instance, time.monotonic()))
            except BaseException as error:  # noqa: BLE001 - handed to the step below
                fail(error)

        def await_ready(entry: tuple[dict, float]) -> None:
            instance, started_at = entry
            try:
                containers.wait_ready(self.client, ctx, spec, instance, cancel=failed, remote=self.engine.remote,
                                      started_at=started_at)
            except BaseException as error:  # noqa: BLE001 - handed to the step below
                fail(error)

        if indexes:
            with ThreadPoolExecutor(max_workers=min(INSTANCE_PARALLELISM, len(indexes)),
                                    thread_name_prefix="instance") as pool:
                list(pool.map(start, indexes))
                if not failed.is_set():
                    with ctx.waiting():
                        list(pool.map(await_ready, list(started)))
        instances.extend(instance for instance, _ in sorted(started, key=lambda entry: entry[0]["instance"]))
        if failures:
            error = failures[0]
            if not isinstance(error, DriverError):
                raise error
            # Tainted, so the next apply replaces them; stopped meanwhile, not restart-looping.
            for instance, _ in started:
                containers.stop_failed(self.client, instance)
            raise StepFailed(error, _with_instances(record, instances, "tainted")) from error
        return _with_instances(record, instances, "ready")

    def _scale_deployment(self, record: StateRecord, ctx: StepContext) -> StateRecord:
        instances = sorted(record.outputs["instances"], key=lambda i: i["instance"])
        wanted = record.spec["instance_count"]
        if wanted > len(instances):
            next_index = max((i["instance"] for i in instances), default=-1) + 1
            return self._add_instances(record, ctx, range(next_index, next_index + wanted - len(instances)))
        kept = _with_instances(record, instances[:wanted], "ready")
        self._stop_routing_to_removed(kept, ctx)
        self._remove_containers([i["id"] for i in instances[wanted:]],
                                {i["id"] for i in instances[wanted:] if i.get("adopted")})
        return kept

    def _stop_routing_to_removed(self, kept: StateRecord, ctx: StepContext) -> None:
        """Before surplus instances go, the endpoint's gateway must stop sending them requests
        (the endpoint's own update step comes later and would be too late for in-flight ones)."""
        endpoint = ctx.records().get(endpoint_address(kept.spec['endpoint']))
        if endpoint is None or not endpoint.outputs.get("gateway"):
            return
        view = dataclasses.replace(ctx, records=lambda: {**ctx.records(), kept.address: kept})
        gateway.reload(self.client, view, endpoint.spec, endpoint.outputs)

    def _delete_deployment(self, record: StateRecord, ctx: StepContext) -> None:
        ids = {i["id"] for i in record.outputs.get("instances", [])}
        adopted = {i["id"] for i in record.outputs.get("instances", []) if i.get("adopted")}
        generation = record.driver_ids.get("generation")
        # Also whatever an interrupted apply started but never recorded.
        # sparse: a full list inspects each container, and a parallel step may be removing one.
        for container in self.client.containers.list(all=True, sparse=True,
                                                     filters=owned_filter(ctx, base_address(record.address))):
            if generation and (container.attrs.get("Labels") or {}).get(LABEL_GENERATION) == generation:
                ids.add(container.id)
        self._remove_containers(sorted(ids), adopted)
        stored = record.outputs.get("code_store_path")
        # A replacement with the same code shares the copy; it goes with the last one using it.
        if stored and not any(r.outputs.get("code_store_path") == stored and r is not record
                              and r.driver_ids.get("generation") != generation for r in ctx.records().values()):
            model_store.release(ctx.state_dir, ctx.identity, Path(stored))

    def _remove_containers(self, ids: list[str], adopted: set[str]) -> None:
        """Stop and remove instances all at once (each stop waits for its server to exit, up to
        STOP_TIMEOUT); every one is tried, and the first error is raised after."""
        if not ids:
            return
        def remove(container_id: str) -> BaseException | None:
            try:
                remove_container(self.client, container_id, containers.STOP_TIMEOUT, adopted=container_id in adopted)
            except Exception as error:  # noqa: BLE001 - raised below, once the others were tried
                return error
            return None
        with ThreadPoolExecutor(max_workers=min(INSTANCE_PARALLELISM, len(ids)), thread_name_prefix="remove") as pool:
            errors = [error for error in pool.map(remove, ids) if error is not None]
        if errors:
            raise errors[0]

    # -- reading (refresh: observe.py reads, fold.py folds) --------------------------------
    def read(self, state: StateFile, state_dir: Path | None) -> DockerObservation:
        return observe.read(self.client, self._inspector(), state, state_dir)

    def fold(self, state: StateFile, observation: DockerObservation) -> FoldResult:
        return docker_fold.fold(state, observation)

    def _inspector(self) -> observe.Inspector:
        if self._inspector_instance is None:
            self._inspector_instance = observe.Inspector(self.client)
        return self._inspector_instance

    # -- import and recover ------------------------------------------------------------------
    def list_managed(self, stack: str) -> list[Observed]:
        """One label-filtered list call (sparse: no per-container inspect), every identity."""
        return observe.list_managed(self.client, stack)

    def stack_objects(self, stack: str) -> list[tuple[str, dict]]:
        return [(o.driver_id, o.labels) for o in observe.list_managed(self.client, stack)]

    def inspect_container(self, reference: str) -> dict | None:
        return self._inspector().inspect(reference)

    def adopt(self, ctx: StepContext, info: dict) -> str | None:
        return adoption.connect_to_stack(self.client, ctx, info)

    def stored_models(self, state_dir: Path, identity: str, digests: list[str]) -> dict[str, str | None]:
        return adoption.stored_models(state_dir, identity, digests)

    def recover_gateway(self, record: StateRecord, ctx: StepContext) -> tuple[StateRecord, str]:
        return adoption.recover_gateway(self.client, ctx, record)

    def runtime_status(self, state: StateFile, state_dir: Path) -> dict:
        return observe.runtime_status(self.client, state, state_dir)

    def logs(self, record: StateRecord, lines: int) -> list[tuple[str, str]]:
        if record.address.kind == "environment":
            return [(f"build of {record.spec['image']}", builds.read_log(record))]
        result = []
        # An endpoint's one container is its gateway; a deployment's are its instances.
        for instance in record.outputs.get("instances", []) or filter(None, [record.outputs.get("gateway")]):
            try:
                text = self.client.containers.get(instance["id"]).logs(tail=lines).decode("utf-8", "replace")
            except docker.errors.NotFound:
                text = "(container is gone; `reconciler plan` will show the drift)\n"
            result.append((instance["name"], text))
        return result


def _with_instances(record: StateRecord, instances: list[dict], status: str) -> StateRecord:
    instances = sorted(instances, key=lambda i: i["instance"])
    outputs = {**record.outputs, "instances": instances}
    if instances:
        outputs["scoring_uri"] = docker_fold.scoring_uri(record.spec, instances[0])
    driver_ids = {**record.driver_ids, "containers": [i["id"] for i in instances]}
    return dataclasses.replace(record, outputs=outputs, driver_ids=driver_ids, status=status)
