"""Names of engine objects (containers, services, networks, configs). Pure.

Both drivers name everything through `object_name`: a DNS label (the gateway resolves
container and service names on the stack network), at most 63 characters however long the
Azure ML names and the stack folder name are, lower-case, with a readable start and a hash of
the stack identity and every part, so that two stacks of one folder name, `green` and `GREEN`,
or two long names sharing a start never get the same name.
"""
from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
HASH_LENGTH = 8


def object_name(*parts: str, identity: str = "", limit: int = MAX_NAME) -> str:
    full = "\0".join([identity, *parts])
    readable = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")
    digest = hashlib.sha256(full.encode()).hexdigest()[:HASH_LENGTH]
    readable = readable[:limit - HASH_LENGTH - 1].rstrip("-") or "rc"
    return f"{readable}-{digest}"
