"""`reconciler apply [STACK_DIR | PLANFILE]` and `reconciler destroy STACK_DIR`."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from reconciler.apply import Applier
from reconciler.cli import exits
from reconciler.cli.common import format_error, handle_errors, open_store, stack_options, state_options
from reconciler.cli.drivers import choose_driver, driver_named, driver_option
from reconciler.cli.plan import build_plan, emit_plan
from reconciler.errors import StalePlan
from reconciler.planfile import check_not_stale, read_plan


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
    saved = source.is_file()
    plan = read_plan(source) if saved else None
    stack = plan.stack if saved else source.resolve().name
    store = open_store(stack, state_path)
    store.lock("destroy" if destroy else "apply", lock_timeout)
    with store:
        if saved:
            state = store.read()
            check_not_stale(plan, state)
            driver = driver_named(choose_driver(plan.driver, "", state))
            if plan.drift or plan.mode == "refresh-only":
                state = refreshed_as_planned(plan, state, driver, store)
        else:
            plan, state, driver = build_plan(source, var_assignments, vars_file, store, targets, replace, destroy,
                                             refresh_only, refresh, driver_name)
            driver = driver or driver_named(plan.driver)
        emit_plan(plan, as_json=False, as_markdown=False)
        if not plan.has_changes():
            if plan.drift and plan.mode == "refresh-only":
                if not saved and not confirm(plan, auto_approve):
                    click.echo("\nApply cancelled.")
                    sys.exit(exits.ERROR)
                store.write(state)
                click.echo(f"\nApply complete! The state now records {len(plan.drift)} change(s) made outside "
                           "reconciler; nothing in Docker was changed.")
            return
        if not saved and not confirm(plan, auto_approve):
            click.echo("\nApply cancelled.")
            sys.exit(exits.ERROR)
        driver.preflight([(c.address, c.after) for c in plan.actionable if c.after])
        click.echo("")
        applier = Applier(driver, store, state, plan,
                          {"stack": stack, "stack_dir": Path(plan.stack_dir), "state_dir": store.path.parent},
                          parallelism=parallelism, echo=lambda line: click.echo(line))
        result = applier.run()
    counts = result.counts
    if result.ok:
        noun = "Destroy" if plan.mode == "destroy" else "Apply"
        click.echo(f"\n{noun} complete! Resources: {counts['added']} added, {counts['changed']} changed, "
                   f"{counts['destroyed']} destroyed.")
        return
    for address, error in result.failed:
        click.echo(f"\nError: {address}: {format_error(error).removeprefix('Error: ')}", err=True)
    if result.skipped:
        click.echo(f"\nNot attempted because a dependency failed: {', '.join(result.skipped)}", err=True)
    click.echo(f"\nApply failed. Resources: {counts['added']} added, {counts['changed']} changed, "
               f"{counts['destroyed']} destroyed. What already ran keeps serving; failed resources are "
               f"marked tainted and will be replaced by the next apply.", err=True)
    sys.exit(exits.ERROR)


def refreshed_as_planned(plan, state, driver, store):
    """The refreshed state a saved plan was made from: its changes (a scale-up after a missing
    container, an orphan's removal) refer to it. Refused when the engine has moved on since."""
    from reconciler.refresh import refresh_state
    refreshed, drift = refresh_state(driver, state, store.path.parent)
    if [d.to_dict() for d in drift] != [d.to_dict() for d in plan.drift]:
        raise StalePlan("saved plan is stale: the objects in Docker changed since it was made",
                        "run `reconciler plan` again and apply the new plan")
    return refreshed


def apply_options(command):
    for decorator in reversed([
        click.option("--auto-approve", is_flag=True, help="Skip the interactive 'yes' confirmation."),
        click.option("--parallelism", type=click.IntRange(1, 100), default=10, show_default=True,
                     help="How many independent steps run at once."),
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
