"""Queue wire v2: round trips, batching, bounded ERROR records, clear errors for bad messages."""

from __future__ import annotations

import struct
from collections import deque

import pytest

from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.masks import IN_CLOSE_WRITE, IN_CREATE, IN_ISDIR
from libs.fimnotify_api.wire import (
    DEFAULT_MESSAGE_SIZE,
    ENGINE,
    HEADER_SIZE,
    MAX_ERROR_MESSAGE,
    MAX_ERROR_PATH,
    MAX_EVENT_PATH,
    MIN_MESSAGE_SIZE,
    NO_SUBJECT,
    VERSION,
    DroppedRecord,
    ErrorRecord,
    EventRecord,
    ExitReason,
    ExitRecord,
    ExitStatus,
    GoneReason,
    GoneRecord,
    Kind,
    OverflowRecord,
    Packer,
    ReadyRecord,
    Record,
    RecordTooLargeError,
    VersionError,
    WireError,
    cut_text,
    decode,
    decode_message,
    encode_event,
    encode_record,
)

T = 1_700_000_000_123_456_789
U32 = 0xFFFFFFFF
U64 = 2**64 - 1

# Every record kind, with fields at their extremes. An ERROR decodes with path_size set to
# the length the encoder saw (`path_size` 0 means "same as path"), so these spell it out.
ALL_KINDS: list[Record] = [
    EventRecord(T, IN_CREATE | IN_ISDIR, 7, 3, b"/var/log/\xff\xfe-not-utf8", synthetic=True),
    EventRecord(T + 1, IN_CLOSE_WRITE, 0, 0, b"/a"),
    EventRecord(U64, U32, ENGINE - 1, 0xFFFE, b""),
    OverflowRecord(T + 2),
    ErrorRecord(T + 3, 5, "ENOSPC", 1, b"/data/deep", "max_user_watches reached", 10),
    ErrorRecord(T + 4, ENGINE, "EMFILE", None, b"", "max_user_instances reached: é"),
    ErrorRecord(T + 5, 9, "EDIRCAP", 0, b"/x" * 512, "cap", 1024),
    DroppedRecord(T + 6, 12, 12345),
    DroppedRecord(T + 7, ENGINE - 1, U64),
    ReadyRecord(T + 8, 3, watches=100_000, pending=2, limited=7, rescan=True),
    ReadyRecord(T + 9, 0, watches=0, pending=0),
    GoneRecord(T + 10, 4, GoneReason.REMOVED, "removed"),
    GoneRecord(T + 11, 5, GoneReason.TARGET_GONE, "process 42 is gone: ü"),
    GoneRecord(T + 12, 6, GoneReason.FAILED),
    ExitRecord(T + 13, ExitReason.STOPPED, ExitStatus.OK, "control channel closed"),
    ExitRecord(T + 14, ExitReason.FATAL, ExitStatus.FATAL, "RuntimeError('boom')"),
]


def test_round_trip_every_kind() -> None:
    assert {type(r) for r in ALL_KINDS} == {
        EventRecord,
        OverflowRecord,
        ErrorRecord,
        DroppedRecord,
        ReadyRecord,
        GoneRecord,
        ExitRecord,
    }
    assert len({Kind(encode_record(r)[0]) for r in ALL_KINDS}) == len(Kind)
    messages = Packer().pack(ALL_KINDS)
    assert len(messages) == 1
    decoded = decode_message(messages[0])
    assert (decoded.version, decoded.seq) == (VERSION, 0)
    assert decoded.records == ALL_KINDS


@pytest.mark.parametrize("record", ALL_KINDS, ids=lambda r: type(r).__name__)
def test_round_trip_each_kind_alone(record: Record) -> None:
    assert decode(Packer().pack([record])[0]) == [record]


def test_every_record_carries_its_watch() -> None:
    for record in ALL_KINDS:
        (back,) = decode(Packer().pack([record])[0])
        if isinstance(record, (OverflowRecord, ExitRecord)):
            assert not hasattr(back, "watch")  # about the engine as a whole
        else:
            assert back.watch == record.watch  # type: ignore[union-attr]


def test_hot_path_encoder_matches_the_record_encoder() -> None:
    record = EventRecord(T, IN_CREATE, 42, 2, b"/p", synthetic=True)
    assert encode_event(T, IN_CREATE, 42, 2, b"/p", True) == encode_record(record)


def test_event_properties() -> None:
    record = ALL_KINDS[0]
    assert isinstance(record, EventRecord)
    assert record.is_dir
    assert record.names == (EventName.CREATE,)


def test_error_subject_none_is_no_subject_on_the_wire() -> None:
    raw = encode_record(ErrorRecord(T, 1, "EIO", None, b"", ""))
    assert struct.unpack_from("<H", raw, 13)[0] == NO_SUBJECT
    (back,) = decode(Packer().pack([ErrorRecord(T, 1, "EIO", None, b"", "")])[0])
    assert isinstance(back, ErrorRecord)
    assert back.subject is None


# --- ERROR records are bounded ---------------------------------------------------------


def _error_back(record: ErrorRecord) -> ErrorRecord:
    (back,) = decode(Packer().pack([record])[0])
    assert isinstance(back, ErrorRecord)
    return back


def test_error_path_is_cut_with_its_original_size() -> None:
    path = b"/" + b"\xff" * 5000
    back = _error_back(ErrorRecord(T, 3, "ENAMETOOLONG", 0, path, "too long", len(path)))
    assert back.path == path[:MAX_ERROR_PATH]
    assert back.path_size == len(path)
    assert back.truncated


def test_error_path_size_defaults_to_the_path_length() -> None:
    path = b"/d" * 600
    back = _error_back(ErrorRecord(T, 3, "EIO", 0, path, "x"))  # path_size 0: not given
    assert (back.path, back.path_size) == (path[:MAX_ERROR_PATH], len(path))
    short = _error_back(ErrorRecord(T, 3, "EIO", 0, b"/d", "x"))
    assert (short.path_size, short.truncated) == (2, False)


def test_error_path_size_is_capped_at_u16() -> None:
    path = b"/" + b"a" * 70_000
    back = _error_back(ErrorRecord(T, 3, "EIO", 0, path, "x", len(path)))
    assert back.path_size == 0xFFFF
    assert len(back.path) == MAX_ERROR_PATH


@pytest.mark.parametrize("prefix", ["", "a", "ab", "abc"])
def test_error_message_is_cut_on_a_utf8_boundary(prefix: str) -> None:
    text = prefix + "€" * 400  # 3 bytes each: every cut position is tried by the prefixes
    back = _error_back(ErrorRecord(T, 3, "EIO", 0, b"/p", text, 2))
    raw = back.message.encode()
    assert MAX_ERROR_MESSAGE - 2 <= len(raw) <= MAX_ERROR_MESSAGE
    assert text.startswith(back.message)


def test_error_message_with_lone_surrogates_still_encodes() -> None:
    back = _error_back(ErrorRecord(T, 3, "EIO", 0, b"/p", "bad \udcff name", 2))
    assert back.message == "bad \\udcff name"


def test_the_largest_error_fits_one_minimal_message() -> None:
    record = ErrorRecord(T, 3, "E" * 40, 0, b"/" * 70_000, "€" * 10_000, 70_000)
    encoded = encode_record(record)
    assert HEADER_SIZE + len(encoded) <= MIN_MESSAGE_SIZE
    back = decode(Packer(MIN_MESSAGE_SIZE).pack([record])[0])[0]
    assert isinstance(back, ErrorRecord)
    assert back.code == "E" * 32


@pytest.mark.parametrize(
    "record",
    [
        GoneRecord(T, 1, GoneReason.FAILED, "x" * 5000),
        ExitRecord(T, ExitReason.FATAL, 1, "€" * 5000),
    ],
    ids=["gone", "exit"],
)
def test_gone_and_exit_messages_are_bounded(record: GoneRecord | ExitRecord) -> None:
    (back,) = decode(Packer().pack([record])[0])
    assert isinstance(back, type(record))
    assert len(back.message.encode()) <= MAX_ERROR_MESSAGE
    assert record.message.startswith(back.message)


def test_cut_text() -> None:
    assert cut_text("abc", 10) == b"abc"
    assert cut_text("aé", 2) == b"a"
    assert cut_text("aé", 3) == "aé".encode()
    assert cut_text("", 0) == b""


# --- messages ---------------------------------------------------------------------------


def test_batches_respect_size_and_number_messages() -> None:
    events = [
        EventRecord(T, IN_CLOSE_WRITE, i % 3, 0, b"/var/log/app-%06d.log" % i) for i in range(5000)
    ]
    packer = Packer(DEFAULT_MESSAGE_SIZE)
    messages = packer.pack(events)
    assert all(len(m) <= DEFAULT_MESSAGE_SIZE for m in messages)
    assert len(messages) < 5000 // 100  # many records per message
    decoded = [decode_message(m) for m in messages]
    assert [m.seq for m in decoded] == list(range(len(messages)))
    assert [r for m in decoded for r in m.records] == events


def test_seq_wraps_at_u32() -> None:
    packer = Packer()
    packer.seq = U32
    first, second = packer.pack([OverflowRecord(T)]), packer.pack([OverflowRecord(T)])
    assert [decode_message(m).seq for m in first + second] == [U32, 0]


def test_path_max_event_fits_default_message() -> None:
    record = EventRecord(T, IN_CREATE, 1, 0, b"/" + b"x" * (MAX_EVENT_PATH - 1))
    assert decode(Packer().pack([record])[0]) == [record]
    assert decode(Packer(MIN_MESSAGE_SIZE).pack([record])[0]) == [record]


def test_oversized_record_raises() -> None:
    packer = Packer()
    encoded = encode_record(EventRecord(T, IN_CREATE, 0, 0, b"/" + b"x" * 9000))
    with pytest.raises(RecordTooLargeError):
        packer.check(encoded)
    with pytest.raises(RecordTooLargeError):
        packer.take(deque([encoded]))


def test_take_leaves_what_does_not_fit() -> None:
    small = encode_record(EventRecord(T, IN_CREATE, 0, 0, b"/a"))
    big = encode_record(EventRecord(T, IN_CREATE, 0, 0, b"/" + b"x" * 4095))
    pending = deque([small, big, big, small])
    first = Packer().take(pending)
    assert len(decode(first)) == 2
    assert list(pending) == [big, small]


def test_small_queue_message_size_is_refused() -> None:
    with pytest.raises(ValueError, match="msgsize_max"):
        Packer(MIN_MESSAGE_SIZE - 1)
    Packer(MIN_MESSAGE_SIZE)


@pytest.mark.parametrize(
    "record",
    [
        EventRecord(T, IN_CREATE, U32 + 1, 0, b"/a"),
        EventRecord(T, IN_CREATE, 0, 0x10000, b"/a"),
        DroppedRecord(-1, 0, 1),
        ReadyRecord(T, 0, watches=U32 + 1, pending=0),
        ErrorRecord(T, 0, "EIO", 0x10000, b"", ""),
    ],
)
def test_out_of_range_fields_are_a_value_error(record: Record) -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_record(record)


# --- malformed messages -------------------------------------------------------------------


def header(count: int, version: int = VERSION) -> bytes:
    return struct.pack("<2sBBIH", b"FN", version, 0, 0, count)


def test_version_mismatch() -> None:
    message = bytearray(Packer().pack([OverflowRecord(T)])[0])
    message[2] = 1  # wire v1 had no watch numbers
    with pytest.raises(VersionError, match="version 1"):
        decode(bytes(message))


@pytest.mark.parametrize("cut", range(1, 60, 3))
def test_truncated_message(cut: int) -> None:
    message = Packer().pack(
        [EventRecord(T, IN_CREATE, 1, 0, b"/var/log/x"), ErrorRecord(T, 1, "EIO", 0, b"/p", "m")]
    )[0]
    assert cut < len(message)
    with pytest.raises(WireError):
        decode(message[:cut])


GONE = struct.Struct("<BQIBH")
EXIT = struct.Struct("<BQBBH")
ERROR = struct.Struct("<BQIHBHHH")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"", "shorter than the header"),
        (b"XX" + bytes(8), "bad magic"),
        (header(1) + b"\x63", "unknown record kind 99"),
        (header(1) + b"\x00", "unknown record kind 0"),
        (header(0) + b"junk", "4 trailing bytes"),
        (header(2) + b"\x02" + bytes(8), "record kind truncated at byte 19"),
        (header(2) + b"\x02" + bytes(8) + b"\x02" + bytes(3), "record 1 truncated"),
        (header(1), "record kind truncated"),
        (header(1) + b"\x01" + bytes(10), "record 0 truncated"),
        (header(1) + struct.pack("<BBQIIHH", 1, 0, 0, 0, 0, 0, 9) + b"/a", "event path truncated"),
        (header(1) + GONE.pack(6, 0, 1, 9, 0), "unknown gone reason 9"),
        (header(1) + GONE.pack(6, 0, 1, 0, 0), "unknown gone reason 0"),
        (header(1) + GONE.pack(6, 0, 1, 1, 2) + b"\xff\xff", "gone message is not utf-8"),
        (header(1) + GONE.pack(6, 0, 1, 1, 5) + b"ab", "gone message truncated"),
        (header(1) + EXIT.pack(7, 0, 9, 0, 0), "unknown exit reason 9"),
        (header(1) + EXIT.pack(7, 0, 2, 0, 0), "unknown exit reason 2"),
        (header(1) + EXIT.pack(7, 0, 1, 0, 2) + b"\xff\xff", "exit message is not utf-8"),
        (header(1) + ERROR.pack(3, 0, 1, 0, 2, 0, 0, 0) + b"\xc3\xa9", "error code is not ascii"),
        (header(1) + ERROR.pack(3, 0, 1, 0, 3, 0, 0, 0) + b"EI", "error code truncated"),
        (header(1) + ERROR.pack(3, 0, 1, 0, 0, 4, 4, 0) + b"/p", "error path truncated"),
        (header(1) + ERROR.pack(3, 0, 1, 0, 0, 0, 0, 1) + b"\xff", "error message is not utf-8"),
    ],
)
def test_garbage_is_a_clear_error(message: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode(message)


def test_unknown_reasons_never_decode_to_a_record() -> None:
    known_gone = {int(r) for r in GoneReason}
    known_exit = {int(r) for r in ExitReason}
    for value in range(256):
        gone = header(1) + GONE.pack(6, 0, 1, value, 0)
        exit_ = header(1) + EXIT.pack(7, 0, value, 0, 0)
        if value in known_gone:
            assert decode(gone) == [GoneRecord(0, 1, GoneReason(value))]
        else:
            with pytest.raises(WireError, match=f"unknown gone reason {value}"):
                decode(gone)
        if value in known_exit:
            assert decode(exit_) == [ExitRecord(0, ExitReason(value), 0)]
        else:
            with pytest.raises(WireError, match=f"unknown exit reason {value}"):
                decode(exit_)
