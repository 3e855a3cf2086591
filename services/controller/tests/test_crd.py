"""deploy/base/crd.yaml in a real API server: valid FimWatchers accepted and defaulted,
invalid ones rejected with a message that names the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from libs.k8s.codec import status_to_dict
from libs.k8s.model import MAX_SCAN_REQUEST_LENGTH, FimWatcherStatus, ScanStatus
from services.controller.kube import ApiError
from services.controller.objects import watcher_from_dict
from services.controller.tests import apiserver

if TYPE_CHECKING:  # imported by pytest as a plugin; importing it here first stops assert rewriting
    from services.controller.tests.fixtures import Env

pytest_plugins = ["tests.cluster.fixtures", "services.controller.tests.fixtures"]

NS = "crd-test"


@pytest.fixture(scope="module")
def kube(env: Env) -> Any:
    apiserver.namespace(env.admin, NS)
    return env.admin


def create(kube: Any, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return apiserver.post_watcher(kube, NS, name, spec)


def subject(**fields: Any) -> dict[str, Any]:
    return {"paths": ["/var/log"], "events": ["modify"], **fields}


def test_valid_watcher_is_accepted_with_defaults(kube: Any) -> None:
    spec = {
        "selector": {
            "matchLabels": {"app.kubernetes.io/name": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}],
        },
        "subjects": [
            subject(paths=["/", "/etc/..d", "/srv/.hidden"], recursive=True, maxDepth=3),
            subject(ignore=["*.swp", ".git"], tags={"team": "payments"}),
        ],
    }
    created = create(kube, "valid", spec)
    first, second = created["spec"]["subjects"]
    assert (first["onlyDir"], first["followMove"], second["maxDepth"]) == (False, False, 0)
    assert created["spec"]["logFormat"] == ""
    assert watcher_from_dict(created).spec is not None  # the model agrees


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"selector": {}, "subjects": []}, "spec.subjects: Invalid value"),
        ({"subjects": [subject()]}, "spec.selector: Required value"),
        ({"selector": {}, "subjects": [subject(paths=["var/log"])]}, "spec.subjects[0].paths[0]"),
        ({"selector": {}, "subjects": [subject(paths=["/a/../b"])]}, "spec.subjects[0].paths[0]"),
        ({"selector": {}, "subjects": [subject(paths=["/a/"])]}, "spec.subjects[0].paths[0]"),
        ({"selector": {}, "subjects": [subject(paths=[])]}, "spec.subjects[0].paths"),
        ({"selector": {}, "subjects": [subject(paths=["/a", "/a"])]}, "Duplicate value"),
        ({"selector": {}, "subjects": [subject(events=["write"])]}, 'Unsupported value: "write"'),
        ({"selector": {}, "subjects": [subject(events=[])]}, "spec.subjects[0].events"),
        (
            {"selector": {}, "subjects": [subject(recursive=True, maxDepth=-1)]},
            "spec.subjects[0].maxDepth",
        ),
        (
            {"selector": {}, "subjects": [subject(maxDepth=2)]},
            "maxDepth requires recursive: true",
        ),
        ({"selector": {}, "subjects": [subject(ignore=["a/b"])]}, "spec.subjects[0].ignore[0]"),
        (
            {"selector": {}, "subjects": [subject(tags={"bad key!": "x"})]},
            "tag keys must be qualified names",
        ),
        (
            {
                "selector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
                "subjects": [subject()],
            },
            "values must be non-empty for In and NotIn",
        ),
        (
            {
                "selector": {"matchExpressions": [{"key": "a", "operator": "Like"}]},
                "subjects": [subject()],
            },
            'Unsupported value: "Like"',
        ),
        (
            {"selector": {}, "subjects": [subject()], "logFormat": "a\nb"},
            "spec.logFormat",
        ),
    ],
    ids=lambda value: "" if isinstance(value, dict) else value[:40],
)
def test_invalid_watcher_is_rejected_naming_the_field(
    kube: Any, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiError) as rejected:
        create(kube, "invalid", spec)
    assert rejected.value.status == 422
    assert message in rejected.value.message


def test_status_subresource_and_printer_columns(kube: Any) -> None:
    create(kube, "columns", {"selector": {}, "subjects": [subject()]})
    path = apiserver.watcher_path(NS, "columns")
    status = {"observablePods": 3, "watchedPods": 2, "observedGeneration": 1}
    kube.request("PATCH", path, body={"status": status}, content_type=apiserver.MERGE_PATCH)
    assert "status" not in kube.request("GET", path)  # the main resource ignores status
    kube.request(
        "PATCH", path + "/status", body={"status": status}, content_type=apiserver.MERGE_PATCH
    )
    assert kube.request("GET", path)["status"] == status
    crd = kube.request(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/fimwatchers.fim-k8s.io"
    )
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Observable", "Watched", "Ready", "Age"]
    assert crd["spec"]["names"]["shortNames"] == ["fw"]


def test_last_scan_as_the_controller_writes_it_is_kept_whole(kube: Any) -> None:
    create(kube, "scanned", {"selector": {}, "subjects": [subject()]})
    path = apiserver.watcher_path(NS, "scanned")
    scan = ScanStatus(
        time=datetime(2026, 12, 1, 10, tzinfo=UTC), scanned=3, added=1, removed=0, changed=2,
        request="r" * MAX_SCAN_REQUEST_LENGTH, answered=2, containers=2,
    )  # fmt: skip
    body = {"status": status_to_dict(FimWatcherStatus(last_scan=scan))}
    kube.request("PATCH", path + "/status", body=body, content_type=apiserver.MERGE_PATCH)
    stored = kube.request("GET", path)
    assert stored["status"]["lastScan"] == body["status"]["lastScan"]  # nothing pruned
    assert watcher_from_dict(stored).status.last_scan == scan
    # The next sweep's status (request not answered yet) replaces every field.
    later = attrs.evolve(scan, request="", answered=1)
    body = {"status": status_to_dict(FimWatcherStatus(last_scan=later))}
    kube.request("PATCH", path + "/status", body=body, content_type=apiserver.MERGE_PATCH)
    assert watcher_from_dict(kube.request("GET", path)).status.last_scan == later
    too_long = {"lastScan": {**body["status"]["lastScan"], "request": "r" * 257}}
    with pytest.raises(ApiError) as rejected:
        kube.request(
            "PATCH", path + "/status", body={"status": too_long},
            content_type=apiserver.MERGE_PATCH,
        )  # fmt: skip
    assert rejected.value.status == 422
