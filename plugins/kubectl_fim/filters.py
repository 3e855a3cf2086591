"""Which of fimd's lines `kubectl fim events` shows. Pure.

- `--namespace/-n NS` (repeatable): lines about pods of these namespaces; default all.
- `--watcher NAME` (repeatable): `NAME` matches a FimWatcher of that name in any namespace
  shown, `NS/NAME` exactly that one.
- `--pod PATTERN` (repeatable): pod names, shell-style globs (`web-*`).
- `--event NAMES` (repeatable, comma-separated): the FimWatcher vocabulary (`modify`,
  `create`, ..., and the aggregates `close`, `move`, `all`) and the drift changes (`added`,
  `removed`, `changed`), case-insensitive. An event line matches its `event`, a summary line
  any event it counts, a drift line its `change`; other lines never match.
- Kinds (`--ops none|loud|all`, default loud): event and summary lines always. Any other
  line (operational lines, and kinds of newer fimds such as drift or scan lines) by its
  `level`: with `loud`, a line of level info or debug is hidden and every other one shown
  (warnings and errors are losses, overflows, gaps: a monitor's own failures are evidence
  too; a line without a level, like a drift line, is evidence); `all` shows every line;
  `none` hides operational lines and every line with a level.
- A line that is not a JSON object (a `logFormat` template line, a traceback) is shown only
  when no namespace, watcher, pod or event filter is set: it cannot be matched.

A line without a field that a filter is about does not match that filter (an operational line
about the whole node has no namespace, so `-n shop` hides it).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from libs.fimlines import DRIFT, EVENT, OP, SUMMARY
from libs.fimnotify_api.events import expand, parse_event_names

#: The `change` of drift lines, as `--event` takes them.
DRIFT_CHANGES = ("added", "removed", "changed")
#: Levels of operational lines shown by default.
LOUD_LEVELS = frozenset({"warning", "error"})


class FilterError(ValueError):
    """A filter argument is not valid; the message says which and why."""


@dataclass(frozen=True)
class Filter:
    namespaces: frozenset[str] = frozenset()
    #: (namespace or "", name) pairs.
    watchers: frozenset[tuple[str, str]] = frozenset()
    pods: tuple[str, ...] = ()
    #: Upper-case event names (EVENT lines' `event`); empty: any.
    events: frozenset[str] = frozenset()
    #: "none", "loud" (warning and error, the default) or "all".
    ops: str = "loud"

    @property
    def narrowed(self) -> bool:
        """Whether any namespace, watcher, pod or event filter is set."""
        return bool(self.namespaces or self.watchers or self.pods or self.events)

    def matches(self, record: Mapping[str, Any] | None) -> bool:
        """Whether to show a line (`record` is its JSON object, None if it is not one)."""
        if record is None:
            return not self.narrowed
        return self._kind(record) and self._identity(record) and self._event(record)

    def _kind(self, record: Mapping[str, Any]) -> bool:
        kind = record.get("kind")
        if kind in (EVENT, SUMMARY) or self.ops == "all":
            return True
        level = record.get("level")
        if self.ops == "none":
            return kind != OP and level is None
        return level is None or level in LOUD_LEVELS

    def _identity(self, record: Mapping[str, Any]) -> bool:
        namespace = record.get("namespace")
        if self.namespaces and namespace not in self.namespaces:
            return False
        if self.watchers and not self._watcher(record.get("watcher")):
            return False
        pod = record.get("pod")
        return not self.pods or (
            isinstance(pod, str) and any(fnmatch.fnmatchcase(pod, p) for p in self.pods)
        )

    def _watcher(self, watcher: Any) -> bool:
        if not isinstance(watcher, str):
            return False
        namespace, _, name = watcher.rpartition("/")
        return any(name == want and ns in ("", namespace) for ns, want in self.watchers)

    def _event(self, record: Mapping[str, Any]) -> bool:
        if not self.events:
            return True
        kind = record.get("kind")
        if kind == EVENT:
            return record.get("event") in self.events
        if kind == SUMMARY:
            counted = record.get("events")
            return isinstance(counted, dict) and any(name in self.events for name in counted)
        if kind == DRIFT:
            return record.get("change") in self.events
        return False


def _split(values: Iterable[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def event_names(values: Iterable[str]) -> frozenset[str]:
    """`--event` values (comma-separated, any case, aggregates expanded) as the upper-case
    names of event lines; raises FilterError naming an unknown one."""
    names = [name.lower() for name in _split(values)]
    changes = {name.upper() for name in names if name in DRIFT_CHANGES}
    names = [name for name in names if name not in DRIFT_CHANGES]
    if not names:
        return frozenset(changes)
    try:
        parsed = parse_event_names(names)
    except ValueError as error:
        raise FilterError(f"--event: {error}; or a drift change: added, removed, changed") from None
    return frozenset(changes | {name.value.upper() for name in expand(parsed)})


def watcher_names(values: Iterable[str]) -> frozenset[tuple[str, str]]:
    """`--watcher` values as (namespace or "", name); raises FilterError for an empty part."""
    out = set()
    for value in _split(values):
        namespace, slash, name = value.rpartition("/")
        if not name or (slash and not namespace):
            raise FilterError(f"--watcher {value!r}: expected NAME or NAMESPACE/NAME")
        out.add((namespace, name))
    return frozenset(out)


def build(
    namespaces: Iterable[str] = (),
    watchers: Iterable[str] = (),
    pods: Iterable[str] = (),
    events: Iterable[str] = (),
    ops: str = "loud",
) -> Filter:
    """The filter of the command-line values; raises FilterError for a bad one."""
    if ops not in ("none", "loud", "all"):
        raise FilterError(f"ops must be none, loud or all, not {ops!r}")
    return Filter(
        namespaces=frozenset(_split(namespaces)),
        watchers=watcher_names(watchers),
        pods=tuple(_split(pods)),
        events=event_names(events),
        ops=ops,
    )
