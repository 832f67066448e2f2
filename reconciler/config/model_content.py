"""Fingerprints model files so that changed content is seen as a change. Reads files; no writes."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelContent:
    digest: str
    files: int
    bytes: int


class ModelPathError(ValueError):
    """The model path is missing or leaves the stack directory."""


def fingerprint(path: Path, stack_root: Path) -> ModelContent:
    """A sha256 over the names, executable bits and bytes of every file under `path`.

    The top-level name is part of the digest because it is part of the mounted layout
    (`<mount>/<model>/<version>/<basename>`), as Azure ML mounts it.
    """
    root = stack_root.resolve()
    real = path.resolve()
    if not real.is_relative_to(root):
        raise ModelPathError("leads out of the stack directory")
    if not path.exists():
        raise ModelPathError("not found")
    digest = hashlib.sha256()
    files = total = 0
    entries = [(path.name, real)] if real.is_file() else sorted(_walk(real, root, path.name))
    for relative, file_path in entries:
        stat = file_path.stat()
        digest.update(f"{relative}\0{stat.st_mode & 0o111:o}\0{stat.st_size}\0".encode())
        with open(file_path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        files += 1
        total += stat.st_size
    return ModelContent("sha256:" + digest.hexdigest(), files, total)


def _walk(directory: Path, root: Path, prefix: str):
    for current, dirs, names in os.walk(directory, followlinks=False):
        dirs.sort()
        for name in list(dirs):
            linked = Path(current) / name
            if linked.is_symlink() and not linked.resolve().is_relative_to(root):
                raise ModelPathError(f"contains {linked.relative_to(directory)}, a link out of the stack directory")
        for name in sorted(names):
            file_path = Path(current) / name
            if not file_path.resolve().is_relative_to(root):
                raise ModelPathError(f"contains {file_path.relative_to(directory)}, a link out of the stack directory")
            if file_path.is_file():
                yield f"{prefix}/{file_path.relative_to(directory).as_posix()}", file_path
