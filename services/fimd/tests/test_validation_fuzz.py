"""Property-based fuzz tests (hypothesis, a fixed and derandomized example budget) of fimd's
request validation: CreateWatch requests built from arbitrary field values (NUL, huge
strings, huge repeated fields, max_depth extremes, unknown event names, bad log formats and
container IDs, wrong config hashes) only raise `ValidationError` naming a field, with a
message small enough for a gRPC status; whatever `accept` takes is within every bound of the
fim.proto header."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fim.v1 import fim_pb2
from fim.v1.config_hash import config_hash
from libs.fimnotify_api.events import ALL_NAMES
from libs.k8s import logformat
from libs.k8s.container_id import Runtime
from services.fimd.daemon import Entry, accept
from services.fimd.validation import (
    MAX_CONTAINER_ID_BYTES,
    MAX_ID_BYTES,
    MAX_MESSAGE_BYTES,
    ValidationError,
    validate_key,
)

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)

# Proto strings are Unicode without surrogates (the wire carries UTF-8).
chars = st.characters(codec="utf-8")
name_chars = st.characters(codec="utf-8", exclude_characters="/\x00")
ids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20)
components = st.text(name_chars, min_size=1, max_size=10).filter(lambda c: c not in {".", ".."})
paths = st.lists(components, max_size=4).map(lambda parts: "/" + "/".join(parts))
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
container_ids = st.builds(
    lambda runtime, id_: f"{runtime}://{id_}", st.sampled_from(Runtime), hex64
)
literal_chars = st.characters(
    codec="utf-8", exclude_categories=["Cc"], exclude_characters="\u2028\u2029"
)
log_formats = st.lists(
    st.tuples(st.text(literal_chars, max_size=8), st.sampled_from(("", *logformat.PLACEHOLDERS))),
    max_size=4,
).map(lambda parts: logformat.unparse(tuple(parts)))


@st.composite
def subjects(draw: st.DrawFn) -> fim_pb2.Subject:
    recursive = draw(st.booleans())
    return fim_pb2.Subject(
        paths=draw(st.lists(paths, min_size=1, max_size=3, unique=True)),
        events=draw(st.lists(st.sampled_from(ALL_NAMES), min_size=1, max_size=4)),
        ignore=draw(st.lists(components, max_size=2)),
        only_dir=draw(st.booleans()),
        recursive=recursive,
        max_depth=draw(st.integers(0, 128)) if recursive else 0,
        follow_move=draw(st.booleans()),
        tags=draw(
            st.dictionaries(ids, st.text(st.characters(codec="utf-8"), max_size=10), max_size=3)
        ),
    )


specs = st.builds(
    fim_pb2.WatchSpec,
    key=st.builds(fim_pb2.WatchKey, watcher_uid=ids, pod_uid=ids, container_name=ids),
    identity=st.builds(
        fim_pb2.Identity,
        watcher_namespace=ids,
        watcher_name=ids,
        pod_namespace=ids,
        pod_name=ids,
    ),
    container_id=container_ids,
    subjects=st.lists(subjects(), min_size=1, max_size=3),
    log_format=log_formats,
)

# --- arbitrary field values ---------------------------------------------------------------------

ATOMS = ["\x00", "/", ".", "..", "a", "é", "\U0001f600", "{", "}", "{path}", "\n", "\u2028", " "]
texts = st.one_of(
    st.text(chars, max_size=30),
    st.lists(st.sampled_from(ATOMS), max_size=20).map("".join),
    st.builds(
        lambda prefix, chunk, n: prefix + chunk * n,
        st.sampled_from(["", "/", "containerd://"]),
        st.sampled_from(["a", "é", "\U0001f600", "\x01", "\U000e0001", "a/", "{", "{x}"]),
        st.sampled_from([1, 63, 64, 65, 253, 254, 256, 257, 1024, 1025, 4096, 4097, 100_000]),
    ),
)
bad_container_ids = st.one_of(
    texts,
    st.builds(
        lambda runtime, id_, tail: f"{runtime}://{id_}{tail}",
        st.sampled_from([*Runtime, "rkt", "CONTAINERD", "", "containerd:"]),
        st.one_of(hex64, hex64.map(str.upper), hex64.map(lambda h: h[:63]), st.text(max_size=70)),
        st.sampled_from(["", "a", "\x00", " ", "\n"]),
    ),
)
counts = st.sampled_from([0, 1, 2, 31, 32, 33, 64, 65, 1000, 20_000])


def repeated(value: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """A short list of values, or one value repeated many times (distinct by a suffix when a
    string)."""
    return st.one_of(
        st.lists(value, max_size=4),
        st.builds(
            lambda item, n: [f"{item}{i}" if isinstance(item, str) else item for i in range(n)],
            value,
            counts,
        ),
    )


Mutation = Callable[[fim_pb2.CreateWatchRequest, st.DataObject], None]


def _subject(request: fim_pb2.CreateWatchRequest, data: st.DataObject) -> fim_pb2.Subject:
    if not request.spec.subjects:  # cleared by an earlier mutation
        request.spec.subjects.add(paths=["/data"], events=["all"])
    index = data.draw(st.integers(0, len(request.spec.subjects) - 1))
    subject: fim_pb2.Subject = request.spec.subjects[index]
    return subject


def _set_text(message: Callable[[fim_pb2.CreateWatchRequest], Any], name: str) -> Mutation:
    def mutate(request: fim_pb2.CreateWatchRequest, data: st.DataObject) -> None:
        setattr(message(request), name, data.draw(texts))

    return mutate


def _subjects_count(request: fim_pb2.CreateWatchRequest, data: st.DataObject) -> None:
    first = fim_pb2.Subject()
    first.CopyFrom(_subject(request, data))
    del request.spec.subjects[:]
    request.spec.subjects.extend([first] * data.draw(counts))


def _repeated(name: str, value: st.SearchStrategy[Any]) -> Mutation:
    def mutate(request: fim_pb2.CreateWatchRequest, data: st.DataObject) -> None:
        field = getattr(_subject(request, data), name)
        del field[:]
        field.extend(data.draw(repeated(value)))

    return mutate


def _max_depth(request: fim_pb2.CreateWatchRequest, data: st.DataObject) -> None:
    subject = _subject(request, data)
    subject.max_depth = data.draw(
        st.sampled_from([0, 1, 127, 128, 129, 2**31 - 1, 2**31, 2**32 - 1])
        | st.integers(0, 2**32 - 1)
    )
    subject.recursive = data.draw(st.booleans())


def _tags(request: fim_pb2.CreateWatchRequest, data: st.DataObject) -> None:
    tags = _subject(request, data).tags
    tags.clear()
    n = data.draw(counts.filter(lambda n: n <= 1000))
    tags.update(data.draw(st.dictionaries(texts, texts, max_size=4)))
    tags.update({f"k{i}": "v" for i in range(n)})


def _log_format(request: fim_pb2.CreateWatchRequest, data: st.DataObject) -> None:
    request.spec.log_format = data.draw(texts | log_formats)


def _container_id(request: fim_pb2.CreateWatchRequest, data: st.DataObject) -> None:
    request.spec.container_id = data.draw(bad_container_ids)


def _config_hash(request: fim_pb2.CreateWatchRequest, data: st.DataObject) -> None:
    request.config_hash = data.draw(
        st.sampled_from(["0" * 64, config_hash(request.spec).upper()]) | texts
    )


def _clear(request: fim_pb2.CreateWatchRequest, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["key", "identity", "container_id", "subjects", "log_format"]))
    request.spec.ClearField(name)  # type: ignore[arg-type]  # one of the literals it takes


MUTATIONS: list[Mutation] = [
    *(_set_text(lambda r: r.spec.key, n) for n in ("watcher_uid", "pod_uid", "container_name")),
    *(
        _set_text(lambda r: r.spec.identity, n)
        for n in ("watcher_namespace", "watcher_name", "pod_namespace", "pod_name")
    ),
    _container_id,
    _subjects_count,
    _repeated("paths", texts | paths),
    _repeated(
        "events", texts | st.sampled_from(ALL_NAMES) | st.sampled_from(ALL_NAMES).map(str.upper)
    ),
    _repeated("ignore", texts),
    _max_depth,
    _tags,
    _log_format,
    _config_hash,
    _clear,
]


# --- properties ---------------------------------------------------------------------------------

FIELD_ROOTS = (
    "spec.key.",
    "spec.identity.",
    "spec.container_id",
    "spec.subjects",
    "spec.log_format",
    "config_hash",
)
NORMALIZED_ABSOLUTE = re.compile(r"^/$|^(/[^/\x00]+)+$")


def _size(text: str) -> int:
    return len(text.encode())


def assert_within_bounds(entry: Entry, request: fim_pb2.CreateWatchRequest) -> None:
    """The limits of the fim.proto header."""
    spec = entry.spec
    for part in (
        spec.key.watcher_uid,
        spec.key.pod_uid,
        spec.key.container_name,
        *(
            getattr(spec.identity, n)
            for n in ("watcher_namespace", "watcher_name", "pod_namespace", "pod_name")
        ),
    ):
        assert 1 <= _size(part) <= MAX_ID_BYTES
        assert "\x00" not in part
    assert 1 <= _size(spec.container_id) <= MAX_CONTAINER_ID_BYTES
    assert str(entry.container_id) == spec.container_id
    assert re.fullmatch(r"(containerd|cri-o|docker)://[0-9a-f]{64}", spec.container_id)
    assert 1 <= len(spec.subjects) <= 32
    assert len(entry.subjects) == len(spec.subjects)
    for subject, config in zip(spec.subjects, entry.subjects, strict=True):
        assert 1 <= len(subject.paths) <= 64
        assert len(set(subject.paths)) == len(subject.paths)
        for path in subject.paths:
            assert _size(path) <= 4096
            assert NORMALIZED_ABSOLUTE.match(path)
            assert all(part not in (".", "..") for part in path.split("/"))
        assert 1 <= len(subject.events) <= 15
        assert all(event in ALL_NAMES for event in subject.events)
        assert len(subject.ignore) <= 64
        assert all(
            1 <= _size(p) <= 255 and "/" not in p and "\x00" not in p for p in subject.ignore
        )
        assert subject.max_depth <= 128
        assert subject.recursive or subject.max_depth == 0
        assert len(subject.tags) <= 32
        for key, value in subject.tags.items():
            assert 1 <= _size(key) <= 317
            assert _size(value) <= 1024
            assert "\x00" not in key + value
        assert config.paths == tuple(subject.paths)
        assert [str(event) for event in config.events] == list(subject.events)
        assert dict(config.tags) == dict(subject.tags)
    assert len(spec.log_format) <= 1024
    assert re.fullmatch(logformat.CRD_PATTERN, spec.log_format)
    assert (entry.template is None) is (spec.log_format == "")
    assert entry.config_hash == config_hash(spec)
    assert request.config_hash in ("", entry.config_hash)
    assert (
        entry.identity.watcher == f"{spec.identity.watcher_namespace}/{spec.identity.watcher_name}"
    )


def check_error(err: ValidationError) -> None:
    """The error names a field and fits a gRPC status message."""
    message = str(err)
    assert err.field
    assert message.startswith(f"{err.field}: ")
    assert len(message.encode()) <= MAX_MESSAGE_BYTES


def accepted(request: fim_pb2.CreateWatchRequest) -> Entry | None:
    error: ValidationError | None = None
    try:
        entry = accept(request, "node-1")
    except ValidationError as err:
        error = err
    if error is not None:
        check_error(error)
        assert error.field.startswith(FIELD_ROOTS), error.field
        return None
    assert_within_bounds(entry, request)
    return entry


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(spec=specs, with_hash=st.booleans())
def test_valid_requests_are_accepted_within_the_bounds(
    spec: fim_pb2.WatchSpec, with_hash: bool
) -> None:
    request = fim_pb2.CreateWatchRequest(
        spec=spec, config_hash=config_hash(spec) if with_hash else ""
    )
    assert accepted(request) is not None


@FUZZ
@given(spec=specs, data=st.data())
def test_requests_with_arbitrary_fields_only_raise_a_validation_error(
    spec: fim_pb2.WatchSpec, data: st.DataObject
) -> None:
    request = fim_pb2.CreateWatchRequest(spec=spec)
    for mutate in data.draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
        mutate(request, data)
    accepted(request)


def request_with(change: Callable[[fim_pb2.CreateWatchRequest], Any]) -> fim_pb2.CreateWatchRequest:
    request = fim_pb2.CreateWatchRequest(
        spec=fim_pb2.WatchSpec(
            key=fim_pb2.WatchKey(watcher_uid="w", pod_uid="p", container_name="c"),
            identity=fim_pb2.Identity(
                watcher_namespace="ns", watcher_name="w", pod_namespace="ns", pod_name="p"
            ),
            container_id="containerd://" + "a" * 64,
            subjects=[fim_pb2.Subject(paths=["/data"], events=["all"])],
        )
    )
    change(request)
    return request


HUGE = "é" * 1_000_000
LARGEST: dict[str, Callable[[fim_pb2.CreateWatchRequest], Any]] = {
    "event": lambda r: r.spec.subjects[0].events.append(HUGE),
    "config_hash": lambda r: setattr(r, "config_hash", HUGE),
    "relative_path": lambda r: r.spec.subjects[0].paths.append("\x01" * 4000),
    "unnormalized_path": lambda r: r.spec.subjects[0].paths.append("/é" * 1000 + "/"),
    "placeholder": lambda r: setattr(r.spec, "log_format", "{" + "\U0001f600" * 1022 + "}"),
    "tag": lambda r: r.spec.subjects[0].tags.update({"\x01" * 317: HUGE}),
    "ignore": lambda r: r.spec.subjects[0].ignore.append("\U000e0001" * 63 + "/"),
    "container_id": lambda r: setattr(r.spec, "container_id", "x://" + "é" * 127),
    "max_depth": lambda r: setattr(r.spec.subjects[0], "max_depth", 2**32 - 1),
}


@pytest.mark.parametrize("change", LARGEST.values(), ids=LARGEST.keys())
def test_errors_for_the_largest_values_fit_a_grpc_status(
    change: Callable[[fim_pb2.CreateWatchRequest], Any],
) -> None:
    request = request_with(change)
    with pytest.raises(ValidationError) as err:
        accept(request, "node-1")
    check_error(err.value)


@FUZZ
@given(watcher_uid=texts, pod_uid=texts, container_name=texts)
def test_keys_only_raise_a_validation_error_naming_the_part(
    watcher_uid: str, pod_uid: str, container_name: str
) -> None:
    key = fim_pb2.WatchKey(watcher_uid=watcher_uid, pod_uid=pod_uid, container_name=container_name)
    error: ValidationError | None = None
    try:
        validate_key(key)
    except ValidationError as err:
        error = err
    if error is not None:
        check_error(error)
        assert error.field in {"key.watcher_uid", "key.pod_uid", "key.container_name"}
        return
    for part in (watcher_uid, pod_uid, container_name):
        assert 1 <= _size(part) <= MAX_ID_BYTES
        assert "\x00" not in part
