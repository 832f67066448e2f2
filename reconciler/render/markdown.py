"""Markdown rendering for pull-request comments, from a jinja2 template. Pure."""
from __future__ import annotations

from functools import lru_cache

import jinja2

from reconciler.planning.plan import Plan
from reconciler.render.text import render_change

MAX_CHANGES_SHOWN = 50


@lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("reconciler.render", "templates"),
                              keep_trailing_newline=True, trim_blocks=False, autoescape=False)


def render_plan_markdown(plan: Plan, max_changes: int = MAX_CHANGES_SHOWN) -> str:
    shown = plan.actionable[:max_changes]
    details = {c.address: "\n".join(map(_outdent, render_change(c)[1:])) for c in shown}
    return environment().get_template("plan.md.j2").render(
        plan=plan, shown=shown, details=details,
        hidden=len(plan.actionable) - len(shown))


def _outdent(line: str) -> str:
    # The text form right-aligns the symbol in three columns; "-/+" fills all three, so only
    # leading blanks may go, or a replacement would read "+ deployment" (a create).
    return line[2:] if line.startswith("  ") else line
