"""The message format fimnotify engines write to their POSIX message queue and fimd reads.

Queue: fimd creates one per engine (``O_CREAT|O_EXCL``, read side) and unlinks it; the engine
opens it write-only and non-blocking. Designed for the defaults ``msg_max`` = 10 messages and
``msgsize_max`` = 8192 bytes: many records travel in one message.

Message layout (little endian)::

    header  : magic b"FN" | version u8 | flags u8 (0) | seq u32 | count u16   (10 bytes)
    records : count records, back to back, each starting with its kind byte

    EVENT   (1): flags u8 (bit0 synthetic) | time_ns u64 | mask u32 | watch u32 |
                 subject u16 | path_len u16 | path bytes                    (22 + path)
    OVERFLOW(2): time_ns u64
    ERROR   (3): time_ns u64 | watch u32 | subject u16 (0xFFFF: none) | code_len u8 |
                 path_len u16 | path_size u16 | msg_len u16 | code ascii | path | msg utf-8
    DROPPED (4): time_ns u64 | watch u32 | count u64
    READY   (5): time_ns u64 | watch u32 | watches u32 | pending u32 | limited u32 | rescan u8
    GONE    (6): time_ns u64 | watch u32 | reason u8 | msg_len u16 | message utf-8
    EXIT    (7): time_ns u64 | reason u8 | status u8 | msg_len u16 | message utf-8

* ``watch`` is the number fimd gave the watch in its ADD control message
  (`libs.fimnotify_api.control`); ``ENGINE`` (0xFFFFFFFF) means the engine as a whole.
* ``seq`` counts messages per engine process from 0 (mod 2**32), so a reader can prove it saw
  every message.
* ``mask`` is the raw inotify mask (it includes IN_ISDIR); `EventRecord.names` maps it to the
  FimWatcher event names. Synthetic events (entries found by the scan right after a new
  directory watch, i.e. created in the race window; or a watched path that appeared through a
  rename/swap of a parent) have bit0 of flags set and mask IN_CREATE.
* ``path`` is the path inside the container (bytes, never the /proc/<pid>/root prefix), at
  most `MAX_EVENT_PATH` bytes in an EVENT. An ERROR carries at most `MAX_ERROR_PATH` bytes of
  its path (``path_size`` is the original length, capped at 65535) and at most
  `MAX_ERROR_MESSAGE` bytes of message: the encoder cuts them (on a UTF-8 boundary for the
  message), so a name chosen by a container can never make a record too large for a message.
* OVERFLOW: the engine's one inotify queue overflowed; every watch of the engine may have lost
  events. Each watch is rescanned and reports READY with ``rescan`` set.
* READY: the watch's inotify watches are in place (``watches`` directories, ``pending``
  configured paths that do not exist yet, ``limited`` directories left out by the per-watch
  directory cap).
* GONE: the engine no longer holds the watch (removed on request, its container process is
  gone, or it could not be set up). EXIT: the engine process ends.
* ``subject`` indexes the watch's subjects. Tags are not sent per event: the reader resolves
  them from the subjects it sent.
* A reader must reject a message whose version it does not know (`VersionError`); any
  malformed message raises `WireError` with the reason; nothing is skipped silently.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Iterable
from typing import TypeVar

import attrs

from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.masks import IN_ISDIR, names_for

MAGIC = b"FN"
VERSION = 2
#: Default POSIX mq message size (fs.mqueue.msgsize_max) the format is designed for.
DEFAULT_MESSAGE_SIZE = 8192
#: Smallest message size a writer accepts: one event with a PATH_MAX path must fit.
MIN_MESSAGE_SIZE = 4096 + 64
NO_SUBJECT = 0xFFFF
#: The `watch` of records about the engine as a whole.
ENGINE = 0xFFFFFFFF
#: Longest event path (PATH_MAX); longer paths are reported as an ENAMETOOLONG error.
MAX_EVENT_PATH = 4096
#: ERROR records carry at most this much of a path and of a message (bytes).
MAX_ERROR_PATH = 1024
MAX_ERROR_MESSAGE = 512

_HEADER = struct.Struct("<2sBBIH")
_EVENT = struct.Struct("<BBQIIHH")
_OVERFLOW = struct.Struct("<BQ")
_ERROR = struct.Struct("<BQIHBHHH")
_DROPPED = struct.Struct("<BQIQ")
_READY = struct.Struct("<BQIIIIB")
_GONE = struct.Struct("<BQIBH")
_EXIT = struct.Struct("<BQBBH")
HEADER_SIZE = _HEADER.size


class Kind(enum.IntEnum):
    EVENT = 1
    OVERFLOW = 2
    ERROR = 3
    DROPPED = 4
    READY = 5
    GONE = 6
    EXIT = 7


class ExitReason(enum.IntEnum):
    """Why an engine is exiting (EXIT record); the process exit status matches `ExitStatus`."""

    STOPPED = 1  # SIGTERM/SIGINT or fimd closed the control pipe: watches removed
    FATAL = 3  # unrecoverable error: see message


class GoneReason(enum.IntEnum):
    """Why an engine no longer holds a watch (GONE record)."""

    REMOVED = 1  # fimd asked (REMOVE control message)
    TARGET_GONE = 2  # the container process is gone: fimd should resolve the container again
    FAILED = 3  # the watch could not be set up or kept (see message); fimd retries later
    TARGET_MISMATCH = 4  # the PID is not the resolved process (reused, moved): resolve again


class ExitStatus(enum.IntEnum):
    """Process exit statuses of an engine, for fimd's pool."""

    OK = 0  # stopped by SIGTERM/SIGINT or end of the control pipe
    FATAL = 1  # unexpected error; EXIT record sent when the queue was usable
    USAGE = 2  # bad command line (message on stderr), nothing started
    QUEUE = 4  # the message queue is missing or unusable


class WireError(ValueError):
    """A message could not be decoded; the text says why and where."""


class VersionError(WireError):
    """The message has a format version this reader does not understand."""


class RecordTooLargeError(ValueError):
    """One record does not fit into one message of the queue's size."""


@attrs.frozen
class EventRecord:
    time_ns: int
    mask: int
    watch: int
    subject: int
    path: bytes
    synthetic: bool = False

    @property
    def is_dir(self) -> bool:
        return bool(self.mask & IN_ISDIR)

    @property
    def names(self) -> tuple[EventName, ...]:
        return names_for(self.mask)


@attrs.frozen
class OverflowRecord:
    """The engine's inotify queue overflowed: events were lost; rescans follow."""

    time_ns: int


@attrs.frozen
class ErrorRecord:
    """A path could not be (fully) watched, e.g. code ENOSPC (max_user_watches), or
    EDIRCAP (the per-watch directory cap left `path` and what is below it out)."""

    time_ns: int
    watch: int
    code: str
    subject: int | None
    path: bytes
    message: str
    #: The path's length before the encoder cut it to MAX_ERROR_PATH (0: same as `path`).
    path_size: int = 0

    @property
    def truncated(self) -> bool:
        return self.path_size > len(self.path)


@attrs.frozen
class DroppedRecord:
    """`count` event records of `watch` were dropped because the queue stayed full."""

    time_ns: int
    watch: int
    count: int


@attrs.frozen
class ReadyRecord:
    """A watch's inotify watches are in place (start, or end of a rescan after overflow)."""

    time_ns: int
    watch: int
    watches: int
    pending: int  # configured paths that do not exist yet (watched via an ancestor)
    limited: int = 0  # directories left out by the per-watch directory cap
    rescan: bool = False


@attrs.frozen
class GoneRecord:
    """The engine no longer holds `watch`."""

    time_ns: int
    watch: int
    reason: GoneReason
    message: str = ""


@attrs.frozen
class ExitRecord:
    time_ns: int
    reason: ExitReason
    status: int
    message: str = ""


Record = (
    EventRecord
    | OverflowRecord
    | ErrorRecord
    | DroppedRecord
    | ReadyRecord
    | GoneRecord
    | ExitRecord
)


@attrs.frozen
class Message:
    version: int
    seq: int
    records: list[Record]


# --- writer side -------------------------------------------------------------------------


def encode_event(  # noqa: PLR0917 - the hot path: positional, like the record layout
    time_ns: int, mask: int, watch: int, subject: int, path: bytes, synthetic: bool = False
) -> bytes:
    """The hot path: one event record (`path` at most MAX_EVENT_PATH bytes)."""
    flags = 1 if synthetic else 0
    return _EVENT.pack(Kind.EVENT, flags, time_ns, mask, watch, subject, len(path)) + path


def encode_record(record: Record) -> bytes:
    """Encodes one record; raises ValueError for out-of-range fields."""
    try:
        return _encode(record)
    except struct.error as exc:
        raise ValueError(f"cannot encode {record!r}: {exc}") from None


def cut_text(text: str, limit: int) -> bytes:
    """UTF-8 of `text`, cut to at most `limit` bytes on a character boundary."""
    raw = text.encode("utf-8", "backslashreplace")
    if len(raw) <= limit:
        return raw
    return raw[:limit].decode("utf-8", "ignore").encode("utf-8")


def _message(text: str) -> bytes:
    return cut_text(text, MAX_ERROR_MESSAGE)


def _encode(record: Record) -> bytes:  # noqa: PLR0911 - one branch per record kind
    if isinstance(record, EventRecord):
        return encode_event(
            record.time_ns,
            record.mask,
            record.watch,
            record.subject,
            record.path,
            record.synthetic,
        )
    if isinstance(record, OverflowRecord):
        return _OVERFLOW.pack(Kind.OVERFLOW, record.time_ns)
    if isinstance(record, ErrorRecord):
        return _encode_error(record)
    if isinstance(record, DroppedRecord):
        return _DROPPED.pack(Kind.DROPPED, record.time_ns, record.watch, record.count)
    if isinstance(record, ReadyRecord):
        return _READY.pack(
            Kind.READY,
            record.time_ns,
            record.watch,
            record.watches,
            record.pending,
            record.limited,
            int(record.rescan),
        )
    if isinstance(record, GoneRecord):
        msg = _message(record.message)
        head = _GONE.pack(Kind.GONE, record.time_ns, record.watch, record.reason, len(msg))
        return head + msg
    msg = _message(record.message)
    return _EXIT.pack(Kind.EXIT, record.time_ns, record.reason, record.status, len(msg)) + msg


def _encode_error(record: ErrorRecord) -> bytes:
    """Cuts path and message to their bounds: an ERROR always fits a message."""
    code = record.code.encode("ascii")[:32]
    msg = _message(record.message)
    path = record.path[:MAX_ERROR_PATH]
    size = min(max(record.path_size, len(record.path)), 0xFFFF)
    subject = NO_SUBJECT if record.subject is None else record.subject
    head = _ERROR.pack(
        Kind.ERROR, record.time_ns, record.watch, subject, len(code), len(path), size, len(msg)
    )
    return head + code + path + msg


class Packer:
    """Packs encoded records into messages of at most `max_size` bytes, numbering them."""

    def __init__(self, max_size: int = DEFAULT_MESSAGE_SIZE) -> None:
        if max_size < MIN_MESSAGE_SIZE:
            raise ValueError(
                f"message size {max_size} is below {MIN_MESSAGE_SIZE}: raise "
                "fs.mqueue.msgsize_max or create the queue with larger messages"
            )
        self.max_size = max_size
        self.seq = 0

    def check(self, encoded: bytes) -> None:
        """Raises RecordTooLargeError if this record can never fit into a message."""
        if HEADER_SIZE + len(encoded) > self.max_size:
            raise RecordTooLargeError(f"record of {len(encoded)} bytes exceeds {self.max_size}")

    def take(self, pending: deque[bytes]) -> bytes:
        """Pops as many records from the left of `pending` as fit into one message."""
        budget = self.max_size - HEADER_SIZE
        parts: list[bytes] = []
        while pending and len(parts) < 0xFFFF:
            size = len(pending[0])
            if size > budget:
                if not parts:
                    raise RecordTooLargeError(f"record of {size} bytes exceeds {self.max_size}")
                break
            budget -= size
            parts.append(pending.popleft())
        return self.message(parts)

    def message(self, parts: list[bytes]) -> bytes:
        """The next numbered message of these records (the caller keeps within max_size)."""
        header = _HEADER.pack(MAGIC, VERSION, 0, self.seq, len(parts))
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return header + b"".join(parts)

    def pack(self, records: Iterable[Record]) -> list[bytes]:
        """Convenience for tests and small senders: all records into as few messages."""
        pending = deque(encode_record(r) for r in records)
        out = []
        while pending:
            out.append(self.take(pending))
        return out


# --- reader side -------------------------------------------------------------------------


def decode(message: bytes) -> list[Record]:
    """Decodes one queue message into its records; raises WireError/VersionError."""
    return decode_message(message).records


def decode_message(message: bytes) -> Message:
    """Like `decode`, keeping the header (version, seq) for gap detection."""
    if len(message) < HEADER_SIZE:
        raise WireError(f"message of {len(message)} bytes is shorter than the header")
    magic, version, _flags, seq, count = _HEADER.unpack_from(message, 0)
    if magic != MAGIC:
        raise WireError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise VersionError(f"message format version {version}, this reader knows {VERSION}")
    offset = HEADER_SIZE
    records: list[Record] = []
    for index in range(count):
        try:
            record, offset = _decode_one(message, offset)
        except struct.error:
            raise WireError(f"record {index} truncated at byte {offset}") from None
        records.append(record)
    if offset != len(message):
        raise WireError(f"{len(message) - offset} trailing bytes after {count} records")
    return Message(version=version, seq=seq, records=records)


def _take(message: bytes, offset: int, size: int, what: str) -> bytes:
    end = offset + size
    if end > len(message):
        raise WireError(f"{what} truncated at byte {offset}")
    return message[offset:end]


def _text(raw: bytes, what: str, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise WireError(f"{what} is not {encoding}: {exc}") from None


_Reason = TypeVar("_Reason", GoneReason, ExitReason)


def _enum(kind: type[_Reason], value: int, what: str) -> _Reason:
    try:
        return kind(value)
    except ValueError:
        raise WireError(f"unknown {what} {value}") from None


def _decode_one(message: bytes, offset: int) -> tuple[Record, int]:  # noqa: PLR0911 - per kind
    kind = message[offset] if offset < len(message) else None
    if kind == Kind.EVENT:
        _, flags, time_ns, mask, watch, subject, plen = _EVENT.unpack_from(message, offset)
        offset += _EVENT.size
        path = _take(message, offset, plen, "event path")
        return EventRecord(time_ns, mask, watch, subject, path, bool(flags & 1)), offset + plen
    if kind == Kind.OVERFLOW:
        _, time_ns = _OVERFLOW.unpack_from(message, offset)
        return OverflowRecord(time_ns), offset + _OVERFLOW.size
    if kind == Kind.ERROR:
        return _decode_error(message, offset)
    if kind == Kind.DROPPED:
        _, time_ns, watch, count = _DROPPED.unpack_from(message, offset)
        return DroppedRecord(time_ns, watch, count), offset + _DROPPED.size
    if kind == Kind.READY:
        _, time_ns, watch, watches, pending, limited, rescan = _READY.unpack_from(message, offset)
        record = ReadyRecord(time_ns, watch, watches, pending, limited, bool(rescan))
        return record, offset + _READY.size
    if kind == Kind.GONE:
        _, time_ns, watch, reason, mlen = _GONE.unpack_from(message, offset)
        offset += _GONE.size
        text = _text(_take(message, offset, mlen, "gone message"), "gone message", "utf-8")
        why = _enum(GoneReason, reason, "gone reason")
        return GoneRecord(time_ns, watch, why, text), offset + mlen
    if kind == Kind.EXIT:
        _, time_ns, reason, status, mlen = _EXIT.unpack_from(message, offset)
        offset += _EXIT.size
        text = _text(_take(message, offset, mlen, "exit message"), "exit message", "utf-8")
        exit_reason = _enum(ExitReason, reason, "exit reason")
        return ExitRecord(time_ns, exit_reason, status, text), offset + mlen
    if kind is None:
        raise WireError(f"record kind truncated at byte {offset}")
    raise WireError(f"unknown record kind {kind} at byte {offset}")


def _decode_error(message: bytes, offset: int) -> tuple[Record, int]:
    _, time_ns, watch, subject, clen, plen, size, mlen = _ERROR.unpack_from(message, offset)
    offset += _ERROR.size
    code = _text(_take(message, offset, clen, "error code"), "error code", "ascii")
    offset += clen
    path = _take(message, offset, plen, "error path")
    offset += plen
    text = _text(_take(message, offset, mlen, "error message"), "error message", "utf-8")
    who = None if subject == NO_SUBJECT else subject
    record = ErrorRecord(time_ns, watch, code, who, path, text, size)
    return record, offset + mlen
