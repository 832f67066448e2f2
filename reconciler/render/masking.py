"""Which values are secrets and how they are shown. Pure."""
from __future__ import annotations

import re
from typing import Any

SENSITIVE_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|CONNECTION_STRING)", re.I)
MASK = "(sensitive value)"


def is_sensitive(path: str) -> bool:
    """A field is secret when its last name says so (env vars such as API_KEY, endpoint keys)."""
    last = path.rsplit(".", 1)[-1]
    return bool(SENSITIVE_NAME.search(last))


def mask_value(path: str, value: Any, inherited: bool = False) -> Any:
    """`value` with every secret leaf replaced by MASK; the shape of mappings is kept.

    Everything below a sensitive name is secret too: endpoint outputs hold
    `keys: {primary: ..., secondary: ...}`, whose leaf names say nothing.
    """
    if value is None:
        return None
    sensitive = inherited or is_sensitive(path)
    if isinstance(value, dict):
        return {k: mask_value(f"{path}.{k}", v, sensitive) for k, v in value.items()}
    return MASK if sensitive else value


def masked_plan_dict(plan_dict: dict) -> dict:
    """The plan's JSON form for people and logs: every secret masked (saved plans keep values)."""
    masked = dict(plan_dict)
    masked["changes"] = [
        {**change,
         "before": mask_value("", change["before"]) if change["before"] else change["before"],
         "after": mask_value("", change["after"]) if change["after"] else change["after"],
         "fields": [{**f, "before": mask_value(f["path"], f["before"]), "after": mask_value(f["path"], f["after"])}
                    for f in change["fields"]]}
        for change in plan_dict["changes"]]
    # Drift fields hold what Docker shows, e.g. an environment variable set by hand.
    masked["drift"] = [{**item, "fields": [{**f, "before": mask_value(f["path"], f["before"]),
                                            "after": mask_value(f["path"], f["after"])}
                                           for f in item.get("fields", [])]}
                       for item in plan_dict.get("drift", [])]
    masked["desired"] = {address: {**resource, "spec": mask_value("", resource["spec"])}
                         for address, resource in plan_dict.get("desired", {}).items()}
    return masked
