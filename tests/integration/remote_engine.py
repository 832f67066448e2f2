"""A second Docker Engine "on another host" for the remote-engine tests: a network namespace
with a veth pair to the host, a dockerd inside it (its own data-root, exec-root, pidfile,
socket and bridge subnet) listening on tcp://NS_ADDRESS:2376 with --tlsverify and certificates
made here with openssl, and an sshd inside it whose key login reaches that dockerd. Side
effects: root-only (ip netns, dockerd, sshd); everything made here is removed by `stop`, by the
PIDs and names this module made, never by name patterns.

Nothing here touches the host's own engine but `docker save` of the images the tests need.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

# A private /30 of TEST-NET-ish space that neither the host nor its dockerd uses.
HOST_ADDRESS = "10.250.17.1"
NS_ADDRESS = "10.250.17.2"
PREFIX = 30
# The inner engine's bridge and its pool for user networks: apart from the host's 172.16/12.
INNER_BIP = "10.251.0.1/24"
INNER_POOL = "base=10.252.0.0/16,size=24"
TLS_PORT = 2376
SSH_PORT = 22
START_TIMEOUT = 60
STOP_TIMEOUT = 30


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=True, capture_output=True, text=True, timeout=120, **kwargs)


def missing_tools() -> list[str]:
    return [tool for tool in ("ip", "nsenter", "dockerd", "docker", "openssl", "sshd", "ssh", "ssh-keygen")
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]


def make_certificates(directory: Path, address: str) -> tuple[Path, Path]:
    """A CA, a server certificate for `address` (an IP SAN: what the client verifies) and a
    client certificate. Returns (server dir, client dir); the client dir has the
    ca.pem / cert.pem / key.pem layout DOCKER_CERT_PATH names."""
    server, client = directory / "server", directory / "client"
    server.mkdir(parents=True)
    client.mkdir()
    ca_key, ca = directory / "ca-key.pem", directory / "ca.pem"
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=reconciler test CA",
         "-keyout", str(ca_key), "-out", str(ca))
    for who, subject, extensions in ((server, "/CN=" + address, f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth"),
                                     (client, "/CN=reconciler test client", "extendedKeyUsage=clientAuth")):
        key, request, cert, ext = who / "key.pem", who / "request.csr", who / "cert.pem", who / "ext.cnf"
        ext.write_text(extensions + "\n")
        _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(key),
             "-out", str(request))
        _run("openssl", "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))
        shutil.copy(ca, who / "ca.pem")
    return server, client


@dataclass
class NamespaceHost:
    """One network namespace of this module's making and the processes started in it, all
    removed by `stop`. What the remote engine and each node of the multi-node swarm
    (swarm_cluster.py) share: entering the namespace, a dockerd with its own directories,
    loading images into it, and the teardown."""
    root: Path
    name: str = field(default_factory=lambda: f"rc-remote-{secrets.token_hex(3)}")
    processes: list[subprocess.Popen] = field(default_factory=list)
    netns_made: bool = False

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"

    def make_netns(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _run("ip", "netns", "add", self.name)
        self.netns_made = True
        _run(*self._in_ns("ip", "link", "set", "lo", "up"))

    def _in_ns(self, *command: str) -> list[str]:
        # nsenter changes only the network namespace: `ip netns exec` would also remount /sys,
        # which hides the cgroup mounts dockerd needs.
        return ["nsenter", f"--net=/run/netns/{self.name}", *command]

    def _spawn(self, command: list[str], log: str) -> subprocess.Popen:
        with open(self.root / log, "ab") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def dockerd_command(self, *extra: str) -> list[str]:
        """dockerd in the namespace with its own data-root, exec-root (and so its own
        containerd), pidfile, unix socket and cgroup parent; `extra` adds listeners and options."""
        return self._in_ns(
            "dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"), "--host", self.unix_url,
            "--bip", INNER_BIP, "--default-address-pool", INNER_POOL, "--cgroup-parent", f"/{self.name}",
            "--userland-proxy=false", *extra)

    def start_dockerd(self, command: list[str], timeout: float = START_TIMEOUT) -> subprocess.Popen:
        """Spawn `command` (a dockerd_command, maybe wrapped) and wait until the engine answers."""
        process = self._spawn(command, "dockerd.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"dockerd of {self.name} exited:\n" + self.log("dockerd.log"))
            if subprocess.run(["docker", "-H", self.unix_url, "version"], capture_output=True,
                              timeout=30).returncode == 0:
                return process
            time.sleep(0.5)
        raise RuntimeError(f"dockerd of {self.name} did not answer within {timeout}s:\n" + self.log("dockerd.log"))

    def load(self, images: list[str]) -> None:
        """`docker save | docker -H ... load`: the inner engine has no registry to pull from."""
        save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", self.unix_url, "load"], stdin=save.stdout, capture_output=True,
                              timeout=300)
        save.stdout.close()
        if save.wait(timeout=60) != 0 or load.returncode != 0:
            raise RuntimeError(f"loading {images} into {self.name} failed: {load.stderr.decode()}")

    def log(self, name: str) -> str:
        try:
            return (self.root / name).read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    @staticmethod
    def end(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        """One process of ours, by its PID: `sig`, then SIGKILL if it outlives STOP_TIMEOUT."""
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Every process this module started (by PID, newest first), then the namespace (its
        veth ends go with it), then the files."""
        for process in reversed(self.processes):
            self.end(process)
        self.processes.clear()
        if self.netns_made:
            subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
            self.netns_made = False
        # dockerd unmounts its layers when it stops; anything left mounted under root is unmounted first.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.root) + "/")]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class NamespaceEngine(NamespaceHost):
    """The remote engine: a veth pair to the host, dockerd on TLS, an sshd."""

    @property
    def tcp_url(self) -> str:
        return f"tcp://{NS_ADDRESS}:{TLS_PORT}"

    @property
    def ssh_url(self) -> str:
        return f"ssh://root@{NS_ADDRESS}"

    @property
    def client_certs(self) -> Path:
        return self.root / "certs" / "client"

    @property
    def ssh_bin(self) -> Path:
        """A directory to put first on PATH: its `ssh` uses this module's client config (key,
        known host), so the host's own ~/.ssh is neither read nor written."""
        return self.root / "ssh-bin"

    def tls_env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.tcp_url, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(self.client_certs)}

    def ssh_env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.ssh_url, "PATH": f"{self.ssh_bin}:{os.environ.get('PATH', '')}"}

    # -- start ------------------------------------------------------------------------------
    def start(self, images: list[str]) -> None:
        self.make_netns()
        self._network()
        server, _ = make_certificates(self.root / "certs", NS_ADDRESS)
        self.start_dockerd(self.dockerd_command(
            "--host", self.tcp_url, "--tlsverify", "--tlscacert", str(server / "ca.pem"),
            "--tlscert", str(server / "cert.pem"), "--tlskey", str(server / "key.pem")))
        self._sshd()
        self.load(images)

    def _network(self) -> None:
        host_side, ns_side = f"{self.name[-6:]}h", f"{self.name[-6:]}n"
        _run("ip", "link", "add", f"rcr{host_side}", "type", "veth", "peer", "name", f"rcr{ns_side}")
        _run("ip", "link", "set", f"rcr{ns_side}", "netns", self.name)
        _run("ip", "addr", "add", f"{HOST_ADDRESS}/{PREFIX}", "dev", f"rcr{host_side}")
        _run("ip", "link", "set", f"rcr{host_side}", "up")
        for command in (["ip", "addr", "add", f"{NS_ADDRESS}/{PREFIX}", "dev", f"rcr{ns_side}"],
                        ["ip", "link", "set", f"rcr{ns_side}", "up"]):
            _run(*self._in_ns(*command))

    def _sshd(self) -> None:
        ssh = self.root / "ssh"
        ssh.mkdir(mode=0o700)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "host_key"))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "client_key"))
        # The session's docker CLI (what `docker system dial-stdio` runs) talks to the inner engine.
        (ssh / "authorized_keys").write_text(
            f'environment="DOCKER_HOST={self.unix_url}" {(ssh / "client_key.pub").read_text()}')
        (ssh / "sshd_config").write_text("\n".join([
            f"ListenAddress {NS_ADDRESS}:{SSH_PORT}", f"HostKey {ssh / 'host_key'}",
            f"AuthorizedKeysFile {ssh / 'authorized_keys'}", f"PidFile {ssh / 'sshd.pid'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "PermitUserEnvironment yes", "StrictModes no", ""]))
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        process = self._spawn(self._in_ns("/usr/sbin/sshd", "-D", "-e", "-f", str(ssh / "sshd_config")), "sshd.log")
        host_key = (ssh / "host_key.pub").read_text().split()
        (ssh / "known_hosts").write_text(f"{NS_ADDRESS} {host_key[0]} {host_key[1]}\n")
        (ssh / "client_config").write_text("\n".join([
            f"Host {NS_ADDRESS}", f"  IdentityFile {ssh / 'client_key'}", "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {ssh / 'known_hosts'}", "  StrictHostKeyChecking yes", "  BatchMode yes",
            "  ConnectTimeout 10", ""]))
        self.ssh_bin.mkdir()
        wrapper = self.ssh_bin / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {ssh / "client_config"} "$@"\n')
        wrapper.chmod(0o755)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("sshd exited:\n" + self.log("sshd.log"))
            if subprocess.run([str(wrapper), f"root@{NS_ADDRESS}", "true"], capture_output=True,
                              timeout=30).returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"sshd did not answer within {START_TIMEOUT}s:\n" + self.log("sshd.log"))
