"""`reconciler render --target kubernetes STACK_DIR`: the stack as manifests for another platform.

Reads the stack like `validate`, renders it with reconciler.render.kubernetes (pure) and writes the
YAML to stdout, one file (-o) or one file per object (--output-dir). Never touches a cluster, a
container engine or the state file. Notes go to stderr so that stdout stays a clean YAML stream.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from reconciler.cli.common import handle_errors, load_desired, stack_options
from reconciler.errors import ReconcilerError, StackInvalid
from reconciler.render.kubernetes import (DEFAULT_GATEWAY, KubernetesOptions, dump_manifests, header_marker,
                                          manifest_filename, render_kubernetes, required_secrets)

TARGETS = ("kubernetes",)


@click.command()
@click.argument("stack_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--target", type=click.Choice(TARGETS), required=True, help="Platform to render for.")
@stack_options
@click.option("-o", "--output", "output_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the YAML stream to FILE instead of stdout.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write one file per object into DIR (stale files rendered earlier for this stack are removed).")
@click.option("--gateway", default=DEFAULT_GATEWAY, show_default=True, metavar="[NAMESPACE/]NAME",
              help="Gateway (Gateway API) that the endpoints' HTTPRoutes attach to.")
@click.option("--domain", metavar="DOMAIN",
              help="Route endpoint E at host E.DOMAIN (needed when the stack has several endpoints).")
@handle_errors()
def render(stack_dir, target, var_assignments, vars_file, output_file, output_dir, gateway, domain):
    """Render STACK_DIR as Kubernetes manifests (Deployments, Services, HTTPRoutes, model volumes)."""
    if output_file and output_dir:
        raise ReconcilerError("-o/--output and --output-dir both given", "pass one of them (or neither for stdout)")
    options = KubernetesOptions.parse(gateway, domain)
    graph = load_desired(stack_dir, var_assignments, vars_file)
    if graph.unsupported:
        # The same refusal as `plan`: these settings would be silently lost.
        raise StackInvalid(list(graph.unsupported))
    manifests = render_kubernetes(graph, options)
    if output_dir:
        written, removed = _write_dir(output_dir, graph.stack, manifests)
        for path in removed:
            click.echo(f"Removed {path} (no longer in the stack)", err=True)
        click.echo(f"Wrote {len(written)} manifest file(s) to {output_dir}", err=True)
    elif output_file:
        _write_atomically(output_file, dump_manifests(manifests, graph.stack))
        click.echo(f"Wrote {len(manifests)} manifest(s) to {output_file}", err=True)
    else:
        click.echo(dump_manifests(manifests, graph.stack), nl=False)
    for secret, keys in required_secrets(manifests).items():
        literals = " ".join(f"--from-literal={key}=..." for key in keys)
        click.echo(f"Note: create Secret {secret} before applying: kubectl create secret generic {secret} {literals}",
                   err=True)


def _write_dir(directory: Path, stack: str, manifests: list[dict]) -> tuple[list[Path], list[Path]]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for manifest in manifests:
        path = directory / manifest_filename(manifest)
        _write_atomically(path, dump_manifests([manifest], stack))
        written.append(path)
    # A file we rendered earlier for an object that is gone would come back with `kubectl apply -f DIR`.
    marker = header_marker(stack)
    removed = []
    for path in sorted(directory.glob("*.yaml")):
        if path not in written and _first_line(path) == marker:
            path.unlink()
            removed.append(path)
    return written, removed


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().rstrip("\n")
    except (OSError, UnicodeDecodeError):
        return ""


def _write_atomically(path: Path, text: str) -> None:
    """Temp file + rename: a failed run never leaves half a manifest behind."""
    temporary = None
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as error:
        if temporary and os.path.exists(temporary):
            os.unlink(temporary)
        raise ReconcilerError(f"cannot write {path}: {error.strerror}", "check the path and its permissions") from error
