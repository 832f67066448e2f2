"""The content-addressed model store under the state directory. Side effects: files only.

`<state dir>/models/<stack identity>/<digest>/<basename>/...` holds a read-only copy of a
model's files, so a running container never sees a half-edited model and changed content gets
a new directory. One store per stack identity: stacks whose state files share a folder never
share a copy, so destroying one (which checks only its own records) cannot delete a copy
another one mounts. Copies made before identities existed (`models/<digest>`, possibly shared)
are left in place by destroy, never deleted.
"""
from __future__ import annotations

import errno
import os
import stat
import shutil
import tempfile
from pathlib import Path

from reconciler.config.model_content import fingerprint
from reconciler.errors import DriverError


def store_root(state_dir: Path, identity: str) -> Path:
    if not identity:
        raise RuntimeError("model store asked for without a stack identity")
    return (state_dir / "models" / identity).resolve()


def store_path(state_dir: Path, identity: str, digest: str) -> Path:
    return store_root(state_dir, identity) / digest.replace("sha256:", "")


def materialise(state_dir: Path, identity: str, source: Path, stack_root: Path, digest: str) -> Path:
    """Copy `source` into the stack's store (once per digest) and return the directory to mount."""
    target = store_path(state_dir, identity, digest)
    if target.exists():
        if stored_digest(target) == digest:
            return target
        release(state_dir, identity, target)  # changed by hand; containers mounting it are being replaced
    actual = fingerprint(source, stack_root).digest
    if actual != digest:
        raise DriverError(f"model files under {source} changed since the plan was made",
                          "run `reconciler plan` again and apply the new plan")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".incoming-"))
    try:
        if source.is_dir():
            shutil.copytree(source, staging / source.name, symlinks=False, copy_function=copy_sparse)
        else:
            copy_sparse(source, staging / source.name)
        _make_read_only(staging)
        os.replace(staging, target)
    except OSError as error:
        # Another model of the same content, created in parallel, has just put its copy there.
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST) and stored_digest(target) == digest:
            _discard(staging)
            return target
        _discard(staging)
        raise
    except BaseException:
        _discard(staging)
        raise
    return target


def _discard(staging: Path) -> None:
    _make_writable(staging)
    shutil.rmtree(staging, ignore_errors=True)


def copy_sparse(source, target) -> None:
    """Copy a file keeping its holes (SEEK_DATA/SEEK_HOLE): a sparse 1 GiB model stays a few
    blocks in the store instead of a gigabyte of zeros. Mode and times as shutil.copy2."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                data = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:  # no data after offset (ENXIO), or SEEK_DATA unsupported: the rest is a hole
                break
            hole = os.lseek(src.fileno(), data, os.SEEK_HOLE)
            src.seek(data)
            dst.seek(data)
            remaining = hole - data
            while remaining:
                chunk = src.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                remaining -= len(chunk)
            offset = hole
        dst.truncate(size)
    shutil.copystat(source, target)


def stored_digest(target: Path) -> str | None:
    """The digest of what the store holds at `target`, or None when it is missing or odd."""
    entries = list(target.iterdir()) if target.is_dir() else []
    if len(entries) != 1:
        return None
    return fingerprint(entries[0], target).digest


def release(state_dir: Path, identity: str, target: Path) -> None:
    """Delete the copy at `target` when it is in this stack's own store (only there)."""
    target = Path(target).resolve()
    if target.parent != store_root(state_dir, identity):
        return  # a copy from before identities (maybe another stack's too): never deleted
    if target.exists():
        _make_writable(target)
        shutil.rmtree(target)


def _make_read_only(root: Path) -> None:
    # Executable bits are kept: they are part of the content digest and of the model.
    for current, dirs, files in os.walk(root):
        for name in files:
            path = Path(current) / name
            os.chmod(path, (stat.S_IMODE(path.stat().st_mode) & 0o555) | 0o444)
        os.chmod(current, 0o555)
    os.chmod(root, 0o755)


def _make_writable(root: Path) -> None:
    for current, dirs, files in os.walk(root):
        os.chmod(current, 0o755)
