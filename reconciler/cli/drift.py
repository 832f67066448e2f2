"""`reconciler drift STACK_DIR`: compare what Docker runs with the state; change nothing.

Exit 0 no drift, 2 drift found, 1 error (exits.py), so a scheduled job can open an issue from
`--markdown` when the exit code is 2.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from reconciler.cli import exits
from reconciler.cli.common import handle_errors, open_store
from reconciler.errors import ReconcilerError


@click.command()
@click.argument("stack_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              help="State file (default: state/<stack>.json).")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON (see docs/drift.md).")
@click.option("--markdown", "as_markdown", is_flag=True, help="The report as Markdown, e.g. for an issue body.")
@handle_errors()
def drift(stack_dir, state_path, as_json, as_markdown):
    """Report changes made outside reconciler (exit 0 none, 2 drift, 1 error)."""
    from reconciler.drivers.registry import choose_driver, driver_named
    from reconciler.refresh import refresh_state
    from reconciler.render.drift import drift_report, render_drift_markdown, render_drift_report
    stack = Path(stack_dir).resolve().name
    store = open_store(stack, state_path, Path(stack_dir))
    if not store.exists():
        raise ReconcilerError(f"no state for stack {stack} at {store.location}",
                              "apply the stack first, pass --state, or rebuild a lost state file with "
                              f"`reconciler state recover {stack_dir}`")
    # Read without the lock, as `plan` does: nothing is written, and a running apply must not
    # make the scheduled check fail (it then reports what is half-way, which is drift).
    state = store.read()
    _, found = refresh_state(driver_named(choose_driver(None, "", state)), state, store.work_dir)
    report = drift_report(stack, str(stack_dir), store.location, state.serial, found,
                          len([a for a in state.records if not a.is_derived]),
                          datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif as_markdown:
        click.echo(render_drift_markdown(report))
    else:
        click.echo(render_drift_report(report))
    sys.exit(exits.DRIFT if found else exits.OK)
