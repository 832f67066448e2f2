"""Stack settings: the one optional document of a stack that is not Azure ML's (conventionally
reconciler.yml), found by `$schema` or by its keys. Pure but for reading the TLS files it names
(to fingerprint them).

Everything a stack can say about how reconciler runs it, rather than what it runs: the
driver, where its state lives (`backend: local | pg` and `pg: {...}`; never a connection
string, which comes from the environment), which environment variables are no secret (plans
mask every other value), and where each endpoint listens (`endpoints: {NAME: {listen:
{address, port}, tls: ...}}`).
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
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
    # Per endpoint name: what its spec gains (`listen`, `tls`; see endpoint_listen).
    endpoints: dict[str, dict] = field(default_factory=dict)
    # Where each endpoint's settings were given, for errors (an endpoint the stack lacks).
    endpoint_sources: dict[str, tuple[Document, tuple]] = field(default_factory=dict)


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
    endpoints = {}
    for name, entry in sorted((data.get("endpoints") or {}).items()):
        view, entry_problems = endpoint_listen(first, name, entry)
        problems += entry_problems
        if view:
            endpoints[name] = view
    return StackSettings(driver=data.get("driver", ""),
                         plain_environment_variables=tuple(sorted(set(data.get("plain_environment_variables", ())))),
                         images=images, root=root, root_source=(first, ("root",)) if root else None,
                         endpoints=endpoints,
                         endpoint_sources={name: (first, ("endpoints", name)) for name in data.get("endpoints") or {}},
                         backend=backend_settings(data)), problems


def file_fingerprint(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def endpoint_listen(document: Document, name: str, entry: dict) -> tuple[dict, list[Problem]]:
    """What an endpoint's settings add to its spec: `listen` {address, port} (port None: a free
    one, kept) and `tls` {source: files, certificate, key, ca, certificate_sha256, key_sha256}
    or {source: generated}. Key files are named and fingerprinted, never read into the spec."""
    at = ("endpoints", name)
    problems: list[Problem] = []
    view: dict = {}
    listen = entry.get("listen")
    if listen is not None:
        address = listen.get("address", "127.0.0.1")
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            problems.append(document.problem(at + ("listen", "address"), f"{address!r} is not an IPv4 address",
                                             "give an address of this host, 127.0.0.1 or 0.0.0.0"))
        view["listen"] = {"address": address, "port": listen.get("port")}
    tls = entry.get("tls")
    if tls is not None:
        if tls.get("generate"):
            if {"certificate", "key", "ca"} & set(tls):
                problems.append(document.problem(at + ("tls",), "tls gives both `generate` and files",
                                                 "either generate: true (development) or certificate + key"))
            view["tls"] = {"source": "generated"}
        elif not {"certificate", "key"} <= set(tls):
            problems.append(document.problem(at + ("tls",), "tls needs both `certificate` and `key` (or generate: true)",
                                             "certificate: FILE.crt and key: FILE.key, PEM, relative to this file"))
        else:
            files, fingerprints = {}, {}
            for role in ("certificate", "key", "ca"):
                if role not in tls:
                    continue
                path = (document.directory / tls[role]).resolve()
                try:
                    fingerprints[f"{role}_sha256"] = file_fingerprint(path)
                except OSError as error:
                    problems.append(document.problem(at + ("tls", role), f"cannot read {role} file {path}: "
                                                     f"{error.strerror or error}", "a PEM file, relative to this file"))
                files[role] = str(path)
            view["tls"] = {"source": "files", "ca": None, **files, **fingerprints}
    return view, problems


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
