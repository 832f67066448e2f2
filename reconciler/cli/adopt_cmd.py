"""`reconciler import ADDRESS CONTAINER` and `reconciler state recover STACK_DIR`.

Both put containers reconciler did not create from this state into it: one container the user
names (import), or everything the stack's labels show after the state file was lost (recover).
The records are built in reconciler/adopt.py; this module reads Docker and writes state.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import click

from reconciler.cli.common import handle_errors, load_desired, open_store, stack_options
from reconciler.drivers.base import StepContext
from reconciler.errors import ReconcilerError
from reconciler.state.model import StateFile


def _ctx(store, stack_dir: Path, records: dict) -> StepContext:
    return StepContext(stack=store.stack, stack_dir=Path(stack_dir), state_dir=store.path.parent,
                       records=lambda: dict(records))


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
    from reconciler.adopt import check_importable, import_outcome, imported_record
    from reconciler.cli.drivers import choose_driver, driver_named
    desired = load_desired(stack_dir, var_assignments, vars_file)
    store = open_store(desired.stack, state_path)
    store.lock("import", lock_timeout)
    with store:
        state = store.read()
        driver = driver_named(choose_driver(None, desired.driver, state))
        info = driver.inspect(container)
        resource = check_importable(address, desired, state, info, container)
        record, notes = imported_record(resource, info, state, desired.stack, secrets.token_hex(3))
        network = driver.adopt(desired.stack, info)
        if network:
            notes.append(f"it was connected to network {network}, where the endpoint's gateway reaches deployments")
        state = state.with_record(record)
        endpoint = state.records.get(f"endpoint.{resource.spec['endpoint']}")
        if endpoint is not None and info.get("running"):
            # The gateway's routes come from deployment records; without this it would not send
            # this deployment any traffic until something else changed the endpoint.
            updated = driver.update(endpoint, endpoint.spec, endpoint.spec_hash,
                                    _ctx(store, stack_dir, state.records))
            state = state.with_record(updated)
            notes.append(f"the gateway of {endpoint.address} was reloaded to route to it")
        store.write(state)
    click.echo(f"Imported {address}: container {info['name']} ({info['id'][:12]}) is instance 0.")
    for note in notes:
        click.echo(f"  - {note}")
    click.echo(import_outcome(record, resource))
    click.echo(f"Run `reconciler plan {stack_dir}` to see the changes.")


@click.command("recover")
@click.argument("stack_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@stack_options
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              help="State file to write (default: state/<stack>.json).")
@click.option("--force", is_flag=True, help="Overwrite an existing state file (kept as <state>.backup).")
@click.option("--lock-timeout", type=float, default=0.0, metavar="SECONDS")
@handle_errors()
def recover(stack_dir, var_assignments, vars_file, state_path, force, lock_timeout):
    """Rebuild a lost state file from container labels and the model store.

    Deployment containers are grouped by address and generation, gateways found by role, models
    matched by content digest in the store. Keys cannot be recovered: each gateway gets new ones.
    """
    from reconciler.adopt import rebuild
    from reconciler.cli.drivers import driver_named
    desired = load_desired(stack_dir, var_assignments, vars_file)
    store = open_store(desired.stack, state_path)
    if store.exists() and not force:
        raise ReconcilerError(f"state file {store.path} exists; recover only rebuilds a lost one",
                              "`reconciler drift` compares it with Docker; pass --force to replace it anyway "
                              "(the current file is kept as .backup)")
    store.lock("state recover", lock_timeout)
    with store:
        # The state is lost (or unreadable): the stack settings alone say which engine to read.
        driver = driver_named(desired.driver)
        observed = driver.list_managed(desired.stack)
        digests = sorted({r.spec["content_digest"] for r in desired.by_kind("model")})
        stored = driver.stored_models(store.path.parent, digests)
        result = rebuild(desired, observed, stored)
        if result.inspect:
            inspected = {cid: driver.inspect(cid) for cid in result.inspect.values()}
            result = rebuild(desired, observed, stored, inspected)
        records = dict(result.records)
        notes = list(result.notes)
        for address in sorted(a for a in records if a.startswith("endpoint.")):
            records[address], note = driver.recover_gateway(records[address], _ctx(store, stack_dir, records))
            notes.append(f"{address}: {note}")
        state = StateFile.empty(desired.stack)
        for record in records.values():
            state = state.with_record(record)
        written = store.write(state)
    click.echo(f"Recovered {len(records)} record(s) for stack {desired.stack} into {store.path} "
               f"(new lineage {written.lineage}):")
    for address in sorted(records):
        record = records[address]
        click.echo(f"  {address}" + (" (tainted)" if record.status == "tainted" else ""))
    for note in notes:
        click.echo(f"  - {note}")
    click.echo(f"Run `reconciler plan {stack_dir}` to see what differs from the configuration.")
