"""`reconciler validate STACK_DIR`: schema and cross-document checks, nothing else."""
from __future__ import annotations

import json

import click

from reconciler.cli.common import echo_warnings, handle_errors, load_desired, stack_options
from reconciler.errors import StackInvalid


@click.command()
@click.argument("stack_dir", type=click.Path(file_okay=False, exists=True))
@stack_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@handle_errors(as_json_flag="as_json")
def validate(stack_dir, var_assignments, vars_file, as_json):
    """Check STACK_DIR against the schemas and across documents."""
    graph = load_desired(stack_dir, var_assignments, vars_file)
    if graph.unsupported:
        # Refused here exactly as plan refuses it: validate passing means plan can start.
        raise StackInvalid(list(graph.unsupported))
    counts = {kind: len(graph.by_kind(kind)) for kind in ("endpoint", "deployment", "model")}
    if as_json:
        click.echo(json.dumps({"valid": True, "stack": graph.stack, "resources": counts,
                               "warnings": [p.to_dict() for p in graph.warnings],
                               "ignored": [{"file": i.file, "line": i.line, "reason": i.reason}
                                           for i in graph.ignored]}, indent=2))
        return
    echo_warnings(graph.warnings)
    for item in graph.ignored:
        click.echo(f"Ignored: {item}", err=True)
    click.echo(f"Stack {graph.stack} is valid: {counts['endpoint']} endpoint(s), "
               f"{counts['deployment']} deployment(s), {counts['model']} model(s).")
