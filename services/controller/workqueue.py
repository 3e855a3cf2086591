"""A deduplicating work queue with per-item rate-limited retries (client-go's semantics).

- A key added many times before a worker takes it is processed once (dedup), so a burst of
  events costs one sync.
- A key is never handed to two workers at once; added while being processed, it is queued
  again when the worker calls `done`, so no change is lost.
- `retry` re-adds a failed key after an exponential per-key backoff; `forget` resets it.
- `add_after` keeps one delayed entry per key, at the earliest time asked for (client-go's
  delaying queue), so many requeues of one key cost one entry.
- The queue holds at most one ready and one delayed entry per distinct key: its size is
  bounded by the number of nodes and FimWatchers, however many events arrive.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from libs import backoff

K = TypeVar("K", bound=Hashable)


class ShutDown(Exception):  # noqa: N818 - it is a signal, not an error
    """The queue was shut down; workers stop."""


class WorkQueue(Generic[K]):
    """Keys to sync; thread-safe."""

    def __init__(
        self,
        *,
        base_delay: float = 0.05,
        max_delay: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        #: (due, sequence, key): a heap; an entry whose due differs from `_due[key]` is stale.
        self._waiting: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}
        self._sequence = 0
        self._failures: dict[K, int] = {}
        self._shut_down = False

    def add(self, key: K) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: K) -> None:
        if self._shut_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        """Adds `key` once `delay` seconds have passed."""
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shut_down:
                return
            due = self._clock() + delay
            if key in self._due and self._due[key] <= due:
                return  # already due earlier: keep the earliest
            self._due[key] = due
            self._sequence += 1
            heapq.heappush(self._waiting, (due, self._sequence, key))
            self._cond.notify()

    def retry(self, key: K) -> float:
        """Re-adds `key` after its next backoff delay; returns that delay."""
        with self._cond:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = backoff.delay(failures, base=self._base_delay, cap=self._max_delay)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """Resets `key`'s backoff after a successful sync."""
        with self._cond:
            self._failures.pop(key, None)

    def _promote_due_locked(self) -> float | None:
        """Moves due delayed keys into the queue; returns seconds until the next one."""
        now = self._clock()
        while self._waiting and (self._waiting[0][0] <= now or self._stale_head_locked()):
            due, _, key = heapq.heappop(self._waiting)
            if self._due.get(key) == due:
                del self._due[key]
                self._add_locked(key)
        return self._waiting[0][0] - now if self._waiting else None

    def _stale_head_locked(self) -> bool:
        due, _, key = self._waiting[0]
        return self._due.get(key) != due

    def get(self) -> K:
        """Blocks for the next key; the caller must call `done(key)` afterwards."""
        with self._cond:
            while True:
                if self._shut_down:
                    raise ShutDown
                wait = self._promote_due_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                self._cond.wait(wait)

    def done(self, key: K) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def __len__(self) -> int:
        """Keys ready or waiting for a retry (the queue-depth metric)."""
        with self._cond:
            return len(self._queue) + len(self._due)

    def shut_down(self) -> None:
        with self._cond:
            self._shut_down = True
            self._cond.notify_all()
