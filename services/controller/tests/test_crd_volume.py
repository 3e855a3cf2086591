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
