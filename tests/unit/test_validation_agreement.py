"""The two validators of validation.py agree: jsonschema-rs decides whether a document is valid,
jsonschema explains why not. Generated edits of real documents (every document of the example
stacks, with a value replaced, removed or added anywhere) must get the same verdict from both,
except where JSON Schema's regular expressions are stricter than Python's (`$` before a final
newline), and there the document is still refused with a located problem."""
from __future__ import annotations

import copy
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.config.loader import load_stack_documents
from reconciler.config.validation import fast_validator_for, validate_document, validator_for

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [d for stack in ("half-plus-two", "blue-green")
             for d in load_stack_documents(ROOT / "stacks" / stack, {})[0]]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20) | st.sampled_from(["abc\n", "/abs/path", "key", "azureml:m:1", "", "0", "x" * 300]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6)


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, prefix + (index,))


@st.composite
def edited_documents(draw):
    document = draw(st.sampled_from(DOCUMENTS))
    data = copy.deepcopy(document.data)
    path = draw(st.sampled_from(list(paths(data))[1:]))
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    how = draw(st.sampled_from(["replace", "remove", "add"]))
    if how == "remove":
        del parent[path[-1]]
    elif how == "add" and isinstance(parent, dict):
        parent[draw(st.text(max_size=10))] = draw(json_values)
    else:
        parent[path[-1]] = draw(json_values)
    return document, data


def newline_before_end(value) -> bool:
    if isinstance(value, str):
        return value.endswith("\n")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(newline_before_end(child) for child in children)


@settings(max_examples=500, deadline=None)
@given(edited_documents())
def test_both_validators_give_the_same_verdict(case):
    document, data = case
    strict = fast_validator_for(document.kind).is_valid(data)
    lenient = validator_for(document.kind).is_valid(data)
    assert strict == lenient or (lenient and not strict and newline_before_end(data)), data
    problems = validate_document(type(document)(document.file, document.kind, data, document.lines,
                                                document.directory))
    assert (problems == []) == strict
    assert all(re.match(r"^\d+$", str(p.line)) and p.line >= 1 for p in problems)


def test_a_name_ending_in_a_newline_is_refused_where_python_alone_would_pass_it():
    endpoint = next(d for d in DOCUMENTS if d.kind == "endpoint")
    data = {**endpoint.data, "name": endpoint.data["name"] + "\n"}
    assert validator_for("endpoint").is_valid(data)  # Python's `$` matches before the newline
    (problem,) = validate_document(type(endpoint)(endpoint.file, "endpoint", data, endpoint.lines,
                                                  endpoint.directory))
    assert problem.path == "name" and problem.line == endpoint.line_of(("name",))
    assert "does not match" in problem.message and problem.hint
