"""Docker's image reference grammar (distribution/reference), so that an image Docker would
refuse is a located error at validate time rather than a raw Docker error mid-apply. Pure.

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component [ "/" path-component ]*
    domain     := host [ ":" port ]        (the first component, when it has a "." or ":" or is localhost)
    path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex{32,}
A name is at most 255 characters. Upper case is allowed in the domain only.
"""
from __future__ import annotations

import re

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?|\[[0-9A-Fa-f:]+\](?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
MAX_NAME = 255


def image_reference_problem(reference: str) -> str | None:
    """Why Docker would refuse `reference` as an image reference, or None when it is valid."""
    if not reference:
        return "is empty"
    rest, at, digest = reference.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        return f"has an invalid digest {digest!r} (algorithm:hex, e.g. sha256:<64 hex digits>)"
    name, tag = rest, ""
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        name, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            return f"has an invalid tag {tag!r} (letters, digits, '_', '.', '-'; up to 128, not starting with . or -)"
    if len(name) > MAX_NAME:
        return f"has a name of {len(name)} characters; Docker allows {MAX_NAME}"
    components = name.split("/")
    first = components[0]
    if len(components) > 1 and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.fullmatch(first):
            return f"has an invalid registry host {first!r}"
        components = components[1:]
    for component in components:
        if not _PATH_COMPONENT.fullmatch(component):
            lower = component.lower()
            why = "upper case is not allowed in repository names" if lower != component and \
                _PATH_COMPONENT.fullmatch(lower) else "repository names are lower-case letters and digits, " \
                "separated by '.', '_', '__' or '-'"
            return f"has an invalid repository name part {component!r} ({why})"
    return None
