"""The CRD's event volume fields in a real API server: a subject's `coalesce` (a duration of
1 ms up to one minute) and `lineBudget` (0..1,000,000) accepted and rejected exactly as the
FimWatcher model (libs/k8s/model.py) accepts and rejects them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from libs.k8s.errors import ModelError
from libs.k8s.model import coalesce_ms
from services.controller.kube import ApiError
from services.controller.objects import watcher_from_dict
from services.controller.tests import apiserver

if TYPE_CHECKING:  # imported by pytest as a plugin; importing it here first stops assert rewriting
    from services.controller.tests.fixtures import Env

pytest_plugins = ["tests.cluster.fixtures", "services.controller.tests.fixtures"]

NS = "crd-volume-test"
ACCEPTED = ["1ms", "500ms", "60000ms", "1s", "60s", "1m", "01m", "00001s"]
REJECTED = ["0ms", "0s", "0m", "60001ms", "61s", "2m", "1", "1.5s", "-1s", "1h", "123456ms", " 1s"]


@pytest.fixture(scope="module")
def kube(env: Env) -> Any:
    apiserver.namespace(env.admin, NS)
    return env.admin


def _create(kube: Any, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return apiserver.post_watcher(kube, NS, name, spec)


def _spec(coalesce: str | None = None, **fields: Any) -> dict[str, Any]:
    subject: dict[str, Any] = {"paths": ["/var/log"], "events": ["modify"]}
    if coalesce is not None:
        subject["coalesce"] = coalesce
    return {"selector": {}, "subjects": [subject], **fields}


@pytest.mark.parametrize("window", ACCEPTED)
def test_coalesce_windows_the_model_accepts_are_accepted(kube: Any, window: str) -> None:
    name = "ok-" + window.replace(" ", "").lower()
    created = _create(kube, name, _spec(window))
    assert created["spec"]["subjects"][0]["coalesce"] == window
    assert watcher_from_dict(created).spec is not None  # the model agrees
    kube.request("DELETE", apiserver.watcher_path(NS, name))


@pytest.mark.parametrize("window", REJECTED)
def test_coalesce_windows_the_model_rejects_are_rejected(kube: Any, window: str) -> None:
    with pytest.raises(ModelError):
        coalesce_ms(window)
    with pytest.raises(ApiError) as rejected:
        _create(kube, "bad", _spec(window))
    assert rejected.value.status == 422
    assert "spec.subjects[0].coalesce" in rejected.value.message


def test_line_budget_bounds_and_default(kube: Any) -> None:
    created = _create(kube, "budget-default", _spec())
    assert created["spec"]["lineBudget"] == 0
    assert "coalesce" not in created["spec"]["subjects"][0]
    assert _create(kube, "budget-max", _spec(lineBudget=1_000_000))["spec"]["lineBudget"] == 10**6
    for bad in (-1, 1_000_001):
        with pytest.raises(ApiError) as rejected:
            _create(kube, "budget-bad", _spec(lineBudget=bad))
        assert "spec.lineBudget" in rejected.value.message


ATTRIBUTES_OK: list[dict[str, Any]] = [
    {"attributes": True},
    {"hash": "sha256"},
    {"attributes": False, "hash": "sha256"},
    {"attributes": False, "coalesce": "1s"},
]
ATTRIBUTES_BAD: list[tuple[dict[str, Any], str]] = [
    ({"hash": "md5"}, "spec.subjects[0].hash"),
    ({"hash": ""}, "spec.subjects[0].hash"),
    ({"attributes": True, "coalesce": "1s"}, "spec.subjects[0].coalesce"),
    ({"hash": "sha256", "coalesce": "1s"}, "spec.subjects[0].coalesce"),
]


@pytest.mark.parametrize("fields", ATTRIBUTES_OK)
def test_attributes_and_hash_the_model_accepts_are_accepted(
    kube: Any, fields: dict[str, Any]
) -> None:
    spec = _spec()
    spec["subjects"][0].update(fields)
    name = "attrs-" + "-".join(f"{k}{v}".lower() for k, v in fields.items())
    created = _create(kube, name, spec)
    parsed_spec = watcher_from_dict(created).spec  # the model agrees
    assert parsed_spec is not None
    parsed = parsed_spec.subjects[0]
    assert parsed.attributes is fields.get("attributes", False)
    assert parsed.hash == fields.get("hash", "")
    kube.request("DELETE", apiserver.watcher_path(NS, name))


@pytest.mark.parametrize(("fields", "where"), ATTRIBUTES_BAD)
def test_attributes_and_hash_the_model_rejects_are_rejected(
    kube: Any, fields: dict[str, Any], where: str
) -> None:
    spec = _spec()
    spec["subjects"][0].update(fields)
    if fields.get("hash") != "":  # the model takes "" for "no hash"; the CRD has no empty enum
        assert watcher_from_dict(_create_body(spec)).spec is None  # the model refuses it
    with pytest.raises(ApiError) as rejected:
        _create(kube, "attrs-bad", spec)
    assert rejected.value.status == 422
    assert where in rejected.value.message


def _create_body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "fim-k8s.io/v1alpha1",
        "kind": "FimWatcher",
        "metadata": {"name": "x", "namespace": NS, "uid": "u"},
        "spec": spec,
    }


SCAN_OK = ["1m", "60s", "90s", "168h", "8784h", "527040m"]
SCAN_BAD = ["59s", "0m", "0h", "8785h", "1d", "1h30m", ""]


@pytest.mark.parametrize("interval", SCAN_OK)
def test_scan_intervals_the_model_accepts_are_accepted(kube: Any, interval: str) -> None:
    name = "scan-" + interval
    created = _create(kube, name, _spec(scan={"interval": interval}))
    parsed = watcher_from_dict(created).spec
    assert parsed is not None
    assert parsed.scan.interval == interval
    kube.request("DELETE", apiserver.watcher_path(NS, name))


@pytest.mark.parametrize("interval", SCAN_BAD)
def test_scan_intervals_the_model_rejects_are_rejected(kube: Any, interval: str) -> None:
    if interval:  # "" is the model's "none"; the CRD's pattern refuses an empty string
        assert watcher_from_dict(_create_body(_spec(scan={"interval": interval}))).spec is None
    with pytest.raises(ApiError) as rejected:
        _create(kube, "scan-bad", _spec(scan={"interval": interval}))
    assert rejected.value.status == 422
    assert "spec.scan.interval" in rejected.value.message
