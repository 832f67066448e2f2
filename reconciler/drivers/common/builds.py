"""Builds an environment's image on the Docker Engine, and removes it again. Side effects only
(the engine, the build log file, reading the host's CA bundle); what is built and under which tag
was decided at plan time (config/environments.py). Both drivers use it: swarm builds on the
manager's engine, which is enough for a one-node swarm (more nodes need a registry, issue 18).

A tag that exists is reused (no build). A build streams the engine's classic-builder output:
"Step N/M" lines become progress messages, everything goes into the build log (bounded, in
the state directory, shown by `reconciler logs environment.NAME:VERSION`), and a failure is
explained from the log's last lines (no pip, no route to PyPI, a conda the image lacks).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import subprocess
import tarfile
import time
from collections import deque
from pathlib import Path

import docker
from docker.errors import APIError, BuildError, ImageNotFound

from reconciler.addresses import Address
from reconciler.config.environments import (CA_FILE, ERROR_MARKER, PYTHON_MARKER, USER_ARG, ContextError,
                                            context_files, copy_sources, is_url, source_paths)
from reconciler.drivers.base import StepContext
from reconciler.drivers.common.labels import LABEL_IDENTITY, LABEL_PREFIX, managed_labels
from reconciler.errors import DriverError
from reconciler.state.model import StateRecord

# Which base images (by id) an environment's image was built from.
LABEL_BASE_DIGEST = LABEL_PREFIX + "base-images"
BUILD_LOG_DIR = "builds"
MAX_LOG_BYTES = 256 * 1024
FAILURE_LINES = 15
GENERATED_DOCKERFILE = ".reconciler.Dockerfile"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_TIMEOUT_SECONDS = 1800


class EnvironmentBuildFailed(DriverError):
    """A build that failed; `log_path` keeps its output."""


def build_log_path(ctx: StepContext, address, spec: dict) -> Path:
    """One log per stack identity, environment and digest: a reused image keeps its own build's log."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(Address.parse(address).base))
    digest = spec["digest"].removeprefix("sha256:")[:12]
    return Path(ctx.state_dir) / BUILD_LOG_DIR / f"{(ctx.identity or 'none')[:8]}-{slug}-{digest}.log"


def host_ca_bundle() -> bytes:
    """The CA bundle pip on this host trusts: $RECONCILER_BUILD_CA, pip's `global.cert`, else the
    system bundle; b"" when there is none (the build then uses the image's own trust)."""
    candidates = [os.environ.get("RECONCILER_BUILD_CA", "")]
    try:
        configured = subprocess.run(["pip", "config", "get", "global.cert"], capture_output=True, text=True,
                                    timeout=20, check=False)
        candidates.append(configured.stdout.strip() if configured.returncode == 0 else "")
    except (OSError, subprocess.SubprocessError):
        pass
    candidates.append(str(SYSTEM_CA_BUNDLE))
    for candidate in filter(None, candidates):
        try:
            return Path(candidate).read_bytes()
        except OSError:
            continue
    return b""


def image_present(client: docker.DockerClient, tag: str):
    if not tag:
        return None
    try:
        return client.images.get(tag)
    except ImageNotFound:
        return None


def base_images(spec: dict) -> list[str]:
    """The images a build starts from (FROM scratch starts from none)."""
    bases = [spec["base_image"]] if spec.get("base_image") else list(spec.get("base_images", ()))
    return sorted(b for b in bases if b.lower() != "scratch")


def base_digest(client: docker.DockerClient, spec: dict) -> str:
    """Which images the build starts from, by id: a base rebuilt under the same tag (images/build.sh
    does that) is another base, which the digest tag, made from references at plan time, cannot see."""
    ids = []
    for reference in base_images(spec):
        image = image_present(client, reference)
        ids.append(f"{reference}={image.id if image is not None else 'missing'}")
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def observe_images(client: docker.DockerClient, state) -> dict:
    """For each environment record of `state`: None when the image its tag names is gone, else
    {"id", "stale"} (stale: built from other base images than the ones its references name now)."""
    found = {}
    for address, record in state.records.items():
        if address.kind == "environment" and not address.is_derived and record.status != "tainted":
            image = image_present(client, record.spec.get("image", ""))
            found[address] = None if image is None else {
                "id": image.id, "stale": _is_stale(client, image, record.spec)}
    return found


def _is_stale(client: docker.DockerClient, image, spec: dict) -> bool:
    built_from = (image.labels or {}).get(LABEL_BASE_DIGEST)
    return built_from is not None and built_from != base_digest(client, spec)


def build(client: docker.DockerClient, ctx: StepContext, record: StateRecord) -> StateRecord:
    """The environment's image, built unless its tag exists; the record with its outputs."""
    spec, address = record.spec, record.address
    log_path = build_log_path(ctx, address, spec)
    existing = image_present(client, spec["image"])
    bases = base_digest(client, spec)
    if existing is not None and not _is_stale(client, existing, spec):
        ours = (existing.labels or {}).get(LABEL_IDENTITY) == ctx.identity
        ctx.progress(f"{address}: image {spec['image']} exists, reused")
        return _with_outputs(record, existing, built=ours, log_path=log_path if log_path.exists() else None)
    if existing is not None:
        ctx.progress(f"{address}: its base image was rebuilt since {spec['image']} was built: building it again")
    context = _context_tar(ctx, spec)
    labels = {**managed_labels(ctx, address, record.spec_hash), LABEL_BASE_DIGEST: bases}
    log = _BoundedLog()
    started = time.monotonic()
    python = None
    try:
        stream = client.api.build(fileobj=context, custom_context=True, dockerfile=GENERATED_DOCKERFILE,
                                  tag=spec["image"], labels=labels, rm=True, forcerm=True, pull=False,
                                  decode=True, timeout=BUILD_TIMEOUT_SECONDS, buildargs=_build_args(client, spec))
        error = None
        for chunk in stream:
            text = chunk.get("stream") or ""
            if "error" in chunk:
                error = str(chunk["error"]).strip()
                log.add(error + "\n")
            log.add(text)
            for line in text.splitlines():
                step = re.match(r"Step (\d+)/(\d+) : (.*)", line)
                # The engine appends one LABEL step per label: ours, not the recipe's.
                total = int(step.group(2)) - len(labels) if step else 0
                if step and int(step.group(1)) <= total:
                    ctx.progress(f"{address}: build step {step.group(1)}/{total} "
                                 f"[{int(time.monotonic() - started)}s elapsed]: {step.group(3)[:100]}")
                if line.startswith(PYTHON_MARKER) and python is None:
                    python = line.removeprefix(PYTHON_MARKER).strip()
                    warning = python_warning(spec.get("python"), python)
                    if warning:
                        ctx.progress(f"{address}: Warning: {warning}")
    except (APIError, BuildError, docker.errors.DockerException, OSError) as failure:
        error = str(getattr(failure, "explanation", None) or failure)
        log.add(error + "\n")
    log.write(log_path)
    if error is not None:
        failed = StateRecord(address, record.driver, spec, record.spec_hash, status="tainted",
                             outputs={"image": spec["image"], "build_log": str(log_path)})
        raise _failure(spec, error, log, log_path, failed)
    return _with_outputs(record, client.images.get(spec["image"]), built=True, log_path=log_path, python=python)


def _build_args(client: docker.DockerClient, spec: dict) -> dict:
    if spec["recipe"] != "conda":
        return {}
    user = (client.images.get(spec["base_image"]).attrs.get("Config") or {}).get("User") or "0:0"
    return {USER_ARG: user}


def _with_outputs(record: StateRecord, image, built: bool, log_path: Path | None,
                  python: str | None = None) -> StateRecord:
    outputs = {"image": record.spec["image"], "image_id": image.id, "built_here": built,
               "size_bytes": int(image.attrs.get("Size") or 0)}
    if log_path is not None:
        outputs["build_log"] = str(log_path)
    if python:
        outputs["python"] = python
    return dataclasses.replace(record, outputs=outputs, driver_ids={"image": image.id}, status="ready")


def python_warning(requested: str | None, found: str | None) -> str | None:
    """What differs between the Python a conda file asks for and the image's. Pure."""
    if not requested or not found:
        return None
    wanted = requested.split(".")
    if found.split(".")[:len(wanted)] == wanted:
        return None
    minor = ".".join(found.split(".")[:2])
    return f"conda file asks python={requested}, image has {found}; packages are installed for {minor}"


def remove(client: docker.DockerClient, ctx: StepContext, record: StateRecord) -> None:
    """Remove the record's image if this stack built it and no other record of the state uses it:
    by tag, or by id when the tag names another image now (rebuilt from a new base)."""
    tag = record.spec.get("image") or record.outputs.get("image")
    recorded_id = record.driver_ids.get("image")
    current = image_present(client, tag)
    target, image = tag, current
    if recorded_id and current is not None and current.id != recorded_id:
        target, image = recorded_id, image_present(client, recorded_id)
    elif [a for a, r in ctx.records().items() if a != record.address and
          (r.spec.get("image") == tag or r.outputs.get("image") == tag)]:
        return
    if not tag:
        return
    if record.outputs.get("build_log") and target == tag:
        Path(record.outputs["build_log"]).unlink(missing_ok=True)
    if image is None or (image.labels or {}).get(LABEL_IDENTITY) != ctx.identity:
        return  # gone, or built by another stack (which reused-or-built it and removes it itself)
    try:
        client.images.remove(target, noprune=False)
    except APIError as error:
        if error.status_code == 409:
            # Still used by a container of another stack that reused it: it stays.
            ctx.progress(f"{record.address}: image {tag} is still used by a container; left in place")
            return
        raise DriverError(f"cannot remove image {tag}: {error.explanation or error}",
                          "remove it by hand (`docker image rm`) once nothing uses it") from error


def read_log(record: StateRecord) -> str:
    path = record.outputs.get("build_log")
    if not path:
        return "(no build log: the image was found and reused, never built by this stack)\n"
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(build log {path} is gone)\n"


# -- the build context -----------------------------------------------------------------------------
def _context_tar(ctx: StepContext, spec: dict) -> io.BytesIO:
    """The build context as the spec names it: generated files for a conda build, the Dockerfile
    and what its COPY/ADD lines name for a Dockerfile build."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_bytes(tar, GENERATED_DOCKERFILE, spec["dockerfile"].encode())
        if spec["recipe"] == "conda":
            _add_bytes(tar, "conda.yaml", spec["conda_content"].encode())
            for layer in ("conda_requirements", "pip_requirements"):
                _add_bytes(tar, layer.replace("_", "-") + ".txt", "".join(f"{r}\n" for r in spec[layer]).encode())
            _add_bytes(tar, "install.sh", spec["install_script"].encode())
            _add_bytes(tar, CA_FILE, host_ca_bundle())
        else:
            context = Path(ctx.stack_dir) / spec["context"]
            try:
                now = context_files(context, copy_sources(spec["dockerfile"]), Path(ctx.stack_dir))
            except ContextError as error:
                raise DriverError(f"the build context of {spec['image']} changed since the plan was made: {error}",
                                  "run `reconciler plan` again") from error
            if now != spec["context_files"]:
                changed = sorted(k for k in now.keys() | spec["context_files"].keys()
                                 if now.get(k) != spec["context_files"].get(k))
                raise DriverError(f"the build context of {spec['image']} changed since the plan was made "
                                  f"({', '.join(changed)})", "run `reconciler plan` again")
            for source in (s for s in spec["context_files"] if not is_url(s)):
                for match in source_paths(context, source):
                    tar.add(str(match), arcname=match.resolve().relative_to(context.resolve()).as_posix() or ".")
    buffer.seek(0)
    return buffer


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


class _BoundedLog:
    """The build's output, at most MAX_LOG_BYTES: the newest lines kept, a note where lines were cut."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()
        self.size = 0
        self.cut = False

    def add(self, text: str) -> None:
        for line in text.splitlines(keepends=True):
            self.lines.append(line)
            self.size += len(line)
        while self.size > MAX_LOG_BYTES and self.lines:
            self.size -= len(self.lines.popleft())
            self.cut = True

    def tail(self, count: int) -> list[str]:
        return [line.rstrip("\n") for line in list(self.lines)[-count:] if line.strip()]

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        head = "(earlier lines cut: the log keeps its last 256 KiB)\n" if self.cut else ""
        path.write_text(head + "".join(self.lines), encoding="utf-8")


def _failure(spec: dict, error: str, log: _BoundedLog, log_path: Path, record: StateRecord) -> EnvironmentBuildFailed:
    text = "".join(log.lines)
    last = "\n    ".join(log.tail(FAILURE_LINES))
    where = f"build log: {log_path} (`reconciler logs environment.{spec['name']}:{spec['version']}`)"
    summary, hint = explain_failure(spec, text, error)
    failure = EnvironmentBuildFailed(f"{summary}\n  last build lines:\n    {last}", f"{hint}; {where}")
    failure.record = record
    return failure


def explain_failure(spec: dict, text: str, error: str) -> tuple[str, str]:
    """(what failed, what to do) read from a failed build's output. Pure."""
    image = spec["image"]
    if re.search(r"conda: (command )?not found", text):
        return (f"building {image} failed: the base image has no conda, and the Dockerfile runs conda",
                "build FROM an image that has conda, or install the packages with pip (an environment with "
                "image: + conda_file: is installed with pip on an image without conda)")
    if f"{ERROR_MARKER}no-python" in text:
        return (f"building {image} failed: the image {spec.get('base_image')} has no python or python3",
                "give a base image with Python and pip (e.g. reconciler/azureml-inference-base:latest)")
    if f"{ERROR_MARKER}no-pip" in text:
        return (f"building {image} failed: the image {spec.get('base_image')} has Python but no pip",
                "give a base image with pip (e.g. reconciler/azureml-inference-base:latest)")
    if f"{ERROR_MARKER}pip-failed" in text or "pip install" in error:
        package = _failed_package(text)
        what = f" {package}" if package else " the requirements"
        no_route = re.search(r"CERTIFICATE_VERIFY_FAILED|Failed to establish a new connection|"
                             r"Temporary failure in name resolution|Network is unreachable|"
                             r"Max retries exceeded|ProxyError|timed out", text)
        if no_route:
            return (f"building {image} failed: pip found no route to a package index for{what} "
                    f"({no_route.group(0)})",
                    "builds reach PyPI through the host's CA bundle (RECONCILER_BUILD_CA, else `pip config get "
                    "global.cert`, else /etc/ssl/certs/ca-certificates.crt): point RECONCILER_BUILD_CA at the "
                    "bundle that trusts your proxy, or make PyPI reachable from containers")
        return (f"building {image} failed: pip could not install{what}",
                "check the package name and version pin in the conda file (pip names, as on PyPI)")
    step = re.findall(r"Step (\d+/\d+) : (.*)", text)
    at = f" at step {step[-1][0]} ({step[-1][1][:80]})" if step else ""
    return f"building {image} failed{at}: {error}", "fix the Dockerfile or the context and apply again"


def _failed_package(text: str) -> str | None:
    match = re.search(r"(?:No matching distribution found for|satisfies the requirement) (\S+)", text)
    return match.group(1) if match else None
