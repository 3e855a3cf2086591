"""The lines fimd writes to stdout: event lines and operational lines, one JSON object each.

Event line (default; one per event name in an inotify event)::

    {"kind":"event","time":"2026-01-02T03:04:05.123456Z","node":"n1","namespace":"shop",
     "pod":"web-0","container":"app","watcher":"shop/myapp-logs","event":"MODIFY",
     "path":"/var/log/app.log","isDir":false,"tags":{"team":"payments"}}

With a `logFormat` template the event line is the rendered template instead
(`services.fimd.logformat`); it has no "kind" unless the template writes one.

Operational line (start, watch added/failed/restarted, overflow, drops, errors)::

    {"kind":"op","time":"...","level":"info"|"warning"|"error","node":"n1","msg":"watch_added",
     ...fields of that message (watcher, namespace, pod, container, reason, count, ...)}

So `kind` tells them apart; a log pipeline routes on `kind == "op"`. Times are RFC 3339 UTC
with microseconds; `time` of an event is when fimnotify read it from inotify. Paths are the
paths inside the container; bytes that are not UTF-8 are written as `\\xNN` escapes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from libs.fimnotify_api.events import EventName
from services.fimd.logformat import Template
from libs.fimnotify_api.masks import IN_ISDIR, names_for

_SECONDS_CACHE: dict[int, str] = {}


def format_time(time_ns: int) -> str:
    """RFC 3339 UTC with microseconds; the seconds part is cached (events come in bursts)."""
    seconds, rest = divmod(time_ns, 1_000_000_000)
    prefix = _SECONDS_CACHE.get(seconds)
    if prefix is None:
        if len(_SECONDS_CACHE) > 64:
            _SECONDS_CACHE.clear()
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _SECONDS_CACHE[seconds] = prefix
    return f"{prefix}.{rest // 1000:06d}Z"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def decode_path(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


# A file name may contain a newline: in a template line it would forge a second line.
_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def escape_control(text: str) -> str:
    """Control characters as \\xNN, so one event is always exactly one line."""
    return text.translate(_CONTROL_ESCAPES)


@attrs.frozen
class Identity:
    """Who an event belongs to: copied onto every line of one watch."""

    node: str
    namespace: str
    pod: str
    container: str
    watcher: str  # "namespace/name" of the FimWatcher

    def fields(self) -> dict[str, str]:
        return {
            "node": self.node,
            "namespace": self.namespace,
            "pod": self.pod,
            "container": self.container,
            "watcher": self.watcher,
        }


def _split(path: str) -> tuple[str, str, str]:
    """(dir, sep, file) so that dir + sep + file == path."""
    head, _, tail = path.rpartition("/")
    if not head:
        return "/", "", tail
    return head, "/", tail


class EventRenderer:
    """Renders the event records of one watch; the per-watch parts are serialised once."""

    def __init__(
        self,
        identity: Identity,
        subject_tags: Sequence[Mapping[str, str]],
        template: Template | None,
    ) -> None:
        self._template = template
        self._tags_json = [_compact(dict(sorted(tags.items()))) for tags in subject_tags]
        # Everything between "time" and "event" is constant for the watch.
        self._middle = _compact(identity.fields())[1:-1]
        self._identity_values = {k: escape_control(v) for k, v in identity.fields().items()}

    def render(self, time_ns: int, mask: int, subject: int, path: bytes) -> list[str]:
        """The lines (each ending in a newline) for one inotify event; raises IndexError
        for a subject index the watch does not have."""
        tags = self._tags_json[subject]
        names = names_for(mask)
        text = decode_path(path)
        is_dir = "true" if mask & IN_ISDIR else "false"
        stamp = format_time(time_ns)
        if self._template is not None:
            return [self._render_template(stamp, n, text, is_dir, tags) for n in names]
        head = f'{{"kind":"event","time":"{stamp}",{self._middle},"event":"'
        tail = f'","path":{_compact(text)},"isDir":{is_dir},"tags":{tags}}}\n'
        return [head + name.upper() + tail for name in names]

    def _render_template(
        self, stamp: str, name: EventName, path: str, is_dir: str, tags: str
    ) -> str:
        assert self._template is not None
        directory, sep, file = _split(path)
        values = {
            "time": stamp,
            "event": name.upper(),
            "path": path,
            "isDir": is_dir,
            "tags": tags,
            "ftype": "directory" if is_dir == "true" else "file",
            "dir": directory,
            "file": file,
            "sep": sep,
        }
        escaped = {k: escape_control(v) for k, v in values.items()}
        return self._template.render({**self._identity_values, **escaped}) + "\n"


def op_line(node: str, msg: str, level: str = "info", /, **fields: Any) -> str:
    """One operational line; `fields` must be JSON-serialisable."""
    record = {
        "kind": "op",
        "time": format_time(time.time_ns()),
        "level": level,
        "node": node,
        "msg": msg,
        **fields,
    }
    return _compact(record) + "\n"
