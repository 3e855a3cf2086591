"""Small steps and reads of controller scenarios against the API server and fake fimds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.controller.kube import ApiError, Kube
from services.controller.tests import apiserver
from services.controller.tests.apiserver import create_pod
from services.controller.tests.fake_fimd import KeyTuple

if TYPE_CHECKING:
    from services.controller.tests.fixtures import World

WEB = {"app": "web"}


def keys(world: World) -> dict[str, set[KeyTuple]]:
    return {node: set(server.fimd.snapshot()) for node, server in world.fimds.items()}


def calls(world: World, method: str) -> int:
    return sum(server.fimd.calls[method] for server in world.fimds.values())


def add_watcher(world: World, name: str, paths: list[str], labels: dict[str, str] = WEB) -> str:
    body = apiserver.fimwatcher(world.ns, name, labels, paths)
    created = world.kube.request("POST", apiserver.watcher_path(world.ns), body=body)
    return str(created["metadata"]["uid"])


def pod(world: World, name: str, node: str, containers: dict[str, int], **labels: str) -> str:
    create_pod(world.kube, world.ns, name, node=node, labels=labels or WEB, containers=containers)
    return apiserver.pod_uid(world.kube, world.ns, name)


def status(world: World, name: str) -> dict[str, Any]:
    watcher = apiserver.get_watcher(world.kube, world.ns, name) or {}
    return dict(watcher.get("status") or {})


def condition(world: World, name: str, type_: str) -> tuple[str, str, str]:
    for c in status(world, name).get("conditions") or ():
        if c["type"] == type_:
            return (c["status"], c["reason"], c.get("message", ""))
    return ("", "", "")


def counts(world: World, name: str) -> tuple[int, int]:
    s = status(world, name)
    return (s.get("observablePods", -1), s.get("watchedPods", -1))


def patch(world: World, path: str, body: dict[str, Any]) -> None:
    world.kube.request("PATCH", path, body=body, content_type=apiserver.MERGE_PATCH)


def delete_pod(world: World, name: str) -> None:
    # No kubelet confirms a graceful deletion here: delete at once.
    world.kube.request(
        "DELETE", f"/api/v1/namespaces/{world.ns}/pods/{name}", query={"gracePeriodSeconds": "0"}
    )


def reasons(kube: Kube, ns: str, uid: str) -> set[str]:
    events = kube.request("GET", f"/api/v1/namespaces/{ns}/events").get("items", [])
    return {e["reason"] for e in events if e["involvedObject"].get("uid") == uid}


def leader(world: World) -> str:
    try:
        lease = world.kube.request(
            "GET", "/apis/coordination.k8s.io/v1/namespaces/fim-system/leases/fim-controller"
        )
    except ApiError:
        return ""
    return str(lease["spec"].get("holderIdentity") or "")
