"""The `reconciler` click group: registers every command module."""
from __future__ import annotations

import click

from reconciler import __version__
from reconciler.cli.validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
def cli():
    """Plan and apply Azure ML online endpoints on a Docker Engine, Terraform style."""


cli.add_command(validate)


def main() -> None:
    cli()
