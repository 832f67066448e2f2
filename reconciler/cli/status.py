"""`reconciler status STACK_DIR`: each endpoint, deployment and instance as it runs now (in or
out of rotation, since when readiness fails, restarts). Reads only; takes no lock."""
from __future__ import annotations

from pathlib import Path

import click

from reconciler.cli.common import handle_errors, open_store
from reconciler.errors import ReconcilerError


@click.command()
@click.argument("stack_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              help="State file (default: state/<stack>.json).")
@handle_errors()
def status(stack_dir, state_path):
    """Show each endpoint, deployment and instance of STACK_DIR as it runs now."""
    from reconciler.drivers.base import SupportsStatus, require
    from reconciler.drivers.registry import choose_driver, driver_named
    from reconciler.render.status import render_status, status_view
    stack = Path(stack_dir).resolve().name
    store = open_store(stack, state_path, Path(stack_dir))
    if not store.exists():
        raise ReconcilerError(f"no state for stack {stack} at {store.path}", "apply the stack first, or pass --state")
    state = store.read()
    driver = require(driver_named(choose_driver(None, "", state)), SupportsStatus, "reconciler status")
    observed = driver.runtime_status(state, store.path.parent)
    click.echo(render_status(status_view(stack, driver.name, state.records, observed)), nl=False)
