"""JSON Schema validation of single documents, turned into located, actionable Problems.

Reads the schema files once (cached); otherwise pure.

Two validators of the same schemas: jsonschema-rs (compiled, ~100x faster) answers "is this
document valid?", and only a document it refuses goes through jsonschema, whose errors carry
the paths, sub-schemas and `x-hint`s the messages are made from. Most documents of a stack are
valid, and validating 2,000 of them with jsonschema alone was half a second of a no-op plan.
tests/unit/test_validation_agreement.py checks that the two agree.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema_rs

from reconciler.config.loader import Document
from reconciler.errors import Problem

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
SCHEMA_FILES = {
    "endpoint": "managedOnlineEndpoint.schema.json",
    "deployment": "managedOnlineDeployment.schema.json",
    "model": "model.schema.json",
    "environment": "environment.schema.json",
    "stack": "reconcilerStack.schema.json",
}


@lru_cache(maxsize=None)
def schema_for(kind: str) -> dict:
    return json.loads((SCHEMA_DIR / SCHEMA_FILES[kind]).read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def validator_for(kind: str):
    # Imported here: jsonschema (~60 ms to import) only explains documents jsonschema-rs refused.
    from jsonschema import Draft202012Validator
    return Draft202012Validator(schema_for(kind))


@lru_cache(maxsize=None)
def fast_validator_for(kind: str):
    return jsonschema_rs.Draft202012Validator(schema_for(kind))


_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_BOOLEANS = {"true": True, "True": True, "false": False, "False": False}


def coerce_scalars(data: Any, schema: dict, root: dict) -> Any:
    """`data` with quoted scalars turned into what the schema asks for where the Azure ML SDK
    (marshmallow) would: "1" for an integer field, "0.5" for a number, "true" for a boolean.
    Only where the schema wants exactly that type: a field that also allows strings keeps them."""
    while isinstance(schema, dict) and "$ref" in schema and schema["$ref"].startswith("#/"):
        node: Any = root
        for part in schema["$ref"][2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        schema = node
    if not isinstance(schema, dict):
        return data
    wanted = schema.get("type")
    if isinstance(data, str):
        if wanted == "integer" and _INTEGER.fullmatch(data):
            return int(data)
        if wanted == "number" and _NUMBER.fullmatch(data):
            return float(data) if "." in data else int(data)
        if wanted == "boolean" and data in _BOOLEANS:
            return _BOOLEANS[data]
        return data
    if isinstance(data, dict):
        properties, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        return {key: coerce_scalars(value, properties[key] if key in properties else
                                    (extra if isinstance(extra, dict) else {}), root) for key, value in data.items()}
    if isinstance(data, list) and isinstance(schema.get("items"), dict):
        return [coerce_scalars(item, schema["items"], root) for item in data]
    return data


def coerced(document: Document) -> Document:
    """The document as the SDK reads its scalars (see coerce_scalars); itself when nothing changes."""
    schema = schema_for(document.kind)
    data = coerce_scalars(document.data, schema, schema)
    return document if data == document.data else dataclasses.replace(document, data=data)


def validate_document(document: Document) -> list[Problem]:
    if fast_validator_for(document.kind).is_valid(document.data):
        return []
    problems: list[Problem] = []
    for error in validator_for(document.kind).iter_errors(document.data):
        problems.extend(_explain(document, _most_specific(error)))
    # The two differ where JSON Schema's regular expressions (ECMA 262) are stricter than
    # Python's: `$` also matches before a final newline in Python, so "name\n" passes there.
    return problems or _strict_problems(document)


def _strict_problems(document: Document) -> list[Problem]:
    schema = schema_for(document.kind)
    problems = []
    for error in fast_validator_for(document.kind).iter_errors(document.data):
        node = schema
        for step in error.schema_path[:-1]:
            node = node[step]
        hint = node.get("x-hint", "") if isinstance(node, dict) else ""
        problems.append(document.problem(tuple(error.instance_path), error.message, hint))
    return problems


def _most_specific(error):
    # For oneOf/anyOf, the branch that got furthest says what the user meant.
    from jsonschema.exceptions import best_match
    if error.context and error.validator in ("oneOf", "anyOf"):
        relevant = [e for e in error.context if e.validator != "type"] or list(error.context)
        return _most_specific(best_match(relevant))
    return error


def _explain(document: Document, error) -> list[Problem]:
    path = tuple(error.absolute_path)
    hint = error.schema.get("x-hint", "") if isinstance(error.schema, dict) else ""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        if not allowed:
            return [document.problem(path, error.message, hint)]
        return [
            document.problem(path + (key,), *(_kubernetes_only(document, path, key)
                                              or (f"unknown key {key!r}", _suggest(key, allowed))))
            for key in error.instance if key not in allowed
        ]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        no_code = _no_code_model_type(document) if missing == "environment" and not path else None
        if no_code:
            return [document.problem(("model", "type"), f"no-code deployments (model type {no_code} without an "
                                     "environment) are not supported on a local engine",
                                     "give the deployment an environment whose image serves the model, with its "
                                     "routes in environment.inference_config (a custom container)")]
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


def _kubernetes_only(document: Document, path: tuple, key: str) -> tuple[str, str] | None:
    # kubernetesOnlineDeployment's requests and limits (Azure ML's kubernetes example) have no
    # local meaning yet; say so rather than call the key unknown.
    if document.kind != "deployment" or path or key != "resources":
        return None
    return ("resources (Kubernetes requests and limits of a kubernetesOnlineDeployment) is not supported "
            "on a local engine", "remove it and size the deployment with instance_type (its vCPUs and memory "
            "become the container's limits) or local.memory")


def _no_code_model_type(document: Document) -> str | None:
    # Azure ML builds the server of an MLflow or Triton model itself when no environment is given.
    model = document.data.get("model") if document.kind == "deployment" else None
    kind = model.get("type") if isinstance(model, dict) else None
    return kind if kind in ("mlflow_model", "triton_model") else None


def _suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "allowed keys: " + ", ".join(k for k in allowed if k != "$schema")
