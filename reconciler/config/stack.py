"""The one entry point from a stack directory to a DesiredGraph (or every problem found)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from reconciler.config.graph import DesiredGraph, build_graph
from reconciler.config.loader import load_stack_documents
from reconciler.config.settings import LoadOptions
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
