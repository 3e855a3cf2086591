"""The message format fimnotify writes to its POSIX message queue and fimd reads.

Queue: fimd creates it (``O_CREAT|O_EXCL``, read side) and unlinks it; fimnotify opens it
write-only and non-blocking. Designed for the defaults ``msg_max`` = 10 messages and
``msgsize_max`` = 8192 bytes: many records travel in one message.

Message layout (little endian)::

    header  : magic b"FN" | version u8 | flags u8 (0) | seq u32 | count u16   (10 bytes)
    records : count records, back to back, each starting with its kind byte

    EVENT   (1): flags u8 (bit0 synthetic) | time_ns u64 | mask u32 | subject u16 |
                 path_len u16 | path bytes                                   (18 + path)
    OVERFLOW(2): time_ns u64
    ERROR   (3): time_ns u64 | subject u16 (0xFFFF: none) | code_len u8 | path_len u16 |
                 msg_len u16 | code ascii | path bytes | message utf-8
    DROPPED (4): time_ns u64 | count u64
    READY   (5): time_ns u64 | watches u32 | pending u32 | rescan u8
    EXIT    (6): time_ns u64 | reason u8 | status u8 | msg_len u16 | message utf-8

* ``seq`` counts messages per fimnotify process from 0 (mod 2**32), so a reader can prove
  it saw every message.
* ``mask`` is the raw inotify mask (it includes IN_ISDIR); `EventRecord.names` maps it to
  the FimWatcher event names. Synthetic events (entries found by the scan right after a
  new directory watch, i.e. created in the race window; or a watched path that appeared
  through a rename/swap of a parent) have bit0 of flags set and mask IN_CREATE.
* ``path`` is the path inside the container (bytes, never the /proc/<pid>/root prefix).
* ``subject`` indexes ``WatchConfig.subjects``. Tags are not sent per event: the reader
  resolves them with `tags_for` from the WatchConfig it gave this process.
* A reader must reject a message whose version it does not know (`VersionError`); any
  malformed message raises `WireError` with the reason; nothing is skipped silently.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Iterable

import attrs

from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.config import WatchConfig
from libs.fimnotify_api.masks import IN_ISDIR, names_for

MAGIC = b"FN"
VERSION = 1
#: Default POSIX mq message size (fs.mqueue.msgsize_max) the format is designed for.
DEFAULT_MESSAGE_SIZE = 8192
#: Smallest message size a writer accepts: one event with a PATH_MAX path must fit.
MIN_MESSAGE_SIZE = 4096 + 64
NO_SUBJECT = 0xFFFF

_HEADER = struct.Struct("<2sBBIH")
_EVENT = struct.Struct("<BBQIHH")
_OVERFLOW = struct.Struct("<BQ")
_ERROR = struct.Struct("<BQHBHH")
_DROPPED = struct.Struct("<BQQ")
_READY = struct.Struct("<BQIIB")
_EXIT = struct.Struct("<BQBBH")
HEADER_SIZE = _HEADER.size


class Kind(enum.IntEnum):
    EVENT = 1
    OVERFLOW = 2
    ERROR = 3
    DROPPED = 4
    READY = 5
    EXIT = 6


class ExitReason(enum.IntEnum):
    """Why fimnotify is exiting (EXIT record); the process exit status matches `ExitStatus`."""

    STOPPED = 1  # SIGTERM/SIGINT: watches removed, queue closed
    TARGET_GONE = 2  # the container process is gone: fimd should re-resolve the PID
    FATAL = 3  # unrecoverable error (root not resolvable, ...): see message


class ExitStatus(enum.IntEnum):
    """Process exit statuses of fimnotify, for fimd's supervisor."""

    OK = 0  # stopped by SIGTERM/SIGINT
    FATAL = 1  # unexpected error; EXIT record sent when the queue was usable
    USAGE = 2  # bad command line or config (ConfigError on stderr), nothing started
    TARGET_GONE = 3  # target process vanished (or never existed): re-resolve and respawn
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
    """The kernel's inotify queue overflowed: events were lost; a rescan follows."""

    time_ns: int


@attrs.frozen
class ErrorRecord:
    """A path could not be (fully) watched, e.g. code ENOSPC (max_user_watches)."""

    time_ns: int
    code: str
    subject: int | None
    path: bytes
    message: str


@attrs.frozen
class DroppedRecord:
    """`count` records were dropped because the queue stayed full (buffer exhausted)."""

    time_ns: int
    count: int


@attrs.frozen
class ReadyRecord:
    """Watches are in place (start, or end of a rescan after overflow)."""

    time_ns: int
    watches: int
    pending: int  # configured paths that do not exist yet (watched via an ancestor)
    rescan: bool = False


@attrs.frozen
class ExitRecord:
    time_ns: int
    reason: ExitReason
    status: int
    message: str = ""


Record = EventRecord | OverflowRecord | ErrorRecord | DroppedRecord | ReadyRecord | ExitRecord


@attrs.frozen
class Message:
    version: int
    seq: int
    records: list[Record]


# --- writer side -------------------------------------------------------------------------


def encode_event(
    time_ns: int, mask: int, subject: int, path: bytes, synthetic: bool = False
) -> bytes:
    """The hot path: one event record."""
    return _EVENT.pack(Kind.EVENT, 1 if synthetic else 0, time_ns, mask, subject, len(path)) + path


def encode_record(record: Record) -> bytes:
    """Encodes one record; raises ValueError for out-of-range fields."""
    try:
        return _encode(record)
    except struct.error as exc:
        raise ValueError(f"cannot encode {record!r}: {exc}") from None


def _encode(record: Record) -> bytes:
    if isinstance(record, EventRecord):
        return encode_event(
            record.time_ns, record.mask, record.subject, record.path, record.synthetic
        )
    if isinstance(record, OverflowRecord):
        return _OVERFLOW.pack(Kind.OVERFLOW, record.time_ns)
    if isinstance(record, ErrorRecord):
        code = record.code.encode("ascii")
        msg = record.message.encode("utf-8")
        subject = NO_SUBJECT if record.subject is None else record.subject
        head = _ERROR.pack(
            Kind.ERROR, record.time_ns, subject, len(code), len(record.path), len(msg)
        )
        return head + code + record.path + msg
    if isinstance(record, DroppedRecord):
        return _DROPPED.pack(Kind.DROPPED, record.time_ns, record.count)
    if isinstance(record, ReadyRecord):
        return _READY.pack(
            Kind.READY, record.time_ns, record.watches, record.pending, int(record.rescan)
        )
    msg = record.message.encode("utf-8")
    return _EXIT.pack(Kind.EXIT, record.time_ns, record.reason, record.status, len(msg)) + msg


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


def _decode_one(message: bytes, offset: int) -> tuple[Record, int]:
    kind = message[offset] if offset < len(message) else None
    if kind == Kind.EVENT:
        _, flags, time_ns, mask, subject, plen = _EVENT.unpack_from(message, offset)
        offset += _EVENT.size
        path = _take(message, offset, plen, "event path")
        return EventRecord(time_ns, mask, subject, path, bool(flags & 1)), offset + plen
    if kind == Kind.OVERFLOW:
        _, time_ns = _OVERFLOW.unpack_from(message, offset)
        return OverflowRecord(time_ns), offset + _OVERFLOW.size
    if kind == Kind.ERROR:
        return _decode_error(message, offset)
    if kind == Kind.DROPPED:
        _, time_ns, count = _DROPPED.unpack_from(message, offset)
        return DroppedRecord(time_ns, count), offset + _DROPPED.size
    if kind == Kind.READY:
        _, time_ns, watches, pending, rescan = _READY.unpack_from(message, offset)
        return ReadyRecord(time_ns, watches, pending, bool(rescan)), offset + _READY.size
    if kind == Kind.EXIT:
        _, time_ns, reason, status, mlen = _EXIT.unpack_from(message, offset)
        offset += _EXIT.size
        text = _text(_take(message, offset, mlen, "exit message"), "exit message", "utf-8")
        try:
            why = ExitReason(reason)
        except ValueError:
            raise WireError(f"unknown exit reason {reason}") from None
        return ExitRecord(time_ns, why, status, text), offset + mlen
    if kind is None:
        raise WireError(f"record kind truncated at byte {offset}")
    raise WireError(f"unknown record kind {kind} at byte {offset}")


def _decode_error(message: bytes, offset: int) -> tuple[Record, int]:
    _, time_ns, subject, clen, plen, mlen = _ERROR.unpack_from(message, offset)
    offset += _ERROR.size
    code = _text(_take(message, offset, clen, "error code"), "error code", "ascii")
    offset += clen
    path = _take(message, offset, plen, "error path")
    offset += plen
    text = _text(_take(message, offset, mlen, "error message"), "error message", "utf-8")
    who = None if subject == NO_SUBJECT else subject
    return ErrorRecord(time_ns, code, who, path, text), offset + mlen


def tags_for(config: WatchConfig, record: EventRecord | ErrorRecord) -> dict[str, str]:
    """The tags of the record's subject; raises WireError for an index the config lacks."""
    if record.subject is None:
        return {}
    if not 0 <= record.subject < len(config.subjects):
        raise WireError(
            f"subject index {record.subject} out of range for {len(config.subjects)} subjects"
        )
    return config.subjects[record.subject].tags
