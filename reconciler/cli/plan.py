"""`reconciler plan STACK` and `reconciler show [PLANFILE|STACK]`: options in, reconciler.operations.plan
does the work, render/ the output."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from reconciler.cli import exits
from reconciler.cli.common import (handle_errors, load_options, open_store, stack_options, stack_variables,
                                   state_options, use_color)
from reconciler.cli.drivers import driver_option
from reconciler.operations.plan import PlanRequest
from reconciler.operations.plan import plan as plan_operation
from reconciler.planfile import read_plan, write_plan
from reconciler.planning.planner import APPLY, DESTROY, REFRESH_ONLY
from reconciler.render.masking import masked_plan_dict
from reconciler.render.text import render_plan


def plan_options(command):
    for decorator in reversed([
        click.option("--target", "targets", multiple=True, metavar="ADDRESS",
                      help="Limit the plan to ADDRESS and what it depends on (repeatable)."),
        click.option("--replace", "replace", multiple=True, metavar="ADDRESS",
                     help="Replace ADDRESS even if it has not changed (repeatable)."),
        click.option("--destroy", is_flag=True, help="Plan to destroy everything in state."),
        click.option("--refresh-only", is_flag=True, help="Only accept changes made outside reconciler."),
        click.option("--refresh/--no-refresh", default=True, show_default=True,
                     help="Read the container engine before planning."),
    ]):
        command = decorator(command)
    return command


def plan_mode(destroy: bool, refresh_only: bool) -> str:
    return DESTROY if destroy else REFRESH_ONLY if refresh_only else APPLY


def emit_plan(plan, as_json: bool, as_markdown: bool) -> None:
    if as_json:
        click.echo(json.dumps(masked_plan_dict(plan.to_dict()), indent=2))
    elif as_markdown:
        # Imported here: jinja2 is 0.03 s of every plan and apply that prints text.
        from reconciler.render.markdown import render_plan_markdown
        click.echo(render_plan_markdown(plan))
    else:
        click.echo(render_plan(plan, color=use_color()))


@click.command()
@click.argument("stack_dir", type=click.Path(file_okay=False, exists=True))
@stack_options
@state_options
@plan_options
@driver_option
@click.option("-out", "--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Save the plan to FILE for `reconciler apply FILE`.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 no changes, 1 error, 2 changes present.")
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON (see docs/plan-json.md).")
@click.option("--markdown", "as_markdown", is_flag=True, help="The plan as Markdown for a pull-request comment.")
@handle_errors()
def plan(stack_dir, var_assignments, vars_file, state_path, lock_timeout, targets, replace, destroy,
         refresh_only, refresh, driver_name, out_file, detailed_exitcode, as_json, as_markdown):
    """Show what apply would change to make the engine match STACK_DIR."""
    request = PlanRequest(stack_dir=Path(stack_dir), variables=stack_variables(var_assignments, vars_file),
                          state_path=state_path, mode=plan_mode(destroy, refresh_only), targets=tuple(targets),
                          replace=tuple(replace), refresh=refresh, driver=driver_name, load=load_options())
    result = plan_operation(request).plan
    emit_plan(result, as_json, as_markdown)
    if out_file:
        write_plan(result, out_file)
        if not (as_json or as_markdown):
            click.echo(f"\nSaved the plan to: {out_file}\nTo perform exactly these actions, run: "
                       f"reconciler apply {out_file}")
    if detailed_exitcode and (result.has_changes() or result.drift):
        sys.exit(exits.CHANGES)


@click.command()
@click.argument("target", type=click.Path(exists=True))
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              help="State file when TARGET is a stack directory.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--markdown", "as_markdown", is_flag=True)
@handle_errors()
def show(target, state_path, as_json, as_markdown):
    """Show a saved plan FILE, or the state of a stack DIR."""
    path = Path(target)
    if path.is_file():
        emit_plan(read_plan(path), as_json, as_markdown)
        return
    store = open_store(path.resolve().name, state_path, path)
    state = store.read()
    if as_json:
        click.echo(json.dumps(mask_state(state.to_dict()), indent=2))
        return
    if not state.records:
        click.echo(f"No state for stack {state.stack} ({store.location}).")
        return
    for address in sorted(state.records):
        click.echo(describe_record(state.records[address]))


def mask_state(data: dict) -> dict:
    from reconciler.render.masking import mask_value, plain_names
    for record in data["records"]:
        record["outputs"] = mask_value("outputs", record["outputs"])
        record["spec"] = mask_value("spec", record["spec"], plain=plain_names(record["spec"]))
    return data


def describe_record(record) -> str:
    from reconciler.render.masking import plain_names
    from reconciler.render.text import show_value
    kind, name = record.address.kind, record.address.name_with_suffix
    lines = [f"# {record.address}" + (" (tainted)" if record.status == "tainted" else ""),
             f"{kind} \"{name}\" {{"]
    plain = plain_names(record.spec)
    lines += [f"    {k} = {show_value(k, v, plain)}" for k, v in record.spec.items() if v is not None]
    lines += [f"    {k} = {show_value(k, v)}" for k, v in record.outputs.items()]
    lines.append("}")
    return "\n".join(lines)
