"""Inputs that used to hang, blow up or end in a traceback: each is a located error, fast.

Alias and merge-key bombs (a few hundred bytes that expand to billions of nodes), a FIFO named
*.yml, symlink loops and dangling symlinks, absurd nesting.
"""
from __future__ import annotations

import os
import threading
import time

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.config.stack import load_stack
from reconciler.errors import StackInvalid


def alias_bomb(levels: int = 9) -> str:
    names = [chr(ord("a") + i) for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{n}: &{n} [{', '.join(['*' + p] * 9)}]" for p, n in zip(names, names[1:])]
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 9) -> str:
    names = [chr(ord("a") + i) for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} {{k0: 1, k1: 2}}"]
    for index, (previous, name) in enumerate(zip(names, names[1:])):
        lines += [f"{name}: &{name}", f"  <<: [{', '.join(['*' + previous] * 9)}]", f"  z{index}: 1"]
    return "\n".join(lines) + "\n"


def problems_within(stack, seconds: float) -> list[str]:
    """load_stack's problems, failing the test if it takes longer than `seconds` (or hangs)."""
    outcome: dict = {}

    def run():
        try:
            load_stack(stack)
            outcome["problems"] = []
        except StackInvalid as error:
            outcome["problems"] = [str(p) for p in error.problems]

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"load_stack did not return within {seconds}s"
    assert time.monotonic() - started < seconds
    return outcome["problems"]


@pytest.mark.parametrize("text", [alias_bomb(), merge_bomb()], ids=["aliases", "merge-keys"])
def test_an_alias_bomb_is_refused_at_once_with_its_line(demo_stack, text):
    assert len(text.encode()) < 700
    (demo_stack / "bomb.yml").write_text("name: bomb\nauth_mode: key\n" + text)
    problems = problems_within(demo_stack, 5)
    assert any(p.startswith(f"{demo_stack}/bomb.yml:1: document expands to more than 20000 nodes") for p in problems)


def test_ordinary_anchors_and_merge_keys_still_work(demo_stack):
    path = demo_stack / "deployment.yml"
    text = path.read_text().replace("readiness_probe:\n", "readiness_probe: &probe\n")
    text = text.replace("liveness_probe:\n  initial_delay: 5\n  period: 5\n", "liveness_probe:\n  <<: *probe\n  period: 5\n")
    path.write_text(text)
    spec = load_stack(demo_stack).by_kind("deployment")[0].spec
    assert (spec["liveness_probe"]["initial_delay"], spec["liveness_probe"]["period"]) == (1, 5)


def test_a_fifo_named_yml_does_not_hang_validate(demo_stack):
    os.mkfifo(demo_stack / "pipe.yml")
    problems = problems_within(demo_stack, 5)
    assert f"{demo_stack}/pipe.yml:1: file is not a regular file (a FIFO, socket or device) (stack YAML files " \
           "must be ordinary files; remove it or rename it to something not *.yml)" in problems


def test_symlink_loop_and_dangling_link_are_located_errors(demo_stack):
    os.symlink(demo_stack / "loop-b.yml", demo_stack / "loop-a.yml")
    os.symlink(demo_stack / "loop-a.yml", demo_stack / "loop-b.yml")
    os.symlink(demo_stack / "gone.yml", demo_stack / "dangling.yml")
    problems = problems_within(demo_stack, 5)
    assert f"{demo_stack}/loop-a.yml:1: file is a symlink loop (replace the link with the file itself)" in problems
    assert f"{demo_stack}/loop-b.yml:1: file is a symlink loop (replace the link with the file itself)" in problems
    assert any(p.startswith(f"{demo_stack}/dangling.yml:1: file is a dangling symlink (it points at "
                            f"{demo_stack}/gone.yml, which does not exist)") for p in problems)


def test_cli_validate_of_broken_links_exits_1_without_a_traceback(demo_stack):
    os.symlink(demo_stack / "gone.yml", demo_stack / "dangling.yml")
    os.mkfifo(demo_stack / "pipe.yaml")
    result = CliRunner().invoke(cli, ["validate", str(demo_stack)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert "dangling.yml:1: file is a dangling symlink" in result.output
    assert "pipe.yaml:1: file is not a regular file" in result.output


def test_absurd_nesting_is_a_located_error(demo_stack):
    (demo_stack / "deep.yml").write_text("name: deep\nauth_mode: key\nx: " + "[" * 3000 + "]" * 3000 + "\n")
    problems = problems_within(demo_stack, 5)
    assert any(p.startswith(f"{demo_stack}/deep.yml:1: YAML is nested too deeply") for p in problems)


def test_merge_keys_follow_yaml_written_keys_override_and_the_first_source_wins(tmp_path):
    from reconciler.config.loader import parse_documents
    text = "name: n\nauth_mode: key\na: &a {x: 1, y: 2}\nb: &b {x: 3, w: 4}\nc:\n  <<: [*a, *b]\n  y: 9\n"
    documents, problems = parse_documents(text, "m.yml", tmp_path)
    assert problems == []
    assert documents[0].data["c"] == {"x": 1, "y": 9, "w": 4}
    _, problems = parse_documents(text + "  y: 10\n", "m.yml", tmp_path)
    assert [str(p) for p in problems] == ["m.yml:8: c.y: duplicate key 'y' (remove one of the two `y:` lines)"]


# -- what reaches the gateway config: a strict grammar at validate time (#12) ------------------
HOSTILE_PATHS = [
    '/x"; } server { listen 8080; server_name evil; location / { proxy_pass http://d_1/; } } types { #',
    '/v1/models/m"', "/v1/$http_x_target", "/a b", "/a\r\nb", "/a;b", "/a{b}", "/a'b", "/a\\b", "/%zz",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_route_paths_outside_the_url_grammar_are_refused_at_validate(demo_stack, path):
    import json
    file = demo_stack / "deployment.yml"
    file.write_text(file.read_text().replace("path: /v1/models/half_plus_two:predict", f"path: {json.dumps(path)}"))
    problems = problems_within(demo_stack, 5)
    assert any(p.startswith(f"{file}:21: environment.inference_config.scoring_route.path: ") and
               "is not allowed here (routes are absolute URL paths" in p for p in problems), problems


def test_percent_encoded_and_colon_paths_are_fine(demo_stack):
    file = demo_stack / "deployment.yml"
    file.write_text(file.read_text().replace("path: /v1/models/half_plus_two:predict", "path: /v1/models/a%20b:predict"))
    assert load_stack(demo_stack).by_kind("deployment")[0].spec["routes"]["scoring"]["path"] == "/v1/models/a%20b:predict"


def test_deployment_names_differing_only_in_case_are_refused(demo_stack):
    import shutil
    shutil.copy(demo_stack / "deployment.yml", demo_stack / "upper.yml")
    file = demo_stack / "upper.yml"
    file.write_text(file.read_text().replace("name: tfserving", "name: TFServing"))
    problems = problems_within(demo_stack, 5)
    assert any(p.startswith(f"{file}:2: name: deployment 'TFServing' of endpoint 'half-plus-two' differs from "
                            "'tfserving' only in case") for p in problems), problems


def test_endpoint_names_differing_only_in_case_are_refused(demo_stack):
    file = demo_stack / "other.yml"
    file.write_text((demo_stack / "endpoint.yml").read_text().replace("name: half-plus-two", "name: Half-Plus-Two"))
    problems = problems_within(demo_stack, 5)
    assert any(p.startswith(f"{file}:2: name: endpoint 'Half-Plus-Two' differs from 'half-plus-two' only in case")
               for p in problems), problems
