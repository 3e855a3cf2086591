"""The elector's timing, with a scripted API server and clock: request timeouts, the renew
deadline from the last success, and the fence."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from services.controller.kube import ApiError, JsonObject, Kube
from services.controller.leader import LeaderElector, LeaseConfig, Unfenced

CONFIG = LeaseConfig(namespace="ns", name="lease", identity="me")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LeaseServer(Kube):
    """One Lease in memory; `failing` makes every request fail; each call advances the clock
    by `latency` and records its timeout."""

    def __init__(self, clock: Clock, latency: float = 0.0) -> None:
        super().__init__(None)
        self.clock = clock
        self.latency = latency
        self.lease: JsonObject | None = None
        self.failing: Exception | None = None
        self.timeouts: list[float] = []

    def request(self, method: str, path: str, **kwargs: Any) -> JsonObject:
        self.timeouts.append(kwargs["timeout"])
        self.clock.now += self.latency
        if self.failing is not None:
            raise self.failing
        if method == "GET":
            if self.lease is None:
                raise ApiError(404, "not found")
            return dict(self.lease)
        self.lease = dict(kwargs["body"])
        return self.lease


def test_every_lease_request_times_out_well_within_the_renew_deadline() -> None:
    clock = Clock()
    server = LeaseServer(clock)
    elector = LeaderElector(server, CONFIG, clock)
    assert elector.try_acquire_or_renew()  # GET (none) + POST
    assert elector.try_acquire_or_renew()  # GET + PUT
    assert server.timeouts == [2.0] * 4  # a third of the 6 s deadline each


def test_the_fence_is_measured_from_when_the_last_successful_renewal_was_sent() -> None:
    clock = Clock()
    server = LeaseServer(clock, latency=0.5)
    elector = LeaderElector(server, CONFIG, clock)
    assert not elector.held_for(0)  # not leading yet
    sent = clock.now
    assert elector._attempt()
    # Another replica may take over 8 s (lease) after it saw the write, sent at `sent`.
    clock.now = sent + 8 - 5 - 0.01
    assert elector.held_for(5)  # a 5 s action still ends before then
    clock.now = sent + 8 - 5
    assert not elector.held_for(5)
    assert elector.held_for(2)
    # Failed renewals do not move it.
    server.failing = ApiError(0, "timed out")
    assert not elector._attempt()  # took 0.5 s: 4.5 s of lease left, as before it
    assert elector.held_for(4.49)
    assert not elector.held_for(4.5)


@pytest.mark.parametrize(
    "failure", [ApiError(0, "timed out"), ValueError("garbled")], ids=["api", "unexpected"]
)
def test_hold_gives_up_at_the_renew_deadline_after_the_last_success(failure: Exception) -> None:
    clock = Clock()
    server = LeaseServer(clock)
    elector = LeaderElector(server, CONFIG, clock)
    assert elector._attempt()
    server.failing = failure
    stop = threading.Event()
    waits: list[float] = []

    def tick(timeout: float | None = None) -> bool:
        waits.append(clock.now)
        clock.now += 1.5  # one retry period passes
        return False

    stop.wait = tick  # type: ignore[method-assign]
    assert elector.hold(stop) is True  # lost
    # Attempts at +1.5, +3, +4.5, +6 failed; the one at +7.5 is past the 6 s deadline.
    assert clock.now - 1000.0 == pytest.approx(7.5)
    assert not elector.held_for(0)  # and the fence is shut


def test_a_stopped_holder_is_not_lost_and_release_shuts_the_fence() -> None:
    clock = Clock()
    server = LeaseServer(clock)
    elector = LeaderElector(server, CONFIG, clock)
    assert elector._attempt()
    stop = threading.Event()
    stop.set()
    assert elector.hold(stop) is False
    assert elector.held_for(1)
    elector.release()
    assert not elector.held_for(0)
    assert server.lease is not None
    assert server.lease["spec"]["holderIdentity"] == ""


def test_without_election_everything_may_go_ahead() -> None:
    assert Unfenced().held_for(3600)
