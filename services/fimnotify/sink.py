"""Adapter: the engine's POSIX message queue towards fimd, buffered in bytes, fair per watch.

The inotify reader must never stall on a full queue (the kernel's inotify queue would
overflow instead, costing every watch of the engine), so records wait in a buffer of at most
`limit` bytes. Beyond it, event records are dropped and counted per watch, and a DROPPED
record with the watch's count follows as soon as there is room again. Control records
(READY, GONE, OVERFLOW, EXIT) are never dropped; ERROR records have their own bound
(`CONTROL_LIMIT` bytes queued since the buffer was last empty: walks a container can shape
produce them) and beyond it are counted with the watch's dropped records.

Fairness: each watch has its own queue (its events and control records, in order), and a
message is filled round-robin, at most `QUANTUM` records of one watch per turn, after the
engine's own records (OVERFLOW, engine errors). So a watch whose container writes 50,000
events/s never makes the records of a quiet watch of the same engine wait behind its
backlog: they leave in the next message. EXIT is sent after everything else.
"""

from __future__ import annotations

import struct
import sys
import time
from collections import deque
from typing import Any

import posix_ipc

from libs.fimnotify_api.wire import ENGINE, HEADER_SIZE, DroppedRecord, Kind, Packer, encode_record

#: Bytes of ERROR records buffered at most (READY, GONE, EXIT, OVERFLOW are not bounded
#: here: there are a few per watch, and watches are bounded by fimd).
CONTROL_LIMIT = 1 << 20


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


#: Records of one watch per round-robin turn when a message is filled.
QUANTUM = 32
_WATCH = struct.Struct("<I")
#: Where the watch number sits in an encoded record, by kind (EVENT: B B Q I(mask) I(watch);
#: the others: B Q I(watch)); OVERFLOW and EXIT have none.
_WATCH_OFFSET: dict[int, int] = {
    Kind.EVENT: 14,
    Kind.ERROR: 9,
    Kind.DROPPED: 9,
    Kind.READY: 9,
    Kind.GONE: 9,
}


class Sink:
    def __init__(self, queue: Any, limit: int) -> None:
        self.queue = queue
        try:
            self.packer = Packer(int(queue.max_message_size))
        except ValueError as exc:  # messages too small for a PATH_MAX event: unusable
            raise QueueError(str(exc)) from None
        self.limit = limit
        #: watch -> its records in order; `ring` holds the watches with records, in turn
        self.queues: dict[int, deque[bytes]] = {}
        self.ring: deque[int] = deque()
        self.engine: deque[bytes] = deque()  # OVERFLOW, engine-wide errors: first
        self.final: bytes | None = None  # EXIT: last
        self.pending_bytes = 0
        self.error_bytes = 0
        self.stalled: bytes | None = None
        #: watch -> records dropped and not yet reported
        self.dropped: dict[int, int] = {}
        self.dropped_total = 0

    @property
    def pending(self) -> list[bytes]:
        """Every buffered record (for tests and diagnostics)."""
        out = list(self.engine)
        for records in self.queues.values():
            out += records
        return out + ([self.final] if self.final is not None else [])

    @property
    def idle(self) -> bool:
        return self.stalled is None and not self.pending_bytes and self.final is None

    def _queue(self, watch: int, record: bytes) -> None:
        records = self.queues.get(watch)
        if records is None:
            records = self.queues[watch] = deque()
            self.ring.append(watch)
        records.append(record)
        self.pending_bytes += len(record)

    def put_events(self, records: list[bytes]) -> None:
        """Queues encoded EVENT records, dropping (counted per watch) what exceeds the limit."""
        if self.dropped and self.pending_bytes < self.limit // 2:
            self._report_drops()
        for record in records:
            watch = _WATCH.unpack_from(record, 14)[0]
            if self.pending_bytes + len(record) <= self.limit:
                self._queue(watch, record)
            else:
                self._drop(watch)

    def put_control(self, record: bytes) -> None:
        """Queues a control record; ERROR records beyond CONTROL_LIMIT are counted instead."""
        self.packer.check(record)
        kind = record[0]
        offset = _WATCH_OFFSET.get(kind)
        watch = None if offset is None else _WATCH.unpack_from(record, offset)[0]
        if kind == Kind.ERROR:
            if self.error_bytes + len(record) > CONTROL_LIMIT:
                assert watch is not None
                self._drop(watch)
                return
            self.error_bytes += len(record)
        if self.dropped:
            self._report_drops()
        if kind == Kind.EXIT:
            self.final = record
        elif watch is None or watch == ENGINE:
            self.engine.append(record)
            self.pending_bytes += len(record)
        else:
            self._queue(watch, record)

    def _drop(self, watch: int) -> None:
        self.dropped[watch] = self.dropped.get(watch, 0) + 1

    def _report_drops(self) -> None:
        now = time.time_ns()
        for watch, count in self.dropped.items():
            self._queue(watch, encode_record(DroppedRecord(now, watch, count)))
            self.dropped_total += count
        self.dropped = {}

    def _take(self) -> bytes:
        """One message: engine records first, then the watches' records round-robin."""
        budget = self.packer.max_size - HEADER_SIZE
        parts: list[bytes] = []
        while self.engine and len(self.engine[0]) <= budget:
            budget -= len(self.engine[0])
            parts.append(self.engine.popleft())
        ring, queues = self.ring, self.queues
        full = False
        while ring and not full:
            watch = ring[0]
            records = queues[watch]
            for _ in range(QUANTUM):
                if not records:
                    break
                if len(records[0]) > budget:
                    full = True
                    break
                budget -= len(records[0])
                parts.append(records.popleft())
            ring.rotate(-1)
            if not records:
                del queues[watch]
                ring.remove(watch)
        self.pending_bytes -= sum(map(len, parts))
        if not parts and self.final is not None and not self.pending_bytes:
            parts.append(self.final)  # never counted in pending_bytes
            self.final = None
        return self.packer.message(parts)

    def flush(self) -> bool:
        """Sends as much as the queue takes now; True when everything went out."""
        while True:
            if self.stalled is None:
                if not self.pending_bytes and self.dropped:
                    self._report_drops()
                if not self.pending_bytes and self.final is None:
                    self.error_bytes = 0
                    return True
                self.stalled = self._take()
                if len(self.stalled) == HEADER_SIZE:  # nothing fits: a counting bug, not a loop
                    self.stalled, self.pending_bytes = None, 0
                    print("fimnotify: sink accounting reset", file=sys.stderr, flush=True)
                    return True
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
