"""The nginx maps that choose a deployment's server per try, from the servers in rotation. Pure,
stdlib only: the docker driver's health probe (drivers/docker/health_agent.py, run inside a
container) rewrites them as instances leave and rejoin rotation, and the gateway renderer
(drivers/common/gateway.py) writes the same text for a fresh config (docker: as the included
file; swarm: inline, its service name is one server)."""
from __future__ import annotations

import re

# What may stand in a rotation file: host:port, as gateway.SERVER_GRAMMAR checks it first.
_SERVER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}:[0-9]{1,5}")
_ROUTE_ID = re.compile(r"[0-9a-f]{1,64}")


def rotation_maps(route_id: str, servers: list[str], max_tries: int) -> str:
    """The nginx maps that pick a deployment's server per try ($d_<id>_try1..max_tries) among
    `servers` (those in rotation): the first at random (split_clients over the request id), the
    next ones in turn. A lone server is tried twice (one failed DNS lookup should not fail the
    request); with none in rotation every try is "" (the gateway answers 503)."""
    if not _ROUTE_ID.fullmatch(route_id):
        raise ValueError(f"bad route id {route_id!r}")
    for server in servers:
        if not _SERVER.fullmatch(server):
            raise ValueError(f"bad upstream {server!r}")
    prefix = f"$d_{route_id}"
    count = len(servers)
    tries = min(max(count, 2), max_tries) if count else 0
    lines = []
    if count > 1:
        share = f"{int(10000 / count) / 100:.2f}"
        lines.append(f'split_clients "${{request_id}}servers" {prefix}_first {{')
        lines += [f"    {share}% {index};" for index in range(count - 1)]
        lines += [f"    * {count - 1};", "}"]
    for attempt in range(1, max_tries + 1):
        if count > 1 and attempt <= tries:
            lines.append(f"map {prefix}_first {prefix}_try{attempt} {{")
            lines += [f'    {first} "{servers[(first + attempt - 1) % count]}";' for first in range(count)]
        else:
            value = servers[0] if count and attempt <= tries else ""
            lines.append(f"map $request_method {prefix}_try{attempt} {{")
            lines.append(f'    default "{value}";')
        lines.append("}")
    return "\n".join(lines) + "\n"
