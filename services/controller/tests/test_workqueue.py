"""Work queue semantics: dedup, no concurrent processing of a key, backoff, shutdown."""

from __future__ import annotations

import threading

import pytest

from services.controller.workqueue import ShutDown, WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_duplicates_before_processing_collapse() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a"):
        queue.add(key)
    assert len(queue) == 2
    assert [queue.get(), queue.get()] == ["a", "b"]


def test_key_added_while_processing_is_requeued_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert queue.get() == "a"
    queue.add("a")
    assert len(queue) == 0  # not handed to a second worker while "a" is processed
    queue.done("a")
    assert queue.get() == "a"


def test_retry_backs_off_exponentially_per_key_until_forget() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(base_delay=1.0, max_delay=5.0, clock=clock)
    assert [queue.retry("a") for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert queue.retry("b") == 1.0
    queue.forget("a")
    assert queue.retry("a") == 1.0


def test_delayed_key_appears_when_due() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 10)
    queue.add("b")
    assert queue.get() == "b"
    clock.now += 10
    assert queue.get() == "a"


def test_blocked_get_wakes_for_add_and_for_shutdown() -> None:
    queue: WorkQueue[str] = WorkQueue()
    got: list[str] = []
    worker = threading.Thread(target=lambda: got.append(queue.get()))
    worker.start()
    queue.add("x")
    worker.join(5)
    assert got == ["x"]
    queue.shut_down()
    with pytest.raises(ShutDown):
        queue.get()


def test_delayed_adds_of_one_key_keep_one_entry_at_the_earliest_time() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    for delay in (30, 10, 20, 10, 50):
        queue.add_after("a", delay)
    assert len(queue) == 1  # one delayed entry, however many requeues
    clock.now += 9.9
    queue.add("b")
    assert queue.get() == "b"  # "a" is not due yet
    clock.now += 0.1
    assert queue.get() == "a"  # due at the earliest time asked for
    queue.done("a")
    clock.now += 100
    queue.add("c")
    assert queue.get() == "c"  # the later times left no second "a" behind
    assert len(queue) == 0


def test_a_delayed_key_ready_meanwhile_is_handed_out_once() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 5)
    queue.add("a")
    assert queue.get() == "a"
    queue.done("a")
    clock.now += 5
    assert queue.get() == "a"  # the delayed add still comes (a requeue asked for later)
    queue.done("a")
    assert len(queue) == 0
