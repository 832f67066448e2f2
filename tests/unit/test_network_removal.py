"""The stack network's removal after a destroy: the engine releases a removed container's
endpoint a moment after the removal returns, so "has active endpoints" is asked again for a
bounded time (seen in a bench run: the network was left behind). Fakes only: the race itself
cannot be made on demand; tests/integration/test_apply_docker.py checks that destroy leaves no
network."""
from __future__ import annotations

import pytest
from docker.errors import APIError, NotFound

from reconciler.drivers.docker import engine


class FakeNetwork:
    def __init__(self, *outcomes: str) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def remove(self) -> None:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else self.last
        self.last = outcome
        if outcome == "busy":
            raise APIError("403", explanation="error while removing network: network n id x has active endpoints")
        if outcome == "gone":
            raise NotFound("no such network")
        if outcome == "other":
            raise APIError("500", explanation="something else")


@pytest.mark.parametrize("outcomes, removed, calls", [
    (["ok"], True, 1),
    (["busy", "busy", "ok"], True, 3),       # released a moment later
    (["gone"], True, 1),
    (["other"], False, 1),                   # not the release race: left for the next destroy
])
def test_a_network_is_asked_again_while_its_endpoints_are_released(monkeypatch, outcomes, removed, calls):
    monkeypatch.setattr(engine.time, "sleep", lambda seconds: None)
    network = FakeNetwork(*outcomes)
    assert (engine.remove_released_network(network), network.calls) == (removed, calls)


def test_a_network_still_in_use_is_left_after_the_bounded_wait(monkeypatch):
    clock = iter(range(0, 1000))
    monkeypatch.setattr(engine.time, "monotonic", lambda: next(clock) * 0.5)
    monkeypatch.setattr(engine.time, "sleep", lambda seconds: None)
    network = FakeNetwork("busy")
    assert engine.remove_released_network(network) is False
    assert network.calls == engine.NETWORK_RELEASE_SECONDS / 0.5 + 1


class FakeClient:
    """Just what DockerDriver.finish asks of a local engine after a destroy."""

    def __init__(self, network: FakeNetwork) -> None:
        self.network = network
        self.containers = type("Containers", (), {"list": staticmethod(lambda **kwargs: [])})()
        self.networks = type("Networks", (), {"list": staticmethod(lambda **kwargs: [network])})()


def test_destroy_says_which_network_the_engine_kept(monkeypatch, tmp_path):
    from reconciler.drivers.base import StepContext
    from reconciler.drivers.docker.driver import DockerDriver
    monkeypatch.setattr(engine.time, "sleep", lambda seconds: None)
    said: list[str] = []
    ctx = StepContext("s", tmp_path, tmp_path, dict, progress=said.append, identity="L")
    network = FakeNetwork("other")
    network.name = "rc-s-0b89999a"
    DockerDriver(FakeClient(network)).finish(ctx)
    assert len(said) == 1 and "network rc-s-0b89999a was left" in said[0] and "docker network rm rc-s-0b89999a" in said[0]
    said.clear()
    removed = FakeNetwork("ok")
    removed.name = "rc-s-0b89999a"
    DockerDriver(FakeClient(removed)).finish(ctx)
    assert said == [] and removed.calls == 1
