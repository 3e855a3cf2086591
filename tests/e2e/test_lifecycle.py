"""Scenarios 3, 4 and 5: watches follow FimWatcher changes and deletion, workload pods that
are recreated or whose container restarts, and fimd or controller pods that are killed.

After each change the test waits for fimd to report the watch in place again (within the
re-arm time, expect.REARM), writes once, and requires that one event line within the event
deadline, exactly once after a settle period: no retried writes that would hide a lost
first event, a slow re-arm or a late duplicate."""

from __future__ import annotations

from typing import Any

from tests.e2e import expect
from tests.e2e.kube import Kube, wait_for
from tests.e2e.system import CONTROLLER_LABEL, SYSTEM_NAMESPACE, FimSystem
from tests.e2e.workloads import pod, running, watched, watcher

PREPARE = "mkdir -p /a /b && exec sleep 3600"


def _create(kube: Kube, namespace: str, events: list[str], paths: list[str]) -> dict[str, Any]:
    return watcher("w", namespace, {"app": "web"}, [{"paths": paths, "events": events}])


def test_updates_and_deletion_are_followed(kube: Kube, system: FimSystem, namespace: str) -> None:
    kube.apply(pod("web", namespace, {"app": "web"}, PREPARE))
    node = running(kube, namespace, "web")["spec"]["nodeName"]
    kube.apply(_create(kube, namespace, ["create"], ["/a"]))
    watched(kube, namespace, "w", pods=1)
    kube.exec(namespace, "web", "touch /a/1")
    expect.exactly_once(system, node, namespace, [("CREATE", "/a/1")])

    # Paths and events changed: /b is watched for create and delete, /a no longer.
    before = expect.armed_count(system, node, namespace, "web")
    kube.apply(_create(kube, namespace, ["create", "delete"], ["/b"]))
    expect.armed(system, node, namespace, "web", before)
    kube.exec(namespace, "web", "touch /b/2")
    expect.exactly_once(system, node, namespace, [("CREATE", "/b/2")])
    kube.exec(namespace, "web", "touch /a/3; rm /b/2")
    expect.exactly_once(system, node, namespace, [("DELETE", "/b/2")])
    expect.no_events(system, node, namespace, "/a/3")

    # Selector no longer matching: the pod loses its watch.
    changed = _create(kube, namespace, ["create"], ["/b"])
    changed["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    kube.apply(changed)
    watched(kube, namespace, "w", pods=0)
    kube.exec(namespace, "web", "touch /b/4")
    expect.no_events(system, node, namespace, "/b/4")

    # Deleted: the FimWatcher goes away (finalizer done) and nothing runs for it on the node.
    kube.apply(_create(kube, namespace, ["create"], ["/b"]))
    watched(kube, namespace, "w", pods=1)
    kube.run("delete", "fimwatcher", "w", f"--namespace={namespace}", "--timeout=60s")
    assert not kube.exists("fimwatcher", "w", namespace)
    wait_for("no watches left", lambda: system.active_watches(node, namespace) == 0, 30)


def test_recreated_pod_and_restarted_container_are_watched_again(
    kube: Kube, system: FimSystem, namespace: str
) -> None:
    # The container exits (and is restarted by the kubelet) when /tmp/die appears.
    script = "mkdir -p /a; while [ ! -e /tmp/die ]; do sleep 0.2; done; exit 1"
    spec = pod("web", namespace, {"app": "web"}, script)
    kube.apply(spec)
    node = running(kube, namespace, "web")["spec"]["nodeName"]
    kube.apply(_create(kube, namespace, ["create"], ["/a"]))
    watched(kube, namespace, "w", pods=1)
    kube.exec(namespace, "web", "touch /a/first")
    expect.exactly_once(system, node, namespace, [("CREATE", "/a/first")])

    before = expect.armed_count(system, node, namespace, "web")
    kube.exec(namespace, "web", "touch /tmp/die")
    wait_for("container restarted", lambda: _restarts(kube, namespace) >= 1, 60)
    running(kube, namespace, "web")
    expect.armed(system, node, namespace, "web", before)  # the new container's watch
    kube.exec(namespace, "web", "touch /a/restarted")
    expect.exactly_once(system, node, namespace, [("CREATE", "/a/restarted")])
    first = kube.get("pod", "web", namespace)["metadata"]["uid"]

    kube.run("delete", "pod", "web", f"--namespace={namespace}", "--timeout=60s")
    before = expect.armed_count(system, node, namespace, "web")
    kube.apply(spec)
    running(kube, namespace, "web")
    assert kube.get("pod", "web", namespace)["metadata"]["uid"] != first
    expect.armed(system, node, namespace, "web", before)  # the new pod's watch
    kube.exec(namespace, "web", "touch /a/recreated")
    expect.exactly_once(system, node, namespace, [("CREATE", "/a/recreated")])


def _restarts(kube: Kube, namespace: str) -> int:
    statuses = kube.get("pod", "web", namespace)["status"].get("containerStatuses", [])
    return int(statuses[0].get("restartCount", 0)) if statuses else 0


def test_killed_fimd_and_controller_recover_without_duplicates(
    kube: Kube, system: FimSystem, namespace: str
) -> None:
    kube.apply(pod("web", namespace, {"app": "web"}, PREPARE))
    node = running(kube, namespace, "web")["spec"]["nodeName"]
    kube.apply(_create(kube, namespace, ["create"], ["/a"]))
    watched(kube, namespace, "w", pods=1)

    fimd = system.fimd_pod(node)
    kube.run("delete", "pod", fimd, f"--namespace={SYSTEM_NAMESPACE}", "--wait=false")
    wait_for("a new fimd pod", lambda: system.fimd_pod(node) != fimd, 120)
    expect.armed(system, node, namespace, "web", 0)  # the new fimd's log starts empty
    kube.exec(namespace, "web", "touch /a/f")
    expect.exactly_once(system, node, namespace, [("CREATE", "/a/f")])

    controller = system.pods(CONTROLLER_LABEL)[0]["metadata"]["name"]
    kube.run("delete", "pod", controller, f"--namespace={SYSTEM_NAMESPACE}", "--wait=false")
    system.wait_ready()
    wait_for("new controller", lambda: _controller_replaced(system, controller), 120)
    watched(kube, namespace, "w", pods=1)
    kube.exec(namespace, "web", "touch /a/once")
    (creation,) = expect.exactly_once(system, node, namespace, [("CREATE", "/a/once")])
    assert creation["watcher"] == f"{namespace}/w"
    assert system.active_watches(node, namespace) == 1


def _controller_replaced(system: FimSystem, old: str) -> bool:
    names = [p["metadata"]["name"] for p in system.pods(CONTROLLER_LABEL)]
    return bool(names) and old not in names
