"""Environments that need an image built: what goes into the build, and the tag it gets. Pure
apart from reading the conda file, the Dockerfile and the build context (fingerprinted as models
are, config/model_content.py).

Two recipes:
  conda       `image:` + `conda_file:`. The generated Dockerfile copies the conda file, the pip
              requirements translated from it (config/conda.py) and an install script into the
              build, and the script decides at build time: an image with conda gets
              `conda env create` (as Azure ML builds it, into /azureml-envs/reconciler, first on
              PATH); an image without conda gets two `pip install -r` layers (the conda
              packages, then the `pip:` section), after printing the image's Python version for
              the driver to compare with the request.
  dockerfile  `build: {path, dockerfile_path}`. The Dockerfile's FROM lines get the stack's image
              map; the context sent to the engine is the Dockerfile plus exactly what its COPY
              and ADD lines name, which is also what the digest covers (so editing a deployment
              YAML beside the Dockerfile rebuilds nothing).

The tag is `reconciler/env-NAME:VERSION-DIGEST12`, DIGEST a sha256 of every input (base image
reference after the image map, conda file, requirements, generated or mapped Dockerfile and
install script, context files), so it is known at plan time: a deployment runs the tag, and a
changed input is a new tag, which replaces the deployment.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from reconciler.config.conda import CondaFile, conda_requirements
from reconciler.config.image_map import substitute
from reconciler.config.model_content import ModelPathError, fingerprint

# Part of every digest: a change to the recipes below rebuilds every environment.
RECIPE_VERSION = "1"
BUILD_DIR = "/tmp/reconciler-build"
CONDA_PREFIX = "/azureml-envs/reconciler"
# The CA bundle file the driver adds to a conda build's context (config decides its name only).
CA_FILE = "ca.crt"
IMAGE_REPOSITORY_PREFIX = "reconciler/env-"
# Lines the install script prints for the driver to read back from the build log.
PYTHON_MARKER = "reconciler-python: "
ERROR_MARKER = "reconciler-error: "
MAX_DOCKERFILE_BYTES = 256 * 1024


def image_tag(name: str, version: str, digest: str) -> str:
    """`reconciler/env-NAME:VERSION-DIGEST12`; NAME lowercased into Docker's repository grammar."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "environment"
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", version)[:100]
    return f"{IMAGE_REPOSITORY_PREFIX}{slug}:{tag}-{digest.removeprefix('sha256:')[:12]}"


def inputs_digest(inputs: dict) -> str:
    canonical = json.dumps({"recipe": RECIPE_VERSION, **inputs}, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# -- conda recipe ----------------------------------------------------------------------------------
# The build arg the driver sets to the base image's USER: the build files must belong to whoever
# the RUN step runs as (Azure ML's images run as dockeruser), so that it can remove them again.
USER_ARG = "RECONCILER_BUILD_USER"


def conda_dockerfile(base_image: str) -> str:
    """Two install layers, the conda packages first and the `pip:` section after, each with only
    its own inputs copied before it: a change to the pip section (the usual small change) rebuilds
    from Docker's layer cache of the conda packages. The CA bundle is a layer of its own before them."""
    chown = f"--chown=${{{USER_ARG}}}"
    return (f"FROM {base_image}\n"
            f"ARG {USER_ARG}=0:0\n"
            f"COPY {chown} {CA_FILE} {BUILD_DIR}/{CA_FILE}\n"
            f"COPY {chown} install.sh conda-requirements.txt {BUILD_DIR}/\n"
            f"RUN sh {BUILD_DIR}/install.sh conda-requirements.txt\n"
            f"COPY {chown} conda.yaml pip-requirements.txt {BUILD_DIR}/\n"
            f"RUN sh {BUILD_DIR}/install.sh pip-requirements.txt && rm -rf {BUILD_DIR}\n"
            f"ENV PATH={CONDA_PREFIX}/bin:$PATH\n")


def install_script() -> str:
    """Runs in the build, once per install layer (its argument: the requirements file). The host's
    CA bundle is given to pip for the step only (PIP_CERT in the step's environment, the file
    removed with the build directory): containers reach PyPI here only through a TLS-intercepting
    proxy whose CA the host trusts. In an image with conda the whole conda file is created in the
    second layer, as Azure ML creates it."""
    return f"""set -eu
cd {BUILD_DIR}
if command -v conda >/dev/null 2>&1; then
  if [ "$1" = conda-requirements.txt ]; then exit 0; fi
  echo "reconciler: the image has conda: conda env create -p {CONDA_PREFIX}"
  conda env create -p {CONDA_PREFIX} -f conda.yaml
  exit 0
fi
PY=$(command -v python || command -v python3 || true)
if [ -z "$PY" ]; then echo "{ERROR_MARKER}no-python"; exit 1; fi
echo "{PYTHON_MARKER}$($PY -c 'import platform; print(platform.python_version())')"
if ! $PY -m pip --version >/dev/null 2>&1; then echo "{ERROR_MARKER}no-pip"; exit 1; fi
if [ -s {CA_FILE} ]; then export PIP_CERT={BUILD_DIR}/{CA_FILE}; fi
if [ ! -s "$1" ]; then echo "reconciler: nothing to install from $1"; exit 0; fi
if ! $PY -m pip install --no-cache-dir --disable-pip-version-check --no-input --retries 1 --timeout 20 \\
    -r "$1"; then
  echo "{ERROR_MARKER}pip-failed"; exit 1
fi
"""


def conda_environment_spec(name: str, version: str, base_image: str, conda_file: str, conda_text: str,
                           conda: CondaFile) -> dict:
    """The spec of an `image:` + `conda_file:` environment; `conda_file` is its path under the root."""
    from_conda, from_pip = conda_requirements(conda), [spec for spec, _ in conda.pip]
    dockerfile, script = conda_dockerfile(base_image), install_script()
    digest = inputs_digest({"base_image": base_image, "conda": conda_text, "conda_requirements": from_conda,
                            "pip_requirements": from_pip, "dockerfile": dockerfile, "script": script})
    return {"name": name, "version": version, "recipe": "conda", "base_image": base_image,
            "conda_file": conda_file, "conda_content": conda_text, "python": conda.python,
            "conda_requirements": from_conda, "pip_requirements": from_pip, "dockerfile": dockerfile,
            "install_script": script, "digest": digest, "image": image_tag(name, version, digest)}


# -- dockerfile recipe -----------------------------------------------------------------------------
_FROM = re.compile(r"^(\s*FROM\s+)((?:--\S+\s+)*)(\S+)(.*)$", re.IGNORECASE)
_COPY = re.compile(r"^\s*(COPY|ADD)\s+(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class MappedDockerfile:
    text: str
    substitutions: tuple[tuple[str, str, str], ...]  # (from, to, rule)
    bases: tuple[str, ...]  # every FROM image (after the map) that is not an earlier stage


def map_dockerfile(text: str, rules) -> MappedDockerfile:
    """The Dockerfile with the image map applied to its FROM lines (stage names left alone)."""
    stages: set[str] = set()
    lines, substitutions, bases = [], [], []
    for line in text.splitlines():
        match = _FROM.match(line)
        if match:
            lead, flags, image, rest = match.groups()
            alias = re.match(r"\s+AS\s+(\S+)", rest, re.IGNORECASE)
            if image.lower() not in stages and "$" not in image:
                mapped, rule = substitute(image, rules)
                if rule is not None and mapped != image:
                    substitutions.append((image, mapped, rule.describe()))
                    line = f"{lead}{flags}{mapped}{rest}"
                bases.append(mapped)
            if alias:
                stages.add(alias.group(1).lower())
        lines.append(line)
    return MappedDockerfile("\n".join(lines) + "\n", tuple(substitutions), tuple(dict.fromkeys(bases)))


def copy_sources(text: str) -> list[tuple[str, int]]:
    """(source, line) of every COPY/ADD source from the build context (`--from=` copies are not)."""
    found = []
    logical, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not logical:
            start = number
        if raw.rstrip().endswith("\\"):
            logical += raw.rstrip()[:-1] + " "
            continue
        logical += raw
        match = _COPY.match(logical)
        logical = ""
        if not match:
            continue
        body = match.group(2).strip()
        if body.startswith("["):
            try:
                args = [str(a) for a in json.loads(body)]
            except ValueError:
                args = body.split()
        else:
            args = body.split()
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        paths = [a for a in args if not a.startswith("--")]
        found += [(source, start) for source in paths[:-1]]
    return found


class ContextError(ValueError):
    """A COPY/ADD source that is not in the build context: (line, message)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def is_url(source: str) -> bool:
    return re.match(r"^[a-z]+://", source) is not None


def source_paths(context: Path, source: str) -> list[Path]:
    """What a COPY/ADD source names in the context: its matches when it is a pattern."""
    pattern = source.lstrip("/")
    return sorted(context.glob(pattern)) if any(c in source for c in "*?[") else [context / pattern]


def context_files(context: Path, sources: list[tuple[str, int]], root: Path) -> dict[str, str]:
    """{source as written: digest of what it names} for the build context; URLs by their text."""
    digests: dict[str, str] = {}
    for source, line in sources:
        if is_url(source):
            digests[source] = "url"
            continue
        matches = source_paths(context, source)
        if not matches or not all(m.exists() for m in matches):
            raise ContextError(line, f"COPY/ADD source {source!r} is not in the build context {context}")
        parts = []
        for match in matches:
            if not match.resolve().is_relative_to(context.resolve()):
                raise ContextError(line, f"COPY/ADD source {source!r} leads out of the build context")
            try:
                parts.append([match.resolve().relative_to(context.resolve()).as_posix(),
                              fingerprint(match, root).digest])
            except ModelPathError as error:
                raise ContextError(line, f"COPY/ADD source {source!r} {error}") from error
        digests[source] = inputs_digest({"files": parts})
    return dict(sorted(digests.items()))


def dockerfile_environment_spec(name: str, version: str, context_dir: str, dockerfile_path: str,
                                mapped: MappedDockerfile, files: dict[str, str]) -> dict:
    """The spec of a `build:` environment; `context_dir` is its folder under the root."""
    digest = inputs_digest({"dockerfile": mapped.text, "context": files})
    return {"name": name, "version": version, "recipe": "dockerfile", "base_images": list(mapped.bases),
            "context": context_dir, "dockerfile_path": dockerfile_path, "dockerfile": mapped.text,
            "context_files": files, "digest": digest, "image": image_tag(name, version, digest)}
