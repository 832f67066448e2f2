"""An endpoint's TLS files: the user's (named in the stack settings) or a generated development
CA and certificate per stack identity, kept in the state directory. Side effects: files, and
`openssl` (Debian's, always installed) to generate; no key is ever written into state.

Generated files live in `<state dir>/tls/<identity>/`: `ca.crt`, `ca.key` (0600, 0700
directory), and per endpoint `<endpoint>.crt` / `<endpoint>.key` (0600) for the names the
endpoint is called by (its listen address, 127.0.0.1, localhost), made again when those change.
`reconciler invoke` verifies against `ca.crt` (or the user's `ca`).
"""
from __future__ import annotations

import ipaddress
import os
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reconciler.config.settings import file_fingerprint
from reconciler.errors import DriverError

CA_DAYS = 3650
CERTIFICATE_DAYS = 825


@dataclass(frozen=True)
class TlsFiles:
    certificate: Path
    key: Path
    # What a client verifies the certificate against; None: the system's trust store.
    ca: Path | None


def names_for(address: str) -> list[str]:
    """Subject alternative names of an endpoint listening on `address` (pure)."""
    names = ["IP:127.0.0.1", "DNS:localhost"]
    if address not in ("127.0.0.1", "0.0.0.0"):
        names.insert(0, f"IP:{ipaddress.IPv4Address(address)}")
    return names


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise DriverError(f"openssl {args[0]} failed", result.stderr.strip()[-2000:])


def _private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)


def generated_dir(state_dir: Path, identity: str) -> Path:
    return state_dir / "tls" / identity


def generated_ca(state_dir: Path, identity: str) -> Path:
    """Where the stack's development CA certificate is (made by ensure_generated)."""
    return generated_dir(state_dir, identity) / "ca.crt"


def ensure_generated(state_dir: Path, identity: str, endpoint: str, address: str) -> TlsFiles:
    """The stack's development CA (made once) and the endpoint's certificate for `address`."""
    directory = generated_dir(state_dir, identity)
    _private_dir(directory)
    ca_cert, ca_key = generated_ca(state_dir, identity), directory / "ca.key"
    if not (ca_cert.exists() and ca_key.exists()):
        old = os.umask(0o077)
        try:
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", str(ca_key), "-out", str(ca_cert), "-days", str(CA_DAYS),
                     "-subj", f"/CN=reconciler development CA {identity[:8]}",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        finally:
            os.umask(old)
        os.chmod(ca_key, 0o600)
    cert, key, names_file = directory / f"{endpoint}.crt", directory / f"{endpoint}.key", directory / f"{endpoint}.names"
    names = ",".join(names_for(address))
    if not (cert.exists() and key.exists() and names_file.exists() and names_file.read_text() == names):
        old = os.umask(0o077)
        try:
            with tempfile.TemporaryDirectory(dir=directory) as work:
                request = Path(work) / "request.csr"
                _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", str(key), "-out", str(request), "-subj", f"/CN={endpoint}")
                extensions = Path(work) / "extensions.cnf"
                extensions.write_text(f"subjectAltName={names}\nbasicConstraints=CA:FALSE\n"
                                      "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
                _openssl("x509", "-req", "-in", str(request), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                         "-CAcreateserial", "-out", str(cert), "-days", str(CERTIFICATE_DAYS),
                         "-extfile", str(extensions))
        finally:
            os.umask(old)
        os.chmod(key, 0o600)
        names_file.write_text(names)
    return TlsFiles(cert, key, ca_cert)


def endpoint_files(spec: dict, state_dir: Path, identity: str) -> TlsFiles | None:
    """The files an endpoint's gateway serves (None: plain http). The user's files must still be
    the ones planned: a changed file since the plan is an error, not silently served."""
    tls = spec.get("tls")
    if not tls:
        return None
    if tls["source"] == "generated":
        return ensure_generated(state_dir, identity, spec["name"], listen_of(spec)["address"])
    for role in ("certificate", "key", "ca"):
        if tls.get(role):
            try:
                current = file_fingerprint(Path(tls[role]))
            except OSError as error:
                raise DriverError(f"cannot read the {role} file {tls[role]} of endpoint {spec['name']}: {error}",
                                  "the stack settings name it (endpoints.<name>.tls)") from error
            if current != tls.get(f"{role}_sha256"):
                raise DriverError(f"the {role} file {tls[role]} of endpoint {spec['name']} changed since the plan",
                                  "run `reconciler plan` again")
    return TlsFiles(Path(tls["certificate"]), Path(tls["key"]), Path(tls["ca"]) if tls.get("ca") else None)


def listen_of(spec: dict) -> dict:
    """Where an endpoint's gateway listens on the host: {address, port (None: free, kept)}."""
    return {"address": "127.0.0.1", "port": None, **(spec.get("listen") or {})}


def client_host(address: str) -> str:
    """The address a client on this host calls an endpoint listening on `address` at."""
    return "127.0.0.1" if address == "0.0.0.0" else address


def client_context(ca: str | None) -> ssl.SSLContext:
    """A verifying client context: against `ca` when given, else the system's trust store."""
    return ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
