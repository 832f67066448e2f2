"""Model fingerprints: what goes into a model (no hard links, no special files) and the digest
cache that spares re-hashing an unchanged model, yet sees every change (#12, #16)."""
from __future__ import annotations

import os
import time

import pytest

from reconciler.config import model_content
from reconciler.config.model_content import ModelPathError, fingerprint


@pytest.fixture
def model(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "stack"
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "weights.bin").write_bytes(b"a" * 4096)
    (root / "m" / "1" / "config.json").write_text("{}")
    # Files older than the racy window have their digest cached; a short window keeps the test fast.
    monkeypatch.setattr(model_content, "RACY_SECONDS", 0.2)
    time.sleep(0.3)
    return root


def hashes_made(monkeypatch) -> list:
    made = []
    real = model_content._hash
    monkeypatch.setattr(model_content, "_hash", lambda facts: made.append(1) or real(facts))
    return made


def test_an_unchanged_model_is_hashed_once(model, monkeypatch):
    made = hashes_made(monkeypatch)
    first = fingerprint(model / "m", model)
    assert fingerprint(model / "m", model) == first
    assert len(made) == 1


def test_content_rewritten_with_the_same_size_and_mtime_is_still_seen(model, monkeypatch):
    weights = model / "m" / "1" / "weights.bin"
    first = fingerprint(model / "m", model)
    before = weights.stat()
    weights.write_bytes(b"b" * 4096)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # size and mtime as they were
    assert weights.stat().st_mtime_ns == before.st_mtime_ns
    assert fingerprint(model / "m", model).digest != first.digest


def test_a_file_changed_just_now_is_never_cached(model, monkeypatch):
    made = hashes_made(monkeypatch)
    (model / "m" / "1" / "config.json").write_text('{"a": 1}')
    fingerprint(model / "m", model)
    fingerprint(model / "m", model)
    assert len(made) == 2


def test_an_unreadable_cache_is_no_cache(model, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / model_content.CACHE_FILE).write_text("not json")
    assert fingerprint(model / "m", model).files == 2


def test_hard_links_and_special_files_are_refused(model, tmp_path):
    outside = tmp_path / "secret"
    outside.write_text("private")
    os.chmod(outside, 0o600)
    os.link(outside, model / "m" / "1" / "innocent.txt")
    with pytest.raises(ModelPathError, match=r"contains 1/innocent.txt, a hard link \(2 names for one file\)"):
        fingerprint(model / "m", model)
    os.unlink(model / "m" / "1" / "innocent.txt")
    os.mkfifo(model / "m" / "1" / "pipe")
    with pytest.raises(ModelPathError, match=r"contains 1/pipe, which is not a regular file"):
        fingerprint(model / "m", model)


def test_a_dangling_link_in_a_model_is_refused(model):
    os.symlink(model / "gone", model / "m" / "1" / "link")
    with pytest.raises(ModelPathError, match="a link that loops or points at nothing"):
        fingerprint(model / "m", model)
