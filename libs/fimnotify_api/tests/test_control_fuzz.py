"""Property-based fuzz tests (hypothesis, a fixed and derandomized example budget) of engine
control messages: arbitrary bytes, JSON values and mutated valid messages only raise
`ControlError` (an engine answers EBADCTL and carries on, so any other exception would stop
it); valid AddWatch and RemoveWatch messages round-trip through `encode` and `decode`."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from libs.fimnotify_api import control
from libs.fimnotify_api.control import (
    MAX_CONTROL_BYTES,
    MAX_SUBJECTS,
    MAX_WATCH,
    AddWatch,
    Control,
    ControlError,
    RemoveWatch,
)
from libs.fimnotify_api.events import ALL_NAMES
from libs.fimnotify_api.identity import ProcessIdentity
from libs.fimnotify_api.subject import MAX_DEPTH, SubjectConfig

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)

# --- valid messages --------------------------------------------------------------------------

# Normalized absolute paths: components without '/' or NUL; the only surrogates allowed are
# U+DC80..U+DCFF (the bytes of non-UTF-8 names).
name_chars = st.one_of(
    st.characters(codec=None, exclude_characters="/\x00", exclude_categories=["Cs"]),
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
)
components = st.text(name_chars, min_size=1, max_size=12).filter(lambda c: c not in {".", ".."})
paths = st.lists(components, max_size=4).map(lambda parts: "/" + "/".join(parts))


@st.composite
def subjects(draw: st.DrawFn) -> SubjectConfig:
    recursive = draw(st.booleans())
    return SubjectConfig(
        paths=tuple(draw(st.lists(paths, min_size=1, max_size=4, unique=True))),
        events=tuple(draw(st.lists(st.sampled_from(ALL_NAMES), min_size=1, max_size=5))),
        ignore=tuple(draw(st.lists(components, max_size=3))),
        only_dir=draw(st.booleans()),
        recursive=recursive,
        max_depth=draw(st.integers(0, MAX_DEPTH)) if recursive else 0,
        follow_move=draw(st.booleans()),
    )


any_text = st.text(st.characters(codec=None), max_size=30)
watches = st.integers(0, MAX_WATCH)
adds = st.builds(
    AddWatch,
    watch=watches,
    pid=st.integers(1, 2**31 - 1),
    label=any_text | st.text(max_size=1024).map(lambda t: (t * 9)[:1024]),
    subjects=st.lists(subjects(), min_size=1, max_size=3).map(tuple),
    identity=st.builds(
        ProcessIdentity,
        start_time=st.integers(0, 2**63 - 1),
        cgroup_leaves=st.lists(
            st.text(st.characters(codec=None), min_size=1, max_size=40), max_size=16
        ).map(tuple),
    ),
)
messages: st.SearchStrategy[Control] = st.one_of(adds, st.builds(RemoveWatch, watch=watches))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(message=messages)
def test_valid_messages_round_trip_as_one_ascii_json_line(message: Control) -> None:
    line = control.encode(message)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert line.isascii()
    assert len(line) <= MAX_CONTROL_BYTES
    assert control.decode(line) == message
    assert control.decode(line.rstrip(b"\n")) == message
    assert control.encode(control.decode(line)) == line


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(subject=subjects(), watch=watches)
def test_the_most_subjects_round_trip(subject: SubjectConfig, watch: int) -> None:
    message = AddWatch(watch, 1, "l" * 1024, (subject,) * MAX_SUBJECTS)
    assert control.decode(control.encode(message)) == message


# --- malformed input: ControlError only ------------------------------------------------------


def decodes_or_control_error(line: bytes) -> Control | None:
    """Decodes `line`, or checks it raised ControlError with a reason."""
    error: ControlError | None = None
    try:
        message = control.decode(line)
    except ControlError as err:
        error = err
    if error is not None:
        assert str(error)
        return None
    assert isinstance(message, (AddWatch, RemoveWatch))
    control.encode(message)  # what decodes can be sent again
    return message


# Tokens that probe the parser: limits, nesting, encodings, huge integers (beyond Python's
# int/str conversion limit), non-finite numbers, escapes of lone surrogates.
TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b":",
    b",",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"\\udcff",
    b"\x00",
    b"\xff",
    b"\xef\xbb\xbf",
    b"NaN",
    b"-Infinity",
    b"1e999",
    b"-0",
    b"null",
    b"true",
    b'"op"',
    b'"add"',
    b'"remove"',
    b'"watch"',
    b'"subjects"',
    b'"paths"',
    b"4294967294",
    b"9" * 5000,
    b"[" * 2000,
]


@FUZZ
@given(line=st.binary(max_size=200) | st.lists(st.sampled_from(TOKENS), max_size=20).map(b"".join))
@example(line=b"")
@example(line=b"\xff\xfe{\x00")  # UTF-16 with a BOM
@example(line=b"[" * 100_000)
@example(line=b'{"op":"remove","watch":' + b"1" * 5000 + b"}")
@example(line=b" " * (MAX_CONTROL_BYTES + 1))
def test_arbitrary_bytes_only_raise_control_error(line: bytes) -> None:
    decodes_or_control_error(line)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**4000), 10**4000)
    | st.floats()
    | any_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["op", "watch", "subjects", "paths"]) | any_text, children
        )
    ),
    max_leaves=20,
)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(value=json_values)
def test_arbitrary_json_values_only_raise_control_error(value: Any) -> None:
    decodes_or_control_error(dumps(value))


VALID: dict[str, Any] = json.loads(
    control.encode(
        AddWatch(
            7,
            42,
            "shop/web-0/app",
            (SubjectConfig(paths=("/data", "/etc/app"), events=("create",), ignore=("*.swp",)),),
            ProcessIdentity(123, ("cri-containerd-abc.scope",)),
        )
    )
)
SUBJECT_KEYS = sorted(VALID["subjects"][0])
replacements = st.one_of(
    json_values,
    st.sampled_from([None, True, 0, -1, 1.5, 2**32, 2**63, 10**4000, "", "x" * 10_000, [], {}]),
)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """The valid AddWatch above with 1..3 fields (its own or a subject's) replaced by any
    JSON value, removed, or joined by an unknown field."""
    doc: dict[str, Any] = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        target: Any = doc
        keys = sorted(doc)
        if draw(st.booleans()):
            listed = doc.get("subjects")
            target = listed[0] if isinstance(listed, list) and listed else doc
            keys = SUBJECT_KEYS
        if not isinstance(target, dict):
            break
        key = draw(st.sampled_from(keys) | any_text)
        how = draw(st.sampled_from(["replace", "replace", "remove"]))
        if how == "remove":
            target.pop(key, None)
        else:
            target[key] = draw(replacements)
    return doc


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(doc=mutated())
@example(doc=VALID | {"watch": 10**4000})
@example(doc=VALID | {"subjects": [VALID["subjects"][0] | {"max_depth": 10**4000}]})
def test_mutated_messages_only_raise_control_error(doc: dict[str, Any]) -> None:
    message = decodes_or_control_error(dumps(doc))
    if isinstance(message, AddWatch):
        assert 0 <= message.watch <= MAX_WATCH
        assert 1 <= message.pid <= 2**31 - 1
        assert len(message.label) <= 1024
        assert 1 <= len(message.subjects) <= MAX_SUBJECTS
        assert len(message.identity.cgroup_leaves) <= 16
