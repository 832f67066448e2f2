"""The equality short-cut in planning.diff must never change what DeepDiff alone reports.

Values are drawn from a small alphabet with deliberately confusable scalars (1, 1.0, True,
0, False, None, "1") so that equal-but-differently-typed pairs come up often.
"""
from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.planning.diff import deep_field_changes, field_changes

SCALARS = st.sampled_from([1, 1.0, True, 0, 0.0, False, None, "1", "", "a", 2, float("nan")])
KEYS = st.sampled_from(["image", "tags", "environment_variables", "a", "b"])
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                      max_leaves=8)
SPECS = st.dictionaries(KEYS, VALUES, max_size=4)


@settings(max_examples=400, deadline=None)
@given(SPECS, SPECS)
def test_short_cut_agrees_with_deepdiff_on_any_pair(before, after):
    assert field_changes("deployment", before, after) == deep_field_changes("deployment", before, after)


@settings(max_examples=200, deadline=None)
@given(SPECS)
def test_short_cut_agrees_with_deepdiff_on_equal_specs(spec):
    twin = copy.deepcopy(spec)
    assert field_changes("deployment", spec, twin) == deep_field_changes("deployment", spec, twin)


def test_equal_but_differently_typed_values_are_left_to_deepdiff():
    assert [c.path for c in field_changes("deployment", {"instance_count": 1}, {"instance_count": True})] == \
        ["instance_count"]
    # DeepDiff reports 1 -> 1.0 at the top but not inside a list; whatever it says stands.
    for before, after in (({"a": 1}, {"a": 1.0}), ({"a": [1]}, {"a": [1.0]}), ({1: "x"}, {True: "x"})):
        assert field_changes("deployment", before, after) == deep_field_changes("deployment", before, after)
    assert field_changes("deployment", {"a": {"b": [1, "x"]}}, {"a": {"b": [1, "x"]}}) == ()


def deepdiff_reference(kind: str, before: dict, after: dict) -> tuple:
    """What planning.diff returned when it ran DeepDiff on the whole spec (before #16)."""
    from deepdiff import DeepDiff

    from reconciler.planning import diff
    changes = []
    for levels in DeepDiff(before, after, view="tree", verbose_level=2).values():
        for level in levels:
            path = tuple(level.path(output_format="list"))
            changes.append(diff.FieldChange(
                diff._dotted(path), None if diff._absent(level.t1) else level.t1,
                None if diff._absent(level.t2) else level.t2,
                diff._forces_replacement(kind, path, before, after, diff.POLICIES["docker"])))
    return tuple(sorted(changes, key=lambda c: c.path))


def _same(left: tuple, right: tuple) -> bool:
    # nan != nan: compare the text of each change instead.
    return [repr(c) for c in left] == [repr(c) for c in right]


@settings(max_examples=600, deadline=None)
@given(SPECS, SPECS)
def test_own_walk_reports_what_deepdiff_reported_on_any_pair(before, after):
    assert _same(deep_field_changes("deployment", before, after), deepdiff_reference("deployment", before, after))


def test_own_walk_on_nested_changes_of_every_kind():
    before = {"image": "a:1", "environment_variables": {"A": "1", "B": "2"}, "probe": {"period": 1},
              "args": ["x", "y"], "n": 1}
    after = {"image": "a:2", "environment_variables": {"A": "1", "C": "3"}, "probe": {"period": 1.0},
             "args": ["w", "x", "y"], "n": None, "new": {"k": [1]}}
    assert _same(deep_field_changes("deployment", before, after), deepdiff_reference("deployment", before, after))


def test_a_change_outside_lists_does_not_import_deepdiff():
    """deepdiff's import is 0.3-0.4 s of a replace's apply (#16)."""
    import subprocess
    import sys
    probe = ("import sys\nfrom reconciler.planning.diff import field_changes\n"
             "changes = field_changes('deployment', {'image': 'a:1', 'env': {'A': '1'}, 'args': ['x']},"
             " {'image': 'a:2', 'env': {'A': '2'}, 'args': ['x']})\n"
             "print([c.path for c in changes], sorted(m for m in sys.modules if m.startswith('deepdiff')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['env.A', 'image'] []"
    with_list = probe.replace("'args': ['x']})", "'args': ['y']})")
    result = subprocess.run([sys.executable, "-c", with_list], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("['args[0]', 'env.A', 'image'] ['deepdiff")
