"""The Docker Engine connection, image checks and host ports, for every driver. Side effects
only, but for the pure reading of DOCKER_HOST (`engine_address`) and of connection errors
(`connection_error`).

The engine is the one the docker CLI would use: DOCKER_HOST (unix socket by default; tcp://HOST:2376
with TLS client certificates under the DOCKER_TLS_VERIFY / DOCKER_CERT_PATH conventions;
ssh://USER@HOST through the `ssh` binary, so the user's ssh config, agent and known_hosts apply as
they do for `docker -H ssh://...`). An engine reached over tcp or ssh is remote: its published
ports are on its host, not on 127.0.0.1, and nothing of the client's disk can be bind-mounted.
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
from dataclasses import dataclass
from urllib.parse import urlsplit

import docker
from docker.utils import kwargs_from_env, parse_repository_tag
from docker.errors import APIError, DockerException, ImageNotFound, TLSParameterError

from reconciler.errors import DriverError

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
LOOPBACK = "127.0.0.1"
REMOTE_SCHEMES = ("tcp", "ssh", "http", "https")
SSH_CHECK_TIMEOUT = 30


@dataclass(frozen=True)
class EngineAddress:
    """Where the engine is: `url` as DOCKER_HOST gives it, `host` where its published ports are."""
    url: str
    scheme: str
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def remote(self) -> bool:
        return self.scheme in REMOTE_SCHEMES

    @property
    def uri_host(self) -> str:
        """The host as a URL names it (an IPv6 address in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def listen_address(self) -> str:
        """Where a gateway publishes its port on the engine's host by default: loopback on the
        local engine (no one else needs it), every address of a remote one (the client is elsewhere)."""
        return "0.0.0.0" if self.remote else LOOPBACK

    def gateway_listen(self, spec: dict) -> dict:
        """Where an endpoint's gateway listens on the engine's host: {address, port (None: free,
        kept)}, the endpoint's `listen` settings over the default above."""
        return {"address": self.listen_address, "port": None, **(spec.get("listen") or {})}

    def caller_host(self, address: str) -> str:
        """The host a client here calls a gateway listening on `address` at: the engine's host
        for every address (127.0.0.1 on the local engine), else that address."""
        return self.host if address == "0.0.0.0" else address

    def caller_uri_host(self, address: str) -> str:
        host = self.caller_host(address)
        return f"[{host}]" if ":" in host else host


def engine_address(environ) -> EngineAddress:
    """The engine DOCKER_HOST names (pure): unix socket -> 127.0.0.1, tcp/ssh -> their host."""
    url = environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    scheme = parts.scheme or "tcp"
    if scheme not in REMOTE_SCHEMES or not parts.hostname:
        return EngineAddress(url, scheme, LOOPBACK)
    return EngineAddress(url, scheme, parts.hostname, parts.username, parts.port)


def current_engine() -> EngineAddress:
    return engine_address(os.environ)


def connect(timeout: int = 60) -> docker.DockerClient:
    """A client that answers, or a DriverError naming the engine, what failed and what to do."""
    engine = current_engine()
    try:
        params = kwargs_from_env()
    except TLSParameterError as error:
        cert_path = os.environ.get("DOCKER_CERT_PATH") or "~/.docker"
        raise DriverError(f"cannot reach the Docker Engine at {engine.url}: the TLS client certificates are "
                          f"incomplete ({error})",
                          f"put ca.pem, cert.pem and key.pem in {cert_path} (DOCKER_CERT_PATH), or unset "
                          "DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for an engine without TLS") from error
    params["base_url"] = engine.url
    try:
        # ssh: the `ssh` binary, as the docker CLI (paramiko would ignore most of ~/.ssh/config,
        # ssh-agent forwarding setups and ProxyJump).
        if engine.scheme == "ssh":
            client = _ssh_client(params, timeout)
        elif "tls" in params:
            client = _tls_client(params, timeout)
        else:
            client = docker.DockerClient(**params, timeout=timeout)
        client.ping()
        return client
    except (DockerException, OSError) as error:
        reason = str(error)
        if engine.scheme == "ssh":
            reason = _ssh_failure(engine) or reason
        message, hint = connection_error(engine, reason, tls="tls" in params)
        raise DriverError(message, hint) from error


def _ssh_client(params: dict, timeout: int) -> docker.DockerClient:
    _tolerate_exited_ssh()
    return docker.DockerClient(**params, timeout=timeout, use_ssh_client=True)


_ssh_patched = False


def _tolerate_exited_ssh() -> None:
    """The SDK closes an ssh connection by writing to its `ssh` child, which has already exited
    when the engine ended the stream (exec, attach): BrokenPipeError out of a request that
    succeeded (docker/docker-py#3218, open). Closing a connection whose child is gone is done."""
    global _ssh_patched
    if _ssh_patched:
        return
    from docker.transport import sshconn

    original = sshconn.SSHSocket.close

    def close(self) -> None:
        try:
            original(self)
        except (BrokenPipeError, ValueError):
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()

    sshconn.SSHSocket.close = close
    _ssh_patched = True


def _tls_client(params: dict, timeout: int) -> docker.DockerClient:
    """A client over TLS that verifies with DOCKER_CERT_PATH/ca.pem, even where REQUESTS_CA_BUNDLE
    is set (a CI runner behind a proxy): requests lets that variable override a session's own CA
    unless the session ignores the environment. The API version is negotiated after that, as
    version="auto" would do (it asks the engine while the client is being made)."""
    client = docker.DockerClient(**params, timeout=timeout, version=docker.constants.MINIMUM_DOCKER_API_VERSION)
    client.api.trust_env = False
    client.api._version = client.api._retrieve_server_version()
    return client


def connection_error(engine: EngineAddress, reason: str, tls: bool) -> tuple[str, str]:
    """(message, hint) for an engine that did not answer (pure): which engine, what failed, what to do."""
    where = f"the Docker Engine at {engine.url}"
    lowered = reason.lower()
    if engine.scheme == "ssh":
        login = f"{engine.user + '@' if engine.user else ''}{engine.host}"
        if "permission denied" in lowered:
            return (f"cannot reach {where}: ssh authentication as {login} failed ({_gist(reason)})",
                    f"`ssh {login} docker version` must work without a prompt: load the key into ssh-agent "
                    f"or name it in ~/.ssh/config (IdentityFile), and add it to the account's authorized_keys")
        if "host key verification failed" in lowered or "host key" in lowered:
            return (f"cannot reach {where}: the ssh host key of {engine.host} is not known or has changed",
                    f"check the host's key and add it to ~/.ssh/known_hosts (`ssh-keyscan {engine.host}`)")
        if "command not found" in lowered and "docker" in lowered:
            return (f"cannot reach {where}: ssh to {login} works but `docker` is not on its PATH",
                    "install the docker CLI on the engine's host (it runs `docker system dial-stdio`)")
        return (f"cannot reach {where}: {_gist(reason)}",
                f"check that `ssh {login} docker version` works from this machine")
    if engine.remote:
        if "certificate verify failed" in lowered or "certificate_verify_failed" in lowered:
            return (f"cannot reach {where}: TLS verification of the engine's certificate failed "
                    f"({_gist(reason)})",
                    "DOCKER_CERT_PATH/ca.pem must be the CA that signed the engine's certificate, and the "
                    f"certificate must name {engine.host} (subjectAltName)")
        if any(word in lowered for word in ("bad certificate", "unknown ca", "certificate required",
                                            "tlsv1 alert", "tlsv13 alert")):
            return (f"cannot reach {where}: the engine refused this client's TLS certificate "
                    f"({_gist(reason)})",
                    "DOCKER_CERT_PATH/cert.pem and key.pem must be a client certificate signed by the CA the "
                    "engine trusts (dockerd --tlscacert)")
        if "http request to an https server" in lowered or ("connection aborted" in lowered and not tls):
            return (f"cannot reach {where}: the engine speaks TLS and this client does not",
                    "set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to a directory with ca.pem, cert.pem, key.pem")
        return (f"cannot reach {where}: {_gist(reason)}",
                f"check that dockerd listens on {engine.host}:{engine.port or 2376} and that this machine can "
                "reach it (firewall, VPN)")
    if "permission denied" in lowered:
        return (f"cannot reach {where}: {reason}",
                f"the socket {engine.url} is not readable by this user; run as root or join the docker group")
    return f"cannot reach {where}: {reason}", f"start dockerd (or set DOCKER_HOST) so that {engine.url} answers"


def _ssh_failure(engine: EngineAddress) -> str | None:
    """Why `ssh HOST docker version` fails, in ssh's own words (the SDK's ssh child writes them
    to the terminal, not into the exception), or None when it works."""
    command = ["ssh", "-o", "BatchMode=yes"] + (["-l", engine.user] if engine.user else []) + \
        (["-p", str(engine.port)] if engine.port else []) + ["--", engine.host, "docker version --format ok"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=SSH_CHECK_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{shlex.join(command)}: {error}"
    return None if result.returncode == 0 else (result.stderr.strip() or result.stdout.strip() or
                                                f"{shlex.join(command)} exited {result.returncode}")


def _gist(text: str) -> str:
    """The line that says what failed (ssh prints it last)."""
    return text.strip().splitlines()[-1][:300] if text.strip() else text


def ensure_image(client: docker.DockerClient, image: str, about: tuple[str, ...] = ()) -> None:
    """The image is local, or is pulled; otherwise a clear error about the resources in `about`."""
    try:
        client.images.get(image)
        return
    except ImageNotFound:
        pass
    try:
        repository, tag = parse_repository_tag(image)
        client.images.pull(repository, tag=tag or "latest")
    except (APIError, DockerException) as error:
        raise DriverError(
            f"image {image} is not present locally and could not be pulled: {_short(error)}",
            "build or load it first (images/build.sh builds the demo images), or `docker login` "
            "to the registry that holds it", about=about) from error


def free_host_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now (0.0.0.0: on every address); kept in state so the same one
    is reused later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class EngineClient:
    """A driver's Docker client, connected on first use (so that making a driver never needs the
    engine), and where that engine is (`engine`: DOCKER_HOST when the driver was made)."""

    def __init__(self, client: docker.DockerClient | None = None, engine: EngineAddress | None = None) -> None:
        self._client = client
        self.engine = engine or current_engine()

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client


def ensure_images(client: docker.DockerClient, specs: list[tuple[str, dict]], gateway_image: str,
                  content_volumes: bool = False) -> None:
    """Every image the plan's changes need is here (or pulled) before any change is made."""
    for image in required_images(specs, gateway_image, content_volumes):
        ensure_image(client, image, image_users(specs, image))


def image_users(specs: list[tuple[str, dict]], image: str) -> tuple[str, ...]:
    """The addresses of the plan's deployments that run `image` and environments built from it. Pure."""
    return tuple(sorted(str(address) for address, spec in specs if
                        (address.kind == "deployment" and spec.get("image") == image) or
                        (address.kind == "environment" and image in (spec.get("base_image"),
                                                                     *spec.get("base_images", ())))))


def required_images(specs: list[tuple[str, dict]], gateway_image: str, content_volumes: bool = False) -> list[str]:
    """Every image a plan's changes need: each deployment's (unless an environment of the plan
    builds it), each environment's base images, and the gateway's for endpoints and, with
    `content_volumes` (a remote engine), for models (it is the helper that fills their volume)."""
    built = {spec["image"] for address, spec in specs if address.kind == "environment"}
    images = {spec["image"] for address, spec in specs if address.kind == "deployment"} - built
    for address, spec in specs:
        if address.kind == "environment":
            images |= {spec["base_image"]} if spec.get("base_image") else set()
            images |= {b for b in spec.get("base_images", ()) if b.lower() != "scratch"}
    helper_kinds = ("endpoint", "model") if content_volumes else ("endpoint",)
    if any(address.kind in helper_kinds for address, _ in specs):
        images.add(gateway_image)
    return sorted(images)


def _short(error: Exception) -> str:
    text = getattr(error, "explanation", None) or str(error)
    return str(text).splitlines()[0][:300]
