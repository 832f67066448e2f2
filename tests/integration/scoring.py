"""Scoring-script stacks of the public Azure ML examples on the real engine (issue 14): the
example tree copied, a stack assembled as its deploy script does, with its environments built
by reconciler on the local inference base (the image map), or, where a test needs other
packages than the conda file resolves to with pip, an image built by the test (pip through
the machine's route to PyPI, as the inference base is set up for; Docker's build cache keeps
them across sessions).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness import StackRun

REPO = Path(__file__).resolve().parents[2]
INFERENCE_BASE = "reconciler/azureml-inference-base:latest"
# What the quickstart's conda files (model-1, model-2) and the inference-schema / binary-payload
# examples' conda files ask for, in one image, with the versions the quickstart pins.
SCORING_PACKAGES = ("numpy==2.3.1", "scikit-learn==1.7.0", "scipy==1.16.0", "joblib", "pandas",
                    "inference-schema[numpy-support,pandas-support]", "pillow")
BUILD_TIMEOUT = 1200


def corpus_or_skip() -> Path:
    """cli/endpoints/online/ of the corpus beside the repository (or its worktree's parent), or
    where $RECONCILER_CORPUS says, as the conformance suite finds it."""
    candidates = [Path(os.environ["RECONCILER_CORPUS"])] if os.environ.get("RECONCILER_CORPUS") else []
    candidates += [parent / "shared" / "corpus" / "azureml-examples" for parent in REPO.parents]
    found = next((c / "cli" / "endpoints" / "online" for c in candidates
                  if (c / "cli" / "endpoints" / "online").is_dir()), None)
    if found is None:
        pytest.skip("no Azure ML examples corpus (../shared/corpus/azureml-examples)")
    return found


def inference_base_or_skip(client) -> str:
    import docker
    try:
        client.images.get(INFERENCE_BASE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"image {INFERENCE_BASE} missing: run images/build.sh")
    return INFERENCE_BASE


def build_image(client, dockerfile: str, files: dict[str, bytes] | None = None, name: str = "scoring") -> str:
    """Build `dockerfile` (with `files` in its context) as reconciler/test-<name>:<digest of both>;
    an image of that tag is reused. Returns the tag."""
    files = files or {}
    digest = hashlib.sha256(json.dumps([dockerfile, sorted((k, hashlib.sha256(v).hexdigest())
                                                           for k, v in files.items())]).encode()).hexdigest()[:12]
    tag = f"reconciler/test-{name}:{digest}"
    try:
        client.images.get(tag)
        return tag
    except Exception:  # noqa: BLE001 - not there: build it
        pass
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for path, data in {"Dockerfile": dockerfile.encode(), **files}.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    result = subprocess.run(["docker", "build", "-q", "--force-rm", "-t", tag, "-"], input=context.getvalue(),
                            capture_output=True, timeout=BUILD_TIMEOUT)
    if result.returncode != 0:
        raise AssertionError(f"docker build of {tag} failed:\n{result.stderr.decode()[-3000:]}")
    return tag


def scoring_image(client) -> str:
    """The inference base plus the examples' packages: what the environments' builds make."""
    base = inference_base_or_skip(client)
    return build_image(client, f"FROM {base}\nRUN pip install -q {' '.join(SCORING_PACKAGES)}\n")


class ExampleStack(StackRun):
    """A stack of documents copied from an example's folder into a copy of the `online/` tree (the
    root), as the deploy scripts assemble it; other files of the folder are the test's to copy."""

    def __init__(self, tmp_path: Path, client, folder: str, documents: list[str], assets: bool = False,
                 fill: dict[str, str] | None = None) -> None:
        self.name = f"it-{secrets.token_hex(3)}"
        self.online = tmp_path / "online"
        if not self.online.exists():
            shutil.copytree(corpus_or_skip(), self.online, ignore=shutil.ignore_patterns(".git"))
        # Beside the example's folder, at its depth: its `../../model-1/...` paths lead where they
        # lead in the corpus.
        self.dir = self.online / Path(folder).parent / self.name
        self.dir.mkdir()
        if assets:  # the folder's other files (code, models, sample inputs), not its documents
            for item in sorted((self.online / folder).iterdir()):
                if item.is_dir():
                    shutil.copytree(item, self.dir / item.name)
                elif item.suffix not in (".yml", ".yaml") or item.name in ("env.yml",):
                    shutil.copy2(item, self.dir / item.name)
        for document in documents:
            text = (self.online / folder / document).read_text()
            for placeholder, value in (fill or {}).items():
                text = text.replace(placeholder, value)
            (self.dir / Path(document).name).write_text(text)
        (self.dir / "reconciler.yml").write_text(f"root: {os.path.relpath(self.online, self.dir)}\n")
        self.state = tmp_path / "state" / f"{self.name}.json"
        self.client = client
        from click.testing import CliRunner
        self.runner = CliRunner()

    def invoke(self, endpoint: str, request_file: Path, *extra: str) -> tuple[int, str]:
        result = self.run("invoke", endpoint, "--request-file", str(request_file), "--state", str(self.state), *extra)
        return result.exit_code, result.output


def map_azureml_images(stack: "ExampleStack") -> None:
    """The stack's image map puts the local inference base where the examples name Azure ML's
    (their environments' `image:` under a conda file, their Dockerfiles' FROM)."""
    settings = stack.dir / "reconciler.yml"
    settings.write_text(settings.read_text() + f"images:\n  - name: mcr.microsoft.com/azureml/*\n"
                        f"    newName: {INFERENCE_BASE.rsplit(':', 1)[0]}\n    newTag: {INFERENCE_BASE.rsplit(':', 1)[1]}\n")


def with_image(path: Path, image: str) -> None:
    """The deployment's environment replaced by a ready image (keeping its inference_config):
    what the environment's build makes, built beforehand by the test."""
    text = path.read_text()
    block = re.search(r"(?m)^environment:[ \t]*\n((?:[ \t]+.*\n?)+)", text)
    assert block, f"no environment block in {path}"
    kept = re.search(r"(?m)^([ \t]+)inference_config:.*\n(?:\1[ \t]+.*\n?)*", block.group(1))
    path.write_text(text[:block.start()] + f"environment:\n  image: {image}\n" + (kept.group(0) if kept else "")
                    + text[block.end():])
