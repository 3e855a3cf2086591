"""The one subject validation: every bound accepted at its limit, refused one beyond it."""

from __future__ import annotations

from typing import Any

import pytest

from libs.fimnotify_api.events import ALL_NAMES, EventName
from libs.fimnotify_api.subject import (
    MAX_DEPTH,
    MAX_IGNORE,
    MAX_IGNORE_BYTES,
    MAX_PATH_BYTES,
    MAX_PATHS,
    MAX_TAG_KEY_BYTES,
    MAX_TAG_VALUE_BYTES,
    MAX_TAGS,
    SubjectConfig,
    SubjectError,
    check_ignore,
    check_path,
    check_subject,
)


def check(**changes: Any) -> None:
    fields: dict[str, Any] = {"paths": ["/data"], "events": ["all"]}
    fields.update(changes)
    check_subject(**fields)


def path_of(size: int, char: str = "a") -> str:
    """An absolute path of exactly `size` UTF-8 bytes (components of at most 255 bytes)."""
    width = len(char.encode())
    parts, left = [], size
    while left > 0:
        take = min(left, 200)  # "/" + component
        n = max(0, (take - 1) // width)
        pad = take - 1 - n * width
        parts.append("/" + char * n + "b" * pad)
        left -= take
    path = "".join(parts)
    assert len(path.encode()) == size
    return path


# (name, fields at the limit, fields one beyond, the field the error names)
BOUNDS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("no paths", {"paths": ["/a"]}, {"paths": []}, "paths"),
    (
        "path count",
        {"paths": [f"/p{i}" for i in range(MAX_PATHS)]},
        {"paths": [f"/p{i}" for i in range(MAX_PATHS + 1)]},
        "paths",
    ),
    (
        "path bytes",
        {"paths": ["/a", path_of(MAX_PATH_BYTES)]},
        {"paths": ["/a", path_of(MAX_PATH_BYTES + 1)]},
        "paths[1]",
    ),
    (
        "path bytes, multi-byte",
        {"paths": [path_of(MAX_PATH_BYTES, "é")]},
        {"paths": [path_of(MAX_PATH_BYTES + 1, "é")]},
        "paths[0]",
    ),
    ("no events", {"events": ["create"]}, {"events": []}, "events"),
    (
        "event count",
        {"events": list(ALL_NAMES)},
        {"events": [*ALL_NAMES, "all"]},
        "events",
    ),
    ("no ignore", {"ignore": []}, {"ignore": [""]}, "ignore[0]"),
    (
        "ignore count",
        {"ignore": [f"x{i}" for i in range(MAX_IGNORE)]},
        {"ignore": [f"x{i}" for i in range(MAX_IGNORE + 1)]},
        "ignore",
    ),
    (
        "ignore bytes",
        {"ignore": ["*", "i" * MAX_IGNORE_BYTES]},
        {"ignore": ["*", "i" * (MAX_IGNORE_BYTES + 1)]},
        "ignore[1]",
    ),
    (
        "ignore bytes, multi-byte",
        {"ignore": ["ü" * (MAX_IGNORE_BYTES // 2) + "x"]},
        {"ignore": ["ü" * (MAX_IGNORE_BYTES // 2 + 1)]},
        "ignore[0]",
    ),
    (
        "max depth",
        {"recursive": True, "max_depth": MAX_DEPTH},
        {"recursive": True, "max_depth": MAX_DEPTH + 1},
        "maxDepth",
    ),
    ("max depth low", {"recursive": True, "max_depth": 0}, {"max_depth": -1}, "maxDepth"),
    (
        "tag count",
        {"tags": {f"k{i}": "v" for i in range(MAX_TAGS)}},
        {"tags": {f"k{i}": "v" for i in range(MAX_TAGS + 1)}},
        "tags",
    ),
    (
        "tag key bytes",
        {"tags": {"k" * MAX_TAG_KEY_BYTES: "v"}},
        {"tags": {"k" * (MAX_TAG_KEY_BYTES + 1): "v"}},
        "tags key",
    ),
    ("tag key empty", {"tags": {"k": ""}}, {"tags": {"": "v"}}, "tags"),
    (
        "tag value bytes",
        {"tags": {"team": "v" * MAX_TAG_VALUE_BYTES}},
        {"tags": {"team": "v" * (MAX_TAG_VALUE_BYTES + 1)}},
        "tags['team']",
    ),
]


@pytest.mark.parametrize(
    ("at", "beyond", "field"), [b[1:] for b in BOUNDS], ids=[b[0] for b in BOUNDS]
)
def test_bound_accepted_at_the_limit_and_refused_beyond(
    at: dict[str, Any], beyond: dict[str, Any], field: str
) -> None:
    check(**at)
    SubjectConfig(**{"paths": ("/data",), "events": ("all",), **_tuples(at)})
    with pytest.raises(SubjectError) as info:
        check(**beyond)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    with pytest.raises(SubjectError) as again:
        SubjectConfig(**{"paths": ("/data",), "events": ("all",), **_tuples(beyond)})
    assert again.value.field == field


def _tuples(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"paths": ["/a", "/b", "/a"]}, "paths[2]", "duplicate path"),
        ({"paths": ["a"]}, "paths[0]", "must be an absolute path"),
        ({"paths": [""]}, "paths[0]", "must not be empty"),
        ({"paths": ["/a\0"]}, "paths[0]", "NUL"),
        ({"paths": ["/a/"]}, "paths[0]", "normalized"),
        ({"paths": ["//a"]}, "paths[0]", "normalized"),
        ({"paths": ["/a//b"]}, "paths[0]", "normalized"),
        ({"paths": ["/a/./b"]}, "paths[0]", "normalized"),
        ({"paths": ["/a/.."]}, "paths[0]", "normalized"),
        ({"paths": ["/../etc"]}, "paths[0]", "normalized"),
        ({"paths": ["/\ud800"]}, "paths[0]", "lone surrogate"),
        ({"paths": ["/ok", "/x\udbff\udfff"]}, "paths[1]", "lone surrogate"),
        ({"events": ["create", "created"]}, "events[1]", "unknown event name 'created'"),
        ({"ignore": ["a/b"]}, "ignore[0]", "must not contain '/'"),
        ({"ignore": ["a\0"]}, "ignore[0]", "NUL"),
        ({"ignore": ["\udc00x"]}, "ignore[0]", "lone surrogate"),
        ({"max_depth": 2}, "maxDepth", "requires recursive"),
        ({"recursive": True, "max_depth": True}, "maxDepth", "between"),
        ({"tags": {"k\0": "v"}}, "tags key", "NUL"),
        ({"tags": {"k": "v\0"}}, "tags['k']", "NUL"),
    ],
)
def test_invalid_fields_are_named(fields: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(SubjectError, match=reason) as info:
        check(**fields)
    assert info.value.field == field
    assert reason in info.value.reason


def test_valid_paths() -> None:
    for path in ("/", "/a", "/a/b", "/..a", "/a.../b", "/.hidden", "/a b/ü", "/x\udcff\udc80"):
        check_path("p", path)
    for pattern in ("*", ".git", "[!a]?", "ü*", "\udcff*"):
        check_ignore("i", pattern)


def test_first_invalid_field_is_reported() -> None:
    with pytest.raises(SubjectError) as info:
        check(paths=["rel"], events=["nope"], ignore=["a/b"])
    assert info.value.field == "paths[0]"


def test_error_text_without_a_field_is_the_reason() -> None:
    assert str(SubjectError("", "bad")) == "bad"
    assert str(SubjectError("paths[0]", "bad")) == "paths[0]: bad"


# --- SubjectConfig -------------------------------------------------------------------------


def test_subject_config_converts_event_names() -> None:
    config = SubjectConfig(paths=("/a",), events=("create", "close", "all"))
    assert config.events == (EventName.CREATE, EventName.CLOSE, EventName.ALL)
    assert all(type(e) is EventName for e in config.events)
    same = SubjectConfig(paths=("/a",), events=(EventName.CREATE, EventName.CLOSE, EventName.ALL))
    assert config == same
    assert hash(config) == hash(same)


def test_subject_config_unknown_event_is_the_check_subject_error() -> None:
    with pytest.raises(SubjectError) as direct:
        check(events=["create", "bogus"])
    with pytest.raises(SubjectError) as via_config:
        SubjectConfig(paths=("/a",), events=("create", "bogus"))
    assert (via_config.value.field, str(via_config.value)) == (
        direct.value.field,
        str(direct.value),
    )


def test_subject_config_validates_every_field() -> None:
    with pytest.raises(SubjectError, match="maxDepth"):
        SubjectConfig(paths=("/a",), events=("all",), max_depth=3)
    with pytest.raises(SubjectError, match=r"ignore\[0\]"):
        SubjectConfig(paths=("/a",), events=("all",), ignore=("a/b",))
    with pytest.raises(SubjectError, match="tags"):
        SubjectConfig(paths=("/a",), events=("all",), tags={"": "x"})


def test_tags_do_not_change_identity() -> None:
    a = SubjectConfig(paths=("/a",), events=("all",), tags={"t": "1"})
    b = SubjectConfig(paths=("/a",), events=("all",), tags={"t": "2"})
    assert hash(a) == hash(b)


def test_attributes_and_hash() -> None:
    check(attributes=True)
    check(hash="sha256")
    check(attributes=True, hash="sha256")
    with pytest.raises(SubjectError, match=r"^hash: unknown hash 'SHA256'"):
        check(hash="SHA256")
    with pytest.raises(SubjectError, match=r"^hash: is 17 bytes, at most 16 allowed"):
        check(hash="s" * 17)
    with pytest.raises(SubjectError, match=r"^hash: cannot be combined with coalesce"):
        check(hash="sha256", coalescing=True)
    with pytest.raises(SubjectError, match=r"^attributes: cannot be combined with coalesce"):
        check(attributes=True, coalescing=True)
    with pytest.raises(SubjectError, match=r"^attributes: must be true or false"):
        check(attributes=1)
    check(coalescing=True)
    config = SubjectConfig(paths=("/d",), events=("modify",), hash="sha256")
    assert config.with_attributes
    assert not SubjectConfig(paths=("/d",), events=("modify",)).with_attributes
