"""Kubernetes JSON <-> model: realistic round trips, defaults and malformed input."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from libs.fimnotify_api.events import EventName
from libs.k8s.codec import fimwatcher_from_dict, fimwatcher_to_dict, status_to_dict
from libs.k8s.errors import ModelError
from libs.k8s.model import (
    Condition,
    ConditionStatus,
    FimWatcher,
    FimWatcherSpec,
    FimWatcherStatus,
    ObjectMeta,
    ScanStatus,
    Subject,
)
from libs.k8s.selector import LabelSelector, LabelSelectorRequirement, SelectorOperator

# As `CustomObjectsApi.get_namespaced_custom_object` returns it, metadata noise included.
API_OBJECT: dict[str, Any] = {
    "apiVersion": "fim-k8s.io/v1alpha1",
    "kind": "FimWatcher",
    "metadata": {
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": '{"kind":"FimWatcher"}'
        },
        "creationTimestamp": "2024-05-01T11:58:03Z",
        "deletionGracePeriodSeconds": 0,
        "deletionTimestamp": "2024-05-01T12:30:00Z",
        "finalizers": ["fim-k8s.io/watches"],
        "generation": 3,
        "labels": {"app.kubernetes.io/part-of": "shop", "team": "payments"},
        "managedFields": [
            {
                "apiVersion": "fim-k8s.io/v1alpha1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {".": {}, "f:selector": {}}},
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "time": "2024-05-01T11:58:03Z",
            }
        ],
        "name": "myapp-logs",
        "namespace": "shop",
        "resourceVersion": "184467",
        "uid": "5f0c7a8e-2b1d-4c3e-9f8a-7b6c5d4e3f21",
    },
    "spec": {
        "selector": {
            "matchLabels": {"app": "myapp"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        },
        "subjects": [
            {
                "paths": ["/var/log/myapp", "/etc/myapp"],
                "events": ["open", "modify"],
                "ignore": [".git", "*.swp"],
                "onlyDir": True,
                "recursive": True,
                "maxDepth": 3,
                "followMove": True,
                "tags": {"team": "payments"},
                "coalesce": "1s",
            },
            {"paths": ["/etc/passwd"], "events": ["all"]},
        ],
        "logFormat": "{time} {event} {path}",
        "lineBudget": 500,
    },
    "status": {
        "observedGeneration": 3,
        "observablePods": 4,
        "watchedPods": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "WatchesPending",
                "message": "1 of 4 pods not confirmed",
                "lastTransitionTime": "2024-05-01T12:00:00Z",
                "observedGeneration": 3,
            },
            {
                "type": "Degraded",
                "status": "False",
                "reason": "AsExpected",
                "message": "",
                "lastTransitionTime": "2024-05-01T11:58:04Z",
            },
        ],
    },
}

EXPECTED = FimWatcher(
    metadata=ObjectMeta(
        name="myapp-logs",
        namespace="shop",
        uid="5f0c7a8e-2b1d-4c3e-9f8a-7b6c5d4e3f21",
        generation=3,
        resource_version="184467",
        deletion_timestamp=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        finalizers=("fim-k8s.io/watches",),
        labels={"app.kubernetes.io/part-of": "shop", "team": "payments"},
    ),
    spec=FimWatcherSpec(
        selector=LabelSelector(
            match_labels={"app": "myapp"},
            match_expressions=(
                LabelSelectorRequirement(
                    key="tier", operator=SelectorOperator.IN, values=("web", "api")
                ),
                LabelSelectorRequirement(key="canary", operator=SelectorOperator.DOES_NOT_EXIST),
            ),
        ),
        subjects=(
            Subject(
                paths=("/var/log/myapp", "/etc/myapp"),
                events=frozenset({EventName.OPEN, EventName.MODIFY}),
                ignore=(".git", "*.swp"),
                only_dir=True,
                recursive=True,
                max_depth=3,
                follow_move=True,
                tags={"team": "payments"},
                coalesce="1s",
            ),
            Subject(paths=("/etc/passwd",), events=frozenset({EventName.ALL})),
        ),
        log_format="{time} {event} {path}",
        line_budget=500,
    ),
    status=FimWatcherStatus(
        observed_generation=3,
        observable_pods=4,
        watched_pods=3,
        conditions=(
            Condition(
                type="Ready",
                status=ConditionStatus.FALSE,
                reason="WatchesPending",
                message="1 of 4 pods not confirmed",
                last_transition_time=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
                observed_generation=3,
            ),
            Condition(
                type="Degraded",
                status=ConditionStatus.FALSE,
                reason="AsExpected",
                last_transition_time=datetime(2024, 5, 1, 11, 58, 4, tzinfo=UTC),
            ),
        ),
    ),
)

MINIMAL: dict[str, Any] = {
    "apiVersion": "fim-k8s.io/v1alpha1",
    "kind": "FimWatcher",
    "metadata": {"name": "w", "namespace": "shop"},
    "spec": {"selector": {}, "subjects": [{"paths": ["/etc"], "events": ["modify"]}]},
}


def api_object() -> dict[str, Any]:
    return copy.deepcopy(API_OBJECT)


def test_structures_a_full_api_object() -> None:
    assert fimwatcher_from_dict(api_object()) == EXPECTED


def test_survives_a_json_round_trip_of_the_api_object() -> None:
    assert fimwatcher_from_dict(json.loads(json.dumps(API_OBJECT))) == EXPECTED


def test_unstructures_to_the_api_fields_it_models() -> None:
    written = fimwatcher_to_dict(EXPECTED)
    expected = api_object()
    noise = ("annotations", "creationTimestamp", "deletionGracePeriodSeconds", "managedFields")
    for key in noise:
        del expected["metadata"][key]
    expected["spec"]["subjects"][0]["events"] = ["modify", "open"]
    assert written == expected
    assert json.loads(json.dumps(written)) == written
    assert fimwatcher_from_dict(written) == EXPECTED


def test_output_uses_plain_json_types() -> None:
    written = fimwatcher_to_dict(EXPECTED)
    requirement = written["spec"]["selector"]["matchExpressions"][0]
    assert type(requirement["operator"]) is str
    assert type(written["status"]["conditions"][0]["status"]) is str
    assert type(written["metadata"]["labels"]) is dict
    assert type(written["spec"]["subjects"][0]["paths"]) is list


def test_minimal_object_takes_defaults_and_writes_them_back_omitted() -> None:
    watcher = fimwatcher_from_dict(MINIMAL)
    assert watcher.metadata == ObjectMeta(name="w", namespace="shop")
    assert watcher.spec.selector == LabelSelector()
    assert watcher.spec.subjects == (
        Subject(paths=("/etc",), events=frozenset({EventName.MODIFY})),
    )
    assert watcher.spec.log_format == ""
    assert watcher.status == FimWatcherStatus()
    assert fimwatcher_to_dict(watcher) == MINIMAL


@pytest.mark.parametrize("absent", ["apiVersion", "kind"])
def test_type_meta_may_be_absent(absent: str) -> None:
    obj = copy.deepcopy(MINIMAL)
    del obj[absent]
    assert fimwatcher_from_dict(obj).key == "shop/w"


def test_nulls_count_as_absent() -> None:
    obj = copy.deepcopy(MINIMAL)
    obj["status"] = None
    obj["metadata"]["deletionTimestamp"] = None
    obj["spec"]["logFormat"] = None
    obj["spec"]["subjects"][0]["tags"] = None
    assert fimwatcher_from_dict(obj) == fimwatcher_from_dict(MINIMAL)


def test_status_is_written_in_full_for_merge_patches() -> None:
    assert status_to_dict(FimWatcherStatus()) == {
        "observedGeneration": 0,
        "observablePods": 0,
        "watchedPods": 0,
        "conditions": [],
    }
    assert status_to_dict(EXPECTED.status) == API_OBJECT["status"]
    # lastScan too: an omitted request would keep a stale one under a merge patch.
    scan = ScanStatus(
        time=datetime(2026, 12, 1, 10, tzinfo=UTC), scanned=3, added=0, removed=0, changed=1
    )
    assert status_to_dict(FimWatcherStatus(last_scan=scan))["lastScan"] == {
        "time": "2026-12-01T10:00:00Z",
        "scanned": 3,
        "added": 0,
        "removed": 0,
        "changed": 1,
        "request": "",
        "answered": 0,
        "containers": 0,
    }


def test_timestamps_are_written_as_utc_seconds() -> None:
    local = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    status = FimWatcherStatus(
        conditions=(
            Condition(
                type="Ready",
                status=ConditionStatus.UNKNOWN,
                reason="Starting",
                last_transition_time=local,
            ),
        )
    )
    assert status_to_dict(status)["conditions"][0]["lastTransitionTime"] == "2024-05-01T12:00:00Z"


def test_offset_timestamps_are_read_as_utc() -> None:
    obj = copy.deepcopy(MINIMAL)
    obj["metadata"]["deletionTimestamp"] = "2024-05-01T14:00:00+02:00"
    stamp = fimwatcher_from_dict(obj).metadata.deletion_timestamp
    assert stamp == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert stamp is not None
    assert stamp.tzinfo is UTC


def _set(dotted: str, value: Any) -> dict[str, Any]:
    """API_OBJECT with the value at `dotted` (`spec.subjects.0`) replaced, or deleted."""
    changed = api_object()
    *parents, last = [int(step) if step.isdigit() else step for step in dotted.split(".")]
    target: Any = changed
    for step in parents:
        target = target[step]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return changed


_DELETE = object()

MALFORMED: list[tuple[Any, str]] = [
    # Not an object at all.
    (None, "must be an object, got null"),
    ([], "must be an object, got array"),
    ("FimWatcher", "must be an object, got string"),
    (_set("apiVersion", "fim-k8s.io/v1"), "apiVersion: must be 'fim-k8s.io/v1alpha1'"),
    (_set("kind", "Pod"), "kind: must be 'FimWatcher', got 'Pod'"),
    # Required fields.
    (_set("metadata", _DELETE), "metadata: is required"),
    (_set("spec", None), "spec: is required"),
    (_set("metadata.name", _DELETE), "metadata.name: is required"),
    (_set("spec.selector", _DELETE), "spec.selector: is required"),
    (_set("spec.subjects", _DELETE), "spec.subjects: is required"),
    (_set("spec.subjects.0.paths", _DELETE), "spec.subjects[0].paths: is required"),
    (_set("spec.subjects.0.events", None), "spec.subjects[0].events: is required"),
    (
        _set("spec.selector.matchExpressions.0.operator", _DELETE),
        "spec.selector.matchExpressions[0].operator: is required",
    ),
    (
        _set("status.conditions.1.lastTransitionTime", _DELETE),
        "status.conditions[1].lastTransitionTime: is required",
    ),
    # Wrong JSON types.
    (_set("metadata", []), "metadata: must be an object, got array"),
    (_set("spec", "spec"), "spec: must be an object, got string"),
    (_set("metadata.name", 7), "metadata.name: must be a string, got integer"),
    (_set("metadata.generation", "3"), "metadata.generation: must be an integer"),
    (_set("metadata.generation", True), "metadata.generation: must be an integer"),
    (_set("metadata.generation", 3.0), "metadata.generation: must be an integer"),
    (_set("metadata.finalizers", "x"), "metadata.finalizers: must be an array"),
    (_set("metadata.labels", ["a"]), "metadata.labels: must be an object"),
    (_set("metadata.labels.team", 1), "metadata.labels[team]: must be a string"),
    (_set("spec.subjects", {"paths": ["/a"]}), "spec.subjects: must be an array, got object"),
    (_set("spec.subjects", "/var/log"), "spec.subjects: must be an array, got string"),
    (_set("spec.subjects.1", "/etc"), "spec.subjects[1]: must be an object, got string"),
    (_set("spec.subjects.1", None), "spec.subjects[1]: must be an object, got null"),
    (
        _set("spec.subjects.0.paths", "/var/log"),
        "spec.subjects[0].paths: must be an array, got string",
    ),
    (
        _set("spec.subjects.0.paths", {"/a": 1}),
        "spec.subjects[0].paths: must be an array, got object",
    ),
    (
        _set("spec.subjects.0.paths.1", None),
        "spec.subjects[0].paths[1]: must be a string, got null",
    ),
    (
        _set("spec.subjects.0.paths.1", 5),
        "spec.subjects[0].paths[1]: must be a string, got integer",
    ),
    (
        _set("spec.subjects.0.paths.1", ["/a"]),
        "spec.subjects[0].paths[1]: must be a string, got array",
    ),
    (
        _set("spec.subjects.0.events", "open"),
        "spec.subjects[0].events: must be an array, got string",
    ),
    (
        _set("spec.subjects.0.events.0", 1),
        "spec.subjects[0].events[0]: must be a string, got integer",
    ),
    (
        _set("spec.subjects.0.onlyDir", "true"),
        "spec.subjects[0].onlyDir: must be a boolean, got string",
    ),
    (
        _set("spec.subjects.0.recursive", 1),
        "spec.subjects[0].recursive: must be a boolean, got integer",
    ),
    (
        _set("spec.subjects.0.maxDepth", "3"),
        "spec.subjects[0].maxDepth: must be an integer, got string",
    ),
    (
        _set("spec.subjects.0.maxDepth", False),
        "spec.subjects[0].maxDepth: must be an integer, got boolean",
    ),
    (_set("spec.subjects.0.ignore", ".git"), "spec.subjects[0].ignore: must be an array"),
    (_set("spec.subjects.0.tags", [["team", "x"]]), "spec.subjects[0].tags: must be an object"),
    (
        _set("spec.subjects.0.tags.team", {"a": "b"}),
        "spec.subjects[0].tags[team]: must be a string, got object",
    ),
    (_set("spec.logFormat", 1), "spec.logFormat: must be a string, got integer"),
    (_set("spec.selector", []), "spec.selector: must be an object, got array"),
    (
        _set("spec.selector.matchLabels", "app=myapp"),
        "spec.selector.matchLabels: must be an object",
    ),
    (
        _set("spec.selector.matchExpressions", {}),
        "spec.selector.matchExpressions: must be an array",
    ),
    (
        _set("spec.selector.matchExpressions.0.values", "web"),
        "spec.selector.matchExpressions[0].values: must be an array, got string",
    ),
    (
        _set("spec.selector.matchExpressions.0.operator", 1),
        "spec.selector.matchExpressions[0].operator: must be a string, got integer",
    ),
    (_set("status", [1]), "status: must be an object, got array"),
    (_set("status.watchedPods", "3"), "status.watchedPods: must be an integer"),
    (_set("status.conditions", {}), "status.conditions: must be an array"),
    (
        _set("status.conditions.0.status", True),
        "status.conditions[0].status: must be a string, got boolean",
    ),
    # Invalid values.
    (
        _set("spec.subjects.0.paths.1", "etc/myapp"),
        "spec.subjects[0].paths[1]: must be an absolute path",
    ),
    (_set("spec.subjects.1.paths", []), "spec.subjects[1].paths: must have at least 1 item(s)"),
    (_set("spec.subjects", []), "spec.subjects: must have at least 1 item(s)"),
    (
        _set("spec.subjects.0.events", []),
        "spec.subjects[0].events: at least one event name is required",
    ),
    (
        _set("spec.subjects.0.events.1", "write"),
        "spec.subjects[0].events: unknown event name 'write'",
    ),
    (
        _set("spec.subjects.0.events.1", "MODIFY"),
        "spec.subjects[0].events: unknown event name 'MODIFY'",
    ),
    (_set("spec.subjects.0.maxDepth", -1), "spec.subjects[0].maxDepth: must be between 0 and 128"),
    (_set("spec.subjects.0.ignore.0", "a/b"), "spec.subjects[0].ignore[0]: must not contain '/'"),
    (
        _set("spec.subjects.0.tags.team", "a b"),
        "spec.subjects[0].tags[team]: 'a b' is not a valid label value",
    ),
    (
        _set("spec.logFormat", "a\nb"),
        "spec.logFormat: control character or line separator '\\n' at offset 1",
    ),
    (_set("spec.logFormat", "{pth}"), "spec.logFormat: unknown placeholder {pth} at offset 0"),
    (
        _set("spec.selector.matchExpressions.0.operator", "in"),
        "spec.selector.matchExpressions[0].operator: must be one of: In, NotIn, Exists",
    ),
    (
        _set("spec.selector.matchExpressions.1.values", ["x"]),
        "spec.selector.matchExpressions[1].values: must be empty for operator DoesNotExist",
    ),
    (_set("metadata.namespace", "Shop"), "metadata.namespace: 'Shop' is not a valid"),
    (
        _set("metadata.deletionTimestamp", "yesterday"),
        "metadata.deletionTimestamp: must be an RFC 3339 timestamp",
    ),
    (
        _set("metadata.deletionTimestamp", "2024-05-01T12:30:00"),
        "metadata.deletionTimestamp: must be an RFC 3339 timestamp with a time zone",
    ),
    (
        _set("metadata.deletionTimestamp", 1714566600),
        "metadata.deletionTimestamp: must be an RFC 3339 timestamp string",
    ),
    (
        _set("status.conditions.0.status", "true"),
        "status.conditions[0].status: must be one of: True, False, Unknown",
    ),
    (_set("status.conditions.1.type", "Ready"), "status.conditions[1]: duplicate value 'Ready'"),
    (_set("status.observablePods", -4), "status.observablePods: must be between 0 and"),
]


@pytest.mark.parametrize(("obj", "message"), MALFORMED)
def test_malformed_input_raises_model_error_with_path(obj: Any, message: str) -> None:
    with pytest.raises(ModelError) as caught:
        fimwatcher_from_dict(obj)
    assert str(caught.value).startswith(message), str(caught.value)
    assert type(caught.value) is ModelError


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths of every node below `value` (dict keys and list indexes)."""
    if isinstance(value, dict):
        children = [(str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        children = [(str(index), item) for index, item in enumerate(value)]
    else:
        return []
    found = []
    for step, item in children:
        if "." not in step:
            found.append(".".join((*prefix, step)))
            found.extend(_paths(item, (*prefix, step)))
    return found


JUNK: list[Any] = [None, 0, -1, 1.5, True, "", "x", [], [None], [[]], {}, {"a": None}, {"a": []}]


def test_any_junk_anywhere_raises_only_model_error() -> None:
    unexpected = []
    for dotted in _paths(API_OBJECT):
        for junk in [*JUNK, _DELETE]:
            try:
                fimwatcher_from_dict(_set(dotted, junk))
            except ModelError:
                pass
            except Exception as err:  # collect every escape, not just the first
                unexpected.append(f"{dotted}={junk!r}: {err!r}")
    assert unexpected == []


def test_structured_watchers_are_hashable_values() -> None:
    assert hash(fimwatcher_from_dict(api_object())) == hash(EXPECTED)
    assert {fimwatcher_from_dict(api_object()), EXPECTED} == {EXPECTED}
