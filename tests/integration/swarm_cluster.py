"""A three-node Docker Swarm made by the tests (issue 18): one manager and two workers, each a
dockerd in a network namespace of its own (remote_engine.NamespaceHost: own data-root,
exec-root, containerd, pidfile, unix socket, cgroup parent, and its own hostname through a UTS
namespace, so that the swarm's node names tell the nodes apart), cabled by veth pairs to one
bridge; a registry (Debian's docker-registry) on the host's end of that bridge, which every node
pulls from. Side effects: root-only (ip netns, dockerd); everything is removed by `stop`, by the
PIDs and names made here, never by name patterns.

Why the bridge lives in a namespace of its own (the "switch") and not in the host's: the host's
dockerd sets the FORWARD policy to DROP and br_netfilter sends bridged frames through iptables
(bridge-nf-call-iptables=1, a per-namespace setting no bridge option can turn off), so a bridge
in the host's namespace would need a rule in the host's firewall. The switch namespace has an
empty firewall; the host reaches it through one more veth pair, whose end holds HOST_ADDRESS.

Why one manager and two workers: reconciler talks to one manager; the loss the tests make is a
worker's (what a user loses most often: there are more of them), and a single manager keeps
the raft log on one node (three managers would triple its writes on a 2-core machine and need
two of three alive, which a worker-loss test does not exercise).

Nothing here touches the host's own engine but `docker save` of the images pushed to the registry.
"""
from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from remote_engine import STOP_TIMEOUT, NamespaceHost, _run

# Apart from the remote engine's 10.250.17/30 and from the host's own networks.
SUBNET_PREFIX = "10.250.40"
HOST_ADDRESS = f"{SUBNET_PREFIX}.1"
PREFIX = 24
# Not the package's 5000: where init started its system service, that one holds *:5000.
REGISTRY_PORT = 5040
REGISTRY = f"{HOST_ADDRESS}:{REGISTRY_PORT}"
ENGINE_PORT = 2375
# Overlay subnets the swarm hands out: apart from the nodes' own bridges (remote_engine's pool).
SWARM_POOL = "10.254.0.0/16"
NODES = 3
JOIN_TIMEOUT = 60
READY_TIMEOUT = 90


def missing_tools() -> list[str]:
    return [tool for tool in ("ip", "nsenter", "unshare", "dockerd", "docker", "docker-registry")
            if shutil.which(tool) is None]


@dataclass
class SwarmNode(NamespaceHost):
    index: int = 1
    hostname: str = ""
    dockerd: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{SUBNET_PREFIX}.{10 + self.index}"

    @property
    def tcp_url(self) -> str:
        return f"tcp://{self.address}:{ENGINE_PORT}"

    def cable(self, switch: str, bridge: str, tag: str) -> None:
        """A veth pair from this namespace (eth0, `address`) to the switch's bridge."""
        node_end, switch_end = f"rcs{tag}n{self.index}", f"rcs{tag}s{self.index}"
        _run("ip", "link", "add", node_end, "type", "veth", "peer", "name", switch_end)
        _run("ip", "link", "set", node_end, "netns", self.name)
        _run("ip", "link", "set", switch_end, "netns", switch)
        _run("ip", "-n", switch, "link", "set", switch_end, "master", bridge, "up")
        _run("ip", "-n", self.name, "link", "set", node_end, "name", "eth0")
        _run("ip", "-n", self.name, "addr", "add", f"{self.address}/{PREFIX}", "dev", "eth0")
        _run("ip", "-n", self.name, "link", "set", "eth0", "up")

    def start(self) -> None:
        """dockerd (again, after `kill`: the data-root keeps its swarm membership), its own
        hostname first; --iptables (the default) in its own namespace's firewall."""
        command = ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname,
                   *self.dockerd_command("--host", self.tcp_url, "--insecure-registry", REGISTRY,
                                         "--shutdown-timeout", "5")]
        self.dockerd = self.start_dockerd(command)

    def kill(self, sig: int = signal.SIGTERM) -> float:
        """Stop this node's dockerd (SIGTERM: it stops its containers, as a machine shutting
        down does); returns the time it took."""
        started = time.monotonic()
        self.end(self.dockerd, sig)
        self.processes.remove(self.dockerd)
        return time.monotonic() - started

    def client(self):
        import docker
        return docker.DockerClient(base_url=self.unix_url, timeout=120)


@dataclass
class SwarmCluster:
    root: Path
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    nodes: list[SwarmNode] = field(default_factory=list)
    registry: subprocess.Popen | None = None
    switch_made: bool = False
    host_link: str = ""

    @property
    def switch(self) -> str:
        return f"rc-swarm-{self.tag}-switch"

    @property
    def manager(self) -> SwarmNode:
        return self.nodes[0]

    @property
    def workers(self) -> list[SwarmNode]:
        return self.nodes[1:]

    def env(self) -> dict[str, str]:
        """What a user sets to drive this swarm: DOCKER_HOST on the manager's address (so the
        driver's scoring URIs name a node's address, not 127.0.0.1)."""
        return {"DOCKER_HOST": self.manager.tcp_url}

    def image(self, local: str) -> str:
        return f"{REGISTRY}/{local}"

    # -- start ----------------------------------------------------------------------------------
    def start(self, images: list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._switch()
        self._registry()
        for index in range(1, NODES + 1):
            node = SwarmNode(self.root / f"node-{index}", name=f"rc-swarm-{self.tag}-{index}", index=index,
                             hostname=f"rc-node-{index}")
            self.nodes.append(node)
            node.make_netns()
            node.cable(self.switch, "br0", self.tag)
            node.start()
        self._join()
        self._push(images)

    def _switch(self) -> None:
        _run("ip", "netns", "add", self.switch)
        self.switch_made = True
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        self.host_link = f"rcs{self.tag}h"
        _run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", f"rcs{self.tag}u")
        _run("ip", "link", "set", f"rcs{self.tag}u", "netns", self.switch)
        _run("ip", "-n", self.switch, "link", "set", f"rcs{self.tag}u", "master", "br0", "up")
        _run("ip", "addr", "add", f"{HOST_ADDRESS}/{PREFIX}", "dev", self.host_link)
        _run("ip", "link", "set", self.host_link, "up")

    def _registry(self) -> None:
        """Debian's docker-registry as our own process: its own config and storage, listening on
        the bridge address only (the nodes trust it as --insecure-registry: plain http)."""
        directory = self.root / "registry"
        (directory / "storage").mkdir(parents=True)
        config = directory / "config.yml"
        config.write_text("\n".join([
            "version: 0.1", "log: {level: warn}", "storage:",
            f"  filesystem: {{rootdirectory: {directory / 'storage'}}}", "  delete: {enabled: true}",
            f"http: {{addr: '{REGISTRY}'}}", ""]))
        with open(directory / "registry.log", "ab") as log:
            self.registry = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: self._registry_answers(), 30, "the registry did not answer on " + REGISTRY,
              lambda: (directory / "registry.log").read_text(errors="replace")[-2000:])

    def _registry_answers(self) -> bool:
        import urllib.request
        if self.registry.poll() is not None:
            raise RuntimeError("docker-registry exited: " + (self.root / "registry" / "registry.log").read_text())
        try:
            with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def _join(self) -> None:
        manager = self.manager.client()
        manager.swarm.init(advertise_addr=self.manager.address, listen_addr=f"{self.manager.address}:2377",
                           default_addr_pool=[SWARM_POOL], subnet_size=24)
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        for worker in self.workers:
            worker.client().swarm.join(remote_addrs=[f"{self.manager.address}:2377"], join_token=token,
                                       advertise_addr=worker.address, listen_addr=f"{worker.address}:2377")
        self.wait_ready(NODES)

    def node_states(self) -> dict[str, tuple[str, str]]:
        """hostname -> (state, availability), as the manager sees them."""
        return {n["Description"]["Hostname"]: (n["Status"]["State"], n["Spec"]["Availability"])
                for n in self.manager.client().api.nodes()}

    def wait_ready(self, count: int, timeout: float = READY_TIMEOUT) -> None:
        _wait(lambda: sum(1 for s, _ in self.node_states().values() if s == "ready") == count, timeout,
              f"not {count} nodes ready", lambda: str(self.node_states()))

    def _push(self, images: list[str]) -> None:
        """Loaded once into the manager (docker save | load), tagged with the registry's host and
        pushed: the workers pull them when a task needs them."""
        self.manager.load(images)
        for image in images:
            _run("docker", "-H", self.manager.unix_url, "tag", image, self.image(image))
            _run("docker", "-H", self.manager.unix_url, "push", self.image(image))

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        if self.registry is not None:
            NamespaceHost.end(self.registry)
        if self.host_link:
            subprocess.run(["ip", "link", "delete", self.host_link], capture_output=True)
        if self.switch_made:
            subprocess.run(["ip", "netns", "delete", self.switch], capture_output=True)
            self.switch_made = False
        shutil.rmtree(self.root, ignore_errors=True)


def _wait(ready, timeout: float, what: str, detail=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what} within {timeout}s: {detail()}")


__all__ = ["SwarmCluster", "SwarmNode", "REGISTRY", "HOST_ADDRESS", "STOP_TIMEOUT", "missing_tools"]
