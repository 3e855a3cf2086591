"""How fimd runs and drives a fimnotify engine: its command line and its control messages.

An engine is one process with one inotify instance and one message queue, holding many
watches (of many containers). fimd starts it as::

    <fimnotify command> --queue /fimk8s.<instance>.e<N> [--proc-root /proc]
        [--max-dirs 10000] [--buffer-bytes 8388608] [--name e<N>]

(`EngineConfig.argv` writes these flags, `EngineConfig.parse` reads them) and then writes
**control messages** to the engine's stdin: one JSON object per line, UTF-8, at most
`MAX_CONTROL_BYTES` per line, applied in order:

* ``{"op":"add","watch":W,"pid":P,"start_time":T,"cgroup":[C...],"label":L,
  "subjects":[S...]}``: watch the subjects inside the root of host process P (the
  container's init) under number W (unique for the life of the engine's fimd; every record
  about it carries W). T (start time in clock ticks) and C (the container's cgroup leaf
  names) are what fimd resolved (`libs.fimnotify_api.identity`); the engine checks them
  before and after opening P's root and answers GONE TARGET_MISMATCH when P is another
  process (0 and [] check nothing). Adding a W the engine holds replaces it. Each S has the
  `SubjectConfig` keys (paths, events, ignore, only_dir, recursive, max_depth,
  follow_move; tags stay with fimd).
* ``{"op":"remove","watch":W}``: stop watching W; answered by a GONE record (REMOVED).

The engine answers on the queue (`libs.fimnotify_api.wire`): READY when W's watches are in
place, ERROR for what could not be watched, GONE when it no longer holds W. A control line
that does not parse or validate is answered with an ERROR record (watch ENGINE, code
EBADCTL) and skipped: one bad message never stops the engine. End of stdin means fimd is
gone: the engine removes its watches and exits 0.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

import attrs

from libs.fimnotify_api.identity import ProcessIdentity
from libs.fimnotify_api.subject import SubjectConfig, SubjectError

#: One control line; a whole CreateWatch (<= 16 MiB over gRPC) always fits.
MAX_CONTROL_BYTES = 17 << 20
#: Watch numbers are u32 on the wire; 0xFFFFFFFF is reserved for the engine itself.
MAX_WATCH = 0xFFFFFFFE
#: At most this many subjects per watch (the wire's u16 subject index, and the CRD's 32).
MAX_SUBJECTS = 32
DEFAULT_MAX_DIRS = 10_000
DEFAULT_BUFFER_BYTES = 8 << 20

_QUEUE_NAME = re.compile(r"^/[A-Za-z0-9._:-]{1,250}$")
_SUBJECT_KEYS = frozenset(
    {"paths", "events", "ignore", "only_dir", "recursive", "max_depth", "follow_move"}
)


class ControlError(ValueError):
    """A control message or engine flag is malformed; the text says which field and why."""


@attrs.frozen
class EngineConfig:
    """The command-line settings of one engine."""

    queue_name: str
    proc_root: str = "/proc"
    #: Directories one watch may hold; what is beyond is reported (EDIRCAP), not watched.
    max_dirs: int = DEFAULT_MAX_DIRS
    #: Bytes of records the engine buffers while fimd's queue is full; beyond, event records
    #: are dropped and counted per watch (DROPPED records).
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    #: For diagnostics on stderr.
    name: str = "engine"

    def __attrs_post_init__(self) -> None:
        if not _QUEUE_NAME.match(self.queue_name):
            raise ControlError(f"queue: {self.queue_name!r} is not a name like '/fimk8s.abc'")
        if not self.proc_root.startswith("/"):
            raise ControlError(f"proc-root: {self.proc_root!r} must be an absolute path")
        if self.max_dirs < 1 or self.buffer_bytes < 65536:
            raise ControlError("max-dirs must be >= 1 and buffer-bytes >= 65536")

    def argv(self) -> list[str]:
        return [
            "--queue",
            self.queue_name,
            "--proc-root",
            self.proc_root,
            "--max-dirs",
            str(self.max_dirs),
            "--buffer-bytes",
            str(self.buffer_bytes),
            "--name",
            self.name,
        ]

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> EngineConfig:
        """Reads the flags `argv` writes; raises ControlError (argparse exits on --help)."""
        parser = argparse.ArgumentParser(prog="fimnotify", description=__doc__.split("\n")[0])
        parser.add_argument("--queue", required=True, help="fimd's POSIX message queue")
        parser.add_argument("--proc-root", default="/proc", help="the host's procfs")
        parser.add_argument("--max-dirs", type=int, default=DEFAULT_MAX_DIRS)
        parser.add_argument("--buffer-bytes", type=int, default=DEFAULT_BUFFER_BYTES)
        parser.add_argument("--name", default="engine")
        args = parser.parse_args(argv)
        return cls(args.queue, args.proc_root, args.max_dirs, args.buffer_bytes, args.name)


@attrs.frozen
class AddWatch:
    watch: int
    pid: int
    label: str
    subjects: tuple[SubjectConfig, ...]
    identity: ProcessIdentity = attrs.field(factory=ProcessIdentity)


@attrs.frozen
class RemoveWatch:
    watch: int


Control = AddWatch | RemoveWatch


def _subject_doc(subject: SubjectConfig) -> dict[str, Any]:
    return {
        "paths": list(subject.paths),
        "events": [str(e) for e in subject.events],
        "ignore": list(subject.ignore),
        "only_dir": subject.only_dir,
        "recursive": subject.recursive,
        "max_depth": subject.max_depth,
        "follow_move": subject.follow_move,
    }


def encode(message: Control) -> bytes:
    """One control line (with its newline)."""
    doc: dict[str, Any]
    if isinstance(message, AddWatch):
        doc = {
            "op": "add",
            "watch": message.watch,
            "pid": message.pid,
            "start_time": message.identity.start_time,
            "cgroup": list(message.identity.cgroup_leaves),
            "label": message.label,
            "subjects": [_subject_doc(s) for s in message.subjects],
        }
    else:
        doc = {"op": "remove", "watch": message.watch}
    line = json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
    if len(line) > MAX_CONTROL_BYTES:
        raise ControlError(f"control message of {len(line)} bytes exceeds {MAX_CONTROL_BYTES}")
    return line


def _int(doc: dict[str, Any], key: str, low: int, high: int) -> int:
    value = doc.get(key)
    if type(value) is not int or not low <= value <= high:
        raise ControlError(f"{key}: {value!r} must be an integer in {low}..{high}")
    return value


def _typed(doc: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = doc.get(key, default)
    if type(value) is not kind:
        raise ControlError(f"{key}: expected {kind.__name__}, got {value!r}")
    return value


def _strings(doc: dict[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ControlError(f"{key}: expected a list of strings, got {value!r}")
    return tuple(value)


def _subject(index: int, doc: Any) -> SubjectConfig:
    where = f"subjects[{index}]"
    if not isinstance(doc, dict):
        raise ControlError(f"{where}: expected an object")
    unknown = set(doc) - _SUBJECT_KEYS
    if unknown:
        raise ControlError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        return SubjectConfig(
            paths=_strings(doc, "paths"),
            events=_strings(doc, "events"),
            ignore=_strings(doc, "ignore"),
            only_dir=_typed(doc, "only_dir", bool, False),
            recursive=_typed(doc, "recursive", bool, False),
            max_depth=_typed(doc, "max_depth", int, 0),
            follow_move=_typed(doc, "follow_move", bool, False),
        )
    except (SubjectError, ControlError) as err:
        raise ControlError(f"{where}.{err}") from None


def decode(line: bytes) -> Control:
    """Parses and validates one control line; raises ControlError."""
    if len(line) > MAX_CONTROL_BYTES:
        raise ControlError(f"control line of {len(line)} bytes exceeds {MAX_CONTROL_BYTES}")
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, UnicodeDecodeError, and an integer of more digits than
        # Python converts (sys.get_int_max_str_digits(), 4300); RecursionError: nesting
        # deeper than the interpreter's limit ("[[[[...").
        raise ControlError(f"not a JSON object: {exc}") from None
    if not isinstance(doc, dict):
        raise ControlError("not a JSON object")
    op = doc.get("op")
    watch = _int(doc, "watch", 0, MAX_WATCH)
    if op == "remove":
        return RemoveWatch(watch)
    if op != "add":
        raise ControlError(f"op: unknown operation {op!r}")
    label = _typed(doc, "label", str, "")
    if len(label) > 1024:
        raise ControlError("label: at most 1024 characters")
    subjects = doc.get("subjects")
    if not isinstance(subjects, list) or not 1 <= len(subjects) <= MAX_SUBJECTS:
        raise ControlError(f"subjects: expected a list of 1..{MAX_SUBJECTS} subjects")
    leaves = _strings(doc, "cgroup")
    if len(leaves) > 16 or any(not 0 < len(leaf) <= 256 for leaf in leaves):
        raise ControlError("cgroup: at most 16 leaf names of 1..256 characters")
    identity = ProcessIdentity(
        _int(doc, "start_time", 0, 2**63 - 1) if "start_time" in doc else 0, leaves
    )
    return AddWatch(
        watch,
        _int(doc, "pid", 1, 2**31 - 1),
        label,
        tuple(_subject(i, s) for i, s in enumerate(subjects)),
        identity,
    )
