"""inotify mask bits and their mapping to the FimWatcher event names (libs/k8s/events.py)."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from libs.fimnotify_api.events import EventName, expand

IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_MASK_ADD = 0x20000000
IN_ISDIR = 0x40000000

#: One inotify bit per primitive event name.
EVENT_BITS: dict[EventName, int] = {
    EventName.ACCESS: IN_ACCESS,
    EventName.ATTRIB: IN_ATTRIB,
    EventName.CLOSEWRITE: IN_CLOSE_WRITE,
    EventName.CLOSENOWRITE: IN_CLOSE_NOWRITE,
    EventName.CREATE: IN_CREATE,
    EventName.DELETE: IN_DELETE,
    EventName.DELETESELF: IN_DELETE_SELF,
    EventName.MODIFY: IN_MODIFY,
    EventName.MOVESELF: IN_MOVE_SELF,
    EventName.MOVEDFROM: IN_MOVED_FROM,
    EventName.MOVEDTO: IN_MOVED_TO,
    EventName.OPEN: IN_OPEN,
}

#: Bits the engine always needs on a directory to maintain the tree (not all are reported).
TREE_BITS = IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF

_ORDERED = sorted(EVENT_BITS.items(), key=lambda item: item[1])


def mask_for(names: Iterable[EventName]) -> int:
    """The inotify mask for user-facing names, aggregates (close, move, all) expanded."""
    mask = 0
    for name in expand(names):
        mask |= EVENT_BITS[name]
    return mask


@functools.lru_cache(maxsize=1024)
def names_for(mask: int) -> tuple[EventName, ...]:
    """The primitive event names set in an inotify mask, in bit order (cached: it runs for
    every event, and only a few distinct masks occur)."""
    return tuple(name for name, bit in _ORDERED if mask & bit)
