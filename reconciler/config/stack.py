"""The one entry point from a stack directory to a DesiredGraph (or every problem found), and the
state backend its settings choose (read before the stack is loaded). Reads files; otherwise pure."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from reconciler.config.graph import DesiredGraph, build_graph
from reconciler.config.loader import fill_placeholders, load_stack_documents, parse_documents, stack_yaml_files
from reconciler.config.settings import BackendSettings, LoadOptions, backend_settings
from reconciler.config.validation import coerced, validate_document
from reconciler.errors import Problem, ReconcilerError, StackInvalid


def stack_name(stack_dir: Path) -> str:
    return stack_dir.resolve().name


def load_stack(stack_dir: Path | str, variables: dict[str, str] | None = None,
               options: LoadOptions = LoadOptions()) -> DesiredGraph:
    """Load and check a stack; raises StackInvalid listing every problem, file:line first."""
    stack_dir = Path(stack_dir)
    if not stack_dir.is_dir():
        raise ReconcilerError(f"stack directory {stack_dir} does not exist",
                              "pass the directory that holds the endpoint, deployment and model YAML")
    ignored: list = []
    unfilled: list = []
    documents, problems = load_stack_documents(stack_dir, variables or {}, ignored, unfilled)
    valid, invalid = [], []
    for document in map(coerced, documents):
        document_problems = validate_document(document)
        problems.extend(document_problems)
        (invalid if document_problems else valid).append(document)
    if not documents and not problems:
        problems.append(Problem(str(stack_dir), 0, "", "no Azure ML endpoint, deployment or model documents found"
                                + (f" ({len(ignored)} other YAML document(s) ignored)" if ignored else ""),
                                "put endpoint, deployment and model YAML files in the stack directory"))
    graph, graph_problems = build_graph(stack_name(stack_dir), stack_dir, valid, invalid + unfilled, options)
    problems.extend(graph_problems)
    if problems:
        raise StackInvalid(problems)
    return dataclasses.replace(graph, ignored=tuple(ignored))


# A settings document that says where state lives has `backend:` or `pg:` somewhere in its text.
_MENTIONS_BACKEND = re.compile(r"(^|[\s{,])(backend|pg)\s*:", re.M)


def read_backend_settings(stack_dir: Path | str) -> BackendSettings:
    """Where the stack's state lives, from its settings document, without loading the whole
    stack (the store is opened, and locked, before the stack is planned). Only files whose text
    mentions `backend:` or `pg:` are parsed; a settings document there that is invalid is reported
    with its file:line, as `validate` reports it."""
    stack_dir = Path(stack_dir)
    if not stack_dir.is_dir():
        return BackendSettings()
    found: list = []
    problems: list[Problem] = []
    for path in stack_yaml_files(stack_dir):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # load_stack reports it, located
        # Substring tests first: most files mention neither word, and `in` is much cheaper.
        if ("backend" not in text and "pg" not in text) or not _MENTIONS_BACKEND.search(text):
            continue
        filled, _ = fill_placeholders(text, {}, str(path))
        documents, _ = parse_documents(filled, str(path), path.parent)
        for document in (coerced(d) for d in documents if d.kind == "stack"):
            document_problems = validate_document(document)
            problems.extend(document_problems)
            if not document_problems:
                found.append(document)
    if problems:
        raise StackInvalid(problems)
    return backend_settings(found[0].data) if found else BackendSettings()
