"""`reconciler state list|show|rm|pull|push|history|migrate` and `reconciler force-unlock ID`."""
from __future__ import annotations

import json
from pathlib import Path

import click

from reconciler.cli.common import handle_errors, store_for
from reconciler.cli.plan import describe_record, mask_state
from reconciler.errors import ReconcilerError


def which_state(command):
    command = click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
                           help="State file (default: the stack's default state).")(command)
    command = click.option("--stack", "stack_ref", metavar="DIR_OR_NAME",
                           help="Stack directory or name.")(command)
    return command


@click.group()
def state():
    """Inspect, edit and move the state (a local file, or PostgreSQL with `backend: pg`)."""


@state.command("list")
@which_state
@handle_errors()
def state_list(stack_ref, state_path):
    """List the addresses in state."""
    for address in sorted(store_for(stack_ref, state_path).read().records):
        click.echo(address)


@state.command("show")
@click.argument("address")
@which_state
@click.option("--json", "as_json", is_flag=True)
@handle_errors()
def state_show(address, stack_ref, state_path, as_json):
    """Show one resource's record (secrets masked)."""
    record = _record(store_for(stack_ref, state_path).read(), address)
    if as_json:
        data = mask_state({"records": [record.to_dict()]})["records"][0]
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(describe_record(record))


@state.command("rm")
@click.argument("addresses", nargs=-1, required=True)
@which_state
@click.option("--lock-timeout", type=float, default=0.0)
@handle_errors()
def state_rm(addresses, stack_ref, state_path, lock_timeout):
    """Forget ADDRESS: reconciler stops managing it; nothing is destroyed."""
    store = store_for(stack_ref, state_path)
    store.lock("state rm", lock_timeout)
    with store:
        current = store.read()
        for address in addresses:
            _record(current, address)
            current = current.without(address)
        store.write(current)
    for address in addresses:
        click.echo(f"Removed {address}")
    click.echo(f"Successfully removed {len(addresses)} resource instance(s).")


@state.command("pull")
@which_state
@handle_errors()
def state_pull(stack_ref, state_path):
    """Print the stored state as JSON (secrets included: it is what `state push` takes)."""
    click.echo(json.dumps(store_for(stack_ref, state_path).read().to_dict(), indent=2))


@state.command("push")
@click.argument("file", type=click.File("r"))
@which_state
@click.option("--force", is_flag=True, help="Replace the stored state even with another lineage or a lower serial.")
@click.option("--lock-timeout", type=float, default=0.0)
@handle_errors()
def state_push(file, stack_ref, state_path, force, lock_timeout):
    """Replace the stored state with FILE (`-` for stdin), as written by `state pull`."""
    from reconciler.operations.state import parse_state, push_state
    store = store_for(stack_ref, state_path)
    pushed = parse_state(file.read(), file.name, store.stack)
    result = push_state(store, pushed, force=force, lock_timeout=lock_timeout)
    if not result.changed:
        click.echo(f"{store.location} already holds this state (serial {result.state.serial}); nothing pushed.")
    else:
        click.echo(f"Pushed state of stack {store.stack} to {store.location}: lineage {result.state.lineage}, "
                   f"serial {result.state.serial}.")


@state.command("history")
@which_state
@click.option("--json", "as_json", is_flag=True)
@handle_errors()
def state_history(stack_ref, state_path, as_json):
    """List the stored versions of the state, oldest first (local keeps one earlier version)."""
    import dataclasses
    store = store_for(stack_ref, state_path)
    versions = store.history()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(v) for v in versions], indent=2))
        return
    click.echo(f"{'SERIAL':>6}  {'WRITTEN (UTC)':<25}  {'RECORDS':>7}  {'LINEAGE':<36}  BY")
    for version in versions:
        click.echo(f"{version.serial:>6}  {version.written_at:<25}  {version.records:>7}  {version.lineage:<36}  "
                   f"{version.written_by}".rstrip())


@state.command("migrate")
@click.argument("stack_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "to", type=click.Choice(["pg", "local"]), required=True,
              help="The backend to copy the state into (from the other one).")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The local state file (default: the stack's default state).")
@click.option("--force", is_flag=True, help="Replace a state the target already holds; move a --state file whose "
              "gateway configs live beside it anyway.")
@click.option("--lock-timeout", type=float, default=0.0)
@handle_errors()
def state_migrate(stack_dir, to, state_path, force, lock_timeout):
    """Copy STACK_DIR's state between its local file and PostgreSQL, lineage and serial kept."""
    from reconciler.operations.state import migrate_state
    result = migrate_state(stack_dir, to, state_path, force=force, lock_timeout=lock_timeout)
    click.echo(f"Copied the state of stack {result.state.stack} (lineage {result.state.lineage}, serial "
               f"{result.state.serial}, {len(result.state.records)} records) from {result.source} to {result.target}.")
    from reconciler.config.stack import read_backend_settings
    if read_backend_settings(stack_dir).kind != to:
        click.echo(f"Now set `backend: {to}` in the stack settings; {result.source} is left as it was and is no "
                   "longer used then.")


def _record(current, address):
    if address not in current.records:
        raise ReconcilerError(f"no resource at address {address!r} in state",
                              "see `reconciler state list` for the addresses in state")
    return current.records[address]


@click.command("force-unlock")
@click.argument("lock_id")
@which_state
@click.option("--force", is_flag=True, help="Remove the lock even though its holder is still running.")
@handle_errors()
def force_unlock(lock_id, stack_ref, state_path, force):
    """Remove a lock whose holder is gone (refused while it runs, unless --force)."""
    holder = store_for(stack_ref, state_path).force_unlock(lock_id, force=force)
    click.echo(f"reconciler state has been successfully unlocked (was held by {holder.who}, "
               f"pid {holder.pid}, {holder.operation}).")


def _add_recover() -> None:
    # `state recover` lives with `import` (both adopt objects reconciler did not create).
    from reconciler.cli.adopt_cmd import recover
    state.add_command(recover)


_add_recover()
