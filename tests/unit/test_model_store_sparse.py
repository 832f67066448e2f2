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


def test_two_steps_storing_the_same_content_at_once_both_succeed(tmp_path, monkeypatch):
    """The quickstart's model-1 and model-2 are one pickle in folders of one name: one digest,
    stored by two parallel model steps. The one that loses the race uses the other's copy."""
    import reconciler.drivers.docker.model_store as model_store
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("model-1", "model-2"):
        (tmp_path / "stack" / name / "model").mkdir(parents=True)
        (tmp_path / "stack" / name / "model" / "weights.pkl").write_bytes(b"same bytes")
    stack = tmp_path / "stack"
    digest = fingerprint(stack / "model-1" / "model", stack).digest
    assert fingerprint(stack / "model-2" / "model", stack).digest == digest
    real_replace = os.replace

    def the_other_step_wins(source, target):
        monkeypatch.setattr(model_store.os, "replace", real_replace)
        materialise(tmp_path / "state", "identity-1", stack / "model-2" / "model", stack, digest)
        real_replace(source, target)

    monkeypatch.setattr(model_store.os, "replace", the_other_step_wins)
    stored = materialise(tmp_path / "state", "identity-1", stack / "model-1" / "model", stack, digest)
    assert (stored / "model" / "weights.pkl").read_bytes() == b"same bytes"
    assert [p.name for p in stored.parent.iterdir()] == [stored.name], "the losing step's staging copy is left"
