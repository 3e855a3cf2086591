"""Adapter: the POSIX message queue towards fimd, with bounded buffering.

The inotify reader must never stall on a full queue (the kernel's inotify queue would
overflow instead), so records wait in a bounded in-memory buffer; once it is full, new
event records are counted and dropped, and a DROPPED record with the count is queued as
soon as there is room again. Control records (overflow, error, ready, exit) are never
dropped.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import posix_ipc

from libs.fimnotify_api.wire import DroppedRecord, Packer, encode_record


class QueueError(Exception):
    """The message queue cannot be opened or used."""


def open_queue(name: str) -> Any:
    """Opens fimd's queue write-only, non-blocking (fimd created it, fimd unlinks it)."""
    try:
        queue = posix_ipc.MessageQueue(name, flags=0, read=False, write=True)
    except (posix_ipc.Error, OSError, ValueError) as exc:
        raise QueueError(f"cannot open message queue {name}: {exc}") from None
    queue.block = False  # O_NONBLOCK: a full queue raises BusyError instead of stalling
    return queue


class Sink:
    def __init__(self, queue: Any, limit: int) -> None:
        self.queue = queue
        self.packer = Packer(int(queue.max_message_size))
        self.limit = limit
        self.pending: deque[bytes] = deque()
        self.stalled: bytes | None = None
        self.dropped = 0
        self.dropped_total = 0

    @property
    def idle(self) -> bool:
        return self.stalled is None and not self.pending

    def put_events(self, records: list[bytes]) -> None:
        """Queues event records, dropping (counted) what exceeds the buffer."""
        if self.dropped and len(self.pending) < self.limit:
            self._report_drops()
        room = self.limit - len(self.pending)
        if room >= len(records):
            self.pending.extend(records)
            return
        if room > 0:
            self.pending.extend(records[:room])
        self.dropped += len(records) - max(room, 0)

    def put_control(self, record: bytes) -> None:
        if self.dropped:
            self._report_drops()
        self.packer.check(record)
        self.pending.append(record)

    def _report_drops(self) -> None:
        self.pending.append(encode_record(DroppedRecord(time.time_ns(), self.dropped)))
        self.dropped_total += self.dropped
        self.dropped = 0

    def flush(self) -> bool:
        """Sends as much as the queue takes now; True when everything went out."""
        while True:
            if self.stalled is None:
                if not self.pending and self.dropped:
                    self._report_drops()
                if not self.pending:
                    return True
                self.stalled = self.packer.take(self.pending)
            try:
                self.queue.send(self.stalled)
            except posix_ipc.BusyError:
                return False
            self.stalled = None

    def drain(self, deadline: float) -> bool:
        """Flushes until done or the monotonic deadline passes (used at exit)."""
        while not self.flush():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        self.queue.close()
