"""`reconciler endpoint keys ENDPOINT [--regenerate-keys primary|secondary|both]` and
`reconciler endpoint token ENDPOINT`."""
from __future__ import annotations

import json

import click

from reconciler.cli.common import handle_errors
from reconciler.cli.drivers import driver_named
from reconciler.cli.runtime import endpoint_token, find_record, which_stack
from reconciler.drivers.base import StepContext, SupportsKeyRotation, require
from reconciler.errors import ReconcilerError


@click.group()
def endpoint():
    """Endpoint operations that are not configuration: keys and tokens."""


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
            ctx = StepContext(stack=store.stack, stack_dir=store.work_dir, state_dir=store.work_dir,
                              records=lambda: dict(state.records), identity=state.lineage,
                              state_path=store.location)
            rotator = require(driver_named(record.driver), SupportsKeyRotation,
                              "reconciler endpoint keys --regenerate-keys")
            record = rotator.regenerate_keys(record, regenerate_keys, ctx)
            store.write(state.with_record(record))
    click.echo(json.dumps({"primaryKey": record.outputs["keys"]["primary"],
                           "secondaryKey": record.outputs["keys"]["secondary"]}, indent=2))


@endpoint.command()
@click.argument("name")
@which_stack
@handle_errors()
def token(name, stack_ref, state_path):
    """Print a token for an aml_token ENDPOINT (like `az ml online-endpoint get-credentials`)."""
    _, record = find_record("endpoint", name, stack_ref, state_path)
    if record.spec["auth_mode"] != "aml_token":
        raise ReconcilerError(f"endpoint {name} uses auth_mode {record.spec['auth_mode']}, not aml_token",
                              "its credentials are keys: `reconciler endpoint keys " + name + "`")
    click.echo(json.dumps(endpoint_token(record), indent=2))
