"""How `kubectl fim events` prints a line: `-o compact` (one readable line per fimd line)
or `-o json` (the line as fimd wrote it). Pure.

Every byte of a line is untrusted: paths and tags come from watched pods and their owners,
and a forged or broken line may hold anything. So every value shown in compact output goes
through `libs.fimlines.neutralise` (control characters, ANSI escapes, line and paragraph
separators and bidirectional formatting characters become visible `\\xNN` / `\\uXXXX`
escapes), and a JSON line is printed only if it holds no such character raw (fimd never
writes one: it escapes them inside strings), else re-escaped. Colours (SGR codes) are added
by this module around neutralised text only, and only when asked (a terminal).

Compact formats (fields of docs/architecture.md, *Lines on fimd's stdout*)::

    TIME NODE EVENT NAMESPACE/POD:CONTAINER PATH[/] [xCOUNT] watcher=NAME [TAG=VALUE ...]
    TIME NODE SUMMARY NAMESPACE/POD:CONTAINER COUNT events in LINES lines over budget BUDGET/s ...
    TIME NODE DRIFT CHANGE NAMESPACE/POD:CONTAINER PATH[/] [changed=FIELDS] [sha256=OLD>NEW]
              watcher=NAME reason=REASON [TAG=VALUE ...]
    TIME NODE SCAN NAMESPACE/POD:CONTAINER scanned=N added=N removed=N changed=N in Ss
              watcher=NAME reason=REASON [new baseline] [truncated] [errors=N]
    TIME NODE OP LEVEL MSG [NAMESPACE/POD:CONTAINER] [KEY=VALUE ...]
    TIME NODE KIND KEY=VALUE ...        (any other kind)
    POD | TEXT                          (a line that is not a JSON object, e.g. a logFormat line;
                                         its seal trailer is left out)

TIME is fimd's `time` to the millisecond (`2026-12-01T13:04:05.123Z`); a directory's path
ends in `/`; a coalesced line shows `xCOUNT`; the watcher's namespace is left out when it is
the event's own. An event line with file attributes shows `sha256=` (the first 12 hex digits;
`OLD>NEW` when `previous` had another), `size=` and `mode=`, or `hashSkipped=`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from libs.auditstream import seal
from libs.fimlines import DRIFT, EVENT, OP, SCAN, SUMMARY, has_unsafe, neutralise, shown_path

RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"
_RED = "\x1b[31m"
_GREEN = "\x1b[32m"
_YELLOW = "\x1b[33m"
_BLUE = "\x1b[34m"
_MAGENTA = "\x1b[35m"
_CYAN = "\x1b[36m"

#: Colour of an event name: created green, gone red, changed yellow, read blue.
EVENT_COLOURS: dict[str, str] = {
    "CREATE": _GREEN,
    "MOVEDTO": _GREEN,
    "DELETE": _RED,
    "DELETESELF": _RED,
    "MOVEDFROM": _RED,
    "MOVESELF": _RED,
    "MODIFY": _YELLOW,
    "CLOSEWRITE": _YELLOW,
    "ATTRIB": _MAGENTA,
    "ACCESS": _BLUE,
    "OPEN": _BLUE,
    "CLOSENOWRITE": _BLUE,
}
LEVEL_COLOURS: dict[str, str] = {"warning": _YELLOW, "error": _RED}

#: Fields the compact form of a kind shows in its own place (not again as KEY=VALUE).
_IDENTITY = ("namespace", "pod", "container")
_SHOWN_ELSEWHERE = frozenset({"kind", "time", "node", "level", "msg", *_IDENTITY})
#: The seal of the tamper-evident stream (libs/auditstream/seal.py): for `kubectl fim
#: verify`, not for reading.
_INTEGRITY = frozenset({"seq", "boot", "kid", "mac"})
#: Hex digits of a SHA-256 shown in compact output (`-o json` has all 64).
HASH_DIGITS = 12
#: A KEY=VALUE list in compact output stops after this many characters (the JSON line has
#: everything: `-o json`).
MAX_EXTRA = 400


class Style:
    """SGR colours when `colour` is true, plain text otherwise."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def __call__(self, code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if self.colour and code and text else text


def text(value: Any) -> str:
    """Any JSON value as neutralised text: strings as they are, others as compact JSON."""
    if isinstance(value, str):
        return neutralise(value)
    return neutralise(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def short_time(value: Any) -> str:
    """`2026-12-01T13:04:05.123456Z` -> `2026-12-01T13:04:05.123Z`; anything else as it is."""
    stamp = text(value)
    if len(stamp) == 27 and stamp[19] == "." and stamp.endswith("Z"):
        return stamp[:23] + "Z"
    return stamp


def who(record: Mapping[str, Any]) -> str:
    """`namespace/pod:container` of a line (the parts it has)."""
    namespace, pod, container = (text(record.get(key, "")) for key in _IDENTITY)
    if not (namespace or pod or container):
        return ""
    where = f"{namespace}/{pod}" if namespace else pod
    return f"{where}:{container}" if container else where


def _watcher(record: Mapping[str, Any]) -> str:
    """The watcher's name, without the namespace when it is the event's own."""
    watcher = text(record.get("watcher", ""))
    namespace = text(record.get("namespace", ""))
    if namespace and watcher.startswith(namespace + "/"):
        return watcher[len(namespace) + 1 :]
    return watcher


def pairs(values: Mapping[str, Any], skip: frozenset[str] = frozenset()) -> str:
    """`key=value` pairs (neutralised, in order), at most MAX_EXTRA characters."""
    out = " ".join(f"{text(k)}={text(v)}" for k, v in values.items() if k not in skip)
    return out if len(out) <= MAX_EXTRA else out[: MAX_EXTRA - 3] + "..."


def _head(record: Mapping[str, Any], style: Style, label: str, colour: str) -> str:
    stamp = style(_DIM, short_time(record.get("time", "")))
    node = style(_CYAN, text(record.get("node", "")))
    return f"{stamp} {node} {style(colour, label)}"


def _event(record: Mapping[str, Any], style: Style) -> str:
    name = text(record.get("event", ""))
    path = shown_path(str(record.get("path", "")), str(record.get("pathBytes", "")))
    if record.get("isDir") is True:
        path += "/"
    parts = [_head(record, style, f"{name:<12}", EVENT_COLOURS.get(name, "")), who(record)]
    parts.append(style(_BOLD, path))
    if "count" in record:
        parts.append(f"x{text(record['count'])}")
    parts.extend(_attributes(record))
    parts.append(f"watcher={_watcher(record)}")
    tags = record.get("tags")
    if isinstance(tags, dict) and tags:
        parts.append(pairs(tags))
    return " ".join(parts)


def _digest(value: Any) -> str:
    return text(value)[:HASH_DIGITS] if isinstance(value, str) else ""


def _hash_change(before: Any, after: Any) -> str:
    """`sha256=OLD>NEW`, `sha256=NEW` or "" from two attribute objects (or None)."""
    old = _digest(before.get("sha256")) if isinstance(before, dict) else ""
    new = _digest(after.get("sha256")) if isinstance(after, dict) else ""
    if old and new and old != new:
        return f"sha256={old}>{new}"
    return f"sha256={new or old}" if new or old else ""


def _attributes(record: Mapping[str, Any]) -> list[str]:
    """The file attribute fields of an event line, shortened."""
    parts = []
    if digest := _hash_change(record.get("previous"), record):
        parts.append(digest)
    for key in ("size", "mode", "hashSkipped", "attributesSkipped"):
        if key in record:
            parts.append(f"{key}={text(record[key])}")
    return parts


def _drift(record: Mapping[str, Any], style: Style) -> str:
    change = text(record.get("change", "?"))
    colour = {"ADDED": _GREEN, "REMOVED": _RED}.get(change, _YELLOW)
    path = shown_path(str(record.get("path", "")), str(record.get("pathBytes", "")))
    if record.get("type") == "dir":
        path += "/"
    parts = [_head(record, style, f"DRIFT {change:<6}", colour), who(record)]
    parts.append(style(_BOLD, path))
    changed = record.get("changed")
    if isinstance(changed, list) and changed:
        parts.append("changed=" + ",".join(text(c) for c in changed))
    if digest := _hash_change(record.get("before"), record.get("after")):
        parts.append(digest)
    parts.append(f"watcher={_watcher(record)} reason={text(record.get('reason', ''))}")
    tags = record.get("tags")
    if isinstance(tags, dict) and tags:
        parts.append(pairs(tags))
    return " ".join(parts)


def _scan(record: Mapping[str, Any], style: Style) -> str:
    counts = " ".join(
        f"{key}={text(record.get(key, '?'))}" for key in ("scanned", "added", "removed", "changed")
    )
    parts = [_head(record, style, f"{'SCAN':<12}", _MAGENTA), who(record), counts]
    parts.append(f"in {text(record.get('durationSeconds', '?'))}s")
    parts.append(f"watcher={_watcher(record)} reason={text(record.get('reason', ''))}")
    if record.get("baseline") is False:
        parts.append("new baseline")
    if record.get("truncated") is True:
        parts.append(style(_YELLOW, "truncated"))
    for key in ("errors", "driftLinesOmitted"):
        if record.get(key):
            parts.append(style(_RED, f"{key}={text(record[key])}"))
    return " ".join(parts)


def _summary(record: Mapping[str, Any], style: Style) -> str:
    parts = [
        _head(record, style, f"{'SUMMARY':<12}", _YELLOW),
        who(record),
        f"{text(record.get('count', '?'))} events in {text(record.get('lines', '?'))} lines "
        f"over budget {text(record.get('budget', '?'))}/s",
    ]
    events = record.get("events")
    if isinstance(events, dict) and events:
        parts.append(pairs(events))
    top = record.get("paths")
    if isinstance(top, list) and top and isinstance(top[0], dict):
        first = top[0]
        path = shown_path(str(first.get("path", "")), str(first.get("pathBytes", "")))
        parts.append(f"busiest={path} x{text(first.get('count', '?'))}")
    parts.append(f"watcher={_watcher(record)}")
    return " ".join(parts)


def _op(record: Mapping[str, Any], style: Style) -> str:
    level = text(record.get("level", ""))
    colour = LEVEL_COLOURS.get(level, _DIM)
    label = f"OP {level} {text(record.get('msg', ''))}"
    parts = [_head(record, style, label, colour)]
    if where := who(record):
        parts.append(where)
    if extra := pairs(record, _SHOWN_ELSEWHERE | _INTEGRITY):
        parts.append(extra)
    return " ".join(parts)


def _other(record: Mapping[str, Any], style: Style) -> str:
    parts = [_head(record, style, f"{text(record.get('kind', '?')).upper():<12}", _MAGENTA)]
    if where := who(record):
        parts.append(where)
    if extra := pairs(record, _SHOWN_ELSEWHERE | _INTEGRITY):
        parts.append(extra)
    return " ".join(parts)


_FORMS: dict[str, Callable[[Mapping[str, Any], Style], str]] = {
    EVENT: _event,
    SUMMARY: _summary,
    OP: _op,
    DRIFT: _drift,
    SCAN: _scan,
}


def compact(record: Mapping[str, Any] | None, line: str, source: str, style: Style) -> str:
    """The compact line (no line break) of one fimd line: `record` is its JSON object (None
    for a line that is not one), `line` its text, `source` the fimd pod it came from."""
    if record is None:
        sealed = seal.parse(line.encode("utf-8", "surrogateescape"))
        body = sealed.body.decode("utf-8", "replace") if sealed is not None else line
        return f"{style(_DIM, neutralise(source) + ' |')} {neutralise(body)}"
    kind = record.get("kind")
    form = _FORMS.get(kind, _other) if isinstance(kind, str) else _other
    return form(record, style)


def json_line(line: str) -> str:
    """A JSON line for `-o json`: `line` itself (fimd's bytes, which `kubectl fim verify`
    checks), unless it holds a character no fimd line holds raw; then those are escaped as
    `\\uXXXX` (the same JSON value where they were inside strings)."""
    if not has_unsafe(line):
        return line
    return "".join(f"\\u{ord(c):04x}" if has_unsafe(c) else c for c in line)
