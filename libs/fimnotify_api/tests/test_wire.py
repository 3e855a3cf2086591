"""Queue message format: round trips, batching, and clear errors for bad messages."""

from __future__ import annotations

import struct
from collections import deque

import pytest

from libs.fimnotify_api.config import SubjectConfig, WatchConfig
from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.masks import IN_CLOSE_WRITE, IN_CREATE, IN_ISDIR
from libs.fimnotify_api.wire import (
    DEFAULT_MESSAGE_SIZE,
    DroppedRecord,
    ErrorRecord,
    EventRecord,
    ExitReason,
    ExitRecord,
    OverflowRecord,
    Packer,
    ReadyRecord,
    Record,
    RecordTooLargeError,
    VersionError,
    WireError,
    decode,
    decode_message,
    encode_record,
    tags_for,
)

T = 1_700_000_000_123_456_789

ALL_KINDS: list[Record] = [
    EventRecord(T, IN_CREATE | IN_ISDIR, 3, b"/var/log/\xff\xfe-not-utf8", synthetic=True),
    EventRecord(T + 1, IN_CLOSE_WRITE, 0, b"/a"),
    OverflowRecord(T + 2),
    ErrorRecord(T + 3, "ENOSPC", 1, b"/data/deep", "fs.inotify.max_user_watches reached"),
    ErrorRecord(T + 4, "EMFILE", None, b"", "fs.inotify.max_user_instances reached"),
    DroppedRecord(T + 5, 12345),
    ReadyRecord(T + 6, watches=100_000, pending=2, rescan=True),
    ExitRecord(T + 7, ExitReason.TARGET_GONE, 3, "process 42 is gone: é"),
]


def test_round_trip_every_kind() -> None:
    messages = Packer().pack(ALL_KINDS)
    assert len(messages) == 1
    assert decode(messages[0]) == ALL_KINDS


def test_event_properties() -> None:
    record = ALL_KINDS[0]
    assert isinstance(record, EventRecord)
    assert record.is_dir
    assert record.names == (EventName.CREATE,)


def test_batches_respect_size_and_number_messages() -> None:
    events = [EventRecord(T, IN_CLOSE_WRITE, 0, b"/var/log/app-%06d.log" % i) for i in range(5000)]
    packer = Packer(DEFAULT_MESSAGE_SIZE)
    messages = packer.pack(events)
    assert all(len(m) <= DEFAULT_MESSAGE_SIZE for m in messages)
    assert len(messages) < 5000 // 100  # many records per message
    decoded = [decode_message(m) for m in messages]
    assert [m.seq for m in decoded] == list(range(len(messages)))
    assert [r for m in decoded for r in m.records] == events


def test_path_max_event_fits_default_message() -> None:
    record = EventRecord(T, IN_CREATE, 0, b"/" + b"x" * 4095)
    assert decode(Packer().pack([record])[0]) == [record]


def test_oversized_record_raises() -> None:
    packer = Packer()
    encoded = encode_record(EventRecord(T, IN_CREATE, 0, b"/" + b"x" * 9000))
    with pytest.raises(RecordTooLargeError):
        packer.check(encoded)
    with pytest.raises(RecordTooLargeError):
        packer.take(deque([encoded]))


def test_small_queue_message_size_is_refused() -> None:
    with pytest.raises(ValueError, match="msgsize_max"):
        Packer(1024)


def test_version_mismatch() -> None:
    message = bytearray(Packer().pack([OverflowRecord(T)])[0])
    message[2] = 99
    with pytest.raises(VersionError, match="version 99"):
        decode(bytes(message))


@pytest.mark.parametrize("cut", [1, 5, 10, 11, 20, 30])
def test_truncated_message(cut: int) -> None:
    message = Packer().pack([EventRecord(T, IN_CREATE, 0, b"/var/log/x")])[0]
    with pytest.raises(WireError):
        decode(message[:cut])


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"", "shorter than the header"),
        (b"XX" + bytes(8), "bad magic"),
        (struct.pack("<2sBBIH", b"FN", 1, 0, 0, 1) + b"\x63", "unknown record kind 99"),
        (struct.pack("<2sBBIH", b"FN", 1, 0, 0, 0) + b"junk", "trailing bytes"),
        (struct.pack("<2sBBIH", b"FN", 1, 0, 0, 2) + b"\x02" + bytes(8), "truncated"),
        (
            struct.pack("<2sBBIH", b"FN", 1, 0, 0, 1) + struct.pack("<BQBBH", 6, 0, 9, 0, 0),
            "unknown exit reason",
        ),
        (
            struct.pack("<2sBBIH", b"FN", 1, 0, 0, 1)
            + struct.pack("<BQBBH", 6, 0, 1, 0, 2)
            + b"\xff\xff",
            "not utf-8",
        ),
    ],
)
def test_garbage_is_a_clear_error(message: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode(message)


def test_tags_resolved_from_subject_index() -> None:
    config = WatchConfig(
        watch_id="w",
        pid=1,
        queue_name="/fimk8s.w",
        subjects=(
            SubjectConfig(paths=("/a",), events=(EventName.ALL,), tags={"team": "a"}),
            SubjectConfig(paths=("/b",), events=(EventName.ALL,), tags={"team": "b"}),
        ),
    )
    assert tags_for(config, EventRecord(T, IN_CREATE, 1, b"/b/x")) == {"team": "b"}
    assert tags_for(config, ErrorRecord(T, "ENOSPC", None, b"", "")) == {}
    with pytest.raises(WireError, match="out of range"):
        tags_for(config, EventRecord(T, IN_CREATE, 2, b"/c"))
