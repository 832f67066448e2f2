"""`reconciler validate STACK_DIR`: schema and cross-document checks, nothing else."""
from __future__ import annotations

import json

import click

from reconciler.cli.common import handle_errors, load_desired, stack_options


@click.command()
@click.argument("stack_dir", type=click.Path(file_okay=False, exists=True))
@stack_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@handle_errors(as_json_flag="as_json")
def validate(stack_dir, var_assignments, vars_file, as_json):
    """Check STACK_DIR against the schemas and across documents."""
    graph = load_desired(stack_dir, var_assignments, vars_file)
    counts = {kind: len(graph.by_kind(kind)) for kind in ("endpoint", "deployment", "model")}
    if as_json:
        click.echo(json.dumps({"valid": True, "stack": graph.stack, "resources": counts,
                               "warnings": [p.to_dict() for p in graph.unsupported]}, indent=2))
        return
    for problem in graph.unsupported:
        click.echo(f"Warning: {problem} [fails at plan time]", err=True)
    click.echo(f"Stack {graph.stack} is valid: {counts['endpoint']} endpoint(s), "
               f"{counts['deployment']} deployment(s), {counts['model']} model(s).")
