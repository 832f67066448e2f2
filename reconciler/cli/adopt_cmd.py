"""`reconciler import ADDRESS CONTAINER` and `reconciler state recover STACK_DIR`.

Both put containers reconciler did not create from this state into it: one container the user
names (import), or everything the stack's labels show after the state file was lost (recover).
The work is done in reconciler/operations/adopt.py; this module parses options and echoes.
"""
from __future__ import annotations

from pathlib import Path

import click

from reconciler.cli.common import handle_errors, load_desired, open_store, stack_options


@click.command("import")
@click.argument("address")
@click.argument("container")
@click.option("--stack", "stack_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=".",
              show_default=True, help="Stack directory whose configuration describes ADDRESS.")
@stack_options
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              help="State file (default: state/<stack>.json).")
@click.option("--lock-timeout", type=float, default=0.0, metavar="SECONDS")
@handle_errors()
def import_command(address, container, stack_dir, var_assignments, vars_file, state_path, lock_timeout):
    """Adopt CONTAINER (id or name) as instance 0 of deployment ADDRESS.

    The record holds what the container really runs (image, environment, model mount), so the
    next plan shows how it differs from the configuration and apply replaces it if anything
    does. Docker labels cannot be added to a running container: an unlabelled one is recorded
    as adopted and tracked by id.
    """
    from reconciler.operations.adopt import import_container
    desired = load_desired(stack_dir, var_assignments, vars_file)
    result = import_container(desired, open_store(desired.stack, state_path, Path(stack_dir)), stack_dir, address, container,
                              lock_timeout)
    click.echo(f"Imported {address}: container {result.container_name} ({result.container_id[:12]}) is instance 0.")
    for note in result.notes:
        click.echo(f"  - {note}")
    click.echo(result.outcome)
    click.echo(f"Run `reconciler plan {stack_dir}` to see the changes.")


@click.command("recover")
@click.argument("stack_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@stack_options
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              help="State file to write (default: the stack's default state, see `reconciler plan --help`).")
@click.option("--force", is_flag=True, help="Overwrite an existing state file (kept as <state>.backup).")
@click.option("--lock-timeout", type=float, default=0.0, metavar="SECONDS")
@handle_errors()
def recover(stack_dir, var_assignments, vars_file, state_path, force, lock_timeout):
    """Rebuild a lost state file from container labels and the model store.

    Deployment containers are grouped by address and generation, gateways found by role, models
    matched by content digest in the store. Each gateway keeps its port and the keys its live
    config admits (new keys only when that config cannot be read).
    """
    from reconciler.operations.adopt import recover_state
    desired = load_desired(stack_dir, var_assignments, vars_file)
    result = recover_state(desired, open_store(desired.stack, state_path, Path(stack_dir)), stack_dir, force, lock_timeout)
    click.echo(f"Recovered {len(result.records)} record(s) for stack {result.stack} into {result.path} "
               f"(identity {result.lineage}):")
    for address in sorted(result.records):
        record = result.records[address]
        click.echo(f"  {address}" + (" (tainted)" if record.status == "tainted" else ""))
    for note in result.notes:
        click.echo(f"  - {note}")
    click.echo(f"Run `reconciler plan {stack_dir}` to see what differs from the configuration.")
