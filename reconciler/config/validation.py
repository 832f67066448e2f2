"""JSON Schema validation of single documents, turned into located, actionable Problems.

Reads the schema files once (cached); otherwise pure.
"""
from __future__ import annotations

import difflib
import json
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from reconciler.config.loader import Document
from reconciler.errors import Problem

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_FILES = {
    "endpoint": "managedOnlineEndpoint.schema.json",
    "deployment": "managedOnlineDeployment.schema.json",
    "model": "model.schema.json",
}


@lru_cache(maxsize=None)
def validator_for(kind: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / SCHEMA_FILES[kind]).read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def validate_document(document: Document) -> list[Problem]:
    problems: list[Problem] = []
    for error in validator_for(document.kind).iter_errors(document.data):
        problems.extend(_explain(document, _most_specific(error)))
    return problems


def _most_specific(error: ValidationError) -> ValidationError:
    # For oneOf/anyOf, the branch that got furthest says what the user meant.
    if error.context and error.validator in ("oneOf", "anyOf"):
        relevant = [e for e in error.context if e.validator != "type"] or list(error.context)
        return _most_specific(best_match(relevant))
    return error


def _explain(document: Document, error: ValidationError) -> list[Problem]:
    path = tuple(error.absolute_path)
    hint = error.schema.get("x-hint", "") if isinstance(error.schema, dict) else ""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        if not allowed:
            return [document.problem(path, error.message, hint)]
        return [
            document.problem(path + (key,), f"unknown key {key!r}", _suggest(key, allowed))
            for key in error.instance if key not in allowed
        ]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [document.problem(path, f"missing required key {missing!r}",
                                 hint or f"add `{missing}:` to this {document.kind}")]
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        got = type(error.instance).__name__.replace("NoneType", "null").replace("str", "string")
        return [document.problem(path, f"expected {expected}, got {got} {error.instance!r}", hint)]
    if error.validator == "enum":
        choices = ", ".join(str(c) for c in error.validator_value)
        return [document.problem(path, f"{error.instance!r} is not one of: {choices}", hint)]
    if error.validator == "pattern":
        return [document.problem(path, f"{error.instance!r} is not allowed here", hint or error.message)]
    if error.validator in ("minimum", "maximum", "minLength"):
        return [document.problem(path, error.message, hint)]
    if error.validator == "propertyNames":
        return [document.problem(path, f"{error.instance!r} is not a valid name", hint)]
    return [document.problem(path, error.message, hint)]


def _suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "allowed keys: " + ", ".join(k for k in allowed if k != "$schema")
