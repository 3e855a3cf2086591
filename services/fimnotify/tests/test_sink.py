"""The engine's sink against a fake queue: byte bound, per-watch drop counts, nothing lost."""

from __future__ import annotations

import collections
import time

import posix_ipc
import pytest

from libs.fimnotify_api.masks import IN_CREATE
from libs.fimnotify_api.wire import (
    DroppedRecord,
    ErrorRecord,
    EventRecord,
    ExitReason,
    ExitRecord,
    GoneReason,
    GoneRecord,
    ReadyRecord,
    Record,
    decode_message,
    encode_event,
    encode_record,
)
from services.fimnotify.sink import CONTROL_LIMIT, QueueError, Sink


class FakeQueue:
    """Takes `room` messages, then is full (BusyError) until the test makes room."""

    def __init__(self, max_message_size: int = 8192, room: int = 10**9) -> None:
        self.max_message_size = max_message_size
        self.room = room
        self.sent: list[bytes] = []

    def send(self, message: bytes) -> None:
        if self.room <= 0:
            raise posix_ipc.BusyError("full")
        assert len(message) <= self.max_message_size
        self.room -= 1
        self.sent.append(message)

    def records(self) -> list[Record]:
        return [r for m in self.sent for r in decode_message(m).records]

    def close(self) -> None:
        pass


def event(watch: int, i: int) -> bytes:
    return encode_event(i, IN_CREATE, watch, 0, b"/data/f%06d" % i)


def buffered(sink: Sink) -> int:
    return sum(map(len, sink.pending))


def test_pending_bytes_counts_records_exactly_while_messages_go_out() -> None:
    queue = FakeQueue(room=0)
    sink = Sink(queue, 1 << 20)
    sink.put_events([event(1, i) for i in range(20_000)])  # ~ 580 KiB, ~75 messages
    assert sink.pending_bytes == buffered(sink)
    while not sink.idle:
        queue.room = 1
        sink.flush()
        assert sink.pending_bytes == buffered(sink)  # the message header is not a record
    assert len(queue.records()) == 20_000


def test_a_queue_that_never_catches_up_keeps_the_buffer_within_its_limit() -> None:
    """fimd reads a little less than arrives: the buffer stays full for a long time (it
    never empties, so nothing resets the count) and must still respect its byte bound."""
    limit = 65536
    queue = FakeQueue(room=0)
    sink = Sink(queue, limit)
    total = 0
    for step in range(300):
        batch = [event(1, total + i) for i in range(300)]
        total += len(batch)
        sink.put_events(batch)
        assert buffered(sink) <= limit, step
        queue.room = 1
        sink.flush()
    queue.room = 10**9
    assert sink.flush()
    seen = sum(isinstance(r, EventRecord) for r in queue.records())
    dropped = sum(r.count for r in queue.records() if isinstance(r, DroppedRecord))
    assert seen + dropped == total


def test_drops_are_counted_per_watch_and_reported_exactly() -> None:
    queue = FakeQueue(room=0)
    sink = Sink(queue, 65536)
    sent = collections.Counter[int]()
    for i in range(12_000):
        watch = 1 + i % 3
        sink.put_events([event(watch, i)])
        sent[watch] += 1
    assert set(sink.dropped) == {1, 2, 3}
    queue.room = 10**9
    assert sink.flush()
    records = queue.records()
    seen = collections.Counter(r.watch for r in records if isinstance(r, EventRecord))
    dropped = collections.Counter[int]()
    for r in records:
        if isinstance(r, DroppedRecord):
            dropped[r.watch] += r.count
    assert seen + dropped == sent
    assert sink.dropped == {}
    assert sink.dropped_total == sum(dropped.values())


def test_control_records_are_never_dropped() -> None:
    queue = FakeQueue(room=0)
    sink = Sink(queue, 65536)
    sink.put_events([event(1, i) for i in range(5000)])  # full: events are being dropped
    controls: list[Record] = [
        ReadyRecord(1, 1, 3, 0),
        GoneRecord(2, 2, GoneReason.REMOVED, "removed"),
        ReadyRecord(3, 3, 1, 0, 0, True),
    ]
    for record in controls:
        sink.put_control(encode_record(record))
    queue.room = 10**9
    assert sink.flush()
    records = queue.records()
    kept = [r for r in records if isinstance(r, ReadyRecord | GoneRecord)]
    assert sorted(kept, key=lambda r: r.time_ns) == controls
    # Within the watch, the DROPPED record precedes the control record queued after the drops.
    own = [r for r in records if getattr(r, "watch", None) == 1]
    first_drop = next(i for i, r in enumerate(own) if isinstance(r, DroppedRecord))
    assert first_drop < own.index(controls[0])


def test_error_records_beyond_their_bound_are_counted_as_drops_of_their_watch() -> None:
    queue = FakeQueue(room=0)
    sink = Sink(queue, 65536)
    error = encode_record(ErrorRecord(1, 7, "ENAMETOOLONG", 0, b"/" + b"x" * 2000, "m" * 600))
    count = CONTROL_LIMIT // len(error) + 50
    for _ in range(count):
        sink.put_control(error)
    assert sink.dropped == {7: count - CONTROL_LIMIT // len(error)}
    queue.room = 10**9
    assert sink.flush()
    records = queue.records()
    errors = sum(isinstance(r, ErrorRecord) for r in records)
    drops = sum(r.count for r in records if isinstance(r, DroppedRecord) and r.watch == 7)
    assert errors + drops == count


def test_messages_are_numbered_without_gaps() -> None:
    queue = FakeQueue(room=3)
    sink = Sink(queue, 1 << 20)
    sink.put_events([event(1, i) for i in range(3000)])
    assert not sink.flush()
    queue.room = 10**9
    assert sink.flush()
    assert [decode_message(m).seq for m in queue.sent] == list(range(len(queue.sent)))


def test_drain_gives_up_at_its_deadline() -> None:
    queue = FakeQueue(room=0)
    sink = Sink(queue, 65536)
    sink.put_control(encode_record(ReadyRecord(1, 1, 1, 0)))
    start = time.monotonic()
    assert not sink.drain(start + 0.05)
    assert time.monotonic() - start < 1.0


def test_a_queue_with_too_small_messages_is_a_queue_error() -> None:
    with pytest.raises(QueueError, match="msgsize_max"):
        Sink(FakeQueue(max_message_size=1024), 65536)


def test_a_quiet_watch_never_waits_behind_a_noisy_backlog() -> None:
    """Messages are filled round-robin per watch: the quiet watch's record leaves in the
    first message although 5,000 records of the noisy watch were queued before it."""
    queue = FakeQueue(room=0)
    sink = Sink(queue, 1 << 20)
    sink.put_events([event(1, i) for i in range(5000)])
    sink.put_events([event(2, 0)])
    queue.room = 1
    sink.flush()
    first = queue.records()
    assert [r.watch for r in first if isinstance(r, EventRecord)].count(2) == 1
    queue.room = 10**9
    assert sink.flush()
    events = [r for r in queue.records() if isinstance(r, EventRecord)]
    noisy = [r.path for r in events if r.watch == 1]
    assert len(noisy) == 5000
    assert noisy == sorted(noisy)  # in order within the watch


def test_exit_is_sent_after_everything_else() -> None:
    queue = FakeQueue(room=10**9)
    sink = Sink(queue, 1 << 20)
    sink.put_events([event(1, i) for i in range(3000)])
    sink.put_control(encode_record(ExitRecord(9, ExitReason.STOPPED, 0, "bye")))
    sink.put_events([event(2, 0)])
    assert sink.flush()
    records = queue.records()
    assert isinstance(records[-1], ExitRecord)
    assert sum(isinstance(r, EventRecord) for r in records) == 3001
