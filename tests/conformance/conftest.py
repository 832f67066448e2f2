"""Fixtures of the conformance suite: the corpus, one copy of its online/ tree per session, and
the recorder that scripts/compatibility.py reads to write docs/compatibility.md."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from conformance_examples import corpus_dir  # noqa: E402
from harness import docker_client  # noqa: E402,F401  (the engine, and the images it needs)

RECORD = os.environ.get("RECONCILER_CONFORMANCE_RECORD")


@pytest.fixture(scope="session")
def online(tmp_path_factory) -> Path:
    """A copy of the corpus's cli/endpoints/online tree that the stacks are built in (never the corpus)."""
    corpus = corpus_dir()
    if corpus is None:
        pytest.skip("no shared Azure ML corpus (../shared/corpus/azureml-examples) on this machine")
    copy = tmp_path_factory.mktemp("corpus") / "online"
    shutil.copytree(corpus / "cli" / "endpoints" / "online", copy, symlinks=True)
    return copy


@pytest.fixture
def record():
    """record(example, result, detail): one line of the compatibility table, when asked for."""
    def write(example, result: str, detail: str = "") -> None:
        if RECORD:
            with open(RECORD, "a", encoding="utf-8") as out:
                out.write(json.dumps({"id": example.id, "result": result, "detail": detail}) + "\n")
    return write
