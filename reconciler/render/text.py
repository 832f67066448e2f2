"""Terraform-like human output for plans: +, ~, -/+, -, "# forces replacement". Pure."""
from __future__ import annotations

import json
from typing import Any

from reconciler.planning.plan import CREATE, CREATE_THEN_DELETE, DELETE, DELETE_THEN_CREATE, UPDATE, Action, Change, Plan
from reconciler.render.masking import mask_value, plain_names

COLORS = {CREATE: "\033[32m", UPDATE: "\033[33m", CREATE_THEN_DELETE: "\033[35m", DELETE_THEN_CREATE: "\033[35m",
          DELETE: "\033[31m"}
REPLACE = "replace"  # the key both replacements share in HEADINGS and REASONS
RESET, BOLD = "\033[0m", "\033[1m"
HEADINGS = {
    CREATE: "will be created",
    UPDATE: "will be updated in-place",
    REPLACE: "must be replaced",
    DELETE: "will be destroyed",
}
REASONS = {
    (REPLACE, "tainted"): "is tainted, so must be replaced",
    (REPLACE, "requested"): "will be replaced, as requested",
    (REPLACE, "dependency-replaced"): "must be replaced, because what it mounts is replaced",
    (UPDATE, "dependency-replaced"): "will be updated in-place to route to its deployments' new containers",
    (UPDATE, "gateway-view-changed"): "will be updated in-place: the gateway's view of its deployments changed",
    (REPLACE, "drifted"): "changed outside reconciler, so will be repaired by replacing it",
    (UPDATE, "drifted"): "changed outside reconciler, so will be repaired",
}


# An environment's headings say what happens to its image.
ENVIRONMENT_HEADINGS = {CREATE: "will be built", REPLACE: "will be rebuilt", DELETE: "will be destroyed (its image removed)"}
# Whole files an environment spec carries (what the build is made of): a plan names them by size.
FILE_VALUED = frozenset({"conda_content", "dockerfile", "install_script"})


def show_value(path: str, value: Any, plain: frozenset[str] = frozenset()) -> str:
    if path in FILE_VALUED and isinstance(value, str):
        return f"({len(value.splitlines())} lines)"
    return json.dumps(mask_value(path, value, plain=plain), sort_keys=True)


def _paint(text: str, action: Action, color: bool) -> str:
    return f"{COLORS.get(action, '')}{text}{RESET}" if color and action in COLORS else text


def render_change(change: Change, color: bool = False) -> list[str]:
    kind, name = change.address.kind, change.address.name_with_suffix
    key = REPLACE if change.action.is_replace else change.action
    headings = ENVIRONMENT_HEADINGS if kind == "environment" else HEADINGS
    heading = REASONS.get((key, change.reason), headings.get(key, HEADINGS[key]))
    if change.action is CREATE_THEN_DELETE:
        heading += " (new one created before the old one is destroyed)"
    symbol = change.action.symbol
    # What this deployment lets output show; the newer spec says (a name just taken off the
    # list is hidden in its old value too).
    plain = plain_names(change.after if change.after is not None else change.before)
    lines = [f"  {BOLD if color else ''}# {change.address}{RESET if color else ''} {heading}",
             _paint(f"{symbol:>3} {kind} \"{name}\" {{", change.action, color)]
    if change.action is CREATE:
        lines += [_paint(f"      + {k} = {show_value(k, v, plain)}", CREATE, color)
                  for k, v in change.after.items() if v is not None]
    elif change.action is DELETE:
        lines += [_paint(f"      - {k} = {show_value(k, v, plain)}", DELETE, color)
                  for k, v in change.before.items()]
    else:
        for field in change.fields:
            marker = "  # forces replacement" if field.forces_replacement and change.action.is_replace else ""
            if field.before is None:
                text = f"      + {field.path} = {show_value(field.path, field.after, plain)}"
            elif field.after is None:
                text = f"      - {field.path} = {show_value(field.path, field.before, plain)}"
            else:
                text = (f"      ~ {field.path} = {show_value(field.path, field.before, plain)} -> "
                        f"{show_value(field.path, field.after, plain)}")
            lines.append(_paint(text + marker, UPDATE, color))
        # Only the spec's own attributes: `gateway.NAME.FIELD` lines come from its deployments.
        changed = {f.path.split(".")[0].split("[")[0] for f in change.fields if not f.path.startswith("gateway.")}
        hidden = len(change.after or {}) - len(changed)
        if hidden > 0:
            lines.append(f"        # ({hidden} unchanged attributes hidden)")
    lines.append("    }")
    return lines


def render_drift(plan: Plan) -> list[str]:
    if not plan.drift:
        return []
    lines = ["Note: Objects have changed outside of reconciler", "",
             "reconciler detected the following changes made outside of reconciler since the last apply:", ""]
    for drift in plan.drift:
        lines.append(f"  # {drift.address}: {drift.detail}")
        for field in drift.fields:
            lines.append(f"      ~ {field.path} = {show_value(field.path, field.before)} -> "
                         f"{show_value(field.path, field.after)}")
    return [*lines, ""]


def render_plan(plan: Plan, color: bool = False) -> str:
    lines = [f"Warning: {warning}" for warning in plan.warnings] + ([""] if plan.warnings else [])
    lines += [f"Image map: {item}" for item in plan.substitutions] + ([""] if plan.substitutions else [])
    lines += render_drift(plan)
    if plan.has_changes():
        lines += ["reconciler will perform the following actions:", ""]
        for change in plan.actionable:
            lines += render_change(change, color) + [""]
    lines.append(_paint(plan.summary_line(), UPDATE if plan.has_changes() else "", color))
    return "\n".join(lines)
