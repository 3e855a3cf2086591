"""Objects the scenarios create: workload pods and FimWatchers."""

from __future__ import annotations

from typing import Any

from tests.e2e.kube import Kube, wait_for

WORKLOAD_IMAGE = "localhost/fim-k8s/workload:local"


def pod(
    name: str, namespace: str, labels: dict[str, str], script: str = "exec sleep 3600"
) -> dict[str, Any]:
    """A busybox pod that prepares its directories and sleeps."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "app",
                    "image": WORKLOAD_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", script],
                }
            ],
        },
    }


def watcher(
    name: str,
    namespace: str,
    match_labels: dict[str, str],
    subjects: list[dict[str, Any]],
    log_format: str = "",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": match_labels}, "subjects": subjects}
    if log_format:
        spec["logFormat"] = log_format
    return {
        "apiVersion": "fim-k8s.io/v1alpha1",
        "kind": "FimWatcher",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def running(kube: Kube, namespace: str, name: str, timeout: float = 90.0) -> dict[str, Any]:
    """Waits until the pod is Running with all containers ready; returns it."""

    def probe() -> dict[str, Any] | None:
        found = kube.get("pod", name, namespace)
        statuses = found["status"].get("containerStatuses", [])
        ready = statuses and all(status.get("ready") for status in statuses)
        return found if found["status"].get("phase") == "Running" and ready else None

    return wait_for(f"pod {namespace}/{name} running", probe, timeout)


def watched(kube: Kube, namespace: str, name: str, pods: int, timeout: float = 60.0) -> None:
    """Waits until the FimWatcher's status confirms `pods` watched pods (fimd-confirmed)."""

    def probe() -> bool:
        status = kube.get("fimwatcher", name, namespace).get("status", {})
        return bool(status.get("watchedPods") == pods == status.get("observablePods"))

    wait_for(f"FimWatcher {namespace}/{name} watching {pods} pods", probe, timeout)
