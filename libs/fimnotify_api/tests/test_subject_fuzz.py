"""Property-based fuzz tests (hypothesis, a fixed and derandomized example budget) of the one
subject validation: arbitrary inputs only raise `SubjectError` naming a field; whatever
`check_subject` and `SubjectConfig` accept is within every documented bound, in bytes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

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
    check_subject,
)

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)

# Fragments that probe each rule: separators, dots, NUL, surrogates with and without a byte
# form (U+DC80..U+DCFF stand for the bytes of non-UTF-8 names), multi-byte characters.
ATOMS = [
    "/",
    "//",
    ".",
    "..",
    "/./",
    "/../",
    "\x00",
    "a",
    "*",
    "é",
    "日",
    "\U0001f600",
    "\udc80",
    "\udcff",
    "\ud800",
    "\udc7f",
    "\ufffd",
    "\n",
    " ",
]


def texts(max_size: int = 30) -> st.SearchStrategy[str]:
    """Any text (lone surrogates included), probing fragments, or a huge run of one."""
    return st.one_of(
        st.text(st.characters(codec=None), max_size=max_size),
        st.lists(st.sampled_from(ATOMS), max_size=max_size).map("".join),
        st.builds(
            lambda prefix, chunk, n: prefix + chunk * n,
            st.sampled_from(["", "/", "/a/"]),
            st.sampled_from(["a", "é", "日", "\U0001f600", "\udcff", "ab/"]),
            st.integers(0, 5000),
        ),
    )


def path_like() -> st.SearchStrategy[str]:
    return st.one_of(texts(), texts().map(lambda t: "/" + t))


names = st.one_of(st.sampled_from(ALL_NAMES), st.sampled_from(ALL_NAMES).map(str.upper), texts(12))
depths = st.one_of(
    st.integers(-3, MAX_DEPTH + 3),
    st.integers(),
    st.booleans(),
    st.sampled_from([2**31, 2**32 - 1, 2**63, -(2**63)]),
)
tag_maps = st.dictionaries(texts(20), texts(20), max_size=MAX_TAGS + 2)


def lists(element: st.SearchStrategy[str], most: int) -> st.SearchStrategy[list[str]]:
    """Short lists, or lists around the count bound (repeating a few drawn elements)."""
    return st.one_of(
        st.lists(element, max_size=6),
        st.builds(
            lambda items, n: [f"{items[i % len(items)]}{i}" for i in range(n)],
            st.lists(element, min_size=1, max_size=3),
            st.integers(most - 1, most + 2),
        ),
    )


def size(text: str) -> int:
    """Bytes of a name as it reaches the filesystem (surrogateescape)."""
    return len(text.encode("utf-8", "surrogateescape"))


def assert_within_bounds(
    *,
    paths: Sequence[str],
    events: Sequence[str],
    ignore: Sequence[str],
    recursive: bool,
    max_depth: int,
    tags: Mapping[str, str],
) -> None:
    assert 1 <= len(paths) <= MAX_PATHS
    assert len(set(paths)) == len(paths)
    for path in paths:
        assert path.startswith("/")
        assert "\x00" not in path
        assert 1 <= size(path) <= MAX_PATH_BYTES
        assert len(path.encode("utf-8", "surrogatepass")) <= MAX_PATH_BYTES
        assert path == "/" or all(part not in ("", ".", "..") for part in path[1:].split("/"))
    assert 1 <= len(events) <= len(ALL_NAMES)
    assert all(name in ALL_NAMES for name in events)
    assert len(ignore) <= MAX_IGNORE
    for pattern in ignore:
        assert 1 <= len(pattern.encode("utf-8", "surrogatepass")) <= MAX_IGNORE_BYTES
        assert size(pattern) <= MAX_IGNORE_BYTES
        assert "/" not in pattern
        assert "\x00" not in pattern
    assert not isinstance(max_depth, bool)
    assert 0 <= max_depth <= MAX_DEPTH
    assert recursive or max_depth == 0
    assert len(tags) <= MAX_TAGS
    for key, value in tags.items():
        assert 1 <= len(key.encode("utf-8", "surrogatepass")) <= MAX_TAG_KEY_BYTES
        assert len(value.encode("utf-8", "surrogatepass")) <= MAX_TAG_VALUE_BYTES
        assert "\x00" not in key
        assert "\x00" not in value


def check_error(err: SubjectError) -> None:
    """A SubjectError names its field (relative to the subject) and a reason."""
    assert err.reason
    assert str(err) == (f"{err.field}: {err.reason}" if err.field else err.reason)
    root = err.field.split("[")[0].split(" ")[0]
    assert root in {"paths", "events", "ignore", "maxDepth", "tags"}, err.field


# Valid values: normalized absolute paths of components without '/' or NUL (surrogates only
# in U+DC80..U+DCFF), one-component glob patterns, label-like tags.
name_chars = st.one_of(
    st.characters(codec=None, exclude_characters="/\x00", exclude_categories=["Cs"]),
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
)
components = st.text(name_chars, min_size=1, max_size=12).filter(lambda c: c not in {".", ".."})
valid_paths = st.lists(components, max_size=5).map(lambda parts: "/" + "/".join(parts))
tag_texts = st.text(st.characters(codec=None, exclude_characters="\x00"), max_size=20)
valid_tags = st.dictionaries(tag_texts.filter(bool), tag_texts, max_size=4)


@st.composite
def subject_fields(draw: st.DrawFn) -> dict[str, Any]:
    """A valid subject with 0..2 of its fields replaced by arbitrary values."""
    recursive = draw(st.booleans())
    fields: dict[str, Any] = {
        "paths": draw(st.lists(valid_paths, min_size=1, max_size=4, unique=True)),
        "events": draw(st.lists(st.sampled_from(ALL_NAMES), min_size=1, max_size=4)),
        "ignore": draw(st.lists(components, max_size=3)),
        "recursive": recursive,
        "max_depth": draw(st.integers(0, MAX_DEPTH)) if recursive else 0,
        "tags": draw(valid_tags),
    }
    for name in draw(st.lists(st.sampled_from(sorted(FUZZED)), max_size=2, unique=True)):
        fields[name] = draw(FUZZED[name])
    return fields


def refusal(**fields: Any) -> SubjectError | None:
    """The SubjectError `check_subject` raises for these fields, or None if it accepts."""
    try:
        check_subject(**fields)
    except SubjectError as err:
        return err
    return None


FUZZED: dict[str, st.SearchStrategy[Any]] = {
    "paths": lists(path_like(), MAX_PATHS),
    "events": lists(names, len(ALL_NAMES)),
    "ignore": lists(texts(), MAX_IGNORE),
    "recursive": st.booleans(),
    "max_depth": depths,
    "tags": tag_maps,
}


def fields_of(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "paths": ["/data"],
        "events": ["all"],
        "ignore": [],
        "recursive": False,
        "max_depth": 0,
        "tags": {},
    }
    return fields | changes


@FUZZ
@given(fields=subject_fields())
@example(fields=fields_of(paths=["/"]))
@example(fields=fields_of(paths=["/\udc80"], ignore=["\udcff"], recursive=True, max_depth=128))
@example(fields=fields_of(paths=["/a\ud800"]))
@example(fields=fields_of(ignore=["\ud800"]))
@example(fields=fields_of(recursive=True, max_depth=True))
@example(fields=fields_of(paths=["/" + "\udcff" * 2000]))  # 2001 bytes on disk, 6001 in UTF-8
@example(fields=fields_of(paths=[f"/{i}" for i in range(MAX_PATHS)]))
@example(fields=fields_of(events=list(ALL_NAMES), tags={f"k{i}": "" for i in range(MAX_TAGS)}))
def test_check_subject_raises_only_subject_error_and_accepts_only_bounded_subjects(
    fields: dict[str, Any],
) -> None:
    err = refusal(**fields)
    if err is not None:
        check_error(err)
    else:
        assert_within_bounds(**fields)


@FUZZ
@given(fields=subject_fields(), only_dir=st.booleans(), follow_move=st.booleans())
def test_subject_config_refuses_what_check_subject_refuses_and_holds_bounded_subjects(
    fields: dict[str, Any], only_dir: bool, follow_move: bool
) -> None:
    try:
        config = SubjectConfig(
            paths=tuple(fields["paths"]),
            events=tuple(fields["events"]),
            ignore=tuple(fields["ignore"]),
            only_dir=only_dir,
            recursive=fields["recursive"],
            max_depth=fields["max_depth"],
            follow_move=follow_move,
            tags=fields["tags"],
        )
    except SubjectError as err:
        refused: SubjectError | None = err
    else:
        refused = None
    # The one validation: SubjectConfig refuses exactly what check_subject refuses.
    assert (refused is None) is (refusal(**fields) is None)
    if refused is not None:
        check_error(refused)
        return
    assert all(isinstance(event, EventName) for event in config.events)
    assert [str(event) for event in config.events] == fields["events"]
    assert_within_bounds(
        paths=config.paths,
        events=config.events,
        ignore=config.ignore,
        recursive=config.recursive,
        max_depth=config.max_depth,
        tags=config.tags,
    )
