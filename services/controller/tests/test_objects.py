"""API JSON -> the slim cached views: pods, and FimWatchers valid or not."""

from __future__ import annotations

from typing import Any

import pytest

from libs.k8s.errors import ModelError
from services.controller.objects import Container, pod_from_dict, watcher_from_dict

CID = "containerd://" + "ab" * 32


def api_pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "web-0", "uid": "u1", "labels": {"app": "web"}},
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "app", "ports": [{"name": "grpc", "containerPort": 7443}]}],
        },
        "status": {"phase": "Running", "podIP": "10.0.0.5", "hostIP": "192.0.2.1", **status},
    }


def test_pod_keeps_running_containers_with_valid_ids() -> None:
    statuses = [
        {"name": "app", "containerID": CID, "state": {"running": {"startedAt": "x"}}},
        {"name": "waiting", "state": {"waiting": {"reason": "ContainerCreating"}}},
        {"name": "done", "containerID": CID, "state": {"terminated": {"exitCode": 0}}},
        {"name": "odd", "containerID": "rkt://1234", "state": {"running": {}}},
    ]
    pod = pod_from_dict(api_pod(containerStatuses=statuses))
    assert pod.containers == (Container(name="app", container_id=CID),)
    assert (pod.uid, pod.node_name, pod.pod_ip, pod.host_ip) == (
        "u1",
        "n1",
        "10.0.0.5",
        "192.0.2.1",
    )
    assert dict(pod.ports) == {"grpc": "7443"}
    assert pod.running


def test_pod_without_running_containers_is_not_running() -> None:
    assert not pod_from_dict(api_pod()).running
    assert not pod_from_dict(api_pod(phase="Pending")).running


def api_watcher(spec: object) -> dict[str, Any]:
    return {
        "apiVersion": "fim-k8s.io/v1alpha1",
        "kind": "FimWatcher",
        "metadata": {"namespace": "shop", "name": "logs", "uid": "w1", "generation": 2},
        "spec": spec,
        "status": {"observablePods": 3, "watchedPods": 1, "observedGeneration": 1},
    }


def test_valid_watcher() -> None:
    spec = {
        "selector": {"matchLabels": {"app": "web"}},
        "subjects": [{"paths": ["/var/log"], "events": ["modify"]}],
    }
    watcher = watcher_from_dict(api_watcher(spec))
    assert watcher.spec is not None
    assert (watcher.key, watcher.error, watcher.status.watched_pods) == ("shop/logs", "", 1)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"selector": {}, "subjects": []}, "spec.subjects: must have at least 1 item(s)"),
        (
            {"selector": {}, "subjects": [{"paths": ["var"], "events": ["modify"]}]},
            "spec.subjects[0].paths[0]: must be an absolute path, got 'var'",
        ),
        (None, "spec: must be an object, got null"),
    ],
)
def test_invalid_watcher_is_kept_with_its_error(spec: object, error: str) -> None:
    watcher = watcher_from_dict(api_watcher(spec))
    assert (watcher.spec, watcher.error, watcher.meta.uid) == (None, error, "w1")


def test_bad_metadata_is_an_error() -> None:
    with pytest.raises(ModelError, match=r"metadata\.name"):
        watcher_from_dict({"metadata": {"namespace": "shop", "name": "Bad_Name"}, "spec": {}})
