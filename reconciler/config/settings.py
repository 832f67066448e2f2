"""Stack settings: the one optional document of a stack that is not Azure ML's (conventionally
reconciler.yml), found by `$schema` or by its keys. Pure.

Everything a stack can say about how reconciler runs it, rather than what it runs: the
driver, where its state lives (`backend: local | pg` and `pg: {...}`; never a connection
string, which comes from the environment), and which environment variables are no secret
(plans mask every other value).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler.config.image_map import ImageRule, rule_from_setting
from reconciler.config.loader import Document
from reconciler.errors import Problem


@dataclass(frozen=True)
class BackendSettings:
    """Where the stack's state lives. `name` "" means the stack's name."""
    kind: str = "local"  # local | pg
    conn_str_env: str = "PG_CONN_STR"
    schema_name: str = "reconciler"
    name: str = ""


@dataclass(frozen=True)
class StackSettings:
    # "" when the stack does not say (then --driver, then the driver state was made with).
    driver: str = ""
    # Environment variables whose values plans, drift reports and `state show` print in clear.
    plain_environment_variables: tuple[str, ...] = ()
    # Images to run in place of others (config/image_map.py).
    images: tuple[ImageRule, ...] = ()
    # The folder model and code paths may lead into (None: the stack directory).
    root: Path | None = None
    # Where `root` was given, for errors about it.
    root_source: tuple[Document, tuple] | None = None
    backend: BackendSettings = BackendSettings()


@dataclass(frozen=True)
class LoadOptions:
    """What the command line adds to the stack settings (and wins over them), and the machine's
    own image map (`RECONCILER_IMAGE_MAP`), which the stack settings win over."""
    images: tuple[ImageRule, ...] = ()
    root: Path | None = None
    machine_images: tuple[ImageRule, ...] = ()


def read_settings(documents: list[Document]) -> tuple[StackSettings, list[Problem]]:
    """The settings of a stack's (schema-valid) settings documents; a second one is an error."""
    if not documents:
        return StackSettings(), []
    first = documents[0]
    problems = [document.problem((), "stack settings are given twice",
                                 f"the first ones are at {first.file}:{first.line_of(())}; keep one")
                for document in documents[1:]]
    data = first.data
    images = tuple(rule_from_setting(entry, f"{first.file}:{first.line_of(('images', index))}")
                   for index, entry in enumerate(data.get("images", ())))
    root = (first.directory / data["root"]).resolve() if "root" in data else None
    return StackSettings(driver=data.get("driver", ""),
                         plain_environment_variables=tuple(sorted(set(data.get("plain_environment_variables", ())))),
                         images=images, root=root, root_source=(first, ("root",)) if root else None,
                         backend=backend_settings(data)), problems


def backend_settings(data: dict) -> BackendSettings:
    """The backend of one (schema-valid) settings document."""
    pg = data.get("pg", {})
    default = BackendSettings()
    return BackendSettings(kind=data.get("backend", default.kind),
                           conn_str_env=pg.get("conn_str_env", default.conn_str_env),
                           schema_name=pg.get("schema_name", default.schema_name), name=pg.get("name", ""))


def machine_image_rules(path: Path) -> tuple[ImageRule, ...]:
    """The `images:` of a machine's image map file (`RECONCILER_IMAGE_MAP`): the stack settings'
    grammar, and only its `images:`. Raises StackInvalid with the file's located problems."""
    from reconciler.config.loader import parse_documents
    from reconciler.config.validation import validate_document
    from reconciler.errors import StackInvalid
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise StackInvalid([Problem(file, 1, "", f"cannot read the machine's image map: {error}",
                                    "point RECONCILER_IMAGE_MAP at a readable YAML file, or unset it")]) from error
    documents, problems = parse_documents(text, file, path.parent)
    stack_documents = [document for document in documents if document.kind == "stack"]
    for document in stack_documents:
        problems.extend(validate_document(document))
        problems.extend(document.problem((key,), f"`{key}` is a stack setting, not part of a machine's image map",
                                         "keep only `images:` in this file")
                        for key in document.data.keys() - {"images", "$schema", "description"})
    if not stack_documents and not problems:
        problems.append(Problem(file, 1, "", "no `images:` list in the machine's image map",
                                "write `images: [{name: ..., newName: ..., newTag: ...}]`"))
    if problems:
        raise StackInvalid(problems)
    settings, problems = read_settings(stack_documents)
    if problems:
        raise StackInvalid(problems)
    return settings.images
