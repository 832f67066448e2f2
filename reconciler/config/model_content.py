"""Fingerprints model files so that changed content is seen as a change.

Reads files; its one write is the fingerprint cache. Hashing a large model on every validate,
plan and refresh costs about 0.7 s per GiB, so a digest is cached under the file facts that
change whenever content can have changed, as git's index does: path, size, mtime, ctime, inode
and mode of every file. ctime cannot be set back by hand, so content rewritten with its old
size and mtime restored is still seen; a file changed within the same second as it was
cached ("racily clean" in git's words) is never cached, only hashed.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CACHE_FILE = "model-fingerprints.json"
CACHE_ENTRIES = 256
# Files changed this recently may change again within the clock's granularity unseen.
RACY_SECONDS = 2.0


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
    if real.is_file() or not real.is_dir():
        check_plain_file(real, Path(path.name))
        entries = [(path.name, real)]
    else:
        entries = sorted(_walk(real, root, path.name))
    facts = [(relative, file_path, file_path.stat()) for relative, file_path in entries]
    key = _facts_key(real, facts)
    cache = _Cache.load()
    cached = cache.get(key)
    if cached is not None:
        return cached
    content = _hash(facts)
    newest = max((max(info.st_mtime, info.st_ctime) for _, _, info in facts), default=0.0)
    if time.time() - newest > RACY_SECONDS:
        cache.put(key, content)
    return content


def _hash(facts) -> ModelContent:
    digest = hashlib.sha256()
    total = 0
    for relative, file_path, info in facts:
        digest.update(f"{relative}\0{info.st_mode & 0o111:o}\0{info.st_size}\0".encode())
        with open(file_path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        total += info.st_size
    return ModelContent("sha256:" + digest.hexdigest(), len(facts), total)


def _facts_key(real: Path, facts) -> str:
    listing = [[relative, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev, info.st_mode]
               for relative, _, info in facts]
    return hashlib.sha256(json.dumps([str(real), listing]).encode()).hexdigest()


def cache_dir() -> Path:
    configured = os.environ.get("RECONCILER_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reconciler"


class _Cache:
    """The digest cache file: {facts key: ModelContent}, newest last, at most CACHE_ENTRIES.
    A cache that cannot be read or written is no cache: fingerprints are hashed instead."""

    def __init__(self, path: Path, entries: dict) -> None:
        self.path = path
        self.entries = entries

    @classmethod
    def load(cls) -> "_Cache":
        path = cache_dir() / CACHE_FILE
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, ValueError):
            entries = {}
        return cls(path, entries)

    def get(self, key: str) -> ModelContent | None:
        value = self.entries.get(key)
        try:
            return ModelContent(str(value["digest"]), int(value["files"]), int(value["bytes"]))
        except (TypeError, KeyError, ValueError):
            return None

    def put(self, key: str, content: ModelContent) -> None:
        self.entries.pop(key, None)
        self.entries[key] = asdict(content)
        kept = dict(list(self.entries.items())[-CACHE_ENTRIES:])
        temp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".fingerprints.")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(kept, handle)
            os.replace(temp, self.path)
        except OSError:
            if temp:
                Path(temp).unlink(missing_ok=True)


def _walk(directory: Path, root: Path, prefix: str):
    for current, dirs, names in os.walk(directory, followlinks=False):
        dirs.sort()
        for name in list(dirs):
            linked = Path(current) / name
            if linked.is_symlink() and not linked.resolve().is_relative_to(root):
                raise ModelPathError(f"contains {linked.relative_to(directory)}, a link out of the stack directory")
        for name in sorted(names):
            file_path = Path(current) / name
            try:
                resolved = file_path.resolve(strict=True)
            except (OSError, RuntimeError):
                raise ModelPathError(f"contains {file_path.relative_to(directory)}, a link that loops or points "
                                     "at nothing") from None
            if not resolved.is_relative_to(root):
                raise ModelPathError(f"contains {file_path.relative_to(directory)}, a link out of the stack directory")
            check_plain_file(resolved, file_path.relative_to(directory))
            yield f"{prefix}/{file_path.relative_to(directory).as_posix()}", file_path


def check_plain_file(path: Path, shown: Path) -> None:
    """Only regular files with one name go into the store: a FIFO would block the copy forever,
    and a hard link may be a file from outside the stack (its other name) that the store would
    publish to every container."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ModelPathError(f"contains {shown}, which is not a regular file (a FIFO, socket or device)")
    if info.st_nlink > 1:
        raise ModelPathError(f"contains {shown}, a hard link ({info.st_nlink} names for one file); copy the file "
                             "instead of linking it")
