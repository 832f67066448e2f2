"""`reconciler state list|show|rm` and `reconciler force-unlock ID`."""
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
    """Inspect and edit the state file."""


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
