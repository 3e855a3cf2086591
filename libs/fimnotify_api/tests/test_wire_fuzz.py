"""Property-based fuzz tests (hypothesis, a fixed and derandomized example budget) of the
queue wire format: records of every kind round-trip through `Packer` and `decode_message`;
arbitrary bytes and mutated valid messages only ever raise `WireError` (or its subclass
`VersionError`) with a message; ERROR, GONE and EXIT records of any path and message size
stay within their bounds and fit one message."""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from libs.fimnotify_api.wire import (
    DEFAULT_MESSAGE_SIZE,
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
    GoneReason,
    GoneRecord,
    Kind,
    Message,
    OverflowRecord,
    Packer,
    ReadyRecord,
    Record,
    WireError,
    cut_text,
    decode,
    decode_message,
    encode_record,
)

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)

U8 = st.integers(0, 0xFF)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
U64 = st.integers(0, 2**64 - 1)
#: The fixed part of an ERROR record: kind, time, watch, subject, and the four lengths.
ERROR_HEAD = struct.calcsize("<BQIHBHHH")
#: The largest ERROR record the encoder can write (code cut to 32 bytes).
MAX_ERROR_RECORD = ERROR_HEAD + 32 + MAX_ERROR_PATH + MAX_ERROR_MESSAGE


def utf8_text(max_bytes: int) -> st.SearchStrategy[str]:
    """Text without lone surrogates (which have no UTF-8 form) of at most `max_bytes`."""
    return st.text(max_size=max_bytes // 4)


def sized_binary(most: int) -> st.SearchStrategy[bytes]:
    """Mostly short byte strings, sometimes one repeated up to `most` bytes."""
    return st.one_of(
        st.binary(max_size=64),
        st.builds(
            lambda chunk, size: (chunk * (size // len(chunk) + 1))[:size],
            st.binary(min_size=1, max_size=8),
            st.integers(0, most),
        ),
    )


events = st.builds(
    EventRecord,
    time_ns=U64,
    mask=U32,
    watch=U32,
    subject=U16,
    path=sized_binary(MAX_EVENT_PATH),
    synthetic=st.booleans(),
)
overflows = st.builds(OverflowRecord, time_ns=U64)


@st.composite
def errors(draw: st.DrawFn) -> ErrorRecord:
    """ERROR records within the bounds, with the path_size the decoder gives back."""
    path = draw(sized_binary(MAX_ERROR_PATH))
    truncated_from = draw(st.none() | st.integers(len(path), 0xFFFF))
    return ErrorRecord(
        time_ns=draw(U64),
        watch=draw(U32),
        code=draw(st.text(st.characters(max_codepoint=0x7F), max_size=32)),
        subject=draw(st.none() | st.integers(0, NO_SUBJECT - 1)),
        path=path,
        message=draw(utf8_text(MAX_ERROR_MESSAGE)),
        path_size=len(path) if truncated_from is None else truncated_from,
    )


dropped = st.builds(DroppedRecord, time_ns=U64, watch=U32, count=U64)
readies = st.builds(
    ReadyRecord,
    time_ns=U64,
    watch=U32,
    watches=U32,
    pending=U32,
    limited=U32,
    rescan=st.booleans(),
)
gones = st.builds(
    GoneRecord,
    time_ns=U64,
    watch=U32,
    reason=st.sampled_from(GoneReason),
    message=utf8_text(MAX_ERROR_MESSAGE),
)
exits = st.builds(
    ExitRecord,
    time_ns=U64,
    reason=st.sampled_from(ExitReason),
    status=U8,
    message=utf8_text(MAX_ERROR_MESSAGE),
)
records: st.SearchStrategy[Record] = st.one_of(
    events, overflows, errors(), dropped, readies, gones, exits
)
message_sizes = st.one_of(
    st.sampled_from([MIN_MESSAGE_SIZE, DEFAULT_MESSAGE_SIZE]),
    st.integers(MIN_MESSAGE_SIZE, 3 * DEFAULT_MESSAGE_SIZE),
)


# --- valid records round-trip ------------------------------------------------------------


@FUZZ
@given(batch=st.lists(records, max_size=40), max_size=message_sizes, seq=U32)
def test_records_of_every_kind_round_trip_in_numbered_bounded_messages(
    batch: list[Record], max_size: int, seq: int
) -> None:
    packer = Packer(max_size)
    packer.seq = seq
    messages = packer.pack(batch)
    decoded = [decode_message(m) for m in messages]
    assert all(len(m) <= max_size for m in messages)
    assert all(m.version == VERSION for m in decoded)
    assert [m.seq for m in decoded] == [(seq + i) & 0xFFFFFFFF for i in range(len(messages))]
    assert all(m.records for m in decoded)  # no empty message
    assert [r for m in decoded for r in m.records] == batch


@FUZZ
@given(record=records)
def test_each_record_alone_round_trips_and_re_encodes_identically(record: Record) -> None:
    encoded = encode_record(record)
    assert Kind(encoded[0])
    (message,) = Packer(MIN_MESSAGE_SIZE).pack([record])
    assert message[HEADER_SIZE:] == encoded
    (back,) = decode(message)
    assert back == record
    assert encode_record(back) == encoded


# --- ERROR, GONE and EXIT records are bounded ----------------------------------------------

# Any text a caller may hand the encoder: lone surrogates, multi-byte characters cut anywhere.
any_text = st.one_of(
    st.text(st.characters(codec=None), max_size=40),
    st.builds(
        lambda chunk, repeat: chunk * repeat,
        st.text(st.characters(codec=None), min_size=1, max_size=5),
        st.integers(0, 1200),
    ),
)


def check_cut(original: str, decoded: str) -> None:
    """`decoded` is `original` (lone surrogates backslash-escaped) cut on a UTF-8 boundary to
    at most MAX_ERROR_MESSAGE bytes, and nothing more than needed was cut."""
    full = original.encode("utf-8", "backslashreplace")
    raw = decoded.encode("utf-8")
    assert len(raw) <= MAX_ERROR_MESSAGE
    assert full.startswith(raw)
    if len(full) <= MAX_ERROR_MESSAGE:
        assert raw == full
    else:
        assert len(raw) > MAX_ERROR_MESSAGE - 4  # at most one character left out


@FUZZ
@given(
    code=st.text(st.characters(max_codepoint=0x7F), max_size=60),
    path=st.one_of(
        st.binary(max_size=40),
        st.builds(lambda c, n: c * n, st.binary(min_size=1, max_size=4), st.integers(0, 20_000)),
    ),
    path_size=st.integers(0, 0x1FFFF),
    message=any_text,
    subject=st.none() | U16,
    seq=U32,
)
@example(
    code="E" * 40, path=b"/" * 70_000, path_size=70_000, message="€" * 10_000, subject=None, seq=0
)
@example(code="EIO", path=b"/p", path_size=0, message="a" + "€" * 200, subject=0, seq=0)
@example(code="EIO", path=b"/p", path_size=0, message="\udcff" * 200, subject=0, seq=0)
def test_error_records_of_any_size_fit_one_minimal_message(  # noqa: PLR0917
    code: str, path: bytes, path_size: int, message: str, subject: int | None, seq: int
) -> None:
    record = ErrorRecord(1, 2, code, subject, path, message, path_size)
    encoded = encode_record(record)
    assert len(encoded) <= MAX_ERROR_RECORD
    assert HEADER_SIZE + len(encoded) <= MIN_MESSAGE_SIZE
    packer = Packer(MIN_MESSAGE_SIZE)
    packer.seq = seq
    (one,) = packer.pack([record])
    (back,) = decode(one)
    assert isinstance(back, ErrorRecord)
    assert back.code == code[:32]
    assert back.subject == (None if subject == NO_SUBJECT else subject)
    assert back.path == path[:MAX_ERROR_PATH]
    assert back.path_size == min(max(path_size, len(path)), 0xFFFF)
    if len(path) > MAX_ERROR_PATH:
        assert back.truncated
    check_cut(message, back.message)
    assert cut_text(message, MAX_ERROR_MESSAGE) == back.message.encode()


@FUZZ
@given(message=any_text, reason=st.sampled_from(GoneReason), exit_=st.sampled_from(ExitReason))
def test_gone_and_exit_messages_of_any_size_are_cut_on_a_utf8_boundary(
    message: str, reason: GoneReason, exit_: ExitReason
) -> None:
    batch: list[Record] = [GoneRecord(1, 2, reason, message), ExitRecord(1, exit_, 255, message)]
    (one,) = Packer(MIN_MESSAGE_SIZE).pack(batch)
    gone, exited = decode(one)
    assert isinstance(gone, GoneRecord)
    assert isinstance(exited, ExitRecord)
    assert (gone.reason, exited.reason) == (reason, exit_)
    check_cut(message, gone.message)
    check_cut(message, exited.message)


# --- malformed messages: WireError only ----------------------------------------------------


def decodes_or_wire_error(message: bytes) -> Message | None:
    """Decodes `message`, or checks it raised WireError/VersionError with a bounded reason.
    Whatever decodes is made of records the encoder accepts again."""
    error: WireError | None = None
    try:
        decoded = decode_message(message)
    except WireError as err:  # VersionError is a WireError
        error = err
    if error is not None:
        assert 0 < len(str(error)) < 300
        return None
    for record in decoded.records:
        encode_record(record)
    assert len(decoded.records) <= (len(message) - HEADER_SIZE) // 9  # OVERFLOW: 9 bytes
    return decoded


def header(count: int, version: int = VERSION, seq: int = 0) -> bytes:
    return struct.pack("<2sBBIH", b"FN", version, 0, seq, count)


@FUZZ
@given(message=st.binary(max_size=200))
@example(message=b"")
@example(message=b"FN")
@example(message=header(0))
def test_arbitrary_bytes_only_raise_wire_error(message: bytes) -> None:
    decodes_or_wire_error(message)


@FUZZ
@given(
    count=U16,
    version=st.sampled_from([VERSION, VERSION, 0, 1, VERSION + 1, 255]),
    body=st.lists(
        st.one_of(
            st.sampled_from([bytes([kind]) for kind in range(9)]),
            st.binary(max_size=12),
            st.integers(0, 0xFFFF).map(lambda n: struct.pack("<H", n)),
        ),
        max_size=30,
    ).map(b"".join),
)
@example(count=0xFFFF, version=VERSION, body=b"\x02" * 9)
@example(count=1, version=VERSION, body=b"\x06" + bytes(12) + b"\x01\x00")
def test_arbitrary_bodies_after_a_valid_header_only_raise_wire_error(
    count: int, version: int, body: bytes
) -> None:
    decoded = decodes_or_wire_error(header(count, version) + body)
    if decoded is not None:
        assert decoded.version == VERSION
        assert len(decoded.records) == count


def _set_u16(message: bytearray, at: int, value: int) -> None:
    if at + 2 <= len(message):
        message[at : at + 2] = struct.pack("<H", value)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with 1..4 mutations: truncation, flipped or replaced bytes, inserted
    or deleted bytes, a changed record count, version, record kind or length field, an
    unknown gone or exit reason."""
    batch = draw(st.lists(records, min_size=1, max_size=6))
    message = bytearray(Packer(DEFAULT_MESSAGE_SIZE * 4).pack(batch)[0])
    for _ in range(draw(st.integers(1, 4))):
        if len(message) <= HEADER_SIZE:
            break
        # Mostly in the records (the header has its own mutations), from the end sometimes.
        at = HEADER_SIZE + draw(st.integers(0, len(message) - HEADER_SIZE - 1))
        if draw(st.booleans()):
            at = len(message) - 1 - (at - HEADER_SIZE)
        how = draw(
            st.sampled_from(
                ["truncate", "flip", "replace", "insert", "delete", "count", "version", "u16"]
            )
        )
        if how == "truncate":
            del message[at:]
        elif how == "flip":
            message[at] ^= draw(st.integers(1, 255))
        elif how == "replace":
            message[at] = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 0x7F, 0x80, 0xFF]))
        elif how == "insert":
            message[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif how == "delete":
            del message[at : at + draw(st.integers(1, 16))]
        elif how == "count":
            _set_u16(message, 8, draw(U16))
        elif how == "version":
            if len(message) > 2:
                message[2] = draw(U8)
        else:  # a length, subject or reason field: any u16 anywhere
            _set_u16(message, at, draw(st.sampled_from([0, 1, 0xFF, 0x100, 0xFFFF]) | U16))
    return bytes(message)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(message=mutated())
def test_mutated_messages_only_raise_wire_error(message: bytes) -> None:
    decodes_or_wire_error(message)


@FUZZ
@given(batch=st.lists(records, min_size=1, max_size=6), data=st.data())
def test_every_strict_prefix_of_a_message_is_a_wire_error(
    batch: list[Record], data: st.DataObject
) -> None:
    (message,) = Packer(DEFAULT_MESSAGE_SIZE * 4).pack(batch)
    cut = data.draw(st.integers(0, len(message) - 1))
    with pytest.raises(WireError, match=r"."):
        decode_message(message[:cut])
    with pytest.raises(WireError, match=r"trailing bytes"):
        decode_message(message + data.draw(st.binary(min_size=1, max_size=8)))
