"""Builds the desired graph from validated documents: cross-document checks, defaults, specs.

Pure apart from fingerprinting model files (reads them). Everything the planner compares is
in `DesiredResource.spec`, normalised to what a driver will report back (no false drift).
"""
from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import re
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from reconciler.addresses import Address, deployment_address, endpoint_address, environment_address, model_address
from reconciler.config.image_reference import image_reference_problem
from reconciler.config.loader import Document
from reconciler.config.model_content import ModelPathError, fingerprint
from reconciler.config.conda import conda_file_problem, conda_only, parse_conda
from reconciler.config.environments import (MAX_DOCKERFILE_BYTES, ContextError, conda_environment_spec, context_files,
                                            copy_sources, dockerfile_environment_spec, map_dockerfile)
from reconciler.config.image_map import substitute
from reconciler.config.settings import BackendSettings, LoadOptions, StackSettings, read_settings
from reconciler.errors import Problem

AZUREML_APP_PATH = "/var/azureml-app"
DEFAULT_MODEL_MOUNT_BASE = f"{AZUREML_APP_PATH}/azureml-models"
# Azure ML gives a model or environment created without a version the next free one; locally
# there is no registry to count in, so the rule is fixed: version 1 (a second one of the same
# name and no version is a duplicate, and says so).
DEFAULT_ASSET_VERSION = "1"
# Azure ML's documented defaults for ProbeSettings and OnlineRequestSettings.
PROBE_DEFAULTS = {"initial_delay": 10, "period": 10, "timeout": 2, "failure_threshold": 30, "success_threshold": 1}
REQUEST_DEFAULTS = {"request_timeout_ms": 5000, "max_concurrent_requests_per_instance": 1, "max_queue_wait_ms": 500}
# Azure ML's inference server answers here when a deployment gives no inference_config.
DEFAULT_ROUTE = {"port": 5001, "path": "/score"}
DEFAULT_HEALTH_ROUTE = {"port": 5001, "path": "/"}
MAX_MIRROR_PERCENT = 50
# The default of each optional field of a deployment spec (planning/fields.py describes every
# field with these): what the spec holds when the YAML does not say, and what a record written
# before the field existed is taken to hold.
DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    "description": "",
    "tags": {},
    "model": None,
    # code_configuration: {path, content_digest, mount_path, scoring_script}.
    "code": None,
    "environment_variables": {},
    "routes": {"liveness": DEFAULT_HEALTH_ROUTE, "readiness": DEFAULT_HEALTH_ROUTE, "scoring": DEFAULT_ROUTE},
    "instance_type": "",
    "instance_count": 1,
    "request_settings": REQUEST_DEFAULTS,
    "liveness_probe": PROBE_DEFAULTS,
    "readiness_probe": PROBE_DEFAULTS,
    "app_insights_enabled": False,
    "command": None,
    "args": None,
    "memory": None,
    "restart_policy": "unless-stopped",
    "plain_environment_variables": [],
    # Hardening (docker driver): no published ports unless asked for debugging, and a read-only
    # root filesystem (a tmpfs on /tmp) unless the image needs to write elsewhere.
    "publish_ports": False,
    "read_only_root_filesystem": True,
}


@dataclass(frozen=True)
class EnvironmentOrigin:
    """Where an environment is defined: an environment document (path ()) or a deployment's
    inline `environment:` (path ("environment",)), and the name and version it has."""
    document: Document
    path: tuple
    name: str
    version: str


@dataclass(frozen=True)
class DesiredResource:
    address: Address
    spec: dict
    spec_hash: str
    depends_on: tuple[Address, ...]
    source: str
    # `file:line` of the image a deployment runs, or an environment builds from: where a
    # missing image is written, which may be another document (an azureml: environment).
    image_source: str = ""
    # `file:line` of a deployment's `code_configuration` (its scoring script), "" without one.
    code_source: str = ""

    def to_dict(self) -> dict:
        return {"address": str(self.address), "spec": self.spec, "spec_hash": self.spec_hash,
                "depends_on": [str(a) for a in self.depends_on], "source": self.source,
                **({"image_source": self.image_source} if self.image_source else {}),
                **({"code_source": self.code_source} if self.code_source else {})}


@dataclass(frozen=True)
class DesiredGraph:
    stack: str
    resources: dict[Address, DesiredResource]
    unsupported: tuple[Problem, ...] = field(default=())
    root: str = ""
    # From the stack settings document (`driver: swarm`); "" when the stack does not say.
    driver: str = ""
    # What is valid but probably not meant (an endpoint that sends no live traffic): validate
    # and plan print these; nothing refuses them.
    warnings: tuple[Problem, ...] = field(default=())
    # YAML files of the stack directory that hold no stack document (conda files, tool
    # configs, Azure ML documents of other kinds): loader.Ignored entries, for validate to list.
    ignored: tuple = field(default=())
    # "ADDRESS: FROM -> TO (rule)" for every image the image map replaced; plans show them.
    substitutions: tuple[str, ...] = field(default=())
    # Where the stack's state lives (`backend:` and `pg:` of the stack settings).
    backend: BackendSettings = BackendSettings()

    @property
    def digest(self) -> str:
        """Identifies this exact configuration; a saved plan remembers it."""
        return spec_hash({str(a): r.spec_hash for a, r in sorted(self.resources.items())})

    def by_kind(self, kind: str) -> list[DesiredResource]:
        return [r for a, r in sorted(self.resources.items()) if a.kind == kind]


def spec_hash(spec: Any) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _resource(address: Address, spec: dict, depends_on, document: Document, path=(),
              image_source: str = "", code_source: str = "") -> DesiredResource:
    return DesiredResource(address, spec, spec_hash(spec), tuple(sorted(set(depends_on))),
                           document.where(path), image_source, code_source)


def image_source(document: Document, path: tuple, environment: dict) -> str:
    """`file:line` of an environment's `image:` (its `build:` when it has no image) under
    `path` of `document`: a deployment's inline `environment`, or an environment document (pure)."""
    key = "image" if environment.get("image") or not environment.get("build") else "build"
    return document.where((*path, key))


def asset_key(reference: str, known) -> tuple[str, tuple[str, str] | None]:
    """The name an `azureml:NAME:VERSION` / `azureml:NAME@latest` reference asks for, and the
    (name, version) among `known` it resolves to (None: not there). `@latest` is the highest
    version: numeric ones by number, after them the others by text."""
    body = reference.removeprefix("azureml:")
    if body.endswith("@latest"):
        name = body.removesuffix("@latest")
        versions = sorted((v for (n, v) in known if n == name), key=_version_key)
        return name, ((name, versions[-1]) if versions else None)
    name, _, version = body.partition(":")
    return name, ((name, version) if (name, version) in known else None)


def _version_key(version: str):
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


class _GraphBuilder:
    def __init__(self, stack: str, stack_root: Path, invalid_names: frozenset,
                 settings: StackSettings = StackSettings()) -> None:
        self.settings = settings
        # Names declared by documents that failed schema checks: already reported, so
        # references to them must not be reported a second time as "not defined".
        self.invalid_names = set(invalid_names)
        self.stack = stack
        self.stack_root = stack_root
        self.problems: list[Problem] = []
        self.unsupported: list[Problem] = []
        self.warnings: list[Problem] = []
        self.substitutions: list[str] = []
        self.resources: dict[Address, DesiredResource] = {}
        self.models: dict[tuple[str, str], tuple[Document, tuple, dict]] = {}
        self.environments: dict[tuple[str, str], Document] = {}
        # endpoint name -> its deployments; scanning every resource per endpoint is O(N^2).
        self.deployments_of: dict[str, list[Address]] = {}

    # -- models ---------------------------------------------------------------------------
    def add_model(self, document: Document, path: tuple, data: dict, name: str, version: str) -> Address | None:
        key = (name, version)
        address = model_address(name, version)
        model_path = data.get("path") or data.get("local_path")
        path_key = "path" if "path" in data else "local_path"
        resolved = (document.directory / model_path)
        if key in self.models:
            other_document, other_path, other_data = self.models[key]
            other_resolved = other_document.directory / (other_data.get("path") or other_data.get("local_path"))
            if path == () and other_path == ():
                self.problems.append(document.problem(
                    ("name",), f"model {name}:{version} is defined twice",
                    f"the other definition is at {other_document.file}:{other_document.line_of(('name',))}; "
                    "remove one or give it a new version"))
            elif other_resolved.resolve() != resolved.resolve():
                self.problems.append(document.problem(
                    path + ("name",), f"model {name}:{version} is defined twice with different paths",
                    f"other definition at {other_document.file}:{other_document.line_of(other_path)}; "
                    "give one of them a new version"))
            return address
        self.models[key] = (document, path, data)
        try:
            content = fingerprint(resolved, self.stack_root)
        except ModelPathError as error:
            self.problems.append(document.problem(
                path + (path_key,), f"model path {model_path!r} {error}",
                f"resolved to {resolved}; model paths are relative to the YAML file and must stay inside "
                f"{self.stack_root} (to share a folder above the stack, name it as the root: `--root DIR` or "
                "`root:` in the stack settings)"))
            return None
        spec = {
            "name": name,
            "version": version,
            "type": data.get("type", "custom_model"),
            "description": data.get("description", ""),
            "tags": _plain_tags(data.get("tags", {})),
            "path": resolved.resolve().relative_to(self.stack_root.resolve()).as_posix(),
            "content_digest": content.digest,
            "files": content.files,
            "bytes": content.bytes,
        }
        self.resources[address] = _resource(address, spec, (), document, path)
        return address

    def resolve_model_reference(self, document: Document, reference: str) -> Address | None:
        if reference.startswith("azureml://"):
            self.problems.append(document.problem(
                ("model",), f"model {reference!r} is in an Azure ML registry or workspace, which a local "
                "engine cannot reach", "download its files (`az ml model download`), add a model YAML "
                "(name, version, path) to the stack and refer to it as azureml:NAME:VERSION"))
            return None
        name, key = asset_key(reference, self.models)
        if key is None:
            self._unknown_model(document, reference, name)
            return None
        return model_address(*key)

    # -- environments --------------------------------------------------------------------
    def add_environment(self, document: Document) -> None:
        data = document.data
        key = (str(data["name"]), str(data.get("version", DEFAULT_ASSET_VERSION)))
        if key in self.environments:
            first = self.environments[key]
            self.problems.append(document.problem(
                ("name",), f"environment {key[0]}:{key[1]} is defined twice",
                f"the first one is at {first.file}:{first.line_of(('name',))}; remove one or give it a new version"))
            return
        if not data.get("image") and not data.get("build"):
            self.problems.append(document.problem(
                (), f"environment {key[0]}:{key[1]} has neither image nor build",
                "give `image:` (a base image, with `conda_file:` for packages) or `build: {path: ...}`"))
        if data.get("image") and data.get("build"):
            self.problems.append(document.problem(
                ("build",), f"environment {key[0]}:{key[1]} has both image and build",
                "keep one: `image:` for a ready image, `build:` to build one from a Docker context"))
        self.environments[key] = document

    def resolve_environment(self, document: Document, reference: str) -> tuple[dict, "EnvironmentOrigin"] | None:
        """The environment an `azureml:NAME:VERSION` / `azureml:NAME@latest` reference names,
        as an inline environment, and where it is defined; None (reported) when the stack has
        no such document."""
        if reference.startswith("azureml://"):
            self.problems.append(document.problem(
                ("environment",), f"environment {reference!r} is in an Azure ML registry, which a local engine "
                "cannot reach", "define it in the stack: an environment YAML with its image (and conda_file), "
                "referred to as azureml:NAME:VERSION; curated environments name their image and conda file in "
                "the Azure ML docs"))
            return None
        name, key = asset_key(reference, self.environments)
        if key is None:
            known = sorted(f"azureml:{n}:{v}" for (n, v) in self.environments)
            curated = name.lower().startswith("azureml-")
            hint = ("curated environments live in Azure ML: define one in the stack instead (an environment "
                    "YAML with the curated environment's image and conda file, e.g. image: "
                    "mcr.microsoft.com/azureml/<image>:latest) and refer to it as azureml:NAME:VERSION") if curated \
                else (f"environments in this stack: {', '.join(known)}" if known else
                      f"add an environment YAML (name: {name}, version, image) to the stack")
            what = "a curated Azure ML environment, not defined in this stack" if curated else "not defined in this stack"
            self.problems.append(document.problem(("environment",), f"environment {reference!r} is {what}", hint))
            return None
        environment = self.environments[key]
        data = environment.data
        inline = {k: data[k] for k in ("image", "conda_file", "build", "inference_config") if k in data}
        if "conda_file" in inline:
            inline["conda_file"] = str((environment.directory / inline["conda_file"]))
        if isinstance(inline.get("build"), dict) and "path" in inline["build"]:
            inline["build"] = {**inline["build"], "path": str(environment.directory / inline["build"]["path"])}
        return inline, EnvironmentOrigin(environment, (), *key)

    def _unknown_model(self, document: Document, reference: str, name: str) -> None:
        if ("model", name) in self.invalid_names:
            return
        known = sorted(f"azureml:{n}:{v}" for (n, v) in self.models)
        hint = f"models in this stack: {', '.join(known)}" if known else \
            f"add a model YAML (name: {name}, version, path) to the stack"
        self.problems.append(document.problem(("model",), f"model {reference!r} is not defined in this stack", hint))

    # -- deployments ---------------------------------------------------------------------
    def add_deployment(self, document: Document, endpoints: dict[str, Document]) -> None:
        data = document.data
        name, endpoint = data["name"], data["endpoint_name"]
        address = deployment_address(endpoint, name)
        if address in self.resources:
            self.problems.append(document.problem(
                ("name",), f"deployment {name!r} of endpoint {endpoint!r} is defined twice",
                f"the first one is at {self.resources[address].source}; rename one of them"))
            return
        same_but_case = [a for a in self.deployments_of.get(endpoint, ()) if str(a).lower() == str(address).lower()]
        if same_but_case:
            # Azure ML names are case-insensitive, and so is the azureml-model-deployment header.
            other = self.resources[same_but_case[0]]
            self.problems.append(document.problem(
                ("name",), f"deployment {name!r} of endpoint {endpoint!r} differs from {other.spec['name']!r} "
                "only in case", f"the other one is at {other.source}; Azure ML names ignore case: rename one"))
            return
        if endpoint not in endpoints and ("endpoint", endpoint) not in self.invalid_names:
            self.problems.append(document.problem(
                ("endpoint_name",), f"endpoint {endpoint!r} is not defined in this stack",
                f"add an endpoint YAML with `name: {endpoint}` or fix endpoint_name"))
        model = self._deployment_model(document)
        if model is False:
            self.invalid_names.add(("deployment", f"{endpoint}/{name}"))
            return
        environment, origin = data["environment"], None
        if isinstance(environment, str):
            if environment.startswith("azureml:"):
                resolved = self.resolve_environment(document, environment)
                if resolved is None:
                    self.invalid_names.add(("deployment", f"{endpoint}/{name}"))
                    return
                environment, origin = resolved
            else:
                environment = {"image": environment}
        else:
            # Inline: named as Azure ML would register it, or after the deployment.
            origin = EnvironmentOrigin(document, ("environment",), str(environment.get("name", f"{endpoint}-{name}")),
                                       str(environment.get("version", DEFAULT_ASSET_VERSION)))
            if environment.get("image") and environment.get("build"):
                self.problems.append(document.problem(
                    ("environment", "build"), f"environment {origin.name}:{origin.version} has both image and build",
                    "keep one: `image:` for a ready image, `build:` to build one from a Docker context"))
        if not environment.get("image") and not environment.get("build"):
            self.invalid_names.add(("deployment", f"{endpoint}/{name}"))
            return  # reported where the environment is defined
        conda = environment.get("conda_file")
        conda_path = ("environment", "conda_file") if isinstance(data["environment"], dict) else ("environment",)
        conda_unusable = conda_file_problem(document.directory / conda, self.stack_root) if conda else None
        if conda_unusable:
            self.problems.append(document.problem(conda_path, f"conda file {conda!r} {conda_unusable}",
                                                  "point conda_file at the environment's conda YAML"))
        image = environment.get("image")
        if isinstance(image, str) and self.settings.images:
            mapped, rule = substitute(image, self.settings.images)
            if rule is not None and mapped != image:
                self.substitutions.append(f"{address}: {image} -> {mapped} ({rule.describe()})")
                environment = {**environment, "image": mapped}
                image = mapped
        why = image_reference_problem(image) if isinstance(image, str) and not image.startswith("azureml:") else None
        if why:
            self.problems.append(document.problem(
                ("environment", "image") if isinstance(data["environment"], dict) else ("environment",),
                f"image {image!r} {why}", "write an image reference Docker accepts, e.g. "
                "docker.io/tensorflow/serving:latest or myregistry.azurecr.io/team/model:1"))
        code = self._code(document) if "code_configuration" in data else None
        if code is False:
            self.invalid_names.add(("deployment", f"{endpoint}/{name}"))
            return
        depends = [model] if model else []
        # No origin: `environment: IMAGE`, whose line is that of `environment` itself.
        image_at = image_source(origin.document, origin.path, environment) if origin is not None else \
            image_source(document, ("environment",), environment)
        if origin is not None and (environment.get("build") or (conda and not conda_unusable)) and \
                not (environment.get("image") and environment.get("build")):
            built = self.add_built_environment(document, address, origin, environment)
            if built is None:
                self.invalid_names.add(("deployment", f"{endpoint}/{name}"))
                return
            environment = {**environment, "image": self.resources[built].spec["image"]}
            depends.append(built)
        elif conda or environment.get("build"):
            self.invalid_names.add(("deployment", f"{endpoint}/{name}"))
            return  # refused above
        self.resources[address] = _resource(
            address, self.deployment_spec(document, environment, model, code), depends, document,
            image_source=image_at, code_source=document.where(("code_configuration",)) if code else "")
        self.deployments_of.setdefault(endpoint, []).append(address)

    def add_built_environment(self, document: Document, deployment: Address, origin: "EnvironmentOrigin",
                              environment: dict) -> Address | None:
        """The environment resource an image must be built for (conda file or Dockerfile);
        None when its inputs are unusable (reported)."""
        address = environment_address(origin.name, origin.version)
        if environment.get("build"):
            spec = self._dockerfile_spec(document, deployment, origin, environment)
        else:
            spec = self._conda_spec(document, origin, environment)
        if spec is None:
            return None
        existing = self.resources.get(address)
        if existing is not None:
            if existing.spec["digest"] != spec["digest"]:
                self.problems.append(origin.document.problem(
                    origin.path + ("name",), f"environment {origin.name}:{origin.version} is defined twice, "
                    "with different contents",
                    f"the other one is at {existing.source}; give one a new name or version"))
                return None
            return address
        self.resources[address] = _resource(address, spec, (), origin.document, origin.path,
                                            image_source(origin.document, origin.path, environment))
        return address

    def _conda_spec(self, document: Document, origin: "EnvironmentOrigin", environment: dict) -> dict | None:
        conda_file = (document.directory / environment["conda_file"]).resolve()
        text = conda_file.read_text(encoding="utf-8")
        parsed = parse_conda(text)
        shown = str(document.directory / environment["conda_file"])
        refused = [Problem(shown, line, "dependencies", message,
                           "write the package under `pip:` or leave it out") for line, message in parsed.problems]
        for package in conda_only(parsed):
            refused.append(Problem(
                shown, package.line, "dependencies", f"conda package {package.spec!r} is only on conda channels, "
                "not on PyPI, and the image has no conda channel to get it from",
                "leave it out, since pip wheels bundle the libraries they need, or build from a Dockerfile on a "
                "base image that has it"))
        if refused:
            self.problems.extend(refused)
            return None
        return conda_environment_spec(origin.name, origin.version, environment["image"],
                                      conda_file.relative_to(self.stack_root.resolve()).as_posix(), text, parsed)

    def _dockerfile_spec(self, document: Document, deployment: Address, origin: "EnvironmentOrigin",
                         environment: dict) -> dict | None:
        build = environment["build"]
        where = origin.path + ("build",)
        # An environment document's build.path was made absolute by resolve_environment.
        context = document.directory / build["path"]
        dockerfile_path = build.get("dockerfile_path", "Dockerfile")
        dockerfile = context / dockerfile_path
        real = context.resolve()
        if not real.is_dir() or not real.is_relative_to(self.stack_root.resolve()):
            self.problems.append(origin.document.problem(
                where + ("path",), f"build context {build['path']!r} is not a folder inside {self.stack_root}",
                "build.path is the Docker context folder, relative to the YAML file that names it"))
            return None
        if not dockerfile.resolve().is_file() or dockerfile.stat().st_size > MAX_DOCKERFILE_BYTES or \
                not dockerfile.resolve().is_relative_to(self.stack_root.resolve()):
            self.problems.append(origin.document.problem(
                where + ("dockerfile_path",), f"Dockerfile {dockerfile_path!r} is not a file in the build context "
                f"{context}", "dockerfile_path is relative to build.path (default: Dockerfile)"))
            return None
        mapped = map_dockerfile(dockerfile.read_text(encoding="utf-8"), self.settings.images)
        for image, target, rule in mapped.substitutions:
            self.substitutions.append(f"{environment_address(origin.name, origin.version)}: FROM {image} -> "
                                      f"{target} ({rule})")
        try:
            files = context_files(context, copy_sources(mapped.text), self.stack_root)
        except ContextError as error:
            self.problems.append(Problem(str(dockerfile), error.line, "", str(error),
                                         "COPY and ADD sources are paths inside build.path"))
            return None
        return dockerfile_environment_spec(origin.name, origin.version,
                                           real.relative_to(self.stack_root.resolve()).as_posix(),
                                           dockerfile_path, mapped, files)

    def _deployment_model(self, document: Document):
        data = document.data
        model = data.get("model")
        if model is None:
            return None
        if isinstance(model, str):
            address = self.resolve_model_reference(document, model)
        else:
            name = str(model.get("name", f"{data['name']}-model"))
            version = str(model.get("version", "1"))
            address = self.add_model(document, ("model",), model, name, version)
        # A model whose files could not be read is already reported; the deployment waits for it.
        return address if address in self.resources else False

    def _code(self, document: Document) -> dict | None | bool:
        """The deployment's `code` spec: its code folder fingerprinted like a model (a change of
        content replaces the deployment) and where Azure ML puts it, /var/azureml-app/<folder>/.
        False when the folder or the scoring script is not there (reported)."""
        configuration = document.data["code_configuration"]
        where = ("code_configuration",)
        if "code" not in configuration or "scoring_script" not in configuration:
            missing = "code" if "code" not in configuration else "scoring_script"
            self.problems.append(document.problem(
                where, f"code_configuration has no {missing}",
                "give both: `code:` (the folder of the scoring code) and `scoring_script:` (the file in it "
                "that defines init() and run())"))
            return False
        folder = document.directory / configuration["code"]
        try:
            content = fingerprint(folder, self.stack_root) if folder.is_dir() or not folder.exists() else None
        except ModelPathError as error:
            self.problems.append(document.problem(
                where + ("code",), f"code folder {configuration['code']!r} {error}",
                f"resolved to {folder}; code paths are relative to the YAML file and must stay inside "
                f"{self.stack_root} (name a folder above the stack as the root: `--root DIR` or `root:` in the "
                "stack settings)"))
            return False
        if content is None:
            self.problems.append(document.problem(
                where + ("code",), f"code {configuration['code']!r} is a file, not a folder",
                "point code at the folder that holds the scoring script"))
            return False
        script = str(configuration["scoring_script"])
        script_path = folder / script
        inside = script_path.resolve().is_relative_to(folder.resolve())
        if not inside or not script_path.is_file():
            listing = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.py"))[:10]
            self.problems.append(document.problem(
                where + ("scoring_script",),
                f"scoring script {script!r} is not in the code folder {configuration['code']!r}" if inside else
                f"scoring script {script!r} leads out of the code folder {configuration['code']!r}",
                f"resolved to {script_path}; scoring_script is relative to the code folder" +
                (f" (Python files there: {', '.join(listing)})" if listing else "")))
            return False
        mount = f"{AZUREML_APP_PATH}/{folder.resolve().name}"
        return {"path": folder.resolve().relative_to(self.stack_root.resolve()).as_posix(),
                "content_digest": content.digest, "mount_path": mount,
                "scoring_script": PurePosixPath(script).as_posix()}

    def deployment_spec(self, document: Document, environment: dict, model: Address | None,
                        code: dict | None = None) -> dict:
        data = document.data
        routes = environment.get("inference_config") or {
            "liveness_route": DEFAULT_HEALTH_ROUTE, "readiness_route": DEFAULT_HEALTH_ROUTE,
            "scoring_route": DEFAULT_ROUTE}
        variables = {k: _env_value(v) for k, v in data.get("environment_variables", {}).items()}
        model_spec = None
        if model is not None:
            model_resource = self.resources[model]
            # As Azure ML mounts it: the model's folder (or file) appears inside the mount
            # directory, which is model_mount_path when given (the public Triton example sets
            # /models and serves its repository from there) and otherwise
            # /var/azureml-app/azureml-models/<name>/<version>.
            mount = data.get("model_mount_path") or \
                f"{DEFAULT_MODEL_MOUNT_BASE}/{model_resource.spec['name']}/{model_resource.spec['version']}"
            model_spec = {"address": str(model), "content_digest": model_resource.spec["content_digest"],
                          "mount_path": mount}
            variables.setdefault("AZUREML_MODEL_DIR", mount)
        if code is not None:
            for name, value in scoring_variables(code).items():
                variables.setdefault(name, value)
        local = data.get("local", {})
        default = DEPLOYMENT_DEFAULTS
        return {
            "endpoint": data["endpoint_name"],
            "name": data["name"],
            "description": data.get("description", default["description"]),
            "tags": _plain_tags(data.get("tags", default["tags"])),
            "image": environment["image"],
            "model": model_spec,
            "code": code,
            "environment_variables": dict(sorted(variables.items())),
            "routes": {kind.removesuffix("_route"): {"port": r["port"], "path": r["path"]}
                       for kind, r in sorted(routes.items())},
            "instance_type": data.get("instance_type", default["instance_type"]),
            "instance_count": data.get("instance_count", default["instance_count"]),
            "request_settings": {**default["request_settings"], **data.get("request_settings", {})},
            "liveness_probe": {**default["liveness_probe"], **data.get("liveness_probe", {})},
            "readiness_probe": {**default["readiness_probe"], **data.get("readiness_probe", {})},
            "app_insights_enabled": data.get("app_insights_enabled", default["app_insights_enabled"]),
            "command": local.get("command", default["command"]),
            "args": local.get("args", default["args"]),
            "memory": local.get("memory", default["memory"]),
            "restart_policy": local.get("restart_policy", default["restart_policy"]),
            "plain_environment_variables": [name for name in self.settings.plain_environment_variables
                                            if name in variables],
            "publish_ports": local.get("publish_ports", default["publish_ports"]),
            "read_only_root_filesystem": local.get("read_only_root_filesystem", default["read_only_root_filesystem"]),
        }

    # -- endpoints -----------------------------------------------------------------------
    def add_endpoint(self, document: Document) -> None:
        data = document.data
        name = data["name"]
        address = endpoint_address(name)
        deployments = sorted(self.deployments_of.get(name, ()))
        names = [self.resources[a].spec["name"] for a in deployments]
        traffic = self._traffic(document, "traffic", names)
        if "traffic" not in data and len(names) == 1:
            # Like `az ml online-deployment create --all-traffic` for the single-deployment how-to.
            traffic = {names[0]: 100}
        mirror = self._traffic(document, "mirror_traffic", names)
        if names and not any(traffic.values()):
            listing = ", ".join(names)
            self.warnings.append(document.problem(
                ("traffic",), f"endpoint {name!r} sends no live traffic to any of its deployments ({listing}): "
                "a scoring request without an azureml-model-deployment header reaches none of them",
                f"give traffic in the endpoint, e.g. `traffic: {{{names[0]}: 100}}` (as `az ml online-endpoint "
                "update --traffic` does)"))
        auth_mode = auth_mode_of(data.get("auth_mode", "key"))
        if auth_mode not in AUTH_MODES:
            self.problems.append(document.problem(
                ("auth_mode",), f"{data['auth_mode']!r} is not one of: {', '.join(AUTH_MODES)}",
                "use key (the gateway checks `Authorization: Bearer KEY`; see `reconciler endpoint keys`)"))
        elif auth_mode == "aad_token":
            # Microsoft Entra tokens name a tenant and an audience that only Azure can issue
            # and check; a local gateway has no sound meaning for them.
            self.unsupported.append(document.problem(
                ("auth_mode",), f"auth_mode {data['auth_mode']} (Microsoft Entra ID tokens) is not supported on a "
                "local engine", "use auth_mode: aml_token (short-lived tokens from `reconciler endpoint token`) "
                "or key (`reconciler endpoint keys`)"))
        self._check_split(document, traffic, mirror)
        spec = {
            "name": name,
            "auth_mode": auth_mode,
            "description": data.get("description", ""),
            "tags": _plain_tags(data.get("tags", {})),
            "traffic": traffic,
            "mirror_traffic": mirror,
            # Only when the stack settings say where it listens (`listen`, `tls`): an endpoint
            # they do not name keeps the spec it always had (127.0.0.1, a kept free port, http).
            **self.settings.endpoints.get(name, {}),
        }
        self.resources[address] = _resource(address, spec, deployments, document)

    def _traffic(self, document: Document, key: str, names: list[str]) -> dict[str, int]:
        split = document.data.get(key, {})
        endpoint = document.data["name"]
        for deployment in split:
            if deployment not in names and ("deployment", f"{endpoint}/{deployment}") not in self.invalid_names:
                hint = f"deployments of this endpoint: {', '.join(names)}" if names else \
                    "this endpoint has no deployments in the stack"
                self.problems.append(document.problem(
                    (key, deployment), f"{key} names deployment {deployment!r}, which is not defined", hint))
        return {k: v for k, v in sorted(split.items()) if v}

    def _check_split(self, document: Document, traffic: dict, mirror: dict) -> None:
        total = sum(traffic.values())
        if total not in (0, 100):
            self.problems.append(document.problem(
                ("traffic",), f"traffic adds up to {total}%, not 100%",
                "make the percentages add up to 100 (or all 0 to send no traffic)"))
        if sum(mirror.values()) > MAX_MIRROR_PERCENT:
            self.problems.append(document.problem(
                ("mirror_traffic",), f"mirror_traffic adds up to {sum(mirror.values())}%",
                f"mirror at most {MAX_MIRROR_PERCENT}% of requests, as Azure ML allows"))
        if len(mirror) > 1:
            self.problems.append(document.problem(
                ("mirror_traffic",), f"mirror_traffic names {len(mirror)} deployments ({', '.join(sorted(mirror))}): "
                "Azure ML mirrors to one deployment only", "keep one of them"))
        for deployment in mirror:
            if traffic.get(deployment):
                self.problems.append(document.problem(
                    ("mirror_traffic", deployment),
                    f"deployment {deployment!r} gets both live and mirrored traffic",
                    "a mirrored deployment must have 0% live traffic"))


AUTH_MODES = ("key", "aml_token", "aad_token")


def auth_mode_of(text: str) -> str:
    """auth_mode as the Azure ML SDK reads it: case-insensitive, camel case turned into snake
    case ("Key" and "KEY" -> key, "AMLToken" -> aml_token), as its StringTransformedEnum does."""
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", str(text)))
    return snake.lower()


def scoring_variables(code: dict) -> dict[str, str]:
    """What Azure ML's local endpoints set for a scoring script (azure-ai-ml's AzureMlImageContext):
    AML_APP_ROOT is the folder of the script inside the mounted code folder, with a trailing
    slash; AZUREML_ENTRY_SCRIPT the script's file name, which the inference server loads from there."""
    script = PurePosixPath(code["scoring_script"])
    return {"AML_APP_ROOT": posixpath.join(code["mount_path"] + "/", str(script.parent) if script.parent.name else ""),
            "AZUREML_ENTRY_SCRIPT": script.name}


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _plain_tags(tags: dict) -> dict[str, str]:
    return {str(k): _env_value(v) for k, v in sorted(tags.items())}


def paths_root(stack_dir: Path, option: Path | None, settings: StackSettings) -> tuple[Path, list[Problem]]:
    """The folder model and code paths may lead into: `--root`, else the settings' `root`,
    else the stack directory itself. It must contain the stack directory."""
    stack_dir = stack_dir.resolve()
    root = option.resolve() if option is not None else settings.root or stack_dir
    if stack_dir.is_relative_to(root):
        return root, []
    where = "--root" if option is not None else "root"
    problem = Problem(str(stack_dir), 0, "", f"{where} {root} does not contain the stack directory",
                      "name a folder above the stack directory (paths may lead out of the stack only into it)")
    if option is None and settings.root_source:
        document, path = settings.root_source
        problem = document.problem(path, f"root {root} does not contain the stack directory {stack_dir}",
                                   "name a folder above the stack directory, relative to this file (e.g. ../..)")
    return stack_dir, [problem]


def declared_name(document: Document) -> tuple[str, str] | None:
    """What a document, valid or not, says it defines; used to avoid knock-on errors."""
    data = document.data
    if not isinstance(data.get("name"), str):
        return None
    if document.kind == "deployment":
        return ("deployment", f"{data.get('endpoint_name')}/{data['name']}")
    return (document.kind, data["name"])


def build_graph(stack: str, stack_root: Path, documents: list[Document],
                invalid: list[Document] = (), options: LoadOptions = LoadOptions()) -> tuple[DesiredGraph, list[Problem]]:
    """Schema-valid documents -> DesiredGraph plus every cross-document problem.
    `stack_root` is the stack directory; paths may lead out of it only into the root the
    command line or the stack settings name."""
    settings, settings_problems = read_settings([d for d in documents if d.kind == "stack"])
    root, root_problems = paths_root(stack_root, options.root, settings)
    settings_problems += root_problems
    settings = dataclasses.replace(settings, images=options.images + settings.images + options.machine_images)
    builder = _GraphBuilder(stack, root, frozenset(filter(None, map(declared_name, invalid))), settings)
    endpoints: dict[str, Document] = {}
    for document in documents:
        if document.kind == "model":
            builder.add_model(document, (), document.data, str(document.data["name"]),
                              str(document.data.get("version", DEFAULT_ASSET_VERSION)))
        elif document.kind == "environment":
            builder.add_environment(document)
        elif document.kind == "endpoint":
            name = document.data["name"]
            same_but_case = next((other for other in endpoints if other.lower() == name.lower()), None)
            if name in endpoints:
                first = endpoints[name]
                builder.problems.append(document.problem(
                    ("name",), f"endpoint {name!r} is defined twice",
                    f"the first one is at {first.file}:{first.line_of(('name',))}; remove or rename one"))
            elif same_but_case is not None:
                first = endpoints[same_but_case]
                builder.problems.append(document.problem(
                    ("name",), f"endpoint {name!r} differs from {same_but_case!r} only in case",
                    f"the other one is at {first.file}:{first.line_of(('name',))}; Azure ML names ignore case: "
                    "rename one"))
            else:
                endpoints[name] = document
    for document in documents:
        if document.kind == "deployment":
            builder.add_deployment(document, endpoints)
    for document in endpoints.values():
        builder.add_endpoint(document)
    for name, (document, path) in sorted(settings.endpoint_sources.items()):
        if name not in endpoints:
            settings_problems.append(document.problem(path, f"settings name endpoint {name!r}, which is not defined",
                                                      "endpoints: takes the names of the stack's endpoints"))
    graph = DesiredGraph(stack, dict(sorted(builder.resources.items())), tuple(sorted(builder.unsupported)),
                         str(root), settings.driver, tuple(sorted(builder.warnings)),
                         substitutions=tuple(builder.substitutions), backend=settings.backend)
    return graph, builder.problems + settings_problems
