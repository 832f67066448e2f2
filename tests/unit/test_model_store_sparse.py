"""A sparse model file stays sparse in the model store (#12 finding 9: a sparse 1 GiB model took
1.1 GB there). Files only: the store is directories, no engine involved."""
from __future__ import annotations

import os

from reconciler.config.model_content import fingerprint
from reconciler.drivers.docker.model_store import copy_sparse, materialise


def sparse_file(path, size: int, pieces: dict[int, bytes]) -> None:
    with open(path, "wb") as handle:
        for offset, data in pieces.items():
            handle.seek(offset)
            handle.write(data)
        handle.truncate(size)


def test_the_store_copy_keeps_the_holes_and_the_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path / "cache"))
    stack = tmp_path / "stack"
    (stack / "model").mkdir(parents=True)
    sparse_file(stack / "model" / "weights.bin", 256 << 20, {0: b"head", 128 << 20: b"middle", (256 << 20) - 4: b"tail"})
    (stack / "model" / "config.json").write_text("{}")
    digest = fingerprint(stack / "model", stack).digest
    stored = materialise(tmp_path / "state", "identity-1", stack / "model", stack, digest)
    copy = stored / "model" / "weights.bin"
    assert copy.stat().st_size == 256 << 20
    assert copy.stat().st_blocks * 512 < 1 << 20, "the copy was written dense"
    assert fingerprint(stored / "model", stored).digest == digest


def test_a_file_without_holes_is_copied_whole(tmp_path):
    source = tmp_path / "dense.bin"
    source.write_bytes(os.urandom(3 << 20))
    copy_sparse(source, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()


def test_two_models_of_one_content_stored_at_once_share_the_copy(tmp_path, monkeypatch):
    """Parallel model steps of the same content both copy; the second to finish finds the
    first one's copy in place (it used to fail with "Directory not empty")."""
    from reconciler.drivers.docker import model_store
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path / "cache"))
    stack = tmp_path / "stack"
    (stack / "model").mkdir(parents=True)
    (stack / "model" / "config.json").write_text("{}")
    digest = fingerprint(stack / "model", stack).digest
    real_replace = os.replace
    sibling = []

    def replace_after_a_sibling(source, target):
        if not sibling:  # the sibling step finishes its copy first
            sibling.append(None)
            sibling[0] = materialise(tmp_path / "state", "identity-1", stack / "model", stack, digest)
        real_replace(source, target)

    monkeypatch.setattr(model_store.os, "replace", replace_after_a_sibling)
    stored = materialise(tmp_path / "state", "identity-1", stack / "model", stack, digest)
    assert stored == sibling[0] and model_store.stored_digest(stored) == digest
    assert [p.name for p in stored.parent.iterdir()] == [stored.name], "no staging directory left behind"
