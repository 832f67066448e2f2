"""`reconciler drift` reports: human text, JSON and Markdown (for an issue a scheduled job opens). Pure.

Secrets are masked as in plans (an environment variable named like a key is never printed).
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache

import jinja2

from reconciler.planning.plan import Drift
from reconciler.render.masking import mask_value
from reconciler.render.text import show_value

REPORT_FORMAT_VERSION = 1
REPAIRS = {"replace": "apply replaces it", "update": "apply updates it in place", "": "apply repairs it"}


def drift_report(stack: str, stack_dir: str, state_path: str, state_serial: int, drift: tuple[Drift, ...],
                 checked: int, checked_at: str) -> dict:
    """The report as plain data; `--json` prints exactly this."""
    return {
        "format_version": REPORT_FORMAT_VERSION, "stack": stack, "stack_dir": stack_dir, "state": state_path,
        "state_serial": state_serial, "checked_at": checked_at, "resources_checked": checked,
        "drifted": bool(drift),
        "summary": {"changes": len(drift), "resources": len({d.address for d in drift}),
                    "by_kind": dict(sorted(Counter(d.kind for d in drift).items()))},
        "drift": [_masked(d.to_dict()) for d in drift],
    }


def _masked(item: dict) -> dict:
    item["fields"] = [{**f, "before": mask_value(f["path"], f["before"]), "after": mask_value(f["path"], f["after"])}
                      for f in item["fields"]]
    return item


def render_drift_report(report: dict) -> str:
    stack = report["stack"]
    if not report["drifted"]:
        return (f"No drift: the {report['resources_checked']} resource(s) in the state of {stack} match "
                "what Docker runs.")
    lines = [f"Drift in stack {stack}: {report['summary']['changes']} change(s) made outside reconciler, "
             f"on {report['summary']['resources']} resource(s):", ""]
    for item in report["drift"]:
        lines.append(f"  # {item['address']} ({item['kind']}): {item['detail']}")
        for field in item["fields"]:
            lines.append(f"      ~ {field['path']} = {show_value('', field['before'])} -> "
                         f"{show_value('', field['after'])}")
    where = report["stack_dir"] or stack
    lines += ["", f"To repair: reconciler apply {where}   (`reconciler plan {where}` shows how)",
              f"To accept them into state instead: reconciler apply --refresh-only {where}"]
    return "\n".join(lines)


@lru_cache(maxsize=None)
def _template() -> jinja2.Template:
    environment = jinja2.Environment(loader=jinja2.PackageLoader("reconciler.render", "templates"),
                                     keep_trailing_newline=True, autoescape=False)
    environment.filters["cell"] = _cell
    environment.filters["value"] = lambda value: show_value("", value)
    return environment.get_template("drift.md.j2")


def _cell(text: str) -> str:
    # Markdown table cells: a pipe would end the cell, a newline the row.
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_drift_markdown(report: dict) -> str:
    return _template().render(report=report, repairs=REPAIRS)
