"""Adapter: the engine's POSIX message queue towards fimd, with buffering bounded in bytes.

The inotify reader must never stall on a full queue (the kernel's inotify queue would
overflow instead, costing every watch of the engine), so records wait in a buffer of at most
`limit` bytes. Beyond it, event records are dropped and counted per watch, and a DROPPED
record with each watch's count is queued as soon as there is room again. Control records
(READY, GONE, OVERFLOW, EXIT) are never dropped; ERROR records have their own bound
(`CONTROL_LIMIT` bytes queued since the buffer was last empty: walks a container can shape
produce them) and beyond it are counted with the watch's dropped records.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from typing import Any

import posix_ipc

from libs.fimnotify_api.wire import HEADER_SIZE, DroppedRecord, Kind, Packer, encode_record

#: Bytes of ERROR records buffered at most (READY, GONE, EXIT, OVERFLOW are not bounded
#: here: there are a few per watch, and watches are bounded by fimd).
CONTROL_LIMIT = 1 << 20
#: Where the watch number sits in an encoded EVENT or ERROR record (after kind, flags/none,
#: time): EVENT = B B Q I(mask) I(watch); ERROR = B Q I(watch).
_EVENT_WATCH = struct.Struct("<I")
_EVENT_WATCH_OFFSET = 14
_ERROR_WATCH_OFFSET = 9


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
        try:
            self.packer = Packer(int(queue.max_message_size))
        except ValueError as exc:  # messages too small for a PATH_MAX event: unusable
            raise QueueError(str(exc)) from None
        self.limit = limit
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.error_bytes = 0
        self.stalled: bytes | None = None
        #: watch -> records dropped and not yet reported
        self.dropped: dict[int, int] = {}
        self.dropped_total = 0

    @property
    def idle(self) -> bool:
        return self.stalled is None and not self.pending

    def put_events(self, records: list[bytes]) -> None:
        """Queues encoded EVENT records, dropping (counted per watch) what exceeds the limit."""
        if self.dropped and self.pending_bytes < self.limit // 2:
            self._report_drops()
        size = sum(map(len, records))
        if self.pending_bytes + size <= self.limit:
            self.pending.extend(records)
            self.pending_bytes += size
            return
        for record in records:
            if self.pending_bytes + len(record) <= self.limit:
                self.pending.append(record)
                self.pending_bytes += len(record)
            else:
                self._drop(_EVENT_WATCH.unpack_from(record, _EVENT_WATCH_OFFSET)[0])

    def put_control(self, record: bytes) -> None:
        """Queues a control record; ERROR records beyond CONTROL_LIMIT are counted instead."""
        if record[0] == Kind.ERROR:
            if self.error_bytes + len(record) > CONTROL_LIMIT:
                self._drop(_EVENT_WATCH.unpack_from(record, _ERROR_WATCH_OFFSET)[0])
                return
            self.error_bytes += len(record)
        if self.dropped:
            self._report_drops()
        self._append(record)

    def _append(self, record: bytes) -> None:
        self.packer.check(record)
        self.pending.append(record)
        self.pending_bytes += len(record)

    def _drop(self, watch: int) -> None:
        self.dropped[watch] = self.dropped.get(watch, 0) + 1

    def _report_drops(self) -> None:
        now = time.time_ns()
        for watch, count in self.dropped.items():
            self._append(encode_record(DroppedRecord(now, watch, count)))
            self.dropped_total += count
        self.dropped = {}

    def flush(self) -> bool:
        """Sends as much as the queue takes now; True when everything went out."""
        while True:
            if self.stalled is None:
                if not self.pending and self.dropped:
                    self._report_drops()
                if not self.pending:
                    self.pending_bytes = self.error_bytes = 0
                    return True
                self.stalled = self.packer.take(self.pending)
                # pending_bytes counts records only: the message header is not in it.
                self.pending_bytes -= len(self.stalled) - HEADER_SIZE
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
