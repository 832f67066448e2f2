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
