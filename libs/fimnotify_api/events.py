"""Event names of the FimWatcher contract (`spec.subjects[].events`).

The names are the user-facing vocabulary; `services/fimnotify` maps them to inotify
masks. Aggregates (`close`, `move`, `all`) are expanded by `expand`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class EventName(enum.StrEnum):
    """One event name a FimWatcher subject may ask for."""

    ACCESS = "access"
    ATTRIB = "attrib"
    CLOSEWRITE = "closewrite"
    CLOSENOWRITE = "closenowrite"
    CLOSE = "close"
    CREATE = "create"
    DELETE = "delete"
    DELETESELF = "deleteself"
    MODIFY = "modify"
    MOVESELF = "moveself"
    MOVEDFROM = "movedfrom"
    MOVEDTO = "movedto"
    MOVE = "move"
    OPEN = "open"
    ALL = "all"


_AGGREGATES: dict[EventName, frozenset[EventName]] = {
    EventName.CLOSE: frozenset({EventName.CLOSEWRITE, EventName.CLOSENOWRITE}),
    EventName.MOVE: frozenset({EventName.MOVEDFROM, EventName.MOVEDTO}),
}

#: The names that stand for exactly one inotify event bit.
PRIMITIVE_EVENTS: frozenset[EventName] = frozenset(EventName) - set(_AGGREGATES) - {EventName.ALL}

ALL_NAMES: tuple[str, ...] = tuple(e.value for e in EventName)


def parse_event_names(names: Iterable[str]) -> frozenset[EventName]:
    """Parses user-supplied names; raises ValueError naming the first unknown one."""
    parsed = set()
    for name in names:
        try:
            parsed.add(EventName(name))
        except ValueError:
            raise ValueError(
                f"unknown event name {name!r}; expected one of: {', '.join(ALL_NAMES)}"
            ) from None
    if not parsed:
        raise ValueError("at least one event name is required")
    return frozenset(parsed)


def expand(names: Iterable[EventName]) -> frozenset[EventName]:
    """Expands aggregates (close, move, all) into primitive event names."""
    out: set[EventName] = set()
    for name in names:
        if name is EventName.ALL:
            return PRIMITIVE_EVENTS
        out |= _AGGREGATES.get(name, {name})
    return frozenset(out)
