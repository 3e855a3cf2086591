"""Property-based fuzz tests (hypothesis, a fixed and derandomized example budget) of the
FimWatcher model and codec: arbitrary JSON-like objects and mutated valid documents (wrong
types, huge strings, lone surrogates, deep nesting, unknown and missing fields, timestamps at
the ends of the calendar) only raise `ModelError` naming a field; whatever is accepted is
within every documented bound and round-trips through the codec."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.subject import MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES
from libs.k8s import logformat
from libs.k8s.codec import fimwatcher_from_dict, fimwatcher_to_dict, status_to_dict
from libs.k8s.errors import ModelError
from libs.k8s.model import (
    MAX_CONDITION_MESSAGE_LENGTH,
    MAX_CONDITION_REASON_LENGTH,
    MAX_CONDITION_TYPE_LENGTH,
    MAX_DEPTH,
    MAX_GENERATION,
    MAX_IGNORE_PATTERN_LENGTH,
    MAX_IGNORE_PATTERNS,
    MAX_LOG_FORMAT_LENGTH,
    MAX_PATH_LENGTH,
    MAX_PATHS_PER_SUBJECT,
    MAX_POD_COUNT,
    MAX_SUBJECTS,
    MAX_TAGS,
    Condition,
    ConditionStatus,
    FimWatcher,
    FimWatcherSpec,
    FimWatcherStatus,
    ObjectMeta,
    Subject,
)
from libs.k8s.names import (
    DNS1123_LABEL_MAX_LENGTH,
    DNS1123_SUBDOMAIN_MAX_LENGTH,
    LABEL_VALUE_MAX_LENGTH,
    QUALIFIED_NAME_MAX_LENGTH,
)
from libs.k8s.selector import LabelSelector, LabelSelectorRequirement, SelectorOperator

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)

# --- valid FimWatchers -----------------------------------------------------------------------

DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
# Names are drawn from valid ones at and near their bounds (the paths below and the mutations
# are what this module fuzzes; the name rules have their own tests).
LABEL_63 = "a" + "-" * 61 + "z"
SUBDOMAIN_253 = ".".join([LABEL_63] * 3 + ["b" * 61])
dns_labels = st.sampled_from(["a", "0", "shop", "a-b", "kube-system", LABEL_63])
subdomains = st.sampled_from(["w", "myapp-logs", "a.b.c", "x-1.y-2", SUBDOMAIN_253])
names = st.sampled_from(["a", "Z", "app", "tier_1", "a.b-c", "A" + "_" * 61 + "9"])
label_keys = st.builds(
    lambda prefix, name: f"{prefix}/{name}" if prefix else name,
    st.none() | subdomains,
    names,
)
label_values = st.just("") | names
label_maps = st.dictionaries(label_keys, label_values, max_size=3)

# Normalized absolute paths: no '/' or NUL in a component, surrogates only U+DC80..U+DCFF.
name_chars = st.one_of(
    st.characters(codec=None, exclude_characters="/\x00", exclude_categories=["Cs"]),
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
)
components = st.text(name_chars, min_size=1, max_size=10).filter(lambda c: c not in {".", ".."})
paths = st.lists(components, max_size=4).map(lambda parts: "/" + "/".join(parts))

# Timestamps over the whole calendar (years 1 to 9999) in a few zones, whole seconds (what
# the codec writes, like metav1.Time).
ZONES = [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12, minutes=30))]
timestamps = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(ZONES),
).map(lambda moment: moment.replace(microsecond=0))


@st.composite
def requirements(draw: st.DrawFn) -> LabelSelectorRequirement:
    operator = draw(st.sampled_from(SelectorOperator))
    valued = operator in {SelectorOperator.IN, SelectorOperator.NOT_IN}
    values = draw(st.lists(label_values, min_size=1, max_size=3)) if valued else []
    return LabelSelectorRequirement(key=draw(label_keys), operator=operator, values=tuple(values))


@st.composite
def subjects(draw: st.DrawFn) -> Subject:
    recursive = draw(st.booleans())
    return Subject(
        paths=tuple(draw(st.lists(paths, min_size=1, max_size=3, unique=True))),
        events=frozenset(draw(st.sets(st.sampled_from(EventName), min_size=1, max_size=4))),
        ignore=tuple(draw(st.lists(components, max_size=3))),
        only_dir=draw(st.booleans()),
        recursive=recursive,
        max_depth=draw(st.integers(0, MAX_DEPTH)) if recursive else 0,
        follow_move=draw(st.booleans()),
        tags=draw(label_maps),
    )


# Literal text: no control character (Cc: C0, DEL, C1) and no line or paragraph separator.
literal_chars = st.characters(
    codec="utf-8", exclude_categories=["Cc"], exclude_characters="\u2028\u2029"
)
log_formats = st.lists(
    st.tuples(st.text(literal_chars, max_size=8), st.sampled_from(("", *logformat.PLACEHOLDERS))),
    max_size=5,
).map(lambda parts: logformat.unparse(tuple(parts)))

conditions = st.builds(
    Condition,
    type=label_keys.filter(lambda key: len(key) <= MAX_CONDITION_TYPE_LENGTH),
    status=st.sampled_from(ConditionStatus),
    reason=st.sampled_from(["A", "AllPodsWatched", "Node_1,x:y", "R" * 1024]),
    last_transition_time=timestamps,
    message=st.text(st.characters(codec=None), max_size=40),
    observed_generation=st.none() | st.integers(0, MAX_GENERATION),
)
watchers = st.builds(
    FimWatcher,
    metadata=st.builds(
        ObjectMeta,
        name=subdomains,
        namespace=dns_labels,
        uid=st.text(st.characters(codec=None), max_size=20),
        generation=st.integers(0, MAX_GENERATION),
        resource_version=st.text(max_size=10),
        deletion_timestamp=st.none() | timestamps,
        finalizers=st.lists(st.text(max_size=20), max_size=2).map(tuple),
        labels=label_maps,
    ),
    spec=st.builds(
        FimWatcherSpec,
        selector=st.builds(
            LabelSelector,
            match_labels=label_maps,
            match_expressions=st.lists(requirements(), max_size=2).map(tuple),
        ),
        subjects=st.lists(subjects(), min_size=1, max_size=2).map(tuple),
        log_format=log_formats,
    ),
    status=st.builds(
        FimWatcherStatus,
        observed_generation=st.integers(0, MAX_GENERATION),
        observable_pods=st.integers(0, MAX_POD_COUNT),
        watched_pods=st.integers(0, MAX_POD_COUNT),
        conditions=st.lists(conditions, max_size=2, unique_by=lambda c: c.type).map(tuple),
    ),
)


# --- bounds and round trips ----------------------------------------------------------------


def _utf8(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def assert_labels(labels: Any) -> None:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        assert len(prefix) <= DNS1123_SUBDOMAIN_MAX_LENGTH
        assert 1 <= len(name) <= QUALIFIED_NAME_MAX_LENGTH
        assert re.fullmatch(QUALIFIED, name)
        assert len(value) <= LABEL_VALUE_MAX_LENGTH
        assert value == "" or re.fullmatch(QUALIFIED, value)


def assert_subject(subject: Subject) -> None:
    assert 1 <= len(subject.paths) <= MAX_PATHS_PER_SUBJECT
    assert len(set(subject.paths)) == len(subject.paths)
    for path in subject.paths:
        assert path.startswith("/")
        assert "\x00" not in path
        assert _utf8(path) <= MAX_PATH_LENGTH
        path.encode("utf-8", "surrogateescape")  # it has a byte form
        assert path == "/" or all(part not in ("", ".", "..") for part in path[1:].split("/"))
    assert subject.events
    assert all(isinstance(event, EventName) for event in subject.events)
    assert len(subject.ignore) <= MAX_IGNORE_PATTERNS
    for pattern in subject.ignore:
        assert 1 <= _utf8(pattern) <= MAX_IGNORE_PATTERN_LENGTH
        assert "/" not in pattern
        assert "\x00" not in pattern
    assert 0 <= subject.max_depth <= MAX_DEPTH
    assert subject.recursive or subject.max_depth == 0
    assert len(subject.tags) <= MAX_TAGS
    assert all(1 <= _utf8(key) <= MAX_TAG_KEY_BYTES for key in subject.tags)
    assert all(_utf8(value) <= MAX_TAG_VALUE_BYTES for value in subject.tags.values())
    assert_labels(subject.tags)


def assert_within_bounds(watcher: FimWatcher) -> None:
    meta, spec, status = watcher.metadata, watcher.spec, watcher.status
    assert len(meta.name) <= DNS1123_SUBDOMAIN_MAX_LENGTH
    assert re.fullmatch(rf"{DNS_LABEL}(\.{DNS_LABEL})*", meta.name)
    assert len(meta.namespace) <= DNS1123_LABEL_MAX_LENGTH
    assert re.fullmatch(DNS_LABEL, meta.namespace)
    assert 0 <= meta.generation <= MAX_GENERATION
    assert meta.deletion_timestamp is None or meta.deletion_timestamp.utcoffset() is not None
    assert_labels(meta.labels)
    assert_labels(spec.selector.match_labels)
    for requirement in spec.selector.match_expressions:
        valued = requirement.operator in {SelectorOperator.IN, SelectorOperator.NOT_IN}
        assert bool(requirement.values) is valued
    assert 1 <= len(spec.subjects) <= MAX_SUBJECTS
    for subject in spec.subjects:
        assert_subject(subject)
    assert len(spec.log_format) <= MAX_LOG_FORMAT_LENGTH
    assert re.fullmatch(logformat.CRD_PATTERN, spec.log_format)
    assert 0 <= status.observed_generation <= MAX_GENERATION
    assert 0 <= status.observable_pods <= MAX_POD_COUNT
    assert 0 <= status.watched_pods <= MAX_POD_COUNT
    assert len({c.type for c in status.conditions}) == len(status.conditions)
    for condition in status.conditions:
        assert len(condition.type) <= MAX_CONDITION_TYPE_LENGTH
        assert len(condition.reason) <= MAX_CONDITION_REASON_LENGTH
        assert len(condition.message) <= MAX_CONDITION_MESSAGE_LENGTH
        assert condition.last_transition_time.utcoffset() is not None
        generation = condition.observed_generation
        assert generation is None or 0 <= generation <= MAX_GENERATION


def assert_round_trips(watcher: FimWatcher) -> None:
    """The written form reads back equal, and is written again identically."""
    written = fimwatcher_to_dict(watcher)
    assert fimwatcher_from_dict(written) == watcher
    assert fimwatcher_from_dict(copy.deepcopy(written)) == watcher
    assert fimwatcher_to_dict(fimwatcher_from_dict(written)) == written
    assert status_to_dict(watcher.status) == written.get("status", status_to_dict(watcher.status))


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(watcher=watchers)
@example(
    watcher=FimWatcher(
        metadata=ObjectMeta(
            name="w", namespace="ns", deletion_timestamp=datetime(1, 1, 1, tzinfo=UTC)
        ),
        spec=FimWatcherSpec(
            selector=LabelSelector(),
            subjects=(Subject(paths=("/",), events=frozenset({EventName.ALL})),),
        ),
    )
)
def test_valid_watchers_round_trip_and_are_within_bounds(watcher: FimWatcher) -> None:
    assert_within_bounds(watcher)
    assert_round_trips(watcher)
    # What the API server would hand back after storing it as JSON.
    assert fimwatcher_from_dict(json.loads(json.dumps(fimwatcher_to_dict(watcher)))) == watcher


# --- arbitrary and mutated input: ModelError only --------------------------------------------

ROOTS = {"", "apiVersion", "kind", "metadata", "spec", "status"}


def read(obj: Any) -> FimWatcher | None:
    """The FimWatcher of `obj`, or None after checking it raised a ModelError naming a field.
    Whatever is accepted is within the bounds and round-trips."""
    error: ModelError | None = None
    try:
        watcher = fimwatcher_from_dict(obj)
    except ModelError as err:
        error = err
    if error is not None:
        assert str(error)
        assert error.reason
        assert re.split(r"[.\[]", error.path)[0] in ROOTS, error.path
        return None
    assert isinstance(watcher, FimWatcher)
    assert_within_bounds(watcher)
    assert_round_trips(watcher)
    return watcher


FIELD_NAMES = [
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "status",
    "name",
    "namespace",
    "labels",
    "generation",
    "deletionTimestamp",
    "selector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "subjects",
    "paths",
    "events",
    "ignore",
    "maxDepth",
    "recursive",
    "tags",
    "logFormat",
    "conditions",
    "type",
    "reason",
    "lastTransitionTime",
]
STRINGS = [
    "",
    "fim-k8s.io/v1alpha1",
    "FimWatcher",
    "w",
    "/",
    "/etc",
    "all",
    "In",
    "Exists",
    "True",
    "{path}",
    "{",
    "\x00",
    "\ud800",
    "\udcff",
    "/\udcff",
    "2024-05-01T12:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-05-01T12:00:00",
]
any_text = st.text(st.characters(codec=None), max_size=20)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**4000), 10**4000),
    st.floats(),
    any_text,
    st.sampled_from(STRINGS),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | any_text, children, max_size=5)
    ),
    max_leaves=25,
)


def nested(depth: int, kind: str) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value] if kind == "list" else {"spec": value}
    return value


huge = st.builds(
    lambda chunk, n: chunk * n,
    st.sampled_from(["a", "/a", "é", "\U0001f600", "\udcff", "\ud800", "{path}", "a."]),
    st.sampled_from([64, 254, 1025, 4097, 40_000, 1_000_000]),
)
deep = st.builds(nested, st.sampled_from([100, 1_000, 5_000]), st.sampled_from(["list", "dict"]))
edge_times = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone).isoformat(),
    st.sampled_from([datetime.min, datetime.max, datetime(1, 1, 1, 5), datetime(2024, 5, 1)]),
    st.sampled_from(
        [UTC, timezone(timedelta(hours=1)), timezone(-timedelta(hours=23, minutes=59))]
    ),
)
replacements = st.one_of(json_values, huge, deep, edge_times)
TIME_FIELDS = {"deletionTimestamp", "lastTransitionTime"}


@FUZZ
@given(obj=json_values)
def test_arbitrary_json_values_only_raise_model_error(obj: Any) -> None:
    read(obj)


@FUZZ
@given(
    obj=st.fixed_dictionaries(
        {},
        optional={
            "apiVersion": st.just("fim-k8s.io/v1alpha1") | json_values,
            "kind": st.just("FimWatcher") | json_values,
            "metadata": json_values,
            "spec": json_values,
            "status": json_values,
        },
    )
)
def test_arbitrary_top_level_fields_only_raise_model_error(obj: dict[str, Any]) -> None:
    read(obj)


Path = tuple[str | int, ...]


def locations(doc: Any) -> list[Path]:
    """Every location in a JSON document, the root included (iteratively: documents may be
    nested deeper than the recursion limit)."""
    found: list[Path] = []
    pending: list[tuple[Path, Any]] = [((), doc)]
    while pending:
        here, value = pending.pop()
        found.append(here)
        if isinstance(value, dict):
            pending += [((*here, key), item) for key, item in value.items()]
        elif isinstance(value, list):
            pending += [((*here, index), item) for index, item in enumerate(value)]
    return found


def at(doc: Any, where: Path) -> Any:
    for step in where:
        doc = doc[step]
    return doc


WRONG_TYPES: list[Callable[[Any], Any]] = [
    str,
    lambda v: [v],
    lambda v: {"value": v},
    lambda v: None,
    lambda v: 1 if isinstance(v, bool) else True,
    lambda v: float(v) if isinstance(v, int) else 0.5,
    lambda v: list(v) if isinstance(v, dict) else v,
]


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A valid FimWatcher document with 1..3 mutations at any location: a value replaced (any
    JSON value, a huge string, deep nesting, a timestamp at the end of the calendar) or given
    a wrong type, a field or item removed, an unknown field added."""
    doc: Any = fimwatcher_to_dict(draw(watchers))
    for _ in range(draw(st.integers(1, 3))):
        # Not the root itself (arbitrary documents are tested above), unless it is all left.
        where = draw(st.sampled_from(locations(doc)[1:] or [()]))
        how = draw(st.sampled_from(["replace", "retype", "remove", "add"]))
        parent, value = (at(doc, where[:-1]), at(doc, where)) if where else (None, doc)
        if how == "add" and isinstance(value, dict):
            value[draw(st.sampled_from(FIELD_NAMES) | any_text)] = draw(replacements)
        elif how == "remove" and parent is not None:
            del parent[where[-1]]
        else:
            new = draw(st.sampled_from(WRONG_TYPES))(value) if how == "retype" else None
            if new is None and where and where[-1] in TIME_FIELDS:
                new = draw(edge_times | replacements)
            new = draw(replacements) if new is None else new
            if parent is None:
                doc = new
            else:
                parent[where[-1]] = new
    return doc


def with_field(where: Path, value: Any) -> dict[str, Any]:
    doc = fimwatcher_to_dict(
        FimWatcher(
            metadata=ObjectMeta(name="w", namespace="ns"),
            spec=FimWatcherSpec(
                selector=LabelSelector(),
                subjects=(Subject(paths=("/etc",), events=frozenset({EventName.MODIFY})),),
            ),
        )
    )
    parent = at(doc, where[:-1])
    parent[where[-1]] = value
    return doc


@settings(max_examples=250, deadline=None, derandomize=True, database=None)
@given(doc=mutated())
@example(doc=with_field(("metadata", "deletionTimestamp"), "0001-01-01T00:00:00+01:00"))
@example(doc=with_field(("metadata", "deletionTimestamp"), "9999-12-31T23:59:59-01:00"))
@example(doc=with_field(("metadata", "deletionTimestamp"), "0999-12-31T23:59:59Z"))
@example(doc=with_field(("kind",), "K" * 1_000_000))
@example(doc=with_field(("spec", "subjects", 0, "events"), ["x" * 1_000_000]))
def test_mutated_documents_only_raise_model_error(doc: Any) -> None:
    read(doc)


# Hypothesis prints explicit examples, which it cannot do for values nested this deep.
@pytest.mark.parametrize(
    "where",
    [
        ("apiVersion",),
        ("kind",),
        ("metadata",),
        ("metadata", "labels"),
        ("metadata", "unknownField"),
        ("spec", "selector", "matchExpressions"),
        ("spec", "subjects"),
        ("spec", "subjects", 0, "paths", 0),
        ("status",),
    ],
    ids=lambda where: ".".join(map(str, where)),
)
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_deep_nesting_anywhere_only_raises_model_error(where: Path, kind: str) -> None:
    read(with_field(where, nested(5_000, kind)))
