"""Reads a stack directory into Documents that remember the file and line of every node.

Reads files (the only I/O in config/); otherwise pure. `{{NAME}}` placeholders are filled
before parsing, line by line, so line numbers stay those of the file the user wrote.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.errors import Problem

YAML_SUFFIXES = (".yml", ".yaml")
MAX_FILE_BYTES = 1024 * 1024
# Nodes one document may expand to. Aliases share nodes, so a few hundred bytes of nested
# aliases ("billion laughs") expand to billions; Azure ML documents have a few hundred nodes.
MAX_NODES_PER_DOCUMENT = 20_000
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SCHEMA_URL_KINDS = (
    ("managedonlineendpoint", "endpoint"),
    ("kubernetesonlineendpoint", "endpoint"),
    ("managedonlinedeployment", "deployment"),
    ("kubernetesonlinedeployment", "deployment"),
    ("model.schema", "model"),
    ("environment.schema", "environment"),
    ("reconcilerstack.schema", "stack"),
)
# Keys that only one document kind has; used when `$schema` is absent. Environments before
# models: both have a version, only environments an image, conda file or build.
SHAPE_KEYS = (
    ({"endpoint_name", "environment", "instance_type", "instance_count", "model_mount_path"}, "deployment"),
    ({"auth_mode", "traffic", "mirror_traffic"}, "endpoint"),
    ({"image", "conda_file", "build", "inference_config"}, "environment"),
    ({"path", "version", "type"}, "model"),
    ({"driver", "plain_environment_variables", "images", "root", "backend", "pg", "endpoints"}, "stack"),
)
# What a conda file, an MLmodel-side conda.yaml or a tool's config looks like: such YAML lies
# next to Azure ML documents in the public examples and is no stack document.
FOREIGN_KEYS = frozenset({"dependencies", "channels"})

Path_ = tuple[Any, ...]
STR_TAG = "tag:yaml.org,2002:str"
MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Document:
    """One YAML document of a stack: its data, kind and the line of every node path."""

    file: str
    kind: str
    data: dict
    lines: dict[Path_, int] = field(repr=False, compare=False)
    directory: Path = field(repr=False, compare=False)

    def line_of(self, path: Path_ = ()) -> int:
        """The line of `path`, or of its nearest ancestor that exists in the file."""
        path = tuple(path)
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)

    def where(self, path: Path_ = ()) -> str:
        """`file:line` of `path` (as line_of finds it)."""
        return f"{self.file}:{self.line_of(path)}"

    def problem(self, path: Path_, message: str, hint: str = "") -> Problem:
        return Problem(self.file, self.line_of(path), format_path(path), message, hint)


def format_path(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_var_assignments(assignments: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--var NAME=VALUE` options to a dict; raises ValueError on a malformed one."""
    values: dict[str, str] = {}
    for assignment in assignments:
        name, eq, value = assignment.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"--var expects NAME=VALUE, got {assignment!r}")
        values[name] = value
    return values


def fill_placeholders(text: str, variables: dict[str, str], file: str) -> tuple[str, list[Problem]]:
    """Replace `{{NAME}}` in `text`; report unknown names and multi-line values by line."""
    problems: list[Problem] = []
    filled_lines = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.lstrip().startswith("#"):
            # Commented-out lines (as in the Azure ML examples) need no values.
            filled_lines.append(line)
            continue

        def substitute(match: re.Match) -> str:
            name = match.group(1)
            if name not in variables:
                problems.append(Problem(file, number, "", f"placeholder {{{{{name}}}}} has no value",
                                        f"pass --var {name}=VALUE or add {name} to a --vars-file"))
                return match.group(0)
            value = str(variables[name])
            if "\n" in value:
                problems.append(Problem(file, number, "", f"value of {{{{{name}}}}} spans lines",
                                        "placeholder values must be a single line"))
                return match.group(0)
            return value
        filled_lines.append(PLACEHOLDER.sub(substitute, line))
    return "\n".join(filled_lines), problems


class TooManyNodes(Exception):
    """A document expands (through YAML aliases) to more nodes than any real document has."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def expanded_size(root: Node) -> int:
    """How many nodes `root` becomes once every alias is expanded, counted without expanding:
    each shared node's size is computed once. A node that contains itself counts as infinite."""
    sizes: dict[int, float] = {}
    on_path: set[int] = set()

    def size(node: Node) -> float:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            return float("inf")
        on_path.add(key)
        if isinstance(node, MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        on_path.discard(key)
        sizes[key] = total
        return total

    return int(min(size(root), 2 ** 62))


class _NodeReader:
    """Turns a composed YAML node tree into plain data plus a path -> line table."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.constructor = SafeConstructor()
        self.lines: dict[Path_, int] = {}
        self.problems: list[Problem] = []

    def read(self, node: Node, path: Path_ = ()) -> Any:
        if not path and expanded_size(node) > MAX_NODES_PER_DOCUMENT:
            # Checked on the composed graph, where aliases are shared nodes: expanding first
            # (flatten_mapping copies merged keys) is what takes gigabytes and minutes.
            raise TooManyNodes(node.start_mark.line + 1)
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, MappingNode):
            explicit = sum(1 for key_node, _ in node.value if key_node.tag != MERGE_TAG)
            self.constructor.flatten_mapping(node)
            # flatten_mapping puts the merged (`<<:`) pairs first; as in YAML and the Azure ML
            # SDK, a key written out overrides a merged one, and the first merge source wins.
            merged = len(node.value) - explicit
            result: dict[str, Any] = {}
            written: set[str] = set()
            for index, (key_node, value_node) in enumerate(node.value):
                key = self.scalar(key_node) if isinstance(key_node, ScalarNode) else None
                line = key_node.start_mark.line + 1
                if not isinstance(key, str):
                    self.problems.append(Problem(self.file, line, _fmt(path), f"key {key!r} is not a string",
                                                 "keys must be plain names such as `name:`"))
                    continue
                if index < merged:
                    self.lines[path + (key,)] = line
                    result[key] = self.read(value_node, path + (key,))
                    continue
                if key in written:
                    self.problems.append(Problem(self.file, line, _fmt(path + (key,)), f"duplicate key {key!r}",
                                                 f"remove one of the two `{key}:` lines"))
                    continue
                written.add(key)
                self.lines[path + (key,)] = line
                result[key] = self.read(value_node, path + (key,))
            return result
        if isinstance(node, SequenceNode):
            return [self.read(item, path + (index,)) for index, item in enumerate(node.value)]
        value = self.scalar(node)
        # Dates and binary would not survive JSON; Azure ML treats such scalars as text.
        return value if isinstance(value, (str, int, float, bool, type(None))) else node.value

    def scalar(self, node: ScalarNode) -> Any:
        if node.tag == STR_TAG:  # most scalars; the constructor would return node.value too
            return node.value
        return self.constructor.construct_object(node)


def _fmt(path: Path_) -> str:
    return format_path(path)


def infer_kind(data: dict) -> str | None:
    """The stack document kind, from `$schema` or else from the document's keys; None for YAML
    that is no stack document (a conda file, an Azure ML document of another kind, a tool's
    config), which the stack ignores."""
    schema_url = str(data.get("$schema", "")).lower()
    if schema_url:
        return next((kind for marker, kind in SCHEMA_URL_KINDS if marker in schema_url), None)
    if FOREIGN_KEYS & data.keys():
        return None
    for keys, kind in SHAPE_KEYS:
        if keys & data.keys():
            return kind
    return None


@dataclass(frozen=True)
class Ignored:
    """A YAML document of the stack directory that is no stack document, and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


def parse_documents(text: str, file: str, directory: Path,
                    ignored: list[Ignored] | None = None) -> tuple[list[Document], list[Problem]]:
    """Parse already-filled YAML text into Documents (one per `---` section). Documents that
    are no stack documents go to `ignored` (when given)."""
    problems: list[Problem] = []
    documents: list[Document] = []
    ignored = [] if ignored is None else ignored
    try:
        # libyaml's parser when PyYAML has it: same nodes and line marks; composing 2,000 small
        # files takes 0.09 s instead of 1.2 s, which was 60% of a no-op plan of 1,000 deployments.
        nodes = list(yaml.compose_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    except RecursionError:
        return [], [Problem(file, 1, "", "YAML is nested too deeply", "flatten the nesting of this file")]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        return [], [Problem(file, line, "", f"YAML syntax error: {error.problem or error}",
                            "check indentation, colons and quoting on this line")]
    except yaml.YAMLError as error:
        return [], [Problem(file, 1, "", f"YAML error: {error}", "check the file is valid YAML")]
    for node in nodes:
        if node is None:
            continue
        reader = _NodeReader(file)
        try:
            data = reader.read(node)
        except RecursionError:
            problems.append(Problem(file, node.start_mark.line + 1, "", "YAML is nested too deeply",
                                    "flatten the nesting of this document"))
            continue
        except TooManyNodes as error:
            problems.append(Problem(file, error.line, "", f"document expands to more than {MAX_NODES_PER_DOCUMENT} "
                                    "nodes through YAML aliases (an alias bomb?)",
                                    "write the values out, or use fewer nested aliases (*name)"))
            continue
        except yaml.YAMLError as error:
            problems.append(Problem(file, node.start_mark.line + 1, "", f"YAML error: {error}",
                                    "check the file is valid YAML"))
            continue
        if data is None:
            problems.extend(reader.problems)
            continue
        line = node.start_mark.line + 1
        if not isinstance(data, dict):
            ignored.append(Ignored(file, line, "not a mapping"))
            continue
        kind = infer_kind(data)
        if kind is None:
            # What reconciler does not read is not its to judge: a tool config with a duplicate
            # key (triton/single-model/olive_model_analyzer in Azure ML's examples) stays ignored.
            schema_url = data.get("$schema")
            ignored.append(Ignored(file, line, f"$schema {schema_url} is no kind reconciler applies" if schema_url
                                   else "neither an Azure ML endpoint, deployment, model or environment document "
                                        "nor stack settings (add `$schema:` if it is one)"))
            continue
        problems.extend(reader.problems)
        documents.append(Document(file, kind, data, reader.lines, directory))
    return documents, problems


def stack_yaml_files(stack_dir: Path) -> list[Path]:
    """Every *.yml / *.yaml below `stack_dir`, skipping hidden directories, in a stable order."""
    found: list[Path] = []
    for root, dirs, files in os.walk(stack_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / name for name in sorted(files)
                     if name.endswith(YAML_SUFFIXES) and not name.startswith("."))
    return found


def load_stack_documents(stack_dir: Path, variables: dict[str, str], ignored: list[Ignored] | None = None,
                         unfilled: list[Document] | None = None) -> tuple[list[Document], list[Problem]]:
    """Read, fill and parse every YAML file in the stack. Problems are collected, not raised;
    YAML that holds no stack document goes to `ignored` (when given), placeholders and all.
    Documents of a file whose placeholders lack values are reported and go to `unfilled`
    (parsed with stand-ins): what they declare must not be reported again as missing."""
    documents: list[Document] = []
    problems: list[Problem] = []
    ignored = [] if ignored is None else ignored
    unfilled = [] if unfilled is None else unfilled
    real_root = stack_dir.resolve()
    for path in stack_yaml_files(stack_dir):
        file = str(path)
        problem = unreadable_file(path, real_root)
        if problem:
            problems.append(Problem(file, 1, "", *problem))
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            problems.append(Problem(file, 1, "", f"file is not UTF-8 text ({error.reason})",
                                    "save the file as UTF-8"))
            continue
        except OSError as error:
            problems.append(Problem(file, 1, "", f"cannot read the file: {error.strerror}",
                                    "check its permissions"))
            continue
        filled, fill_problems = fill_placeholders(text, variables, file)
        if fill_problems:
            # Only a file that holds stack documents needs its placeholders filled: parse it
            # with stand-ins to find out (a conda file or tool config may use `{{...}}` too).
            stand_in, _ = fill_placeholders(text, _StandIns(variables), file)
            file_ignored: list[Ignored] = []
            declared = parse_documents(stand_in, file, path.parent, file_ignored)[0]
            if declared or not file_ignored:
                problems.extend(fill_problems)
                unfilled.extend(declared)
            else:
                ignored.extend(file_ignored)
            continue
        file_documents, parse_problems = parse_documents(filled, file, path.parent, ignored)
        documents.extend(file_documents)
        problems.extend(parse_problems)
    return documents, problems


class _StandIns(dict):
    """The given variables, and a plain stand-in for every other placeholder."""

    def __contains__(self, name) -> bool:
        return True

    def __getitem__(self, name: str) -> str:
        return dict.get(self, name, f"unset-{name.lower()}")


def unreadable_file(path: Path, real_root: Path) -> tuple[str, str] | None:
    """(message, hint) when `path` must not be read as a stack file: a symlink that loops,
    dangles or leads out of the stack, anything but a regular file (a FIFO would block the
    read forever), or a file too large to be a stack document. Only stat calls, no read."""
    try:
        resolved = path.resolve(strict=True)
    except RuntimeError:
        return "file is a symlink loop", "replace the link with the file itself"
    except FileNotFoundError:
        return (f"file is a dangling symlink (it points at {os.readlink(path)}, which does not exist)",
                "remove the link or restore what it points at")
    except OSError as error:
        return f"cannot read the file: {error.strerror}", "check the path and its permissions"
    if not resolved.is_relative_to(real_root):
        return "file is a symlink that leads out of the stack directory", \
            "copy the file into the stack instead of linking to it"
    info = resolved.stat()
    if not stat.S_ISREG(info.st_mode):
        return ("file is not a regular file (a FIFO, socket or device)",
                "stack YAML files must be ordinary files; remove it or rename it to something not *.yml")
    if info.st_size > MAX_FILE_BYTES:
        return (f"file is {info.st_size} bytes, more than the {MAX_FILE_BYTES} allowed",
                "stack YAML files describe resources; keep data out of them")
    return None


def load_vars_file(path: Path) -> dict[str, str]:
    """A YAML mapping NAME: value; raises ValueError with a precise message otherwise."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"cannot read vars file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ValueError(f"vars file {path} is not valid YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValueError(f"vars file {path} must be a mapping of NAME: value")
    return {name: "" if value is None else str(value) for name, value in data.items()}
