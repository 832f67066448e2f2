"""Which values are secrets and how they are shown. Pure.

By where a value comes from, not only by its name: every value of a deployment's environment
variables is secret (no name rule catches DB_PASS, HF_AUTH, AZURE_STORAGE_SAS or a
DATABASE_URL with a password in it), except those reconciler sets itself and those the stack
settings list under `plain_environment_variables`, which a deployment's spec carries. Any
other field is secret when its name says so (endpoint keys, names like API_KEY).
"""
from __future__ import annotations

import re
from typing import Any

SENSITIVE_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|CONNECTION_STRING)", re.I)
MASK = "(sensitive value)"
PLAIN_KEY = "plain_environment_variables"
# Paths inside the container that reconciler itself puts there: never a secret.
SET_BY_RECONCILER = frozenset({"AZUREML_MODEL_DIR", "AML_APP_ROOT", "AZUREML_ENTRY_SCRIPT"})


def is_sensitive_name(name: str) -> bool:
    """Whether a name alone says it holds a secret (API_KEY, DB_PASSWORD, keys.primary...)."""
    return bool(SENSITIVE_NAME.search(name))


def plain_names(spec: dict | None) -> frozenset[str]:
    """The environment variables a deployment spec lets output show."""
    return frozenset((spec or {}).get(PLAIN_KEY) or ())


def is_sensitive(path: str, plain: frozenset[str] = frozenset()) -> bool:
    """A field is secret when its name says so, or when it is an environment variable's value
    that neither reconciler set nor the stack marked plain."""
    parts = path.split(".")
    if is_sensitive_name(parts[-1]):
        return True
    return len(parts) >= 2 and parts[-2] == "environment_variables" and \
        parts[-1] not in plain and parts[-1] not in SET_BY_RECONCILER


def mask_value(path: str, value: Any, inherited: bool = False, plain: frozenset[str] = frozenset()) -> Any:
    """`value` with every secret leaf replaced by MASK; the shape of mappings is kept.

    Everything below a sensitive name is secret too: endpoint outputs hold
    `keys: {primary: ..., secondary: ...}`, whose leaf names say nothing.
    """
    if value is None:
        return None
    sensitive = inherited or is_sensitive(path, plain)
    if isinstance(value, dict):
        return {k: mask_value(f"{path}.{k}" if path else k, v, sensitive, plain) for k, v in value.items()}
    return MASK if sensitive else value


def masked_plan_dict(plan_dict: dict) -> dict:
    """The plan's JSON form for people and logs: every secret masked (saved plans keep values)."""
    masked = dict(plan_dict)
    masked["changes"] = [_masked_change(change) for change in plan_dict["changes"]]
    # Drift fields hold what Docker shows, e.g. an environment variable set by hand.
    masked["drift"] = [{**item, "fields": [{**f, "before": mask_value(f["path"], f["before"]),
                                            "after": mask_value(f["path"], f["after"])}
                                           for f in item.get("fields", [])]}
                       for item in plan_dict.get("drift", [])]
    masked["desired"] = {address: {**resource, "spec": mask_value("", resource["spec"],
                                                                  plain=plain_names(resource["spec"]))}
                         for address, resource in plan_dict.get("desired", {}).items()}
    return masked


def _masked_change(change: dict) -> dict:
    plain = plain_names(change["after"] or change["before"])
    return {**change,
            "before": mask_value("", change["before"], plain=plain) if change["before"] else change["before"],
            "after": mask_value("", change["after"], plain=plain) if change["after"] else change["after"],
            "fields": [{**f, "before": mask_value(f["path"], f["before"], plain=plain),
                        "after": mask_value(f["path"], f["after"], plain=plain)} for f in change["fields"]]}
