"""`reconciler apply [STACK_DIR | PLANFILE]` and `reconciler destroy STACK_DIR`: options in,
reconciler.operations.apply does the work; this module renders the plan, asks for confirmation,
echoes progress (render/progress.py) and turns the outcome into messages and exit codes."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from reconciler.cli import exits
from reconciler.cli.common import (format_error, handle_errors, load_options, stack_options, stack_variables,
                                   state_options)
from reconciler.cli.drivers import driver_option
from reconciler.cli.plan import emit_plan
from reconciler.operations import apply as operations
from reconciler.planning.planner import APPLY, DESTROY, REFRESH_ONLY
from reconciler.render.progress import ProgressPrinter


def confirm(plan, auto_approve: bool) -> bool:
    if auto_approve:
        return True
    verb = {"destroy": "destroy all resources",
            "refresh-only": "update the state to match these objects"}.get(plan.mode, "perform these actions")
    click.echo(f"\nDo you want to {verb}?\n  Only 'yes' will be accepted to approve.\n")
    answer = click.prompt("  Enter a value", default="", show_default=False)
    return answer.strip() == "yes"


def run_apply(source: Path, var_assignments, vars_file, state_path, lock_timeout, targets, replace, destroy,
              refresh_only, auto_approve, parallelism, refresh=True, driver_name=None) -> None:
    # A saved plan carries its configuration: --var and --vars-file are not read for it.
    variables = {} if source.is_file() else stack_variables(var_assignments, vars_file)
    request = operations.ApplyRequest(
        source=source, variables=variables, state_path=state_path,
        mode=DESTROY if destroy else REFRESH_ONLY if refresh_only else APPLY, targets=tuple(targets),
        replace=tuple(replace), refresh=refresh, driver=driver_name, parallelism=parallelism,
        lock_timeout=lock_timeout, load=load_options())
    outcome = operations.apply(request, show=lambda plan: emit_plan(plan, as_json=False, as_markdown=False),
                               confirm=lambda plan: confirm(plan, auto_approve),
                               hooks=[ProgressPrinter(click.echo)])
    plan, counts = outcome.plan, outcome.counts
    if outcome.status == operations.CANCELLED:
        click.echo("\nApply cancelled.")
        sys.exit(exits.ERROR)
    if outcome.status == operations.STATE_REFRESHED:
        click.echo(f"\nApply complete! The state now records {len(plan.drift)} change(s) made outside "
                   "reconciler; nothing in Docker was changed.")
        return
    if outcome.status == operations.NO_CHANGES:
        return
    if outcome.status == operations.APPLIED:
        noun = "Destroy" if plan.mode == "destroy" else "Apply"
        click.echo(f"\n{noun} complete! Resources: {counts['added']} added, {counts['changed']} changed, "
                   f"{counts['destroyed']} destroyed.")
        return
    result = outcome.result
    for address, error in result.failed:
        click.echo(f"\nError: {address}: {format_error(error).removeprefix('Error: ')}", err=True)
    if result.skipped:
        click.echo(f"\nNot attempted because a dependency failed: {', '.join(result.skipped)}", err=True)
    click.echo(f"\nApply failed. Resources: {counts['added']} added, {counts['changed']} changed, "
               f"{counts['destroyed']} destroyed. What already ran keeps serving; failed resources are "
               f"marked tainted and will be replaced by the next apply.", err=True)
    sys.exit(exits.ERROR)


def apply_options(command):
    for decorator in reversed([
        click.option("--auto-approve", is_flag=True, help="Skip the interactive 'yes' confirmation."),
        click.option("--parallelism", type=click.IntRange(1, 100), default=10, show_default=True,
                     help="How many independent steps work at once (a step waiting for readiness does not count)."),
    ]):
        command = decorator(command)
    return command


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@stack_options
@state_options
@click.option("--target", "targets", multiple=True, metavar="ADDRESS")
@click.option("--replace", "replace", multiple=True, metavar="ADDRESS")
@click.option("--refresh-only", is_flag=True, help="Accept changes made outside reconciler into state.")
@click.option("--refresh/--no-refresh", default=True, show_default=True)
@driver_option
@apply_options
@handle_errors()
def apply(source, var_assignments, vars_file, state_path, lock_timeout, targets, replace, refresh_only, refresh,
          driver_name, auto_approve, parallelism):
    """Make the engine match STACK_DIR, or carry out a saved PLANFILE exactly."""
    run_apply(source, var_assignments, vars_file, state_path, lock_timeout, targets, replace, False,
              refresh_only, auto_approve, parallelism, refresh, driver_name)


@click.command()
@click.argument("stack_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@stack_options
@state_options
@click.option("--target", "targets", multiple=True, metavar="ADDRESS")
@click.option("--refresh/--no-refresh", default=True, show_default=True,
              help="Read the engine first, so leftovers of interrupted applies go too.")
@driver_option
@apply_options
@handle_errors()
def destroy(stack_dir, var_assignments, vars_file, state_path, lock_timeout, targets, refresh, driver_name,
            auto_approve, parallelism):
    """Destroy everything STACK_DIR's state manages, in reverse dependency order."""
    run_apply(stack_dir, var_assignments, vars_file, state_path, lock_timeout, targets, (), True, False,
              auto_approve, parallelism, refresh=refresh, driver_name=driver_name)
