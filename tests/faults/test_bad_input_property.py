"""1,000 generated malformed stacks against a running stack: each gives a clear error, exit 1,
and the state file and the containers stay exactly as they were.

Every mutation is invalid by construction (a value of the wrong type, a name outside Azure ML's
rules, a path out of the stack, ...), so a passing run of `apply` would itself be a failure.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

LOCATED = re.compile(r"^\S+:\d+: ", re.M)
FORBIDDEN_NAME_CHARS = ";$`|&=<>\"' \n\t/\\*?!#(){}[]~%^@:,."
YAML_FILES = ("endpoint.yml", "blue.yml", "green.yml", "model.yml")


def set_line(text: str, key: str, value: str) -> str:
    """Replace the value of the first `key:` (block or flow style)."""
    pattern = re.compile(rf"(?<![\w-]){re.escape(key)}: [^,}}\n]*")
    assert pattern.search(text), key
    return pattern.sub(lambda m: f"{key}: {value}", text, count=1)


wrong_typed = st.sampled_from([
    ("blue.yml", "instance_count", v) for v in ("abc", "[1, 2]", "{a: 1}", "-1", "0", "1.5", "true", "null")
] + [
    # A quoted number ("8501") is no longer wrong: the Azure ML SDK reads it as the number (#13).
    ("green.yml", "port", v) for v in ("'85o1'", "70000", "0", "[8501]", "{}")
] + [
    ("endpoint.yml", "blue", v) for v in ("'9O'", "-10", "101", "[90]", "ninety")
] + [
    ("blue.yml", "initial_delay", v) for v in ("-1", "soon", "[1]")
] + [
    ("model.yml", "version", v) for v in ("[1]", "{a: b}", "'1 beta'", "'-1'")
])

bad_name = st.tuples(
    st.sampled_from([("endpoint.yml", "name"), ("blue.yml", "name"), ("green.yml", "endpoint_name"),
                     ("model.yml", "name")]),
    st.text(min_size=0, max_size=12),
    st.sampled_from(list(FORBIDDEN_NAME_CHARS)),
    st.text(min_size=0, max_size=12),
)


@st.composite
def mutation(draw):
    kind = draw(st.sampled_from(["type", "unknown-key", "traversal", "symlink", "name", "huge", "duplicate",
                                 "bad-yaml", "placeholder", "tabs"]))
    if kind == "type":
        file, key, value = draw(wrong_typed)
        return kind, lambda d: _edit(d / file, lambda t: set_line(t, key, value))
    if kind == "unknown-key":
        file = draw(st.sampled_from(YAML_FILES))
        key = "zz_" + draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10))
        return kind, lambda d: _edit(d / file, lambda t: t + f"\n{key}: 1\n")
    if kind == "traversal":
        depth = draw(st.integers(1, 6))
        tail = draw(st.sampled_from(["etc", "etc/passwd", "root", "tmp", "proc/self"]))
        return kind, lambda d: _edit(d / "model.yml", lambda t: set_line(t, "path", "../" * (depth + 3) + tail))
    if kind == "symlink":
        target = draw(st.sampled_from(["/etc", "/usr/bin", "/tmp"]))

        def link(d: Path) -> None:
            shutil.rmtree(d / "half_plus_two")
            os.symlink(target, d / "half_plus_two")
        return kind, link
    if kind == "name":
        (file, key), before, bad, after = draw(bad_name)
        value = (before + bad + after)
        quoted = "'" + value.replace("'", "''").replace("\n", " ").replace("\t", " ") + "'"
        if value.strip(" \t\n") == "" or quoted == "''":
            quoted = "'" + bad.replace("'", "''") + "x'"
        return kind, lambda d: _edit(d / file, lambda t: set_line(t, key, quoted if quoted != "' x'" else "'a b'"))
    if kind == "huge":
        size = draw(st.integers(1024 * 1024 + 1, 3 * 1024 * 1024))
        return kind, lambda d: (d / "big.yml").write_text("# " + "x" * size + "\n")
    if kind == "duplicate":
        file = draw(st.sampled_from(YAML_FILES))
        return kind, lambda d: shutil.copy(d / file, d / f"copy-of-{file}")
    if kind == "bad-yaml":
        file = draw(st.sampled_from(YAML_FILES))
        broken = draw(st.sampled_from(["key: [unclosed", "a: b: c", "- item\nkey: value", "key: 'open",
                                       "{{{", "? complex\n: key", "key: *undefined_alias"]))
        return kind, lambda d: _edit(d / file, lambda t: t + "\n" + broken + "\n")
    if kind == "placeholder":
        name = draw(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True))
        return kind, lambda d: _edit(d / "blue.yml", lambda t: set_line(t, "instance_type", "{{" + name + "}}"))
    return kind, lambda d: _edit(d / "endpoint.yml", lambda t: t.replace("\n  blue:", "\n\tblue:", 1))


def _edit(path: Path, change) -> None:
    path.write_text(change(path.read_text()))


def snapshot(run) -> tuple:
    containers = sorted((c.id, c.status, c.attrs.get("Created")) for c in
                        run.client.containers.list(all=True, sparse=True,
                                                   filters={"label": f"org.reconciler.stack={run.name}"}))
    return run.state.read_bytes(), containers


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory, docker_client):
    from harness import StackRun
    run = StackRun(tmp_path_factory.mktemp("bad-input"), docker_client, "blue-green")
    run.apply()
    yield run
    run.cleanup()


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutation())
def test_malformed_stack_is_refused_without_side_effects(running_stack, case):
    kind, mutate = case
    event(kind)  # --hypothesis-show-statistics counts the inputs of each kind
    before = snapshot(running_stack)
    with tempfile.TemporaryDirectory() as scratch:
        broken = Path(scratch) / running_stack.name  # same stack name: same state, same containers
        shutil.copytree(running_stack.dir, broken, symlinks=True)
        mutate(broken)
        result = running_stack.run("apply", str(broken), "--state", str(running_stack.state), "--auto-approve")
    assert result.exit_code == 1, (kind, result.output)
    assert "Traceback" not in result.output
    assert LOCATED.search(result.output), (kind, result.output)  # file:line: ...
    assert snapshot(running_stack) == before, kind
