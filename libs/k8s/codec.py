"""FimWatcher <-> Kubernetes JSON: the cattrs converter between API dicts and the model.

Input is the plain dict the API returns (kubernetes `CustomObjectsApi`, watch events). The
converter is strict where cattrs is lenient by default, so malformed input raises
`ModelError` with a JSON field path and never KeyError, TypeError or a cattrs exception:

- strings, integers and booleans must have exactly that JSON type (no `str(1)`, no bools as
  ints); lists must be lists and objects must be objects;
- JSON field names are the camelCase forms of the snake_case attributes;
- a missing or null field takes its default, or is reported as required (the API server
  prunes nulls from structural custom resources, so null means absent);
- unknown fields are ignored (ObjectMeta carries many the controller does not use).

Output omits fields equal to their defaults, as Kubernetes would, except in status, its
lastScan and conditions: the controller sends status as a merge patch, where an omitted
field would keep its stale value, and metav1.Condition requires `message`. Only None is
omitted there.
Timestamps are written as RFC 3339 UTC with second precision, like metav1.Time.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from libs.fimnotify_api.events import EventName, parse_event_names
from libs.k8s.errors import ModelError, within
from libs.k8s.model import (
    API_VERSION,
    KIND,
    Condition,
    ConditionStatus,
    FimWatcher,
    FimWatcherStatus,
    ScanStatus,
)
from libs.k8s.selector import SelectorOperator

CONVERTER = cattrs.Converter()

_T = TypeVar("_T")
_Hook = Callable[[Any, Any], Any]

#: Classes written in full (see module docstring): only None-valued fields are omitted.
_FULLY_WRITTEN: frozenset[type] = frozenset({FimWatcherStatus, Condition, ScanStatus})

_JSON_TYPE_NAMES: dict[type, str] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "array",
    dict: "object",
}


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _expect(value: object, kind: type[_T], name: str) -> _T:
    """`value` if it is a `kind` (bool is not an int here), else a ModelError."""
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ModelError(f"must be {name}, got {_json_type(value)}")


def _structure_str(value: object, _: object) -> str:
    return _expect(value, str, "a string")


def _structure_int(value: object, _: object) -> int:
    return _expect(value, int, "an integer")


def _structure_bool(value: object, _: object) -> bool:
    return _expect(value, bool, "a boolean")


def _structure_datetime(value: object, _: object) -> datetime:
    text = _expect(value, str, "an RFC 3339 timestamp string")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ModelError(f"must be an RFC 3339 timestamp, got {text!r}") from None
    if parsed.utcoffset() is None:
        raise ModelError(f"must be an RFC 3339 timestamp with a time zone, got {text!r}")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        raise ModelError(f"must be a timestamp in years 1..9999 in UTC, got {text!r}") from None


def _unstructure_datetime(value: datetime) -> str:
    # isoformat, not strftime: "%Y" does not pad years before 1000 to four digits on glibc.
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def _enum_hook(cls: type[enum.StrEnum]) -> _Hook:
    expected = ", ".join(member.value for member in cls)

    def structure(value: object, _: object) -> enum.StrEnum:
        text = _expect(value, str, "a string")
        try:
            return cls(text)
        except ValueError:
            raise ModelError(f"must be one of: {expected}; got {text!r}") from None

    return structure


def _unstructure_enum(value: enum.StrEnum) -> str:
    return value.value


def _structure_events(value: object, _: object) -> frozenset[EventName]:
    names = _structure_list(value, str)
    try:
        return parse_event_names(names)
    except ValueError as err:
        raise ModelError(str(err)) from None


def _unstructure_events(events: frozenset[EventName]) -> list[str]:
    return sorted(event.value for event in events)


def _structure_list(value: object, item_type: Any) -> list[Any]:
    items = _expect(value, list, "an array")
    structured = []
    for index, item in enumerate(items):
        with within(index):
            structured.append(CONVERTER.structure(item, item_type))
    return structured


def _tuple_hook(tuple_type: Any) -> _Hook:
    (item_type, _ellipsis) = typing.get_args(tuple_type)
    return lambda value, _: tuple(_structure_list(value, item_type))


def _structure_str_map(value: object, _: object) -> dict[str, str]:
    mapping = _expect(value, dict, "an object")
    structured = {}
    for key, item in mapping.items():
        with within(f"[{key}]"):
            structured[_structure_str(key, None)] = _structure_str(item, None)
    return structured


def _attrs_structure_hook(cls: type[Any]) -> _Hook:
    """Structures an attrs class from a JSON object by camelCase name (see module docstring)."""
    fields = attrs.fields(attrs.resolve_types(cls))

    def structure(value: object, _: object) -> Any:
        mapping = _expect(value, dict, "an object")
        kwargs = {}
        for field in fields:
            key = _camel(field.name)
            item = mapping.get(key)
            if item is None:
                if field.default is attrs.NOTHING:
                    raise ModelError("is required", key)
                continue
            with within(key):
                kwargs[field.name] = CONVERTER.structure(item, field.type)
        return cls(**kwargs)

    return structure


def _attrs_unstructure_hook(cls: type[Any]) -> Callable[[Any], Any]:
    full = cls in _FULLY_WRITTEN
    overrides: dict[str, Any] = {
        field.name: override(
            rename=_camel(field.name), omit_if_default=field.default is None or not full
        )
        for field in attrs.fields(attrs.resolve_types(cls))
    }
    return make_dict_unstructure_fn(cls, CONVERTER, **overrides)


def _is_tuple(type_: Any) -> bool:
    return typing.get_origin(type_) is tuple


def _is_str_map(type_: Any) -> bool:
    return typing.get_origin(type_) is Mapping


def _register() -> None:
    CONVERTER.register_structure_hook(str, _structure_str)
    CONVERTER.register_structure_hook(int, _structure_int)
    CONVERTER.register_structure_hook(bool, _structure_bool)
    CONVERTER.register_structure_hook(datetime, _structure_datetime)
    CONVERTER.register_unstructure_hook(datetime, _unstructure_datetime)
    for enum_type in (SelectorOperator, ConditionStatus):
        CONVERTER.register_structure_hook(enum_type, _enum_hook(enum_type))
        CONVERTER.register_unstructure_hook(enum_type, _unstructure_enum)
    CONVERTER.register_structure_hook_factory(attrs.has, _attrs_structure_hook)
    CONVERTER.register_unstructure_hook_factory(attrs.has, _attrs_unstructure_hook)
    CONVERTER.register_structure_hook_factory(_is_tuple, _tuple_hook)
    CONVERTER.register_structure_hook_func(_is_str_map, _structure_str_map)
    CONVERTER.register_unstructure_hook_func(_is_str_map, dict)
    events_type = frozenset[EventName]
    CONVERTER.register_structure_hook_func(lambda t: t == events_type, _structure_events)
    CONVERTER.register_unstructure_hook_func(lambda t: t == events_type, _unstructure_events)


_register()


def _check_type_meta(obj: Mapping[str, object]) -> None:
    """apiVersion and kind may be absent (the caller knows what it listed), never different."""
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        value = obj.get(key, expected)
        if value != expected:
            # Only a string is shown: the repr of a deeply nested value raises RecursionError.
            shown = repr(value) if isinstance(value, str) else _json_type(value)
            raise ModelError(f"must be {expected!r}, got {shown}", key)


def fimwatcher_from_dict(obj: object) -> FimWatcher:
    """Structures and validates a FimWatcher as the API returns it; raises ModelError."""
    _check_type_meta(_expect(obj, dict, "an object"))
    return CONVERTER.structure(obj, FimWatcher)


def fimwatcher_to_dict(watcher: FimWatcher) -> dict[str, Any]:
    """The Kubernetes JSON form of `watcher`, e.g. for create or replace calls."""
    body: dict[str, Any] = CONVERTER.unstructure(watcher)
    return {"apiVersion": API_VERSION, "kind": KIND, **body}


def status_to_dict(status: FimWatcherStatus) -> dict[str, Any]:
    """The body of `status` for the status subresource (every counter written, see above)."""
    body: dict[str, Any] = CONVERTER.unstructure(status)
    return body
