"""File attributes on event lines: the pure part (rendering, last known states, bounds).

A subject with `attributes` (or `hash`) gets, on the event lines of regular files, the
file's state right after the event and its last known state (docs/logging.md)::

    ..."isDir":false,"tags":{},"sha256":"9f86...","size":4,"mode":"0644","uid":0,"gid":0,
    "mtime":"2026-12-01T13:00:00.123456Z","previous":{"sha256":"...","size":0,...}}

- The fields after the event are absent when there is no regular file at the path any more
  (DELETE, MOVEDFROM, replaced by a directory or symlink).
- `previous` is the state this watch last reported for the path. For the first event of a
  path since the watch became active it is the path's entry in the subject's stored
  baseline (`first_previous`, looked up by the hash worker; the baseline's entries and the
  event records both name a file by its logical path: the configured path, symlinks in it
  not resolved, plus the names below it), when the subject has one, the entry is a
  regular file and it was stored before the event. Absent otherwise: no baseline entry, a
  path reported as gone since, or a watch whose `LastKnown` had to forget a path (it is
  bounded), since from then on a baseline entry may be older than what the watch last
  reported.
- `hashSkipped` replaces `sha256` when the subject asks for a hash that was not computed,
  with the reason: over the size cap, the file changed while it was read, or could not be
  read; or the file was not read at all (the hash backlog was full, the container's root
  could not be opened): then `hashSkipped` (`attributesSkipped` for a subject without hash)
  is the only field after the event.

`mode` is the permission bits in octal (with setuid, setgid and sticky: "4755"), `mtime`
RFC 3339 UTC with microseconds like `time`.
"""

from __future__ import annotations

import json
import stat
from collections import OrderedDict

import attrs

from libs.rootfs.reader import FileState, NotRegular
from services.fimd.lines import format_time

#: Paths one watch remembers the last state of, and their bytes (plus ENTRY_OVERHEAD each).
MAX_KNOWN = 4096
MAX_KNOWN_BYTES = 1 << 20
ENTRY_OVERHEAD = 160


def _fields(state: FileState, with_hash: bool) -> list[str]:
    out = []
    if with_hash:
        if state.sha256:
            out.append(f'"sha256":"{state.sha256}"')
        elif state.skipped:
            out.append(f'"hashSkipped":{json.dumps(state.skipped, ensure_ascii=True)}')
    out += [
        f'"size":{state.size}',
        f'"mode":"{stat.S_IMODE(state.mode):04o}"',
        f'"uid":{state.uid}',
        f'"gid":{state.gid}',
        f'"mtime":"{format_time(state.mtime_ns)}"',
    ]
    return out


@attrs.frozen
class Unread:
    """The file of an event was not read at all: `reason` (the hash backlog was full, the
    container's root could not be opened)."""

    reason: str


#: The state after an event: read (a regular file or not), or not read.
After = FileState | NotRegular | Unread


def render(after: After, previous: FileState | None, *, with_hash: bool) -> str:
    """The JSON members (each after a comma) for an event line; "" when there is nothing."""
    if isinstance(after, FileState):
        parts = _fields(after, with_hash)
    elif isinstance(after, Unread):
        key = "hashSkipped" if with_hash else "attributesSkipped"
        parts = [f'"{key}":{json.dumps(after.reason, ensure_ascii=True)}']
    else:
        parts = []
    if previous is not None:
        parts.append('"previous":{' + ",".join(_fields(previous, with_hash)) + "}")
    return "".join("," + part for part in parts)


class LastKnown:
    """The last state reported per path of one watch, least recently used first out, at
    most MAX_KNOWN paths and MAX_KNOWN_BYTES; `evicted` counts what it had to forget. A
    path reported as no regular file any more is remembered as such (`None`), so that it
    is known to have been reported (`knows`)."""

    def __init__(self, max_entries: int = MAX_KNOWN, max_bytes: int = MAX_KNOWN_BYTES) -> None:
        self._states: OrderedDict[bytes, FileState | None] = OrderedDict()
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._states)

    def get(self, path: bytes) -> FileState | None:
        return self._states.get(path)

    def knows(self, path: bytes) -> bool:
        """The watch reported this path (as a file or as gone) and still remembers it."""
        return path in self._states

    def update(self, path: bytes, after: After) -> FileState | None:
        """Records the state after an event; returns the previous one. An unread path keeps
        its last known state."""
        if isinstance(after, Unread):
            return self._states.get(path)
        known = path in self._states
        previous = self._states.pop(path, None)
        if known:
            self._bytes -= len(path) + ENTRY_OVERHEAD
        self._remember(path, after if isinstance(after, FileState) else None)
        return previous

    def _remember(self, path: bytes, state: FileState | None) -> None:
        cost = len(path) + ENTRY_OVERHEAD
        if cost > self._max_bytes:
            self.evicted += 1
            return
        while self._states and (
            len(self._states) >= self._max_entries or self._bytes + cost > self._max_bytes
        ):
            old, _ = self._states.popitem(last=False)
            self._bytes -= len(old) + ENTRY_OVERHEAD
            self.evicted += 1
        self._states[path] = state
        self._bytes += cost


def first_previous(known: LastKnown, path: bytes, stored: FileState | None) -> FileState | None:
    """`previous` for an event whose path `known` does not remember: the stored baseline's
    state, unless the watch has forgotten paths (that state may be older than one it
    reported since)."""
    if known.knows(path) or known.evicted:
        return None
    return stored
