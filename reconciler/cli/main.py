"""The `reconciler` click group: registers every command module."""
from __future__ import annotations

import click

from reconciler import __version__
from reconciler.cli.adopt_cmd import import_command, recover
from reconciler.cli.apply import apply, destroy
from reconciler.cli.drift import drift
from reconciler.cli.endpoint import endpoint
from reconciler.cli.plan import plan, show
from reconciler.cli.render import render
from reconciler.cli.runtime import invoke, logs
from reconciler.cli.state_cmd import force_unlock, state
from reconciler.cli.validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
def cli():
    """Plan and apply Azure ML online endpoints on a Docker Engine, Terraform style."""


for command in (validate, plan, show, apply, destroy, invoke, logs, endpoint, render, state, force_unlock):
    cli.add_command(command)

for command in (drift, import_command):
    cli.add_command(command)
state.add_command(recover)


def main() -> None:
    cli()
