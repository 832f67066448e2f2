"""The `reconciler` click group. Command modules are imported only when their command runs:
`reconciler --help` and `validate` should not pay for the planner, the drivers, jinja2 and the
Docker SDK (issue #16: start-up was 10x an empty interpreter)."""
from __future__ import annotations

import importlib.util
import sys
import types
from importlib import import_module

import click

from reconciler import __version__

# name -> (module, attribute, the command's short help as `--help` lists it). The short help is
# written here so that listing the commands imports none of them; a unit test keeps it equal to
# each command's own.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "apply": ("reconciler.cli.apply", "apply",
              "Make the engine match STACK_DIR, or carry out a saved PLANFILE exactly."),
    "destroy": ("reconciler.cli.apply", "destroy",
                "Destroy everything STACK_DIR's state manages, in reverse dependency order."),
    "drift": ("reconciler.cli.drift", "drift",
              "Report changes made outside reconciler (exit 0 none, 2 drift, 1 error)."),
    "endpoint": ("reconciler.cli.endpoint", "endpoint",
                 "Endpoint operations that are not configuration: keys and tokens."),
    "force-unlock": ("reconciler.cli.state_cmd", "force_unlock",
                     "Remove a lock whose holder is gone (refused while it runs, unless --force)."),
    "import": ("reconciler.cli.adopt_cmd", "import_command",
               "Adopt CONTAINER (id or name) as instance 0 of deployment ADDRESS."),
    "invoke": ("reconciler.cli.runtime", "invoke",
               "Send a scoring request to ENDPOINT's gateway, as `az ml online-endpoint invoke` does."),
    "logs": ("reconciler.cli.runtime", "logs",
             "Print the last log lines of every container of DEPLOYMENT (ENDPOINT/NAME or NAME), the build log "
             "of environment.NAME:VERSION, or --gateway those of an endpoint's gateway."),
    "plan": ("reconciler.cli.plan", "plan", "Show what apply would change to make the engine match STACK_DIR."),
    "render": ("reconciler.cli.render", "render",
               "Render STACK_DIR as Kubernetes manifests (Deployments, Services, HTTPRoutes, model volumes)."),
    "show": ("reconciler.cli.plan", "show", "Show a saved plan FILE, or the state of a stack DIR."),
    "state": ("reconciler.cli.state_cmd", "state",
              "Inspect, edit and move the state (a local file, or PostgreSQL with `backend: pg`)."),
    "status": ("reconciler.cli.status", "status",
               "Show each endpoint, deployment and instance of STACK_DIR as it runs now."),
    "validate": ("reconciler.cli.validate", "validate", "Check STACK_DIR against the schemas and across documents."),
}


# Imported by the Docker SDK at its own import and never used by reconciler: ssh:// engines are
# reached through the `ssh` binary (drivers/common/engine.py, use_ssh_client), for which the SDK
# only needs the name to exist. paramiko alone is 0.06-0.13 s of every command that talks to
# an engine (#16); loaded on first use, it costs nothing.
DEFERRED_MODULES = ("paramiko",)


class _Deferred(types.ModuleType):
    """Stands in sys.modules for a module not loaded yet; the first attribute it lacks (`from
    paramiko import X`, `paramiko.SSHClient`, a submodule's import asking for `__path__`)
    imports the real module, which then replaces it there."""

    def __getattr__(self, attribute: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(import_module(self.__name__), attribute)


def defer_imports(names=DEFERRED_MODULES) -> None:
    """Leave each module (installed, not imported yet) unloaded until it is first used."""
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        placeholder = _Deferred(name)
        placeholder.__spec__ = spec  # `import name` reads __spec__ without loading anything
        sys.modules[name] = placeholder


def load_command(name: str) -> click.Command:
    module, attribute, _ = COMMANDS[name]
    return getattr(import_module(module), attribute)


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return load_command(name) if name in COMMANDS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, click.Command(name, help=COMMANDS[name][2]).get_short_help_str(limit))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
def cli():
    """Plan and apply Azure ML online endpoints on a Docker Engine, Terraform style."""


def main() -> None:
    defer_imports()
    cli()
