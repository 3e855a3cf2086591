"""The watch configuration fimd hands to one fimnotify process.

Contract between fimd (writer) and fimnotify (reader):

* fimd serialises a `WatchConfig` with `dumps` and either writes the JSON document to the
  child's stdin (default, then closes stdin) or passes ``--config FILE``; it spawns
  ``python -m services.fimnotify`` (see ``services/fimnotify/__main__.py`` for the CLI).
* JSON keys are the attribute names below (snake_case). Unknown keys are rejected, so a
  typo in fimd never silently disables a feature.
* `loads` validates everything and raises `ConfigError` with a message naming the offending
  field; nothing is coerced silently.

Field semantics follow the FimWatcher contract (``shared/DESIGN.md``); the exact watch-tree
semantics (``max_depth``, ``ignore``, ``only_dir``, ``follow_move``) are documented in
``services/fimnotify/tree.py``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

from libs.fimnotify_api.events import EventName

#: POSIX message queue names: one leading slash, no other slash (mq_overview(7)).
_QUEUE_NAME = re.compile(r"^/[A-Za-z0-9._:-]{1,250}$")

#: Upper bound for `SubjectConfig.max_depth`; deeper trees are far beyond PATH_MAX anyway.
MAX_DEPTH_LIMIT = 4096


class ConfigError(ValueError):
    """The configuration is malformed; the message names the field and the reason."""


def _validate_path(_inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value:
        raise ConfigError(f"{attribute.name}: at least one path is required")
    for path in value:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(f"{attribute.name}: {path!r} is not an absolute path")
        if "\x00" in path:
            raise ConfigError(f"{attribute.name}: {path!r} contains a NUL byte")


def _validate_events(
    _inst: object, attribute: attrs.Attribute[Any], value: tuple[EventName, ...]
) -> None:
    if not value:
        raise ConfigError(f"{attribute.name}: at least one event name is required")
    for name in value:
        if not isinstance(name, EventName):
            raise ConfigError(f"{attribute.name}: {name!r} is not an event name")


def _validate_ignore(
    _inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    for pattern in value:
        if not isinstance(pattern, str) or not pattern or "/" in pattern or "\x00" in pattern:
            raise ConfigError(
                f"{attribute.name}: {pattern!r} must be a non-empty glob on one path "
                "component (no '/')"
            )


def _validate_depth(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DEPTH_LIMIT:
        raise ConfigError(f"{attribute.name}: {value!r} must be an integer in 0..{MAX_DEPTH_LIMIT}")


def _validate_tags(_inst: object, attribute: attrs.Attribute[Any], value: dict[str, str]) -> None:
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise ConfigError(f"{attribute.name}: {key!r}: {val!r} must map strings to strings")


def _to_events(value: Any) -> tuple[EventName, ...]:
    """Accepts a list of names as found in JSON; unknown names raise ConfigError."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"events: expected a list of event names, got {value!r}")
    out = []
    for name in value:
        try:
            out.append(EventName(name))
        except ValueError:
            known = ", ".join(e.value for e in EventName)
            raise ConfigError(
                f"events: unknown event name {name!r}; expected one of: {known}"
            ) from None
    return tuple(out)


def _to_strings(value: Any) -> tuple[str, ...]:
    """A JSON list of strings; a bare string is an error, not a tuple of characters."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def _to_tags(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"tags: expected an object of strings, got {value!r}")
    return dict(value)


@attrs.frozen
class SubjectConfig:
    """One FimWatcher subject, as fimnotify applies it (paths are inside the container)."""

    paths: tuple[str, ...] = attrs.field(validator=_validate_path)
    events: tuple[EventName, ...] = attrs.field(validator=_validate_events)
    ignore: tuple[str, ...] = attrs.field(default=(), validator=_validate_ignore)
    only_dir: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    recursive: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: With `recursive`: directory levels below each path that are watched; 0 = unlimited.
    max_depth: int = attrs.field(default=0, validator=_validate_depth)
    follow_move: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: Not sent per event: the queue reader resolves them from the subject index
    #: (`libs.fimnotify_api.wire.tags_for`).
    tags: dict[str, str] = attrs.field(factory=dict, validator=_validate_tags)


def _validate_subjects(
    _inst: object, attribute: attrs.Attribute[Any], value: tuple[SubjectConfig, ...]
) -> None:
    if not value:
        raise ConfigError(f"{attribute.name}: at least one subject is required")
    if len(value) > 0xFFFF:
        raise ConfigError(f"{attribute.name}: at most 65535 subjects (wire format limit)")


def _validate_queue(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _QUEUE_NAME.match(value):
        raise ConfigError(
            f"{attribute.name}: {value!r} is not a POSIX message queue name like '/fimk8s.abc'"
        )


def _validate_pid(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{attribute.name}: {value!r} must be a positive host PID")


def _validate_positive(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{attribute.name}: {value!r} must be a positive integer")


def _validate_watch_id(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ConfigError(f"{attribute.name}: must be a non-empty string of at most 256 chars")


def _validate_proc_root(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"{attribute.name}: {value!r} must be an absolute path")


@attrs.frozen
class WatchConfig:
    """Everything one fimnotify process needs: whose root, what to watch, where to send."""

    #: fimd's identifier of this watch; echoed in logs of fimnotify, not on the wire.
    watch_id: str = attrs.field(validator=_validate_watch_id)
    #: Host PID of a process of the target container (its root is ``<proc_root>/<pid>/root``).
    pid: int = attrs.field(validator=_validate_pid)
    #: POSIX mq created by fimd (O_CREAT|O_EXCL); fimnotify opens it write-only, non-blocking.
    queue_name: str = attrs.field(validator=_validate_queue)
    #: Subject index i in wire records refers to ``subjects[i]``.
    subjects: tuple[SubjectConfig, ...] = attrs.field(validator=_validate_subjects)
    #: Where the host's procfs is mounted (fimd may mount it elsewhere).
    proc_root: str = attrs.field(default="/proc", validator=_validate_proc_root)
    #: Records buffered while the queue is full; beyond this they are counted and reported
    #: as a `dropped` record once the queue drains.
    buffer_records: int = attrs.field(default=200_000, validator=_validate_positive)


_converter = cattrs.Converter(forbid_extra_keys=True)


def _strict(kind: type) -> Any:
    """cattrs coerces ("1" -> 1, "yes" -> True); a config from fimd must not be coerced."""

    def hook(value: Any, _type: Any) -> Any:
        if type(value) is not kind:
            raise ConfigError(f"expected {kind.__name__}, got {value!r}")
        return value

    return hook


for _kind in (int, str, bool):
    _converter.register_structure_hook(_kind, _strict(_kind))
_converter.register_structure_hook_func(lambda t: t == dict[str, str], lambda v, _t: _to_tags(v))
_converter.register_structure_hook_func(
    lambda t: t == tuple[EventName, ...], lambda v, _t: _to_events(v)
)
_converter.register_structure_hook_func(
    lambda t: t == tuple[str, ...], lambda v, _t: _to_strings(v)
)


def _innermost(exc: BaseException) -> tuple[BaseException, list[str]]:
    """Digs the innermost error out of cattrs' exception groups, with the field trail."""
    trail: list[str] = []
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
        for note in getattr(exc, "__notes__", []):
            trail.append(str(note).rsplit(" ", 1)[-1])
    return exc, trail


def structure(data: Any) -> WatchConfig:
    """Builds a validated WatchConfig from JSON-like data; raises ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
    try:
        return _converter.structure(data, WatchConfig)
    except ConfigError:
        raise
    except ForbiddenExtraKeysError as exc:
        raise ConfigError(f"unknown keys: {sorted(exc.extra_fields)}") from None
    except ClassValidationError as exc:
        inner, trail = _innermost(exc)
        where = ".".join(trail) or "config"
        if isinstance(inner, ForbiddenExtraKeysError):
            raise ConfigError(f"{where}: unknown keys {sorted(inner.extra_fields)}") from None
        if isinstance(inner, KeyError):
            raise ConfigError(f"{where}: missing required key {inner}") from None
        raise ConfigError(f"{where}: {inner}") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"invalid config: {exc!r}") from None


def unstructure(config: WatchConfig) -> dict[str, Any]:
    """The JSON-ready form of a WatchConfig (event names as strings)."""
    data: dict[str, Any] = _converter.unstructure(config)
    return data


def loads(text: str | bytes) -> WatchConfig:
    """Parses and validates the JSON document fimd writes; raises ConfigError."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config is not valid JSON: {exc}") from None
    return structure(data)


def dumps(config: WatchConfig) -> str:
    """Serialises a WatchConfig to the JSON document `loads` accepts."""
    return json.dumps(unstructure(config), separators=(",", ":"), sort_keys=True)
