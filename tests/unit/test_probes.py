"""Readiness probe schedule (drivers/common/probes.py) on a fake clock: which probes happen when,
for given settings and answers, and when the wait declares ready or failed."""
from __future__ import annotations

import pytest

from reconciler.drivers.common.probes import Cancelled, early_poll_gaps, next_probe_at, wait_until_ready

AZURE_DEFAULT = {"initial_delay": 10, "period": 10, "timeout": 2, "failure_threshold": 30, "success_threshold": 1}


def settings(**overrides) -> dict:
    return {**AZURE_DEFAULT, **overrides}


class FakeWorld:
    """A clock that only sleeps and probes move; `answers` are the probes' outcomes in order
    ("ok", "no" = a refusal or non-2xx, "slow" = no answer within the probe's timeout);
    `stops_at`: the container stops at that time."""

    def __init__(self, answers: str, stops_at: float | None = None) -> None:
        self.now = 0.0
        self.answers = list(answers.split())
        self.stops_at = stops_at
        self.probed_at: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds

    def still_running(self) -> bool:
        return self.stops_at is None or self.now < self.stops_at

    def probe(self, host: str, port: int, path: str, timeout: float) -> tuple[bool, str]:
        self.probed_at.append(self.now)
        answer = self.answers.pop(0) if self.answers else self.answers_exhausted()
        if answer == "slow":
            self.now += timeout
            return False, "timed out"
        return answer == "ok", "" if answer == "ok" else "HTTP 503"

    def answers_exhausted(self):
        raise AssertionError("probed more often than the case expects")


def run(answers: str, stops_at: float | None = None, early_poll: float | None = None, **overrides) -> str:
    world = FakeWorld(answers, stops_at)
    result = wait_until_ready(lambda: ("10.0.0.2", 8501), "/ready", settings(**overrides), world.still_running,
                              sleep=world.sleep, clock=world.clock, probe=world.probe, early_poll=early_poll)
    times = " ".join(f"{t:g}" for t in world.probed_at)
    verdict = "ready" if result.ready else f"failed ({result.last_error})"
    return f"probes at [{times}] -> {verdict} at {world.now:g} after {result.attempts}"


CASES = [
    # Azure's default probe: the first probe at initial_delay (10 s), not at initial_delay + period.
    ({"answers": "ok"}, "probes at [10] -> ready at 10 after 1"),
    ({"answers": "no ok"}, "probes at [10 20] -> ready at 20 after 2"),
    # initial_delay 0: the first probe right away, then every period.
    ({"answers": "no no ok", "initial_delay": 0, "period": 1}, "probes at [0 1 2] -> ready at 2 after 3"),
    ({"answers": "ok", "initial_delay": 0, "period": 1}, "probes at [0] -> ready at 0 after 1"),
    # success_threshold successes in a row; a failure in between starts the count again.
    ({"answers": "ok no ok ok", "initial_delay": 1, "period": 1, "success_threshold": 2},
     "probes at [1 2 3 4] -> ready at 4 after 4"),
    # failure_threshold failures in a row; a success in between (below success_threshold) resets them.
    ({"answers": "no no no", "initial_delay": 1, "period": 2, "failure_threshold": 3},
     "probes at [1 3 5] -> failed (HTTP 503) at 5 after 3"),
    ({"answers": "no no ok no no no", "initial_delay": 0, "period": 1, "failure_threshold": 3,
      "success_threshold": 2}, "probes at [0 1 2 3 4 5] -> failed (HTTP 503) at 5 after 6"),
    # A probe that times out: the grid is kept (timeout < period)...
    ({"answers": "slow slow ok", "initial_delay": 0, "period": 3, "timeout": 2},
     "probes at [0 3 6] -> ready at 6 after 3"),
    ({"answers": "slow slow slow", "initial_delay": 0, "period": 3, "timeout": 2, "failure_threshold": 3},
     "probes at [0 3 6] -> failed (timed out) at 8 after 3"),
    # ...and a probe that overruns its period is followed by one late probe at once, then the grid.
    ({"answers": "slow slow ok", "initial_delay": 0, "period": 1, "timeout": 3},
     "probes at [0 3 6] -> ready at 6 after 3"),
    ({"answers": "slow no no ok", "initial_delay": 0, "period": 2, "timeout": 3},
     "probes at [0 3 4 6] -> ready at 6 after 4"),
    # The container stopping fails the wait before the next probe.
    ({"answers": "no no", "stops_at": 1.5, "initial_delay": 0, "period": 1},
     "probes at [0 1] -> failed (container stopped) at 2 after 2"),
    ({"answers": "", "stops_at": 0, "initial_delay": 0, "period": 1},
     "probes at [] -> failed (container stopped) at 0 after 0"),
]


# Early polls after a failed scheduled probe, until the next one (here the first 0.25 s after
# it, then pauses 1.5x longer: 0.375, 0.5625, 0.84375, none from a whole period on): the first
# 2xx makes the instance ready at once; their failures are not counted, so when a deployment
# fails and after how many (counted) probes is the same as without them.
EARLY = {"early_poll": 0.25, "initial_delay": 0, "period": 1}
EARLY_CASES = [
    # The server answers at the second early poll: ready at 0.5, not at the next period (1).
    ({**EARLY, "answers": "no no ok"}, "probes at [0 0.25 0.5] -> ready at 0.5 after 1"),
    # Nothing before initial_delay, and nothing early when the first scheduled probe answers.
    ({**EARLY, "answers": "ok", "initial_delay": 10}, "probes at [10] -> ready at 10 after 1"),
    ({**EARLY, "answers": "no ok", "initial_delay": 10}, "probes at [10 10.25] -> ready at 10.25 after 1"),
    # Never ready: failure_threshold counted probes on the schedule, failed at the same time;
    # the early polls end once their pauses reach a period.
    ({**EARLY, "answers": "no " * 10, "failure_threshold": 5},
     "probes at [0 0.25 0.5 0.875 1 1.5625 2 2.84375 3 4] -> failed (HTTP 503) at 4 after 5"),
    # An early poll is cut to the time left before the next scheduled probe.
    ({**EARLY, "answers": "no slow no ok", "period": 2, "timeout": 5, "early_poll": 1.5},
     "probes at [0 1.5 2 4] -> ready at 4 after 3"),
    # success_threshold above 1: successes in a row on the schedule only, no early polls.
    ({**EARLY, "answers": "no ok ok", "success_threshold": 2}, "probes at [0 1 2] -> ready at 2 after 3"),
]


def test_early_poll_gaps_are_steady_for_half_a_second_then_grow_until_a_period():
    assert [round(gap, 4) for gap in early_poll_gaps(0.05, 1)] == [0.05] * 10 + [0.075, 0.1125, 0.1688, 0.2531,
                                                                                 0.3797, 0.5695, 0.8543]
    assert early_poll_gaps(0.02, 1)[:26] == [0.02] * 25 + [0.03] and len(early_poll_gaps(0.02, 1)) == 34
    assert early_poll_gaps(1.5, 2) == [1.5]     # a first gap past the steady half second still comes
    assert early_poll_gaps(1, 1) == []


@pytest.mark.parametrize("case, expected", EARLY_CASES, ids=[str(i) for i in range(len(EARLY_CASES))])
def test_early_polls_until_the_first_success(case, expected):
    assert run(**case) == expected


@pytest.mark.parametrize("case, expected", CASES, ids=[str(i) for i in range(len(CASES))])
def test_probe_schedule(case, expected):
    assert run(**case) == expected


def test_next_probe_at_drops_missed_ticks_and_keeps_the_grid():
    period = {"period": 2}
    assert [next_probe_at(period, 5, None, 0), next_probe_at(period, 5, 5, 6), next_probe_at(period, 5, 5, 7.5),
            next_probe_at(period, 5, 5, 20)] == [5, 7, 7, 19]


def test_no_address_counts_as_a_failed_probe():
    world = FakeWorld("ok")
    addresses = iter([None, None, ("10.0.0.2", 8501)])
    result = wait_until_ready(lambda: next(addresses), "/ready", settings(initial_delay=0, period=1),
                              world.still_running, sleep=world.sleep, clock=world.clock, probe=world.probe)
    assert (result.ready, result.attempts, world.probed_at) == (True, 3, [2.0])


def test_a_cancelling_sleep_ends_the_wait_not_ready():
    def sleep(seconds):
        raise Cancelled()
    world = FakeWorld("no")
    result = wait_until_ready(lambda: ("10.0.0.2", 8501), "/ready", settings(initial_delay=0, period=1),
                              world.still_running, sleep=sleep, clock=world.clock, probe=world.probe)
    assert (result.ready, result.attempts, result.last_error) == (False, 1, "cancelled: another instance failed")
