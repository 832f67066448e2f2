"""`reconciler endpoint keys ENDPOINT [--regenerate-keys primary|secondary|both]`."""
from __future__ import annotations

import json

import click

from reconciler.cli.common import handle_errors
from reconciler.cli.drivers import driver_named
from reconciler.cli.runtime import find_record, which_stack
from reconciler.drivers.base import StepContext, SupportsKeyRotation, require


@click.group()
def endpoint():
    """Endpoint operations that are not configuration: keys."""


@endpoint.command()
@click.argument("name")
@click.option("--regenerate-keys", type=click.Choice(["primary", "secondary", "both"]),
              help="Replace a key (the gateway reloads; the other key keeps working).")
@click.option("--lock-timeout", type=float, default=0.0)
@which_stack
@handle_errors()
def keys(name, regenerate_keys, lock_timeout, stack_ref, state_path):
    """Print ENDPOINT's keys as JSON (like `az ml online-endpoint get-credentials`)."""
    store, record = find_record("endpoint", name, stack_ref, state_path)
    if regenerate_keys:
        store.lock("endpoint keys --regenerate-keys", lock_timeout)
        with store:
            state = store.read()
            record = state.records[record.address]
            ctx = StepContext(stack=store.stack, stack_dir=store.path.parent, state_dir=store.path.parent,
                              records=lambda: dict(state.records), identity=state.lineage,
                              state_path=store.path.resolve())
            rotator = require(driver_named(record.driver), SupportsKeyRotation,
                              "reconciler endpoint keys --regenerate-keys")
            record = rotator.regenerate_keys(record, regenerate_keys, ctx)
            store.write(state.with_record(record))
    click.echo(json.dumps({"primaryKey": record.outputs["keys"]["primary"],
                           "secondaryKey": record.outputs["keys"]["secondary"]}, indent=2))
