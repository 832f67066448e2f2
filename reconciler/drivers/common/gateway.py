"""The endpoint gateway every driver runs: which records serve, the routes the config is
rendered from, and the nginx.conf itself. Pure (keys are drawn from `secrets`, nothing else).

Every value interpolated into nginx.conf goes through one escaping function, `nginx_escape`
(filter `q`: a double-quoted nginx string; `qi`: the inside of one written in the template),
or is a checked bare word (filter `word`: identifiers and numbers). The template environment
refuses to print anything else, so a value can never end a string, a directive or a block.
What an nginx string cannot hold (`$` always starts a variable, control characters) is
refused, never mangled. Validate refuses such input with file:line long before; this is the
last line of defence for what reaches the renderer from elsewhere (state, stack folder names).

Upstreams are names resolved per request through the engine's DNS (127.0.0.11), never at
start: nginx refuses to start when a name in an upstream block does not resolve, so one
stopped deployment would otherwise keep the whole gateway down after a restart.

Routes are built from the planned gateway view of each deployment
(reconciler.planning.gateway_view), so nothing the gateway uses of a deployment's spec can
change without the plan showing it. What only apply knows, the servers a deployment runs as,
each driver adds through `upstream`: container names (docker: static upstream blocks) or one
service name the engine's DNS resolves at request time (swarm).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import textwrap
from functools import lru_cache
from typing import Callable

import jinja2

from reconciler.config.model_content import cache_dir
from reconciler.drivers.common.rotation import rotation_maps
from reconciler.errors import DriverError
from reconciler.planning.gateway_view import gateway_view
from reconciler.tokens import new_token_secret

GATEWAY_IMAGE = os.environ.get("RECONCILER_GATEWAY_IMAGE", "reconciler/gateway:latest")
GATEWAY_PORT = 8080
# How long a deployment's hop waits for its model after the client got its 408: the request
# keeps its in-flight slot until then (Azure ML counts a request until the model finishes).
MIN_HOLD_MS = 300_000
# Servers of one deployment tried per request (the first picked at random): as many as nginx's
# proxy_next_upstream_tries allowed with the former upstream blocks.
MAX_TRIES = 3
# Idle kept-alive connections each gateway worker keeps to a deployment's hop (its unix socket).
HOP_KEEPALIVE = 32
# Idle kept-alive connections each gateway worker keeps to the models, all deployments together.
MODEL_KEEPALIVE = 64
# Idle kept-alive connections from the docker gateway's edge to its routing nginx.
EDGE_KEEPALIVE = 64
# A key in an `Authorization: Bearer KEY` header: the URL-safe alphabet of `secrets.token_urlsafe`.
KEY_GRAMMAR = re.compile(r"[A-Za-z0-9_-]{1,256}")
# host:port of an upstream: a DNS name (labels of at most 63 characters, or it never resolves).
SERVER_GRAMMAR = re.compile(r"(?=.{1,253}:)[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
                            r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*:[0-9]{1,5}")
WORD_GRAMMAR = re.compile(r"[A-Za-z0-9_.]+")
# Source values that a `map` block reads as its own parameters (`include` opens a file,
# `default` sets the default); a leading backslash makes them plain strings.
_MAP_SPECIAL = {"default", "include", "hostnames", "volatile"}


def new_keys() -> dict[str, str]:
    """The two keys of `auth_mode: key`, and the secret that signs the tokens of
    `auth_mode: aml_token` (reconciler/tokens.py): every endpoint has all three, so a change
    of auth_mode needs no new secrets."""
    return {"primary": secrets.token_urlsafe(32), "secondary": secrets.token_urlsafe(32),
            "token": new_token_secret()}


def kept_keys_and_port(prior) -> tuple[dict[str, str], int | None]:
    """A replaced endpoint keeps the keys and port of the record it replaces (a record made
    before token secrets existed gets one); a new one gets new keys (and a free port, chosen
    by the driver)."""
    kept = (prior.outputs.get("keys") if prior else None)
    keys = {"token": new_token_secret(), **kept} if kept else new_keys()
    return keys, (prior.outputs.get("port") if prior else None)


def rotated_keys(keys: dict[str, str], which: str) -> dict[str, str]:
    """`which` ("primary", "secondary" or "both" keys) replaced by fresh ones, the rest kept
    (the token secret too: rotating it would end every token issued)."""
    fresh = new_keys()
    return {name: fresh[name] if which == name or (which == "both" and name in ("primary", "secondary")) else key
            for name, key in keys.items()}


def text_digest(text: str | bytes) -> str:
    """The digest kept in state for a rendered config, to notice changes."""
    data = text.encode() if isinstance(text, str) else text
    return "sha256:" + hashlib.sha256(data).hexdigest()


class UnsafeGatewayValue(DriverError):
    """A value that cannot be written into nginx.conf as it is: refused, never mangled."""


class NginxText(str):
    """Text already made safe for nginx.conf by one of the template filters."""


def _refuse(value: str, why: str) -> None:
    raise UnsafeGatewayValue(f"cannot write {value!r} into the gateway config: {why}",
                             "validate refuses such values in the stack; check the state file and the stack "
                             "folder name for hand edits")


def nginx_escape(value: object) -> NginxText:
    """The inside of a double-quoted nginx string holding exactly `value`: `\\` and `"` escaped.
    nginx expands `$name` in most strings and has no escape for `$`; control characters and
    non-ASCII have no place in anything the gateway is rendered from: all refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        _refuse(repr(value), f"a {type(value).__name__} is not text")
    text = str(value)
    for character in text:
        if character == "$":
            _refuse(text, "`$` would start an nginx variable")
        if not " " <= character <= "~":
            _refuse(text, f"character {character!r} is not printable ASCII")
    return NginxText(text.replace("\\", "\\\\").replace('"', '\\"'))


def nginx_string(value: object) -> NginxText:
    """`value` as one double-quoted nginx string token (filter `q`)."""
    return NginxText(f'"{nginx_escape(value)}"')


def nginx_word(value: object) -> NginxText:
    """A bare token of the config's own making (an id, a number): checked, not escaped."""
    text = str(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not WORD_GRAMMAR.fullmatch(text):
        _refuse(text, "only letters, digits, `_` and `.` may stand unquoted")
    return NginxText(text)


def nginx_map_source(value: str) -> NginxText:
    """A literal source value of a `map` block (matched as a string, case-insensitively)."""
    special = value in _MAP_SPECIAL or value.startswith(("~", "\\"))
    return nginx_string("\\" + value if special else value)


def bearer_pattern(key: str) -> str:
    """The `map` regex source matching exactly `Authorization: Bearer KEY`, case-sensitively
    (string sources of a map are compared ignoring case: `BEARER` or an upper-cased key would
    pass). `\\z` anchors the end: `$` would start an nginx variable. The key alphabet has no
    regex metacharacter, so the key stands verbatim in the file (drift looks for it there)."""
    if not KEY_GRAMMAR.fullmatch(key or ""):
        _refuse(key, "endpoint keys are 1-256 characters of A-Z a-z 0-9 _ -")
    return "~^Bearer " + re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", key) + "\\z"


def json_text(value: object) -> str:
    """`value` as JSON (for bodies the gateway answers itself)."""
    return json.dumps(value)


def json_inner(value: str) -> str:
    """The inside of a JSON string holding `value` (for a body that also carries a variable)."""
    return json.dumps(str(value))[1:-1]


def upstream_server(server: str) -> str:
    """host:port of a deployment's server, checked: it is pasted into `http://HOST:PORT/path`,
    where `@`, `/`, `?` or `#` would change what is requested."""
    if not isinstance(server, str) or not SERVER_GRAMMAR.fullmatch(server):
        _refuse(str(server), "an upstream must be HOST:PORT, HOST a DNS name with labels of at most 63 "
                             "characters (longer ones never resolve)")
    return server


def _only_escaped(value: object) -> object:
    """Every `{{ }}` of a gateway template must end in a filter that made its value safe."""
    if not isinstance(value, NginxText):
        raise TypeError(f"gateway template printed {value!r} without an escaping filter")
    return value


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates kept between runs (compiling the gateway's costs ~40 ms of every apply
    that re-points one). Jinja checks each entry against its template's source and its own
    version; the directory is this Environment's alone (its options shape the compiled code).
    None when it cannot be made: templates are compiled each time then."""
    directory = cache_dir() / "jinja-drivers"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(directory))


@lru_cache(maxsize=None)
def template(package: str, name: str) -> jinja2.Template:
    """A driver template (the gateway's here, the swarm edge's in its own package); values reach
    it only through the filters above."""
    environment = jinja2.Environment(loader=jinja2.PackageLoader(package, "templates"),
                                     trim_blocks=True, lstrip_blocks=True, autoescape=False,
                                     undefined=jinja2.StrictUndefined, finalize=_only_escaped,
                                     bytecode_cache=_bytecode_cache())
    environment.filters.update(q=nginx_string, qi=nginx_escape, word=nginx_word, map_source=nginx_map_source,
                               bearer=bearer_pattern, json=json_text, json_inner=json_inner,
                               server=upstream_server)
    return environment.get_template(name)


def serving_records(endpoint: str, records: dict) -> dict[str, object]:
    """For each deployment of `endpoint`, the record whose containers should get its traffic.

    A ready record wins; while a replacement is tainted (never became ready), the old containers,
    kept as a `~deposed-` record, go on serving, so a failed rollout never takes traffic away.
    """
    chosen: dict[str, object] = {}
    for record in sorted(records.values(), key=lambda r: r.address):
        address = record.address
        if address.kind != "deployment" or address.is_orphan:
            continue
        if record.spec.get("endpoint") != endpoint or record.status != "ready":
            continue
        name = record.spec["name"]
        live = not address.is_deposed
        if live or name not in chosen:
            chosen[name] = record
    return chosen


def serving_routes(endpoint: str, records: dict, upstream: Callable[[object, int], dict | None]) -> dict[str, dict]:
    """{deployment name: {id, scoring_path, timeout_ms, max_in_flight, **upstream(record, scoring
    port)}} for the serving deployments of `endpoint`; one whose upstream is None (nothing runs)
    is left out."""
    routes = {}
    for name, record in sorted(serving_records(endpoint, records).items()):
        view = gateway_view(record.spec)
        servers = upstream(record, view["scoring_port"])
        if servers:
            routes[name] = {"id": hashlib.sha256(name.encode()).hexdigest()[:10],
                            **servers, "scoring_path": view["scoring_path"],
                            "timeout_ms": view["request_timeout_ms"],
                            "max_in_flight": view["max_requests_in_flight"]}
    return routes


def _with_server_maps(route: dict) -> dict:
    """A route with `servers` (the docker driver's containers, or the one swarm service name)
    and `server_maps`, the maps choosing a server per try (drivers/common/rotation.py) with all
    of them in rotation: inline on swarm, the first content of the included file on docker."""
    servers = [upstream_server(s) for s in route.get("servers") or [route["server"]]]
    maps = rotation_maps(route["id"], servers, MAX_TRIES)
    return {**route, "servers": servers, "server_maps": NginxText(textwrap.indent(maps, "    ").rstrip("\n")),
            "hold_ms": max(MIN_HOLD_MS, 2 * route["timeout_ms"]), "connect_timeout_ms": connect_timeout_ms(route)}


def connect_timeout_ms(route: dict) -> int:
    """How long a hop waits for one server's connection: a quarter of the request timeout (2 s
    at most, 100 ms at least), so that a stopped instance still cached in DNS leaves time for
    the next one."""
    return min(2000, max(100, route["timeout_ms"] // 4))


def render_gateway_config(spec: dict, routes: dict[str, dict], keys: dict[str, str], driver: str = "docker",
                          rotation_dir: str | None = None, tls: dict[str, str] | None = None,
                          routing_socket: str | None = None) -> str:
    """nginx.conf for the endpoint; traffic to deployments without servers is dropped. Each
    route has `servers` (or one `server`): names resolved through the engine's DNS per
    request. A docker deployment's containers are each a server; a swarm service is one name
    that resolves to all of its tasks. `rotation_dir`: where the gateway finds each
    deployment's rotation file (docker); None writes the server maps inline (swarm). `tls`:
    {certificate, key} paths inside the gateway (None: plain http). `routing_socket`: the unix
    socket this config listens on behind an edge (render_edge_config), which then has the TLS;
    None: it listens on GATEWAY_PORT itself."""
    traffic = [(name, percent) for name, percent in sorted(spec["traffic"].items()) if name in routes]
    mirror = [(name, percent) for name, percent in sorted(spec["mirror_traffic"].items()) if name in routes]
    deployments = {name: _with_server_maps(route) for name, route in routes.items()}
    return template("reconciler.drivers.common", "gateway.conf.j2").render(
        endpoint=spec["name"], deployments=deployments, traffic=traffic, mirror=mirror,
        keys=[keys["primary"], keys["secondary"]], auth_mode=spec["auth_mode"],
        token_secret=keys.get("token") if spec["auth_mode"] == "aml_token" else None,
        driver=driver, max_tries=MAX_TRIES, hop_keepalive=HOP_KEEPALIVE, model_keepalive=MODEL_KEEPALIVE, rotation_dir=rotation_dir, tls=tls, listen_port=GATEWAY_PORT,
        routing_socket=routing_socket)


def render_edge_config(endpoint: str, routing_socket: str, tls: dict[str, str] | None = None) -> str:
    """The docker gateway's edge (a second nginx in the gateway container): it listens on
    GATEWAY_PORT (with TLS when `tls` has the paths), keeps clients' connections alive and passes
    every request to the routing config listening on `routing_socket`. Nothing in it changes
    with routes, so a traffic move never reloads it."""
    return template("reconciler.drivers.common", "gateway_edge.conf.j2").render(
        endpoint=endpoint, routing_socket=routing_socket, tls=tls, listen_port=GATEWAY_PORT, keepalive=EDGE_KEEPALIVE)
