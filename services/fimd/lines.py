"""The lines fimd writes to stdout: event lines and operational lines, one JSON object each.

Event line (default; one per event name in an inotify event)::

    {"kind":"event","time":"2026-01-02T03:04:05.123456Z","node":"n1","namespace":"shop",
     "pod":"web-0","container":"app","watcher":"shop/myapp-logs","event":"MODIFY",
     "path":"/var/log/app.log","isDir":false,"tags":{"team":"payments"}}

With a `logFormat` template the event line is the rendered template instead
(`services.fimd.logformat`); it has no "kind" unless the template writes one.

Coalesced event line (a subject with `coalesce`; `services.fimd.volume`): the event line
plus `count` (occurrences merged, >= 1), `first` and `last` (times of the first and the
last of them); `time` is `first`. Every line of a coalescing subject has the three fields;
a line without them stands for one event. In a template, `{count}` `{first}` `{last}` are
these values, and for a single event `1` and its time twice::

    {"kind":"event","time":"...01.000012Z",...,"event":"MODIFY","path":"/var/lib/app/state.db",
     "isDir":false,"tags":{},"count":3412,"first":"...01.000012Z","last":"...01.998730Z"}

Summary line (the watch went over its line budget in one interval; always JSON, also for
a watch with a template, like operational lines): stands for `lines` event lines that were
not written, holding `count` events from `first` to `last`::

    {"kind":"summary","time":"...","node":"n1","namespace":"shop","pod":"web-0",
     "container":"app","watcher":"shop/myapp-logs","first":"...","last":"...","budget":100,
     "lines":48211,"count":50000,"events":{"MODIFY":25000,"OPEN":25000},
     "paths":[{"path":"/var/lib/app/state.db","count":41000},...],"distinctPaths":10,
     "pathsComplete":true}

`events` is the count per event kind (they sum to `count`), `paths` the (at most 10) paths
with the most events, highest first (with `pathBytes` for a non-UTF-8 path),
`distinctPaths` the number of different paths; `pathsComplete` is false when the summary
stopped telling paths apart (beyond 1024 paths or 256 KiB of them): then `distinctPaths`
and `paths` cover only those it tracked, `count` and `events` still every event. So the
events of a watch are exactly: one per event line without `count`, plus the `count` of
every event and summary line, plus the `count` of its `events_dropped` operational lines.

Operational line (start, watch added/failed/restarted, overflow, drops, errors)::

    {"kind":"op","time":"...","level":"info"|"warning"|"error","node":"n1","msg":"watch_added",
     ...fields of that message (watcher, namespace, pod, container, reason, count, ...)}

So `kind` tells them apart (`event`, `summary`, `op`); a log pipeline routes on it.
Times are RFC 3339 UTC with microseconds; `time` of an event is when fimnotify read it from inotify.

Every line is exactly one line of valid JSON (or of the template), whatever bytes a file name
holds, which the watched pod chooses:

- Paths are the paths inside the container. `path` is text: the path decoded as UTF-8, each
  invalid byte sequence replaced by U+FFFD. When the raw path is not valid UTF-8 the line
  also has `pathBytes`, the base64 (RFC 4648, padded) of the raw bytes; it is absent
  otherwise. So the raw path is `base64decode(pathBytes)` if present, else `path` encoded as
  UTF-8: a file named `\\xff` (four characters) and one named by the byte 0xFF differ.
- Strings are JSON strings with `"`, `\\` and the C0 controls escaped as JSON requires, and
  also DEL, the C1 controls U+0080..U+009F (NEL U+0085 among them), U+2028, U+2029 and the
  bidirectional formatting characters as `\\uXXXX` (see `services.fimd.logformat`): a line
  holds no character that any line splitter (`str.splitlines()`, JavaScript, terminals)
  takes for a line break. Other non-ASCII text is written as UTF-8.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from libs.fimlines import raw_path as raw_path  # noqa: PLC0414 (re-exported: split_path's inverse)
from libs.fimnotify_api.masks import IN_ISDIR, names_for
from services.fimd.logformat import JSON_EXTRA_ESCAPES, Template, escape_value
from services.fimd.volume import Line, Summary

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


_JSON_EXTRA = re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(JSON_EXTRA_ESCAPES)) + "]")


def _compact(value: Any) -> str:
    """Compact JSON, UTF-8 text raw except for the characters of JSON_EXTRA_ESCAPES."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if _JSON_EXTRA.search(text) is None:
        return text
    return text.translate(JSON_EXTRA_ESCAPES)


def split_path(raw: bytes) -> tuple[str, str]:
    """(`path`, `pathBytes`) of a raw path: its UTF-8 text (U+FFFD for each invalid byte
    sequence), and "" when `raw` is valid UTF-8, else the base64 of `raw`."""
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode("ascii")


def decode_path(raw: bytes) -> str:
    """The `path` text of a raw path (lossy when not UTF-8: see path_fields)."""
    return raw.decode("utf-8", "replace")


def path_fields(raw: bytes, key: str = "path") -> dict[str, str]:
    """`{key: text}` plus `{key + "Bytes": base64}` when `raw` is not UTF-8, for op lines."""
    text, b64 = split_path(raw)
    return {key: text, key + "Bytes": b64} if b64 else {key: text}


def escape_control(text: str) -> str:
    """`text` escaped like a template value (`services.fimd.logformat.escape_value`), so it
    is always exactly one line and cannot close a quoted field."""
    return escape_value(text)


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
    """(dir, sep, file) so that dir + sep + file == path; dir is "/" for "/name"."""
    head, slash, tail = path.rpartition("/")
    if not head:
        return slash, "", tail
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
        self._identity_values = identity.fields()

    def render(
        self, time_ns: int, mask: int, subject: int, path: bytes, extra: str = ""
    ) -> list[str]:
        """The lines (each ending in a newline) for one inotify event; raises IndexError
        for a subject index the watch does not have. `extra`: JSON members of the file's
        attributes (`services.fimd.attributes`), appended to JSON lines only."""
        tags = self._tags_json[subject]
        names = names_for(mask)
        text, path_bytes = split_path(path)
        is_dir = "true" if mask & IN_ISDIR else "false"
        stamp = format_time(time_ns)
        if self._template is not None:
            template = self._template
            values = self._template_values(stamp, text, path_bytes, is_dir, tags)
            return [template.render({**values, "event": n.upper()}) + "\n" for n in names]
        head = f'{{"kind":"event","time":"{stamp}",{self._middle},"event":"'
        more = f',"pathBytes":"{path_bytes}"' if path_bytes else ""
        tail = f'","path":{_compact(text)}{more},"isDir":{is_dir},"tags":{tags}{extra}}}\n'
        return [head + name.upper() + tail for name in names]

    def render_line(self, line: Line) -> str:
        """The line (ending in a newline) of one `volume.Line`: a coalesced one carries
        count/first/last, any other is exactly what `render` writes for its event."""
        tags = self._tags_json[line.subject]
        text, path_bytes = split_path(line.path)
        is_dir = "true" if line.is_dir else "false"
        stamp = format_time(line.first_ns)
        last = format_time(line.last_ns)
        if self._template is not None:
            values = self._template_values(
                stamp, text, path_bytes, is_dir, tags, count=line.count, last=last
            )
            return self._template.render({**values, "event": line.event}) + "\n"
        extra = f',"pathBytes":"{path_bytes}"' if path_bytes else ""
        volume = ""
        if line.coalesced:
            volume = f',"count":{line.count},"first":"{stamp}","last":"{last}"'
        return (
            f'{{"kind":"event","time":"{stamp}",{self._middle},"event":"{line.event}",'
            f'"path":{_compact(text)}{extra},"isDir":{is_dir},"tags":{tags}{volume}{line.extra}}}\n'
        )

    def render_summary(self, summary: Summary, now_ns: int) -> str:
        """The summary line of a budget interval (JSON, whatever the template)."""
        paths = []
        for path, count in summary.top_paths:
            fields: dict[str, object] = dict(path_fields(path))
            fields["count"] = count
            paths.append(fields)
        record = {
            "kind": "summary",
            "time": format_time(now_ns),
            **self._identity_values,
            "first": format_time(summary.first_ns),
            "last": format_time(summary.last_ns),
            "budget": summary.budget,
            "lines": summary.lines,
            "count": summary.count,
            "events": dict(summary.by_event),
            "paths": paths,
            "distinctPaths": summary.distinct_paths,
            "pathsComplete": summary.paths_complete,
        }
        return _compact(record) + "\n"

    def _template_values(
        self,
        stamp: str,
        path: str,
        path_bytes: str,
        is_dir: str,
        tags: str,
        *,
        count: int = 1,
        last: str = "",
    ) -> dict[str, str]:
        """The raw placeholder values but {event} (the template escapes them)."""
        directory, sep, file = _split(path)
        return {
            **self._identity_values,
            "time": stamp,
            "path": path,
            "pathBytes": path_bytes,
            "isDir": is_dir,
            "tags": tags,
            "ftype": "directory" if is_dir == "true" else "file",
            "dir": directory,
            "file": file,
            "sep": sep,
            "count": str(count),
            "first": stamp,
            "last": last or stamp,
        }


def record_line(kind: str, identity: Identity, fields: Mapping[str, Any]) -> str:
    """A line of `kind` (drift, scan) about one watch: kind, time, its identity, `fields`."""
    record = {"kind": kind, "time": format_time(time.time_ns()), **identity.fields(), **fields}
    return _compact(record) + "\n"


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
