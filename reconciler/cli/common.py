"""Options and error handling shared by commands. Turns ReconcilerError into exit codes."""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from reconciler.cli import exits
from reconciler.config.loader import load_vars_file, parse_var_assignments
from reconciler.config.stack import load_stack
from reconciler.errors import ReconcilerError, StackInvalid, StateLocked


def _remember(ctx: click.Context, param: click.Parameter, value):
    ctx.meta[f"reconciler.{param.name}"] = value
    return value


def stack_options(command):
    """--var NAME=VALUE (repeatable) and --vars-file FILE, for every command that reads a stack;
    --root DIR and --image FROM=TO, which every such command reads through `load_options()`."""
    command = click.option("--image", "image_rules", multiple=True, metavar="FROM=TO", expose_value=False,
                           callback=_remember,
                           help="Run image TO where the stack names repository FROM (repeatable; wins over "
                                "`images:` in the stack settings).")(command)
    command = click.option("--root", type=click.Path(file_okay=False, exists=True, path_type=Path),
                           expose_value=False, callback=_remember,
                           help="Folder above the stack that model and code paths may lead into "
                                "(default: the stack settings' root, else the stack directory).")(command)
    command = click.option("--vars-file", type=click.Path(dir_okay=False, path_type=Path),
                           help="YAML mapping of NAME: value for {{NAME}} placeholders.")(command)
    command = click.option("--var", "var_assignments", multiple=True, metavar="NAME=VALUE",
                           help="Value for a {{NAME}} placeholder (repeatable).")(command)
    return command


def load_options():
    """The --root and --image of the command being run (see stack_options), and the machine's
    image map file that `RECONCILER_IMAGE_MAP` names."""
    from reconciler.config.image_map import rule_from_option
    from reconciler.config.settings import LoadOptions, machine_image_rules
    meta = click.get_current_context().meta
    try:
        images = tuple(rule_from_option(text) for text in meta.get("reconciler.image_rules") or ())
    except ValueError as error:
        raise ReconcilerError(str(error), "fix the --image arguments") from error
    machine_map = os.environ.get("RECONCILER_IMAGE_MAP")
    machine_images = machine_image_rules(Path(machine_map)) if machine_map else ()
    return LoadOptions(images=images, root=meta.get("reconciler.root"), machine_images=machine_images)


def stack_variables(var_assignments, vars_file) -> dict[str, str]:
    try:
        values = load_vars_file(vars_file) if vars_file else {}
        values.update(parse_var_assignments(var_assignments))
    except ValueError as error:
        raise ReconcilerError(str(error), "fix the --var / --vars-file arguments") from error
    return values


def load_desired(stack_dir, var_assignments, vars_file):
    return load_stack(Path(stack_dir), stack_variables(var_assignments, vars_file), load_options())


def echo_warnings(warnings) -> None:
    """Valid but probably unintended (file:line: ...), on stderr so that stdout stays the result."""
    for problem in warnings:
        click.echo(f"Warning: {problem}", err=True)


def use_color() -> bool:
    # no-color.org: NO_COLOR disables colour when present and not empty.
    return not os.environ.get("NO_COLOR") and sys.stdout.isatty()


def handle_errors(as_json_flag: str | None = None):
    """Print a ReconcilerError as `Error: summary` + hint (or JSON) and exit 1 (3 when locked)."""
    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except ReconcilerError as error:
                code = exits.LOCKED if isinstance(error, StateLocked) else exits.ERROR
                if as_json_flag and kwargs.get(as_json_flag):
                    click.echo(json.dumps(error_to_dict(error), indent=2))
                else:
                    click.echo(format_error(error), err=True)
                sys.exit(code)
        return wrapper
    return decorate


def error_to_dict(error: ReconcilerError) -> dict:
    result = {"valid": False, "error": error.summary, "hint": error.hint}
    if isinstance(error, StackInvalid):
        result["problems"] = [p.to_dict() for p in error.problems]
    return result


def format_error(error: ReconcilerError) -> str:
    if isinstance(error, StackInvalid):
        return "\n".join([*(str(p) for p in error.problems), f"Error: {error.summary}"])
    text = f"Error: {error.summary}"
    return f"{text}\n  {error.hint}" if error.hint else text


def state_options(command):
    """--state PATH and --lock-timeout SECONDS."""
    command = click.option("--lock-timeout", type=float, default=0.0, show_default=True, metavar="SECONDS",
                           help="How long to wait for another operation's state lock.")(command)
    command = click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
                           help="State file (default: per user, by stack directory; $RECONCILER_STATE_DIR overrides the root).")(command)
    return command


def open_store(stack: str, state_path: Path | None, stack_dir: Path | None = None):
    from reconciler.operations.plan import open_store as store
    return store(stack, state_path, stack_dir)


def store_for(stack_ref: str | None, state_path: Path | None):
    """The store named by --stack (a stack directory, or the name of a stack with a default
    state) and/or --state."""
    if stack_ref is None and state_path is None:
        raise ReconcilerError("no stack given", "pass --stack STACK_DIR_OR_NAME or --state PATH")
    if stack_ref is None:
        return open_store(_stack_in_state_file(state_path), state_path)
    if Path(stack_ref).is_dir():
        return open_store(Path(stack_ref).resolve().name, state_path, Path(stack_ref))
    if state_path is not None:
        return open_store(stack_ref, state_path)
    return _default_store_named(stack_ref)


def default_stores() -> list:
    """The stores of every state at a default location, and of the old `state/*.json` here."""
    from reconciler.state.store import LEGACY_STATE_DIR, default_states
    stores = []
    for path in default_states() + sorted(LEGACY_STATE_DIR.glob("*.json")):
        try:
            stores.append(open_store(_stack_in_state_file(path), path))
        except ReconcilerError:
            continue  # an unreadable state elsewhere must not hide the one asked for
    return stores


def _default_store_named(stack: str):
    found = [store for store in default_stores() if store.stack == stack]
    if not found:
        raise ReconcilerError(f"no state for a stack named {stack!r} at the default locations",
                              "pass --stack STACK_DIR (the directory) or --state PATH")
    if len(found) > 1:
        raise ReconcilerError(f"{len(found)} stacks are named {stack!r}: " + ", ".join(s.location for s in found),
                              "pass --stack STACK_DIR (the directory) or --state PATH")
    return found[0]


def _stack_in_state_file(path: Path) -> str:
    try:
        return json.loads(path.read_text())["stack"]
    except FileNotFoundError as error:
        raise ReconcilerError(f"state file {path} does not exist", "check the --state path") from error
    except (ValueError, KeyError, TypeError) as error:
        raise ReconcilerError(f"state file {path} is corrupt", f"look at {path}.backup") from error
