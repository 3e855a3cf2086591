"""Model validation on construction: every bound and rule, with the offending field path."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from libs.fimnotify_api.events import EventName
from libs.k8s import logformat, model
from libs.k8s.errors import ModelError
from libs.k8s.model import (
    Condition,
    ConditionStatus,
    FimWatcher,
    FimWatcherSpec,
    FimWatcherStatus,
    ObjectMeta,
    Subject,
)
from libs.k8s.selector import LabelSelector

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
OPEN = frozenset({EventName.OPEN})


def subject(**changes: Any) -> Subject:
    fields: dict[str, Any] = {"paths": ("/var/log",), "events": OPEN}
    return Subject(**(fields | changes))


def condition(**changes: Any) -> Condition:
    fields: dict[str, Any] = {
        "type": "Ready",
        "status": ConditionStatus.TRUE,
        "reason": "AllWatched",
        "last_transition_time": NOW,
    }
    return Condition(**(fields | changes))


def expect_error(message: str, build: Any, changes: dict[str, Any]) -> None:
    with pytest.raises(ModelError) as caught:
        build(**changes)
    assert str(caught.value).startswith(message), str(caught.value)


def test_subject_defaults() -> None:
    built = subject()
    assert built.ignore == ()
    assert (built.only_dir, built.recursive, built.follow_move) == (False, False, False)
    assert built.max_depth == 0
    assert built.tags == {}


@pytest.mark.parametrize(
    "changes",
    [
        {"paths": ("/",)},
        {"paths": ("/a b/ünï cödé", "/.hidden", "/a/..b", "/a/b...")},
        {"paths": tuple(f"/p{i}" for i in range(model.MAX_PATHS_PER_SUBJECT))},
        {"paths": ("/" + "a" * (model.MAX_PATH_LENGTH - 1),)},
        {"events": frozenset(EventName)},
        {"ignore": (".git", "*.swp", "[a-z]?", "x" * model.MAX_IGNORE_PATTERN_LENGTH)},
        {"recursive": True, "max_depth": model.MAX_DEPTH},
        {"tags": {f"k{i}": "v" for i in range(model.MAX_TAGS)}},
        {"tags": {"example.com/team": "payments", "empty": ""}},
        {"attributes": True},
        {"hash": "sha256"},
        {"attributes": True, "hash": "sha256", "recursive": True},
    ],
)
def test_subject_accepts_values_at_the_bounds(changes: dict[str, Any]) -> None:
    assert subject(**changes).paths


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"paths": ()}, "paths: must have at least 1 item(s)"),
        (
            {"paths": tuple(f"/p{i}" for i in range(model.MAX_PATHS_PER_SUBJECT + 1))},
            "paths: must have at most 64 items, got 65",
        ),
        ({"paths": ("/ok", "")}, "paths[1]: must not be empty"),
        ({"paths": ("var/log",)}, "paths[0]: must be an absolute path"),
        ({"paths": ("./var",)}, "paths[0]: must be an absolute path"),
        ({"paths": ("~/x",)}, "paths[0]: must be an absolute path"),
        ({"paths": ("/var/\0log",)}, "paths[0]: must not contain NUL"),
        (
            {"paths": ("/" + "a" * model.MAX_PATH_LENGTH,)},
            "paths[0]: is 4097 bytes, at most 4096 allowed",
        ),
        ({"paths": ("/var/../etc",)}, "paths[0]: must be normalized"),
        ({"paths": ("/..",)}, "paths[0]: must be normalized"),
        ({"paths": ("/var/./log",)}, "paths[0]: must be normalized"),
        ({"paths": ("/var//log",)}, "paths[0]: must be normalized"),
        ({"paths": ("/var/log/",)}, "paths[0]: must be normalized"),
        ({"paths": ("//",)}, "paths[0]: must be normalized"),
        ({"paths": ("/a", "/b", "/a")}, "paths[2]: duplicate path '/a'"),
        ({"events": frozenset()}, "events: must have at least 1 item(s)"),
        ({"ignore": ("",)}, "ignore[0]: must not be empty"),
        ({"ignore": (".git", "a/b")}, "ignore[1]: must not contain '/'"),
        ({"ignore": ("a\0",)}, "ignore[0]: must not contain NUL"),
        ({"ignore": ("x" * 256,)}, "ignore[0]: is 256 bytes, at most 255 allowed"),
        ({"ignore": ("x",) * 65}, "ignore: must have at most 64 items"),
        ({"recursive": True, "max_depth": -1}, "maxDepth: must be between 0 and 128, got -1"),
        ({"recursive": True, "max_depth": 129}, "maxDepth: must be between 0 and 128, got 129"),
        ({"max_depth": 2}, "maxDepth: requires recursive: true"),
        ({"tags": {f"k{i}": "v" for i in range(33)}}, "tags: must have at most 32 items"),
        ({"tags": {"bad key": "v"}}, "tags[bad key]: 'bad key' is not a valid qualified name"),
        ({"tags": {"team": "a b"}}, "tags[team]: 'a b' is not a valid label value"),
        ({"tags": {"team": "x" * 64}}, "tags[team]: must be no more than 63 characters"),
        ({"hash": "md5"}, "hash: unknown hash 'md5'; expected one of: sha256"),
        ({"hash": "sha256", "coalesce": "1s"}, "hash: cannot be combined with coalesce"),
        ({"attributes": True, "coalesce": "1s"}, "attributes: cannot be combined with coalesce"),
    ],
)
def test_subject_rejects(changes: dict[str, Any], message: str) -> None:
    expect_error(message, subject, changes)


def test_subject_tags_are_a_read_only_copy_and_objects_stay_hashable() -> None:
    tags = {"team": "payments"}
    built = subject(tags=tags)
    tags["team"] = "other"
    assert built.tags == {"team": "payments"}
    assert hash(built) == hash(subject(tags={"team": "payments"}))
    assert built != subject(tags={"team": "other"})


def spec(**changes: Any) -> FimWatcherSpec:
    fields: dict[str, Any] = {"selector": LabelSelector(), "subjects": (subject(),)}
    return FimWatcherSpec(**(fields | changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"subjects": ()}, "subjects: must have at least 1 item(s)"),
        ({"subjects": (subject(),) * 33}, "subjects: must have at most 32 items, got 33"),
        ({"log_format": "x" * 1025}, "logFormat: must be at most 1024 characters"),
        (
            {"log_format": "{path}\n{event}"},
            "logFormat: control character or line separator '\\n' at offset 6: one event is",
        ),
        ({"log_format": "{path}\r"}, "logFormat: control character or line separator '\\r'"),
        ({"log_format": "\0"}, "logFormat: control character or line separator '\\x00'"),
        ({"log_format": "a\x85"}, "logFormat: control character or line separator '\\x85'"),
        ({"log_format": "a\u2028"}, "logFormat: control character or line separator"),
        ({"log_format": "{nope}"}, "logFormat: unknown placeholder {nope} at offset 0; known:"),
        ({"log_format": "{path!r}"}, "logFormat: unknown placeholder {path!r}"),
        ({"log_format": "a {path"}, "logFormat: unclosed '{' at offset 2"),
        ({"log_format": "a } b"}, "logFormat: single '}' at offset 2"),
    ],
)
def test_spec_rejects(changes: dict[str, Any], message: str) -> None:
    expect_error(message, spec, changes)


def test_spec_accepts_bounds() -> None:
    built = spec(subjects=(subject(),) * 32, log_format="{time} {event} " + "x" * 1009)
    assert len(built.subjects) == 32
    assert len(built.log_format) == 1024


def test_spec_accepts_every_placeholder_literal_braces_and_tab() -> None:
    text = "{{x}}\t" + " ".join(f"{{{name}}}" for name in logformat.PLACEHOLDERS)
    assert spec(log_format=text).log_format == text


def meta(**changes: Any) -> ObjectMeta:
    return ObjectMeta(**({"name": "myapp-logs", "namespace": "shop"} | changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "name: '' is not a valid DNS-1123 subdomain"),
        ({"name": "My_Watcher"}, "name: 'My_Watcher' is not a valid DNS-1123 subdomain"),
        ({"namespace": "a.b"}, "namespace: 'a.b' is not a valid DNS-1123 label"),
        ({"namespace": "n" * 64}, "namespace: must be no more than 63 characters"),
        ({"generation": -1}, "generation: must be between 0 and"),
        ({"generation": 2**63}, "generation: must be between 0 and"),
        ({"deletion_timestamp": datetime(2024, 5, 1)}, "deletionTimestamp: must be a timestamp"),
        ({"labels": {"a b": "c"}}, "labels[a b]: 'a b' is not a valid qualified name"),
    ],
)
def test_metadata_rejects(changes: dict[str, Any], message: str) -> None:
    expect_error(message, meta, changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"type": ""}, "type: '' is not a valid condition type"),
        ({"type": "Not Ready"}, "type: 'Not Ready' is not a valid condition type"),
        ({"type": "x" * 317}, "type: must be at most 316 characters"),
        ({"reason": ""}, "reason: '' is not a valid condition reason"),
        ({"reason": "1Bad"}, "reason: '1Bad' is not a valid condition reason"),
        ({"reason": "Bad,"}, "reason: 'Bad,' is not a valid condition reason"),
        ({"reason": "R" * 1025}, "reason: must be at most 1024 characters"),
        ({"message": "m" * 32769}, "message: must be at most 32768 characters"),
        ({"last_transition_time": datetime(2024, 5, 1)}, "lastTransitionTime: must be a"),
        ({"observed_generation": -1}, "observedGeneration: must be between 0 and"),
        (
            {"observed_generation": 2**63},
            "observedGeneration: must be between 0 and 9223372036854775807, got",
        ),
    ],
)
def test_condition_rejects(changes: dict[str, Any], message: str) -> None:
    expect_error(message, condition, changes)


def test_condition_accepts_metav1_shapes() -> None:
    built = condition(type="fim-k8s.io/" + "T" * 63, reason="Some_Reason:a,b1", message="m" * 32768)
    assert built.observed_generation is None
    # Bounds are inclusive: the largest generation the API server can hold is accepted.
    assert condition(observed_generation=2**63 - 1).observed_generation == 2**63 - 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"observed_generation": -1}, "observedGeneration: must be between 0 and"),
        ({"observable_pods": -1}, "observablePods: must be between 0 and 2147483647"),
        ({"watched_pods": 2**31}, "watchedPods: must be between 0 and 2147483647"),
        (
            {"conditions": (condition(), condition(type="Degraded"), condition())},
            "conditions[2]: duplicate value 'Ready'",
        ),
    ],
)
def test_status_rejects(changes: dict[str, Any], message: str) -> None:
    expect_error(message, FimWatcherStatus, changes)


def test_watcher_key_and_default_status() -> None:
    watcher = FimWatcher(metadata=meta(), spec=spec())
    assert watcher.key == "shop/myapp-logs"
    assert watcher.status == FimWatcherStatus()
    assert watcher.status.conditions == ()


def test_values_are_frozen() -> None:
    watcher = FimWatcher(metadata=meta(), spec=spec())
    with pytest.raises(AttributeError):
        watcher.spec = spec()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        watcher.spec.subjects[0].recursive = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "window_ms"),
    [("", 0), ("1ms", 1), ("500ms", 500), ("1s", 1000), ("60s", 60_000), ("1m", 60_000),
     ("60000ms", 60_000), ("00001s", 1000)],
)  # fmt: skip
def test_subject_coalesce_windows(text: str, window_ms: int) -> None:
    built = subject(coalesce=text)
    assert built.coalesce_ms == window_ms
    assert re.fullmatch(model.COALESCE_PATTERN[1:-1], text) or not text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0s", "coalesce: must be longer than 0"),
        ("0ms", "coalesce: must be longer than 0"),
        ("61s", "coalesce: must be at most 60000 ms (one minute), got 61000 ms"),
        ("2m", "coalesce: must be at most 60000 ms"),
        ("60001ms", "coalesce: must be at most 60000 ms"),
        ("1", "coalesce: must be a duration like 500ms, 1s or 1m, got '1'"),
        ("1.5s", "coalesce: must be a duration"),
        ("-1s", "coalesce: must be a duration"),
        ("1h", "coalesce: must be a duration"),
        ("123456ms", "coalesce: must be a duration"),
        (" 1s", "coalesce: must be a duration"),
    ],
)
def test_subject_coalesce_rejects(text: str, message: str) -> None:
    expect_error(message, subject, {"coalesce": text})


def test_line_budget_bounds() -> None:
    assert spec().line_budget == 0
    assert spec(line_budget=model.MAX_LINE_BUDGET).line_budget == 1_000_000
    expect_error("lineBudget: must be between 0 and 1000000, got -1", spec, {"line_budget": -1})
    expect_error("lineBudget: must be between 0 and 1000000", spec, {"line_budget": 1_000_001})
    expect_error("lineBudget: must be between 0 and 1000000", spec, {"line_budget": True})
    with pytest.raises(ModelError):
        model.check_coalesce_ms(60_001)
    model.check_coalesce_ms(0)
    model.check_coalesce_ms(60_000)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("", 0), ("1m", 60), ("60s", 60), ("90s", 90), ("168h", 604800), ("8784h", 31622400)],
)
def test_scan_interval_accepted(text: str, seconds: int) -> None:
    assert model.scan_interval_s(text) == seconds
    assert model.ScanSpec(interval=text).interval_s == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("59s", "must be at least 1m"),
        ("0m", "must be at least 1m (omit it"),
        ("8785h", "at most 366 days"),
        ("1d", "must be a duration like"),
        ("1h30m", "must be a duration like"),
        (" 1h", "must be a duration like"),
    ],
)
def test_scan_interval_rejected(text: str, message: str) -> None:
    with pytest.raises(ModelError, match=re.escape(message)):
        model.scan_interval_s(text)
    with pytest.raises(ModelError, match=r"^interval: "):
        model.ScanSpec(interval=text)
